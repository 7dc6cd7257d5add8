#!/usr/bin/env bash
# PS transport: push+pull goodput (GB/s of payload, both ways) against one
# pstrain-ps over loopback for 1, 4, 16 and 64 MiB of weights, one line per
# size. Arguments go to pstrain-bench-ps (--sizes, --reps). The raw gRPC
# layer alone: build/pstrain-bench-rpc.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/build.sh
exec build/pstrain-bench-ps --ps-binary build/pstrain-ps "$@"

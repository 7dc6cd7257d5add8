#!/usr/bin/env bash
# PS transport: push+pull goodput (GB/s of payload, both ways) against one
# pstrain-ps over loopback for 1, 4, 16 and 64 MiB of weights, one line per
# size, over each transport in turn: the PS's tensor stream through shared
# memory (a worker on the PS's host), the tensor stream over TCP (a worker on
# another host) and gRPC (the stream off, or TLS on). Arguments go to
# pstrain-bench-ps (--sizes, --reps; --tcp or --grpc runs that transport
# alone). The raw gRPC layer alone: build/pstrain-bench-rpc.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/build.sh
for a in "$@"; do
  case "$a" in --tcp|--grpc) exec build/pstrain-bench-ps --ps-binary build/pstrain-ps "$@" ;; esac
done
build/pstrain-bench-ps --ps-binary build/pstrain-ps "$@"
build/pstrain-bench-ps --ps-binary build/pstrain-ps --tcp "$@" | grep -v '^#'
build/pstrain-bench-ps --ps-binary build/pstrain-ps --grpc "$@" | grep -v '^#'

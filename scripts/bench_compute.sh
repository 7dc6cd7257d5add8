#!/usr/bin/env bash
# Training images/s and GFLOP/s of the default CNN at batch 64 on data in
# memory (forward + backward + optimizer update), with 1 and with 2 threads.
# Extra arguments go to pstrain-bench-compute (--batch, --threads, --model, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/build.sh
unset OPENBLAS_CORETYPE
if [ -n "${PSTRAIN_OPENBLAS_CORETYPE:-}" ]; then
  export OPENBLAS_CORETYPE=$PSTRAIN_OPENBLAS_CORETYPE
fi
exec build/pstrain-bench-compute "$@"

#!/usr/bin/env bash
# Trains the default model (the Keras MNIST CNN on Fashion-MNIST) on the CPU
# in one process, then prints the final test metrics. Extra arguments go to
# pstrain-worker, e.g.: scripts/train_local_cpu.sh --set train.epochs=1
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh > /dev/null
scripts/build.sh
# These machines preset OPENBLAS_CORETYPE=Haswell, which halves sgemm on
# AVX-512 CPUs; let OpenBLAS pick its kernel unless PSTRAIN_OPENBLAS_CORETYPE says.
unset OPENBLAS_CORETYPE
if [ -n "${PSTRAIN_OPENBLAS_CORETYPE:-}" ]; then
  export OPENBLAS_CORETYPE=$PSTRAIN_OPENBLAS_CORETYPE
fi
unset TF_CONFIG
model_dir=$(build/pstrain-worker "$@" --print-config checkpoint.model_dir)
start=$(date +%s)
build/pstrain-worker "$@"
echo "== final test metrics after $(($(date +%s) - start)) s ($model_dir/eval_results.json):"
cat "$model_dir/eval_results.json"

#!/usr/bin/env bash
# Trains the default model (the Keras MNIST CNN on Fashion-MNIST) on one GPU
# in one process, then prints the final test metrics:
#   scripts/train_local_single.sh GPU_ID [pstrain-worker arguments...]
# GPU_ID is the GPU's index as nvidia-smi lists it; the worker sees only that
# GPU (CUDA_VISIBLE_DEVICES=GPU_ID) and runs with device=gpu, so it stops
# with exit 69 and one line saying why when the GPU is not usable. Extra
# arguments go to pstrain-worker, e.g.
#   scripts/train_local_single.sh 0 --set train.batch_size=256
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: scripts/train_local_single.sh GPU_ID [--set key=value]..." >&2
  exit 2
fi
gpu=$1
shift
scripts/setup.sh > /dev/null
scripts/build.sh
if [ ! -f build/libpstrain_cuda.so ]; then
  echo "train_local_single: build/libpstrain_cuda.so was not built (no nvcc or cuDNN at configure time?)" >&2
  exit 69
fi
unset TF_CONFIG
export CUDA_VISIBLE_DEVICES=$gpu
model_dir=$(build/pstrain-worker --set device=gpu "$@" --print-config checkpoint.model_dir)
start=$(date +%s)
build/pstrain-worker --set device=gpu "$@"
echo "== final test metrics after $(($(date +%s) - start)) s on GPU $gpu ($model_dir/eval_results.json):"
cat "$model_dir/eval_results.json"

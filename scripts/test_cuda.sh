#!/usr/bin/env bash
# The GPU tests, on a machine with a GPU: builds (with the CUDA plugin,
# PSTRAIN_CUDA=on, so a missing toolkit is an error rather than a skip), then
# runs every CUDA op against the CPU op, the gradient checks through the CNN,
# the trainer's device path, and the plugin's command-line checks. A test
# that finds no usable GPU is reported as skipped, never as passed; with
# --require-gpu any skip fails the run. CUDA_VISIBLE_DEVICES picks the GPU.
#   scripts/test_cuda.sh [--require-gpu]
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${PSTRAIN_BUILD:-$root/build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPSTRAIN_CUDA=on > /dev/null
cmake --build "$build" -j "$(nproc)"
nvidia-smi -L 2> /dev/null || echo "test_cuda: nvidia-smi lists no GPU"
cd "$build"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
ctest --output-on-failure -R '^(cuda_|device_|cli_gpu_device)' 2>&1 | tee "$out" || status=$?
if [ "${1:-}" = "--require-gpu" ] && grep -q '(Skipped)' "$out"; then
  echo "test_cuda: tests were skipped, and --require-gpu wants them all run" >&2
  exit 1
fi
exit "$status"

#!/usr/bin/env bash
# The GPU plugin as CI (no GPU) can check it: the binaries link no CUDA
# library; the plugin links CUDA, cuDNN and cuBLAS and exports one symbol;
# device=gpu without a usable GPU is one clear error with exit 69 (and
# device=auto trains on the CPU after one line saying why), whether the
# plugin is missing or finds no GPU. CUDA_VISIBLE_DEVICES="" hides any GPU,
# so this runs the same on a GPU machine.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
unset TF_CONFIG PSTRAIN_CUDA_PLUGIN

for bin in pstrain-worker pstrain-ps pstrain-master pstrain pstrain-bench-compute; do
  if readelf -d "$build/$bin" | grep NEEDED | grep -qiE 'cuda|cudnn|cublas|nvidia'; then
    fail "$bin links a CUDA library: $(readelf -d "$build/$bin" | grep NEEDED)"
  fi
done

plugin=$build/libpstrain_cuda.so
if grep -qE '^CMAKE_CUDA_COMPILER:(FILEPATH|STRING)=.+' "$build/CMakeCache.txt" &&
  grep -qE '^PSTRAIN_CUDNN_LIBRARY:FILEPATH=/' "$build/CMakeCache.txt" &&
  ! grep -qiE '^PSTRAIN_CUDA:STRING=off' "$build/CMakeCache.txt"; then
  [ -f "$plugin" ] || fail "nvcc and cuDNN were found but $plugin was not built"
fi
if [ -f "$plugin" ]; then
  needed=$(readelf -d "$plugin" | grep NEEDED)
  for lib in libcudart libcudnn libcublas; do
    grep -q "$lib" <<< "$needed" || fail "the plugin does not link $lib: $needed"
  done
  exported=$(nm -D --defined-only "$plugin" | awk '{print $3}' | grep -v '^_' | sort | tr '\n' ' ')
  [ "$exported" = "pstrain_cuda_backend " ] || fail "the plugin exports: $exported"
else
  echo "SKIP plugin checks: $plugin was not built (PSTRAIN_CUDA=off, or no nvcc and cuDNN)"
fi

worker=$build/pstrain-worker
run=(--set checkpoint.model_dir="$tmp/run" --set model=mlp)
export CUDA_VISIBLE_DEVICES=
expect_error 69 'device=gpu: ' "$worker" --set device=gpu "${run[@]}"
PSTRAIN_CUDA_PLUGIN=$tmp/none.so expect_error 69 'cannot load the CUDA plugin' \
  "$worker" --set device=gpu "${run[@]}"
expect_error 69 'device=gpu: ' "$build/pstrain-bench-compute" --device gpu

data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP training part: $data is not installed (scripts/setup.sh installs it)"
  exit 0
fi
# device=auto without a GPU: one line saying why, then the CPU trains.
for plugin_env in "" "$tmp/none.so"; do
  PSTRAIN_CUDA_PLUGIN=$plugin_env "$worker" --set device=auto "${run[@]}" \
    --set train.max_steps=20 2> "$tmp/log" || fail "device=auto exited $?: $(cat "$tmp/log")"
  [ "$(grep -c 'device=auto: no usable GPU (' "$tmp/log")" -eq 1 ] ||
    fail "device=auto: want one fallback line: $(cat "$tmp/log")"
  grep -q 'using the CPU' "$tmp/log" || fail "device=auto: no 'using the CPU'"
  grep -q 'CPU backend: ' "$tmp/log" || fail "device=auto: no CPU backend line"
  grep -q 'eval on test at step 20' "$tmp/log" || fail "device=auto did not train: $(tail -3 "$tmp/log")"
done
echo "ok"

#!/usr/bin/env bash
# Training images/s and GFLOP/s of the default CNN on data in memory
# (forward + backward + optimizer update).
#
# CPU (the default): batch 64, with 1 and with 2 threads, one line per thread
# count: threads=N images_per_sec=X gflops=Y.
#
# --device gpu: batch 64 and 256 on the GPU that CUDA_VISIBLE_DEVICES shows
# first: the standalone worker's step (store and optimizer on the GPU) and a
# cluster worker's gradient (weights up, gradients down every step), then
# PyTorch's step on the same GPU, the same CNN, batch and optimizer, and a
# table of the two side by side.
#
# With PyTorch installed it prints PyTorch's figures beside pstrain's
# (--no-pytorch skips them). Other arguments go to pstrain-bench-compute
# (--batch, --threads, --model, --steps, --reps).
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/build.sh
unset OPENBLAS_CORETYPE
if [ -n "${PSTRAIN_OPENBLAS_CORETYPE:-}" ]; then
  export OPENBLAS_CORETYPE=$PSTRAIN_OPENBLAS_CORETYPE
fi
pytorch=1
device=cpu
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-pytorch) pytorch=0; shift ;;
    --device) device=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# Debian's python3-torch lives under the system python, not a pyenv one.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
have_torch() { [ "$pytorch" = 1 ] && "$py" -c 'import torch' 2> /dev/null; }

if [ "$device" = cpu ]; then
  build/pstrain-bench-compute "${args[@]}"
  if have_torch; then
    # PyTorch's best here: glibc thresholds raised (else page faults cost it 3x),
    # OpenBLAS single-threaded under torch's own threads.
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296 \
      OPENBLAS_NUM_THREADS=1 "$py" bench/pytorch_cnn.py
  else
    echo "# pytorch: not installed (apt-get install python3-torch for the side-by-side figures)"
  fi
  exit 0
fi

[ "$device" = gpu ] || { echo "bench_compute: --device cpu|gpu" >&2; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for batch in 64 256; do
  build/pstrain-bench-compute --device gpu --batch "$batch" "${args[@]}" | tee -a "$out"
  if have_torch && "$py" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    "$py" bench/pytorch_cnn.py --device cuda --batch "$batch" | tee -a "$out"
  elif [ "$batch" = 64 ]; then
    echo "# pytorch: no PyTorch with CUDA here (import torch; torch.cuda.is_available())" | tee -a "$out"
  fi
done
echo "== images/s on the GPU, training steps of the same CNN (pstrain: store and optimizer on"
echo "   the GPU; pytorch: the better of cudnn.benchmark off and on)"
awk '
  /^device=gpu / && / mode=step / { split($2, b, "="); split($4, v, "="); ps[b[2]] = v[2] }
  /^pytorch device=cuda / { split($3, b, "="); split($4, v, "="); if (v[2] + 0 > pt[b[2]] + 0) pt[b[2]] = v[2] }
  END {
    printf "%-6s %12s %12s %10s\n", "batch", "pstrain", "pytorch", "ratio"
    for (n = 64; n <= 256; n *= 4)
      printf "%-6s %12s %12s %10s\n", n, ps[n] ? ps[n] : "-", pt[n] ? pt[n] : "-",
             ps[n] && pt[n] ? sprintf("%.2f", ps[n] / pt[n]) : "-"
  }' "$out"

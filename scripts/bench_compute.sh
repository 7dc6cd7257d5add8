#!/usr/bin/env bash
# Training images/s and GFLOP/s of the default CNN at batch 64 on data in
# memory (forward + backward + optimizer update), with 1 and with 2 threads,
# one line per thread count: threads=N images_per_sec=X gflops=Y.
# With PyTorch installed (Debian's python3-torch) it then prints PyTorch's
# figures for the same CNN, batch and threads, side by side (--no-pytorch
# skips them). Other arguments go to pstrain-bench-compute (--batch, --threads,
# --model, --steps, --reps).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/build.sh
unset OPENBLAS_CORETYPE
if [ -n "${PSTRAIN_OPENBLAS_CORETYPE:-}" ]; then
  export OPENBLAS_CORETYPE=$PSTRAIN_OPENBLAS_CORETYPE
fi
pytorch=1
args=()
for a in "$@"; do
  if [ "$a" = "--no-pytorch" ]; then pytorch=0; else args+=("$a"); fi
done
build/pstrain-bench-compute "${args[@]}"
# Debian's python3-torch lives under the system python, not a pyenv one.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
if [ "$pytorch" = 1 ] && "$py" -c 'import torch' 2> /dev/null; then
  # PyTorch's best here: glibc thresholds raised (else page faults cost it 3x),
  # OpenBLAS single-threaded under torch's own threads.
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296 \
    OPENBLAS_NUM_THREADS=1 "$py" bench/pytorch_cnn.py
else
  echo "# pytorch: not installed (apt-get install python3-torch for the side-by-side figures)"
fi

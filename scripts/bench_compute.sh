#!/usr/bin/env bash
# pstrain's compute beside PyTorch's: the default CNN on data in memory, the
# same batch, threads and optimizer (SGD, momentum 0.9) on both sides.
#
# CPU (the default): training at batch 64 with 1 and 2 threads, in rounds
# that alternate pstrain, Debian's PyTorch (python3-torch) and, with
# --pytorch-pypi, the current PyTorch from PyPI (its venv is made once by
# scripts/torch_venv.sh); then a table of the medians over the rounds and
# pstrain's ratio to the faster PyTorch. It first prints the CPU (model,
# vector features, load) and which kernels each side runs: pstrain's product
# kernel and OpenBLAS core, each PyTorch's CPU capability, BLAS and oneDNN.
#
#   --rounds N      alternations (default 3; the table shows medians)
#   --infer         evaluate/predict throughput instead, batch 1000
#   --layers        one thread's per-layer breakdown, pstrain beside PyTorch
#   --avx2          AVX2 on both sides on an AVX-512 CPU: pstrain's AVX2
#                   kernel and OpenBLAS's Haswell core; PyTorch's ATen AVX2
#                   kernels, oneDNN capped at AVX2, MKL at AVX2
#   --pytorch-pypi  also PyPI's PyTorch (makes its venv if missing)
#   --no-pytorch    pstrain alone
#
# --device gpu: batch 64 and 256 on the GPU that CUDA_VISIBLE_DEVICES shows
# first: the standalone worker's step (store and optimizer on the GPU) and a
# cluster worker's gradient (weights up, gradients down every step), then
# PyTorch's step on the same GPU, the same CNN, batch and optimizer, and a
# table of the two side by side.
#
# Other arguments go to pstrain-bench-compute and pytorch_cnn.py alike
# (--batch, --threads, --steps, --reps); --model to pstrain alone.
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
pypi=0
device=cpu
rounds=3
mode=train
avx2=0
args=()
targs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-pytorch) pytorch=0; shift ;;
    --pytorch-pypi) pypi=1; shift ;;
    --device) device=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --infer) mode=infer; shift ;;
    --layers) mode=layers; shift ;;
    --avx2) avx2=1; shift ;;
    --model) args+=("$1" "$2"); shift 2 ;;
    --batch | --threads | --steps | --reps) args+=("$1" "$2"); targs+=("$1" "$2"); shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
# Debian's python3-torch lives under the system python, not a pyenv one.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
have_torch() { [ "$pytorch" = 1 ] && "$py" -c 'import torch' 2> /dev/null; }

# PyTorch's best here: glibc thresholds raised (else page faults cost it 3x),
# OpenBLAS single-threaded under torch's own threads.
torch_env=(GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296
  OPENBLAS_NUM_THREADS=1)
ps_env=()
if [ "$avx2" = 1 ]; then
  ps_env=(PSTRAIN_CPU_GEMM=avx2 OPENBLAS_CORETYPE=Haswell)
  torch_env+=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2
    MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell)
fi

# The PyTorch builds to run beside pstrain: "name python" per line.
torches() {
  if have_torch; then echo "debian $py"; fi
  if [ "$pytorch" = 1 ] && [ "$pypi" = 1 ]; then
    echo "pypi $(scripts/torch_venv.sh)/bin/python"
  fi
}

# pytorch's scripts, their warnings (no GPU here) dropped.
run_torch() {
  local pybin=$1
  shift
  env "${torch_env[@]}" "$pybin" "$@" 2>&1 | grep -v -e Warning -e _conversion_method -e '^USDT' \
    -e gpuGetDeviceCount || true
}

# The machine and the kernels each side runs.
describe() {
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores;" \
    "features: $(grep -m1 -o -w -e avx2 -e fma -e avx512f -e avx512bw -e avx512_vnni -e avx512_bf16 \
      /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg) (other jobs share the cores: compare within a round)"
  [ "$avx2" = 1 ] && echo "# --avx2: AVX2 forced on both sides; pstrain's auto-vectorised loops" \
    "(im2col, pooling, bias, relu, optimizer) still take the clone the CPU supports"
  echo "# pstrain: $(env "${ps_env[@]}" build/pstrain-bench-compute --about)"
  while read -r name pybin; do
    echo "# pytorch-$name: $(run_torch "$pybin" bench/pytorch_cnn.py --about | sed 's/^# //')"
  done < <(torches)
}

# One round: pstrain, then each PyTorch; lines "SIDE THREADS IMAGES_PER_SEC
# ROUND IMAGES_PER_CPU_SEC".
one_round() {
  local r=$1 flag=()
  [ "$mode" = infer ] && flag=(--infer)
  env "${ps_env[@]}" build/pstrain-bench-compute "${flag[@]}" "${args[@]}" | tee -a "$raw" |
    awk -v r="$r" '/^# model=/ { next } { for (i = 1; i <= NF; i++) { split($i, kv, "=");
      v[kv[1]] = kv[2] } print "pstrain", v["threads"], v["images_per_sec"], r, v["images_per_cpu_sec"] }'
  while read -r name pybin; do
    run_torch "$pybin" bench/pytorch_cnn.py "${flag[@]}" "${targs[@]}" | tee -a "$raw" |
      awk -v r="$r" -v s="pytorch-$name" '/^pytorch / { for (i = 2; i <= NF; i++) {
        split($i, kv, "="); v[kv[1]] = kv[2] } print s, v["threads"], v["images_per_sec"], r,
        v["images_per_cpu_sec"] }'
  done < <(torches)
}

# The medians per side and thread count, and pstrain over the faster PyTorch;
# with "cpu", of images per CPU-second (column 5) at one thread instead.
summarize() {
  local col=3 tag=""
  if [ "${2:-}" = cpu ]; then col=5 tag=" per CPU-second"; fi
  awk -v c="$col" '$c != "" && (c == 3 || $2 == 1) { print $1, $2, $c }' "$1" |
    sort -k1,1 -k2,2n -k3,3n | awk -v tag="$tag" '
    { key = $1 " " $2; vals[key] = vals[key] " " $3; n[key]++; side[$1] = 1; th[$2] = 1 }
    END {
      for (k in vals) { split(substr(vals[k], 2), a, " "); med[k] = a[int((n[k] + 1) / 2)] }
      for (k in vals) { split(k, p, " "); printf "%-16s %-8s %-10s%s\n", p[1], p[2], med[k], vals[k] }
      for (t in th) {
        best = 0; who = "-"
        for (s in side) if (s != "pstrain" && med[s " " t] + 0 > best) { best = med[s " " t]; who = s }
        if (best > 0 && med["pstrain " t] > 0)
          printf "~ratio%s threads=%s pstrain/%s (the faster) = %.2f\n", tag, t, who,
            med["pstrain " t] / best
      }
    }' | sort | sed 's/^~//'
}

if [ "$device" = cpu ]; then
  describe
  if [ "$mode" = layers ]; then
    env "${ps_env[@]}" build/pstrain-bench-compute --layers "${args[@]}"
    while read -r name pybin; do
      echo "== pytorch-$name"
      (cd bench && run_torch "$pybin" pytorch_layers.py "${targs[@]}")
    done < <(torches)
    exit 0
  fi
  have_torch || [ "$pypi" = 1 ] || [ "$pytorch" = 0 ] ||
    echo "# pytorch: Debian's not installed (apt-get install python3-torch)"
  out=$(mktemp)
  raw=$(mktemp)
  trap 'rm -f "$out" "$raw"' EXIT
  for r in $(seq 1 "$rounds"); do
    echo "== round $r/$rounds ($mode)"
    : > "$raw"
    one_round "$r" >> "$out"
    cat "$raw"
  done
  echo "== $mode images/s, median of $rounds rounds; load now $(cut -d' ' -f1-3 /proc/loadavg)"
  printf "%-16s %-8s %-10s %s\n" side threads median "rounds (sorted)"
  summarize "$out"
  if [ "$mode" != layers ]; then
    echo "== images per CPU-second at 1 thread (what a step costs, whatever share of the core"
    echo "   the other jobs left), median of $rounds rounds"
    summarize "$out" cpu
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

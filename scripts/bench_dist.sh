#!/usr/bin/env bash
# Distribution overhead: training images/s of the CNN at batch 64 standalone
# (pstrain-bench-compute, data in memory) against a master + 1 PS + 1 worker
# cluster on loopback (the worker's images/s over a run of --steps global
# steps, pulls and pushes of all 6.5 MB of weights every step included).
# Both with the same compute threads (--threads, default: all CPUs).
# --set KEY=VALUE goes to the cluster (e.g. rpc.stream=false: tensors over
# gRPC instead of the PS's tensor stream).
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
steps=300
threads=$(nproc)
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "usage: $0 [--steps N] [--threads N] [--set KEY=VALUE]..." >&2; exit 2 ;;
  esac
done
scripts/build.sh
unset OPENBLAS_CORETYPE
standalone=$(build/pstrain-bench-compute --threads "$threads" --steps 40 --reps 5 |
  sed -n 's/^threads=[0-9]* images_per_sec=\([0-9]*\).*/\1/p')
runlogs=$(mktemp -d)
trap 'PSTRAIN_RUNLOGS=$runlogs scripts/stop.sh > /dev/null 2>&1; rm -rf "$runlogs"' EXIT
PSTRAIN_RUNLOGS=$runlogs scripts/train_local_dist.sh --ps 1 --workers 1 \
  --set train.max_steps="$steps" --set threads="$threads" --set eval.every_epoch=false \
  --set checkpoint.model_dir="$runlogs/run" "${sets[@]}" > "$runlogs/out" 2>&1
dist=$(sed -n 's/.* \([0-9]*\) images\/s over the run.*/\1/p' "$runlogs/worker0.log")
echo "standalone threads=$threads images_per_sec=$standalone"
echo "cluster master+1ps+1worker threads=$threads images_per_sec=$dist ratio=$(
  awk -v d="$dist" -v s="$standalone" 'BEGIN { printf "%.2f", d / s }')"

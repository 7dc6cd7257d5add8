#!/usr/bin/env bash
# rpc.wire_dtype=fp16 and rpc.push_topk end to end: a master, 2 PS and 2
# workers as real processes on loopback (scripts/train_local_dist.sh) train
# the MLP for one epoch with fp16 pulls and top-k (5%) fp16 pushes over
# gRPC (rpc.shm off: 16-bit values are for the network), error feedback on
# the workers, to >= 0.78 test accuracy
# (fp32: ~0.83); then in sync mode, where the PS sums the sparse pushes.
# Every process exits 0 without an ERROR line, and each worker names both
# encodings in its log.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT

need_fashion_mnist
need_python3 json
cd "$tmp" # train_local_dist.sh appends to training_log.md here

for mode in async sync; do
  floor=0.78
  [ "$mode" = sync ] && floor=0.60 # 1 epoch is 469 sync steps of 2 batches
  dir=$tmp/run-$mode
  PSTRAIN_RUNLOGS=$tmp/logs-$mode "$root/scripts/train_local_dist.sh" --set model=mlp \
    --set train.epochs=1 --set train.mode="$mode" --set rpc.wire_dtype=fp16 \
    --set rpc.push_topk=0.05 --set rpc.shm=false --set checkpoint.model_dir="$dir" > "$tmp/out-$mode" 2>&1 ||
    fail "$mode run: $(tail -5 "$tmp/out-$mode")"
  acc=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["accuracy"])' \
    "$dir/eval_results.json")
  python3 -c 'import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]))' "$acc" "$floor" ||
    fail "$mode: accuracy $acc under $floor"
  echo "fp16 + top-k 5%, $mode: accuracy $acc"
  if grep -l " ERROR " "$tmp/logs-$mode"/*.log; then
    fail "$mode: $(grep -h " ERROR " "$tmp/logs-$mode"/*.log | head -3)"
  fi
  for w in worker0 worker1; do
    grep -q "travel as fp16" "$tmp/logs-$mode/$w.log" || fail "$w ($mode) does not say it sends fp16"
    grep -q "largest 0.05 of their values" "$tmp/logs-$mode/$w.log" ||
      fail "$w ($mode) does not say it sends the top 5%"
    # fp16 pulls: half the bytes; pushes: 5% of the values, 2 bytes each and
    # an index of 2-3 bytes, plus the small tensors whole
    read -r pulled pushed model <<< "$(worker_bytes "$tmp/logs-$mode/$w.log")"
    [ -n "$model" ] || fail "$w ($mode) does not say its bytes a step"
    echo "$mode, $w: bytes a step: pulled $pulled, pushed $pushed of $model"
    awk -v a="$pulled" -v b="$pushed" -v m="$model" 'BEGIN { exit !(a < 0.56 * m && b < 0.2 * m) }' ||
      fail "$w ($mode) moved $pulled / $pushed bytes a step of the model's $model"
  done
done
echo ok

#!/usr/bin/env bash
# rpc.wire_dtype=bf16 end to end: a master, 2 PS and 2 workers as real
# processes on loopback (scripts/train_local_dist.sh) train the MLP for one
# epoch with bfloat16 pushes and pulls (error feedback on the workers) to
# >= 0.78 test accuracy, over the TCP stream (rpc.shm off: bfloat16 is for
# the network); every process exits 0 without an error, each worker says its
# tensors travel as bfloat16 and pushes and pulls about half the bytes of
# the model's float32 weights a step. The same run in ssp mode (held pulls
# answered in bfloat16) finishes too. Through shared memory (the default on
# one host) the same setting moves float32: the full bytes.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT

need_fashion_mnist
need_python3 json
cd "$tmp" # train_local_dist.sh appends to training_log.md here

# bytes_ratio WORKER_LOG: bytes a step pulled and pushed over the model's
# float32 weights.
bytes_ratio() {
  worker_bytes "$1" | awk '{ printf "%.3f %.3f\n", $1 / $3, $2 / $3 }'
}

run() {
  local mode=$1 min_acc=$2 shm=${3:-false}
  local dir=$tmp/run-$mode-$shm
  PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --set model=mlp \
    --set train.epochs=1 --set train.mode="$mode" --set rpc.wire_dtype=bf16 \
    --set rpc.shm="$shm" --set rpc.stream=true \
    --set checkpoint.model_dir="$dir" > "$tmp/out-$mode" 2>&1 ||
    fail "$mode run: $(tail -5 "$tmp/out-$mode")"
  python3 - "$dir/eval_results.json" "$mode" "$min_acc" << 'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["accuracy"] >= float(sys.argv[3]), r
print("bf16 wire, %s: accuracy %.4f at global step %d" % (sys.argv[2], r["accuracy"], r["global_step"]))
PY
  for role in master0 ps0 ps1 worker0 worker1; do
    grep -q "ERROR" "$tmp/runlogs/$role.log" && fail "$role logged an error: $(grep ERROR "$tmp/runlogs/$role.log")"
  done
  for w in worker0 worker1; do
    grep -q "travel as bfloat16" "$tmp/runlogs/$w.log" || fail "$w does not say it sends bfloat16"
    read -r pulled pushed <<< "$(bytes_ratio "$tmp/runlogs/$w.log")"
    [ -n "$pushed" ] || fail "$w does not say its bytes a step"
    echo "$mode, rpc.shm=$shm, $w: bytes a step over the float32 weights: pulled $pulled, pushed $pushed"
    if [ "$shm" = false ]; then # bfloat16: half, plus framing and the small tensors
      awk -v a="$pulled" -v b="$pushed" 'BEGIN { exit !(a > 0.45 && a < 0.56 && b > 0.45 && b < 0.56) }' ||
        fail "$w moved $pulled / $pushed of the float32 bytes over TCP, not about half"
    else # float32 through shared memory
      awk -v a="$pulled" -v b="$pushed" 'BEGIN { exit !(a > 0.95 && b > 0.95) }' ||
        fail "$w moved $pulled / $pushed of the float32 bytes through shared memory, not all"
    fi
  done
}
run async 0.78
run ssp 0.70
run async 0.78 true
echo ok

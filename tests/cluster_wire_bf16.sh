#!/usr/bin/env bash
# rpc.wire_dtype=bf16 end to end: a master, 2 PS and 2 workers as real
# processes on loopback (scripts/train_local_dist.sh) train the MLP for one
# epoch with bfloat16 pushes and pulls (error feedback on the workers) to
# >= 0.78 test accuracy; every process exits 0 without an error, and each
# worker says its tensors travel as bfloat16. The same run in ssp mode (held
# pulls answered in bfloat16) finishes too.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT

need_fashion_mnist
need_python3 json
cd "$tmp" # train_local_dist.sh appends to training_log.md here

run() {
  local mode=$1 min_acc=$2
  local dir=$tmp/run-$mode
  PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --set model=mlp \
    --set train.epochs=1 --set train.mode="$mode" --set rpc.wire_dtype=bf16 \
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
  done
}
run async 0.78
run ssp 0.70
echo ok

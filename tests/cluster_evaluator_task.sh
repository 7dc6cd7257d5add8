#!/usr/bin/env bash
# The evaluator task (TF_CONFIG type "evaluator", pstrain-master
# --evaluate-only) beside a running cluster (chief, 1 PS, 1 worker and the
# evaluator as real processes) with data.val_split: the chief leaves the
# evaluations to it; it holds out the same examples the worker leaves out,
# evaluates checkpoints on the validation set during training, and the
# final checkpoint on the validation and the test set, then exits 0.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
pids=()
test_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$tmp"
}
trap test_cleanup EXIT
. "$(dirname "$0")/lib/check.sh"
. "$root/scripts/lib/ports.sh"
need_fashion_mnist

addrs=()
for _ in 1 2 3 4; do
  free_port
  addrs+=("127.0.0.1:$port")
done
cluster="{\"chief\": [\"${addrs[0]}\"], \"ps\": [\"${addrs[1]}\"], \"worker\": [\"${addrs[2]}\"], \"evaluator\": [\"${addrs[3]}\"]}"
md=$tmp/md
sets=(--set model=mlp --set threads=1 --set train.max_steps=1500 --set checkpoint.every_steps=300
  --set train.learning_rate=0.02 --set data.val_split=0.1 --set checkpoint.model_dir="$md")
tf() { echo "{\"cluster\": $cluster, \"task\": {\"type\": \"$1\", \"index\": 0}}"; }
TF_CONFIG=$(tf evaluator) "$build/pstrain-master" --evaluate-only "${sets[@]}" 2> "$tmp/evaluator.log" &
eval_pid=$!
pids+=("$eval_pid")
# Its data read first, so that it sees the checkpoints during training.
wait_log "$tmp/evaluator.log" "evaluating the checkpoints of" "the evaluator did not start" 60
TF_CONFIG=$(tf ps) "$build/pstrain-ps" "${sets[@]}" 2> "$tmp/ps.log" &
pids+=($!)
TF_CONFIG=$(tf chief) "$build/pstrain-master" "${sets[@]}" 2> "$tmp/chief.log" &
pids+=($!)
TF_CONFIG=$(tf worker) "$build/pstrain-worker" "${sets[@]}" 2> "$tmp/worker.log" &
pids+=($!)

wait_exit "$eval_pid"
[ "$rc" -eq 0 ] || fail "the evaluator exited $rc: $(tail -3 "$tmp/evaluator.log")"
grep -q "evaluated the final checkpoint ckpt-1500: done" "$tmp/evaluator.log" ||
  fail "the evaluator did not finish on ckpt-1500: $(tail -3 "$tmp/evaluator.log")"
# data.val_split draws each example with probability 0.1 (seeded by
# train.seed), so about 6000 of the 60000 are held out.
nval=$(sed -n 's/.*(\([0-9]*\) validation and 10000 test examples)$/\1/p' "$tmp/evaluator.log")
[ "${nval:-0}" -gt 5500 ] && [ "$nval" -lt 6500 ] ||
  fail "the evaluator did not hold out 10%: $(grep examples "$tmp/evaluator.log")"
if grep -q "evaluation of ckpt-" "$tmp/chief.log"; then
  fail "the chief evaluated although the cluster has an evaluator"
fi
python3 - "$md" <<'PY' || fail "the evaluator's results"
import json, sys
md = sys.argv[1]
h = [json.loads(l) for l in open(md + "/eval_history.jsonl")]
val = [e for e in h if e["set"] == "validation"]
test = [e for e in h if e["set"] == "test"]
assert val and any(e["step"] < 1500 for e in val), "no validation during training: %s" % h
assert len(test) == 1 and h[-1] is test[0] and test[0]["step"] == 1500, h
assert any(e["step"] == 1500 for e in val), "the final checkpoint's validation row: %s" % h
assert test[0]["accuracy"] >= 0.6, test
r = json.load(open(md + "/eval_results.json"))
assert r["set"] == "test" and r["global_step"] == 1500 and r["examples"] == 10000, r
assert r["epoch"] > 0, r  # the evaluator knows the training set's size
b = json.load(open(md + "/export/best/eval.json"))
assert b["set"] == "validation", b
print("evaluator: validation at steps %s, test %.4f at step 1500"
      % ([e["step"] for e in val], test[0]["accuracy"]))
PY
echo ok

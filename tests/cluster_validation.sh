#!/usr/bin/env bash
# A cluster (master, 1 PS, 2 workers as real processes) with data.val_split:
# the master holds out the same 10% of the training set that the workers
# leave out (about 6000 of Fashion-MNIST's 60000), evaluates every checkpoint on
# it and the final one on the test set too. eval_history.jsonl has
# validation rows at each checkpoint's step and a final test row,
# eval_results.json ends on the test set, export/best was chosen by
# validation accuracy, and TensorBoard has validation scalars in
# model_dir/validation/ beside the test scalars in model_dir/eval/.
set -euo pipefail
: "${1:?usage: $0 BUILD_DIR}" # scripts/train_local_dist.sh finds the build itself
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist
md=$tmp/md
PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --ps 1 --workers 2 \
  --set model=mlp --set train.max_steps=3000 --set checkpoint.every_steps=200 \
  --set train.learning_rate=0.02 --set data.val_split=0.1 --set checkpoint.model_dir="$md" \
  > "$tmp/out" 2>&1 || fail "run: $(tail -5 "$tmp/out")"
# data.val_split draws each example with probability 0.1 (seeded by
# train.seed), so about 6000 of the 60000 are held out.
counts=$(sed -n 's/.* \([0-9]*\) training, \([0-9]*\) validation and 10000 test examples$/\1 \2/p' \
  "$tmp/runlogs/master0.log")
read -r ntrain nval <<< "${counts:-0 0}"
[ $((ntrain + nval)) -eq 60000 ] && [ "$nval" -gt 5500 ] && [ "$nval" -lt 6500 ] ||
  fail "the master did not hold out 10%: $(grep -i 'examples\|ERROR' "$tmp/runlogs/master0.log")"
grep -q "evaluation of ckpt-[0-9]* on validation" "$tmp/runlogs/master0.log" ||
  fail "the master log names no validation evaluation"

python3 - "$md" <<'PY' || fail "the master's evaluations"
import json, sys
md = sys.argv[1]
h = [json.loads(l) for l in open(md + "/eval_history.jsonl")]
val = [e for e in h if e["set"] == "validation"]
test = [e for e in h if e["set"] == "test"]
assert len(val) >= 2, "want validation rows at the checkpoints: %s" % h
assert len(test) == 1 and h[-1] is test[0], "want one test row, the last: %s" % h
final = test[0]
assert final["step"] >= 3000 and final["accuracy"] >= 0.6, final
assert any(e["step"] == final["step"] for e in val), "the final checkpoint's validation row: %s" % h
r = json.load(open(md + "/eval_results.json"))
assert r["set"] == "test" and r["global_step"] == final["step"] and r["examples"] == 10000, r
b = json.load(open(md + "/export/best/eval.json"))
best = max(val, key=lambda e: e["accuracy"])
assert b["set"] == "validation" and b["accuracy"] == best["accuracy"], (b, best)
print("validation at steps %s, test %.4f at step %d; best export: step %d (validation %.4f)"
      % ([e["step"] for e in val], final["accuracy"], final["step"], b["global_step"], b["accuracy"]))
PY

need_python3 google.protobuf
command -v protoc > /dev/null || fail "needs protoc (protobuf-compiler): run scripts/setup.sh"
mkdir -p "$tmp/pb"
protoc --python_out="$tmp/pb" -I"$root/proto" "$root/proto/tensorboard.proto"
for set in validation eval; do
  ls "$md/$set"/events.out.tfevents.* > /dev/null 2>&1 || fail "no event file in $md/$set"
  "$py" "$root/tests/lib/read_events.py" "$tmp/pb" "$md/$set"/events.out.tfevents.* \
    > "$tmp/$set.ev" || fail "the events of $md/$set do not decode"
done
"$py" - "$md" "$tmp/validation.ev" "$tmp/eval.ev" <<'PY' || fail "TensorBoard's scalars"
import json, sys
md = sys.argv[1]
ev = {s: [json.loads(l) for l in open(p)] for s, p in (("validation", sys.argv[2]), ("test", sys.argv[3]))}
h = [json.loads(l) for l in open(md + "/eval_history.jsonl")]
for s, rows in ev.items():
    acc = {e["step"]: e["value"] for e in rows if e["tag"] == "accuracy"}
    want = {e["step"]: e["accuracy"] for e in h if e["set"] == s}
    assert sorted(acc) == sorted(want), (s, acc, want)
    assert all(abs(acc[k] - want[k]) < 1e-6 for k in want), (s, acc, want)
PY
echo ok

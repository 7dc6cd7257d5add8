#!/usr/bin/env bash
# A run records itself, real processes: a cluster run leaves in its
# model_dir config.json (every effective key, TF_CONFIG, versions),
# eval_history.jsonl (one line per evaluation: step, set, loss, accuracy,
# per class, time) and eval_results.json with Fashion-MNIST's class names
# and a confusion matrix that agrees with the accuracy; `pstrain evaluate`
# prints the same matrix; a standalone worker records itself once its data
# is loaded (a run refused at start leaves no model_dir); a TF_CONFIG field
# that looks like a secret is left out of config.json.
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
test_cleanup() { [ -n "${master:-}" ] && kill -9 "$master" 2> /dev/null; return 0; }
trap cluster_test_cleanup EXIT
need_fashion_mnist
md=$tmp/md
PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --set model=mlp --set train.max_steps=1000 \
  --set checkpoint.every_steps=100 --set train.learning_rate=0.02 --set checkpoint.model_dir="$md" \
  > "$tmp/out" 2>&1 || fail "run: $(tail -5 "$tmp/out")"
# Without data.val or data.val_split the master evaluates the test set only.
[ ! -e "$md/validation" ] || fail "a run without validation data wrote $md/validation"
python3 - "$md" "$build/pstrain" <<'PY' || fail "the run's record"
import json, subprocess, sys
md, pstrain = sys.argv[1], sys.argv[2]
c = json.load(open(md + "/config.json"))
keys = [l.split()[0] for l in subprocess.run([pstrain, "config"], capture_output=True, text=True).stdout.splitlines()[1:]
        if l.startswith("  ") and not l.startswith("      ")]
missing = [k for k in keys if k not in c["config"]]
assert not missing, "keys missing from config.json: %s" % missing
assert c["config"]["train.max_steps"] == 1000 and c["config"]["train.learning_rate"] == 0.02, c["config"]
assert c["tf_config"]["task"] == {"type": "master", "index": 0}, c["tf_config"]
assert len(c["tf_config"]["cluster"]["worker"]) == 2, c["tf_config"]
assert all(c["versions"].get(k) for k in ("pstrain", "json-c", "protobuf-c", "grpc", "libuv", "openblas")), c["versions"]
h = [json.loads(l) for l in open(md + "/eval_history.jsonl")]
assert len(h) >= 2, h
for e in h:
    assert e["set"] == "test" and len(e["per_class_accuracy"]) == 10 and e["time"] > 1.6e9, e
assert [e["step"] for e in h] == sorted(e["step"] for e in h), [e["step"] for e in h]
r = json.load(open(md + "/eval_results.json"))
assert h[-1]["step"] == r["global_step"] and h[-1]["accuracy"] == r["accuracy"], (h[-1], r)
assert r["class_names"][0] == "T-shirt/top" and r["class_names"][9] == "Ankle boot", r["class_names"]
m = r["confusion_matrix"]["matrix"]
assert r["confusion_matrix"]["classes"] == r["class_names"]
assert sum(map(sum, m)) == r["examples"] == 10000, sum(map(sum, m))
diag = sum(m[i][i] for i in range(10))
assert abs(diag / 10000 - r["accuracy"]) < 1e-12, (diag, r["accuracy"])
for i in range(10):
    assert abs(m[i][i] / sum(m[i]) - r["per_class_accuracy"][i]) < 1e-12, i
print("record: %d config keys, %d evaluations, confusion matrix diagonal %d" % (len(keys), len(h), diag))
PY
step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["global_step"])' "$md/eval_results.json")
"$build/pstrain" evaluate --model "$md/export/$step" > "$tmp/eval.out" || fail "pstrain evaluate: $(cat "$tmp/eval.out")"
grep -q "^confusion matrix (rows: true class, columns: predicted class):" "$tmp/eval.out" || fail "no matrix: $(cat "$tmp/eval.out")"
python3 - "$tmp/eval.out" "$md/eval_results.json" <<'PY' || fail "pstrain evaluate's matrix differs from eval_results.json: $(cat "$tmp/eval.out")"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
i = next(k for k, l in enumerate(lines) if l.startswith("confusion matrix"))
rows = [list(map(int, l[16:].split())) for l in lines[i + 2:i + 12]]
assert lines[i + 11].startswith(" 9 Ankle boot"), lines[i + 11]
assert rows == json.load(open(sys.argv[2]))["confusion_matrix"]["matrix"], rows
PY

# A standalone worker records itself too, once its data is loaded; one
# refused at start (no data) leaves no model_dir.
"$build/pstrain-worker" --set model=mlp --set train.max_steps=20 --set checkpoint.model_dir="$tmp/alone" \
  > "$tmp/alone.log" 2>&1 || fail "standalone run: $(tail -3 "$tmp/alone.log")"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["written_by"] == "pstrain-worker" and d["config"]["train.max_steps"] == 20, d' \
  "$tmp/alone/config.json" || fail "standalone config.json"
expect_error 65 "" "$build/pstrain-worker" --set model=mlp --set data.dir="$tmp/nodata" --set checkpoint.model_dir="$tmp/refused"
[ ! -e "$tmp/refused" ] || fail "a run refused at start left its model_dir"

# A secret in TF_CONFIG stays out of the record (a lone master writes
# config.json once its data is loaded).
. "$root/scripts/lib/ports.sh"
free_port
TF_CONFIG="{\"cluster\": {\"master\": [\"127.0.0.1:$port\"], \"ps\": [\"127.0.0.1:1\"], \"worker\": [\"127.0.0.1:2\"]}, \"task\": {\"type\": \"master\", \"index\": 0}, \"environment\": \"cloud\", \"auth_token\": \"s3cret-value\"}" \
  "$build/pstrain-master" --set model=mlp --set checkpoint.model_dir="$tmp/lone" 2> "$tmp/lone.log" &
master=$!
for _ in $(seq 1 300); do [ -f "$tmp/lone/config.json" ] && break; sleep 0.1; done
[ -f "$tmp/lone/config.json" ] || fail "a lone master wrote no config.json: $(cat "$tmp/lone.log")"
grep -q "s3cret" "$tmp/lone/config.json" && fail "a TF_CONFIG secret is in config.json"
grep -q '"environment":"cloud"' "$tmp/lone/config.json" || fail "TF_CONFIG is missing: $(cat "$tmp/lone/config.json")"
kill -TERM "$master"
wait "$master" || true
master=
echo ok

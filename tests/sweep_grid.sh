#!/usr/bin/env bash
# scripts/sweep.sh with real runs: a 4-trial grid over two learning rates and
# two batch sizes (the MLP, a few steps, standalone workers, 2 at a time)
# ends with a results table of 4 rows, printed, in results.csv and in the
# training log, each trial in a model_dir of its own; a random search of 2
# trials as local clusters (a log-scale range, YAML spec) ends the same way;
# with median stopping a trial far below the finished ones is stopped early;
# with data.val_split the metric is the validation set's, and the report
# draws validation curves;
# a bad spec is one clear line and exit 2.
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
test_cleanup() { pkill -f -- "checkpoint.model_dir=$tmp/" 2> /dev/null || true; }
trap 'test_cleanup; rm -rf "$tmp"' EXIT
need_fashion_mnist
export PSTRAIN_BUILD=$build

cat > "$tmp/grid.json" <<'JSON'
{"goal": "MAXIMIZE", "hyperparameterMetricTag": "accuracy", "algorithm": "GRID_SEARCH",
 "maxTrials": 4, "maxParallelTrials": 2,
 "params": [{"parameterName": "train.learning_rate", "type": "DISCRETE", "discreteValues": [0.01, 0.05]},
            {"parameterName": "train.batch_size", "type": "DISCRETE", "discreteValues": [32, 64]}],
 "trial": {"runner": "standalone", "args": ["--set", "model=mlp", "--set", "train.max_steps=150", "--set", "threads=1"]}}
JSON
timeout 600 "$root/scripts/sweep.sh" "$tmp/grid.json" --out "$tmp/grid" > "$tmp/grid.out" 2>&1 ||
  fail "grid sweep: $(tail -8 "$tmp/grid.out")"
python3 - "$tmp/grid" "$tmp/grid.out" "$tmp/training_log.md" <<'PY' || fail "grid sweep results: $(cat "$tmp/grid.out")"
import csv, json, sys
out, printed, log = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
rows = list(csv.reader(open(out + "/results.csv")))
assert rows[0] == ["trial", "train.learning_rate", "train.batch_size", "best accuracy", "steps", "secs", "status"], rows[0]
assert len(rows) == 5, rows
combos = sorted((r[1], r[2]) for r in rows[1:])
assert combos == [("0.01", "32"), ("0.01", "64"), ("0.05", "32"), ("0.05", "64")], combos
accs = [float(r[3]) for r in rows[1:]]
assert accs == sorted(accs, reverse=True), accs
for r in rows[1:]:
    assert r[6] == "done" and r[4] == "150", r
    res = json.load(open("%s/trial-%s/model/eval_results.json" % (out, r[0])))
    assert "%.4f" % res["accuracy"] == r[3], (res, r)
table = [l for l in printed.splitlines() if l.split()[:1] in (["1"], ["2"], ["3"], ["4"])]
assert len(table) == 4, printed
assert log.count("| done |") == 4, log
print("grid sweep: 4 trials, best accuracy %s (lr %s, batch %s)" % (rows[1][3], rows[1][1], rows[1][2]))
PY

# With a validation set (data.val_split) the metric is the validation
# set's: the test set is for the end. `pstrain report` draws the
# validation curve beside the test one.
cat > "$tmp/val.json" <<'JSON'
{"goal": "MAXIMIZE", "hyperparameterMetricTag": "accuracy", "algorithm": "GRID_SEARCH",
 "maxTrials": 2, "maxParallelTrials": 2,
 "params": [{"parameterName": "train.learning_rate", "type": "DISCRETE", "discreteValues": [0.01, 0.05]}],
 "trial": {"runner": "standalone", "args": ["--set", "model=mlp", "--set", "train.max_steps=150",
           "--set", "threads=1", "--set", "data.val_split=0.1"]}}
JSON
timeout 600 "$root/scripts/sweep.sh" "$tmp/val.json" --out "$tmp/val" > "$tmp/val.out" 2>&1 ||
  fail "validation sweep: $(tail -8 "$tmp/val.out")"
python3 - "$tmp/val" <<'PY' || fail "validation sweep results: $(cat "$tmp/val.out")"
import csv, json, sys
out = sys.argv[1]
rows = list(csv.reader(open(out + "/results.csv")))
assert rows[0] == ["trial", "train.learning_rate", "best validation accuracy", "steps", "secs", "status"], rows[0]
for r in rows[1:]:
    h = [json.loads(l) for l in open("%s/trial-%s/model/eval_history.jsonl" % (out, r[0]))]
    val = [e["accuracy"] for e in h if e["set"] == "validation"]
    test = [e["accuracy"] for e in h if e["set"] == "test"]
    assert val and test and r[2] == "%.4f" % max(val), (r, h)
print("validation sweep: best validation accuracy %s (lr %s)" % (rows[1][2], rows[1][1]))
PY
"$build/pstrain" report "$tmp/val/trial-1/model" --out "$tmp/val.html" > /dev/null ||
  fail "pstrain report of a run with a validation set"
for series in train validation test; do
  grep -qF "class=\"curve\" data-series=\"$series\"" "$tmp/val.html" ||
    fail "the report draws no $series curve"
done

cat > "$tmp/random.yaml" <<'YAML'
trainingInput:
  hyperparameters:
    goal: MINIMIZE
    hyperparameterMetricTag: loss
    maxTrials: 2
    maxParallelTrials: 1
    enableTrialEarlyStopping: true
    params:
      - parameterName: train.learning_rate
        type: DOUBLE
        minValue: 0.005
        maxValue: 0.1
        scaleType: UNIT_LOG_SCALE
    trial:
      runner: cluster
      ps: 1
      workers: 2
      args: [--set, model=mlp, --set, train.max_steps=200, --set, checkpoint.every_steps=100]
YAML
timeout 600 "$root/scripts/sweep.sh" "$tmp/random.yaml" --out "$tmp/random" > "$tmp/random.out" 2>&1 ||
  fail "random sweep: $(tail -8 "$tmp/random.out")"
python3 - "$tmp/random" <<'PY' || fail "random sweep results: $(cat "$tmp/random.out")"
import csv, sys
rows = list(csv.reader(open(sys.argv[1] + "/results.csv")))
assert rows[0] == ["trial", "train.learning_rate", "best loss", "steps", "secs", "status"], rows[0]
assert len(rows) == 3, rows
for r in rows[1:]:
    assert 0.005 <= float(r[1]) <= 0.1, r
    assert r[5] in ("done", "stopped early"), r
    assert r[2] != "-", r
assert rows[1][1] != rows[2][1], rows
PY
[ -f "$tmp/random/trial-1/runlogs/cluster.json" ] || fail "the cluster trial has no runlogs of its own"

# Median stopping: a third trial far below the median of the two finished
# ones at the same global step is stopped early.
cat > "$tmp/median.json" <<'JSON'
{"goal": "MAXIMIZE", "hyperparameterMetricTag": "accuracy", "algorithm": "GRID_SEARCH",
 "maxTrials": 3, "maxParallelTrials": 1, "enableTrialEarlyStopping": true,
 "params": [{"parameterName": "train.learning_rate", "type": "DISCRETE", "discreteValues": [0.05, 0.04, 0.00001]}],
 "trial": {"runner": "cluster", "ps": 1, "workers": 1,
           "args": ["--set", "model=mlp", "--set", "train.max_steps=3000", "--set", "checkpoint.every_steps=100"]}}
JSON
timeout 600 "$root/scripts/sweep.sh" "$tmp/median.json" --out "$tmp/median" > "$tmp/median.out" 2>&1 ||
  fail "median sweep: $(tail -8 "$tmp/median.out")"
python3 - "$tmp/median" <<'PY' || fail "median stopping: $(cat "$tmp/median.out")"
import csv, sys
rows = {r[0]: r for r in csv.reader(open(sys.argv[1] + "/results.csv"))}
assert rows["1"][5] == "done" and rows["2"][5] == "done", rows
assert rows["3"][5] == "stopped early", rows
assert int(rows["3"][3]) < 3000, rows["3"]
PY
pgrep -f -- "checkpoint.model_dir=$tmp/median/" > /dev/null && fail "the stopped trial left processes"

echo '{"params": [{"parameterName": "train.learning_rate", "type": "DOUBLE", "minValue": 0, "maxValue": 1, "scaleType": "UNIT_LOG_SCALE"}]}' > "$tmp/bad.json"
expect_error 2 "param train.learning_rate: a log scale needs minValue > 0" "$build/pstrain" sweep "$tmp/bad.json" --out "$tmp/bad"
echo ok

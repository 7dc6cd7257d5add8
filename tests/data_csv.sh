#!/usr/bin/env bash
# CSV input: scikit-learn's bundled digits data as Debian's python3-sklearn
# ships it (digits.csv.gz: 1797 rows of 64 pixel values 0..16 and a label,
# no header) trains an MLP to sensible accuracy, with a seeded validation
# split; CSV with a header of names takes the label column by name. Bad
# rows are one error naming the file, the line and the column, exit 65.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
worker=$build/pstrain-worker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
unset TF_CONFIG

digits=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
[ -f "$digits" ] || fail "$digits is missing: run scripts/setup.sh (python3-sklearn)"
cat > "$tmp/mlp.json" <<'JSON'
{"input": [64], "layers": [
  {"type": "dense", "units": 64, "activation": "relu"},
  {"type": "dense", "units": 10, "activation": "softmax"}]}
JSON
# The model's features are 0..16 as scikit-learn gives them: scaled by 1/16
# in a copy with a header, which also checks label-by-name.
zcat "$digits" | python3 -c '
import sys
rows = [l.strip().split(",") for l in sys.stdin if l.strip()]
print(",".join(["label"] + ["px%d" % i for i in range(64)]))
for r in rows:
    print(",".join([r[64]] + [repr(float(v) / 16) for v in r[:64]]))' > "$tmp/digits.csv"
head -1500 "$tmp/digits.csv" > "$tmp/train.csv"
{ head -1 "$tmp/digits.csv"; tail -n +1501 "$tmp/digits.csv"; } > "$tmp/test.csv"

run() {
  local dir=$1
  shift
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  "$worker" --set model="$tmp/mlp.json" --set train.epochs=30 --set train.batch_size=32 \
    --set threads=1 --set train.seed=3 --set checkpoint.model_dir="$tmp/$dir" \
    --set log.every_secs=100 "${sets[@]}" 2> "$tmp/$dir.log" ||
    fail "$dir: $(tail -3 "$tmp/$dir.log")"
}

# The file as shipped: gzip, no header, label last, unscaled.
run raw data.train="$digits" data.test="$digits" data.csv_header=none data.val_split=0.2
grep -q "1797 test examples" "$tmp/raw.log" || fail "not all 1797 rows read: $(grep model "$tmp/raw.log")"
grep -q "eval on validation" "$tmp/raw.log" || fail "no validation evaluation during training"
ls "$tmp"/raw/validation/events.out.tfevents.* > /dev/null ||
  fail "no TensorBoard validation scalars in model_dir/validation/"
ls "$tmp"/raw/eval/events.out.tfevents.* > /dev/null || fail "no TensorBoard test scalars"
python3 - "$tmp/raw" <<'PY' || fail "digits as shipped"
import json, sys
r = json.load(open(sys.argv[1] + "/eval_results.json"))
print("digits.csv.gz (val_split 0.2, test = all):", r["set"], r["accuracy"])
assert r["set"] == "test" and r["examples"] == 1797 and r["accuracy"] > 0.9, r
PY
n_val=$(sed -n 's/.* training, \([0-9]*\) validation.*/\1/p' "$tmp/raw.log")
[ "$n_val" -gt 300 ] && [ "$n_val" -lt 420 ] || fail "val_split 0.2 held out $n_val of 1797"

# Header with names, label by name, first column; held-out test rows.
run named data.train="$tmp/train.csv" data.test="$tmp/test.csv" data.label_column=label
python3 - "$tmp/named" <<'PY' || fail "digits with a header"
import json, sys
r = json.load(open(sys.argv[1] + "/eval_results.json"))
print("digits.csv, 1499 train rows, 298 test rows:", r["accuracy"])
assert r["examples"] == 298 and r["accuracy"] > 0.9, r
PY

bad() {
  local sets=()
  for kv in "${@:3}"; do sets+=(--set "$kv"); done
  printf '%b' "$2" > "$tmp/bad.csv"
  expect_error 65 "$1" "$worker" --set model="$tmp/mlp.json" \
    --set checkpoint.model_dir="$tmp/badrun" --set data.train="$tmp/bad.csv" \
    --set data.test="$tmp/test.csv" --set data.label_column=label "${sets[@]}"
}
good=$(sed -n 2p "$tmp/train.csv")
bad "$tmp/bad.csv: line 3: 64 fields, the first row has 65" \
  "$(head -1 "$tmp/train.csv")\n$good\n${good%,*}\n"
bad "$tmp/bad.csv: line 3, column 5: \"abc\" is not a finite number" \
  "$(head -1 "$tmp/train.csv")\n$good\n$(echo "$good" | awk -F, -v OFS=, '{$5="abc"; print}')\n"
bad "$tmp/bad.csv: line 2, column 1: label 10 is out of range [0, 10)" \
  "$(head -1 "$tmp/train.csv")\n10,${good#*,}\n"
bad "$tmp/bad.csv: line 2, column 1: label 2.5 is not an integer" \
  "$(head -1 "$tmp/train.csv")\n2.5,${good#*,}\n"
bad "$tmp/bad.csv: line 1: no label column \"klass\"" "$(head -1 "$tmp/train.csv")\n$good\n" \
  data.label_column=klass
bad "$tmp/bad.csv: line 1: 3 columns, so 2 features besides the label, but the model's input has 64" \
  "a,b,label\n1,2,3\n"
echo ok

#!/usr/bin/env bash
# Binary cross-entropy end to end: real Keras writes a model whose last layer
# is Dense(1, sigmoid); train.loss=auto picks binary_crossentropy (one log
# line); the standalone worker trains it 300 steps on scikit-learn's digits
# (digit 0 against the rest, from CSV) to test accuracy above 0.95; Keras's
# load_model of the exported model.keras predicts what `pstrain predict
# --probs` does within 1e-4 (the test split as 8x8 IDX images); a train.loss
# that the last layer does not fit is one error, exit 2.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
unset TF_CONFIG

digits=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
[ -f "$digits" ] || { echo "skip: $digits is missing (python3-sklearn)"; exit 77; }
need_keras

# Pixels 0..16 times 15: the same values as CSV floats (v * 15 / 255) and as
# IDX bytes (which pstrain and the test scale by 1/255). Label 1: digit 0.
python3 - "$digits" "$tmp" <<'PY'
import gzip, random, struct, sys
rows = [l.strip().split(",") for l in gzip.open(sys.argv[1], "rt") if l.strip()]
random.Random(1).shuffle(rows)
px = lambda r: [int(float(v)) * 15 for v in r[:64]]
lab = lambda r: 1 if int(float(r[64])) == 0 else 0
def csv(name, rs):
    with open(f"{sys.argv[2]}/{name}", "w") as f:
        for r in rs:
            f.write(",".join([repr(v / 255) for v in px(r)] + [str(lab(r))]) + "\n")
train, test = rows[:1400], rows[1400:]
csv("train.csv", train)
csv("test.csv", test)
with open(f"{sys.argv[2]}/test-images.idx", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, len(test), 8, 8) + bytes(v for r in test for v in px(r)))
with open(f"{sys.argv[2]}/test-labels.idx", "wb") as f:
    f.write(struct.pack(">II", 0x801, len(test)) + bytes(lab(r) for r in test))
PY

kpy json binary "$tmp/binary.json"
"$build/pstrain" summary --model "$tmp/binary.json" > "$tmp/summary.txt" 2>&1 ||
  fail "pstrain summary: $(tail -3 "$tmp/summary.txt")"
common=(--set model="$tmp/binary.json" --set data.train="$tmp/train.csv"
  --set data.test="$tmp/test.csv" --set data.csv_header=none --set train.batch_size=32)
"$build/pstrain-worker" "${common[@]}" --set train.max_steps=300 --set train.optimizer=adam \
  --set train.learning_rate=0.01 --set checkpoint.model_dir="$tmp/run" 2> "$tmp/train.log" ||
  fail "training: $(tail -3 "$tmp/train.log")"
grep -q 'Keras JSON; loss binary_crossentropy' "$tmp/train.log" ||
  fail "no log line for the inferred loss: $(head -5 "$tmp/train.log")"
grep -q 'train.loss auto: binary_crossentropy' "$tmp/train.log" ||
  fail "no train.loss auto line: $(head -5 "$tmp/train.log")"
acc=$(sed -n 's/.*eval on test at step 300 .*accuracy: \([0-9.]*\) .*/\1/p' "$tmp/train.log")
python3 -c "import sys; sys.exit(0 if float('${acc:-0}') > 0.95 else 1)" ||
  fail "test accuracy '${acc}' after 300 steps: $(grep 'eval on test' "$tmp/train.log" | tail -2)"

export=$tmp/run/export/300
[ -f "$export/model.keras" ] || fail "no model.keras in $export: $(ls "$export")"
"$build/pstrain" predict --model "$export" --probs --labels "$tmp/test-labels.idx" \
  "$tmp/test-images.idx" > "$tmp/pred.out" 2> "$tmp/pred.err" ||
  fail "pstrain predict: $(tail -3 "$tmp/pred.err")"
kpy predict "$export/model.keras" "$tmp/pred.out" "$tmp/test-images.idx" | tee "$tmp/compare"

# A loss the last layer does not fit is one error, exit 2.
rc=0
"$build/pstrain-worker" "${common[@]}" --set train.max_steps=1 \
  --set train.loss=sparse_categorical_crossentropy --set checkpoint.model_dir="$tmp/bad" \
  2> "$tmp/bad.log" || rc=$?
[ "$rc" = 2 ] || fail "train.loss that does not fit: exit $rc, want 2: $(tail -2 "$tmp/bad.log")"
grep -q 'needs the last layer to be Dense with softmax' "$tmp/bad.log" ||
  fail "no clear error: $(tail -2 "$tmp/bad.log")"
echo "binary: test accuracy $acc after 300 steps; Keras's load_model predicts the same; ok"

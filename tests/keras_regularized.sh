#!/usr/bin/env bash
# L2 regularizers, DepthwiseConv2D and a .keras file's compile loss end to
# end: real Keras saves a compiled, untrained model.keras (Conv2D,
# DepthwiseConv2D and Dense with L2 regularizers, logits out, compiled with
# SparseCategoricalCrossentropy(from_logits=True)); the standalone worker
# trains it from model=FILE.keras, taking the loss from its compile_config
# (one log line says so), and exports; Keras's load_model of the export
# predicts pstrain's probabilities within 1e-4, and Keras's evaluate, whose
# loss holds the regularizers' term, gives `pstrain evaluate`'s loss.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
need_fashion_mnist

need_keras
unset TF_CONFIG

kpy save regularized "$tmp/reg.keras"
"$build/pstrain" summary --model "$tmp/reg.keras" > "$tmp/summary.txt" 2>&1 ||
  fail "pstrain summary of a .keras file: $(tail -3 "$tmp/summary.txt")"
grep -q 'DepthwiseConv2D' "$tmp/summary.txt" || fail "summary: $(cat "$tmp/summary.txt")"
"$build/pstrain-worker" --set model="$tmp/reg.keras" --set train.max_steps=200 \
  --set train.batch_size=32 --set train.optimizer=adam --set train.learning_rate=0.003 \
  --set checkpoint.model_dir="$tmp/run" 2> "$tmp/train.log" ||
  fail "training: $(tail -3 "$tmp/train.log")"
grep -q "train.loss auto: sparse_categorical_crossentropy_from_logits (the loss $tmp/reg.keras was compiled with)" \
  "$tmp/train.log" || fail "no log line for the compiled loss: $(head -8 "$tmp/train.log")"

export=$tmp/run/export/200
[ -f "$export/model.keras" ] || fail "no model.keras in $export: $(ls "$export")"
"$build/pstrain" evaluate --model "$export" > "$tmp/eval.out" 2> "$tmp/eval.err" ||
  fail "pstrain evaluate: $(tail -3 "$tmp/eval.err")"
loss=$(sed -n 's/^step 200: loss: \([0-9.]*\) .*/\1/p' "$tmp/eval.out")
[ -n "$loss" ] || fail "no loss in: $(cat "$tmp/eval.out")"
"$build/pstrain" predict --model "$export" --probs --labels "$data/t10k-labels-idx1-ubyte.gz" \
  "$data/t10k-images-idx3-ubyte.gz" > "$tmp/pred.out" 2> "$tmp/pred.err" ||
  fail "pstrain predict: $(tail -3 "$tmp/pred.err")"
kpy check_export regularized "$export/model.keras" "$tmp/pred.out" \
  "$data/t10k-images-idx3-ubyte.gz" "$data/t10k-labels-idx1-ubyte.gz" "$loss"

# Categorical cross-entropy: pstrain's class indexes stand for the one-hot
# labels Keras evaluates with; the losses agree.
python3 - "$tmp/reg.keras" "$tmp/cat.keras" "$tmp/hinge.keras" <<'PY'
import json, sys, zipfile
src, cat, hinge = sys.argv[1:]
for dst, loss in ((cat, {"module": "keras.losses", "class_name": "CategoricalCrossentropy",
                        "config": {"from_logits": True}, "registered_name": None}),
                  (hinge, "hinge")):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                cfg = json.loads(data)
                cfg["compile_config"]["loss"] = loss
                data = json.dumps(cfg).encode()
            zout.writestr(item, data)
PY
"$build/pstrain" evaluate --model "$tmp/cat.keras" > "$tmp/cat.out" 2> "$tmp/cat.err" ||
  fail "pstrain evaluate of a categorical .keras: $(tail -3 "$tmp/cat.err")"
grep -q "train.loss auto: categorical_crossentropy_from_logits" "$tmp/cat.err" ||
  fail "no log line for the categorical loss: $(head -5 "$tmp/cat.err")"
cat_loss=$(sed -n 's/.*loss: \([0-9.]*\) .*/\1/p' "$tmp/cat.out" | head -1)
[ -n "$cat_loss" ] || fail "no loss in: $(cat "$tmp/cat.out")"
kpy check_categorical "$tmp/cat.keras" "$data/t10k-images-idx3-ubyte.gz" \
  "$data/t10k-labels-idx1-ubyte.gz" "$cat_loss"
# A compile loss pstrain cannot train is one error, exit 2.
expect_error 2 "compile_config: loss hinge is not supported" \
  "$build/pstrain-worker" --set model="$tmp/hinge.keras" --set train.max_steps=1 \
  --set checkpoint.model_dir="$tmp/bad"
# A weights file is not a model.
expect_error 2 "holds weights only: model= takes a .keras file" \
  "$build/pstrain" summary --model "$tmp/run/none.weights.h5"
echo "ok: pstrain evaluate loss $loss, as Keras's with its regularizers"

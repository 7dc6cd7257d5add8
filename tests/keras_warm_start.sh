#!/usr/bin/env bash
# .keras and .weights.h5 in: real Keras trains a model briefly and saves it;
# `pstrain predict --model FILE.keras` gives Keras's predictions on the whole
# test set (within 1e-4); train.warm_start_from a .weights.h5 starts pstrain
# from Keras's weights exactly (an export after one step of a vanishing
# learning rate predicts as Keras does); a file whose layers do not fit is
# one error naming the tensor and the layers found.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
need_fashion_mnist

need_keras
images=$data/t10k-images-idx3-ubyte.gz
labels=$data/t10k-labels-idx1-ubyte.gz

unset TF_CONFIG
kpy json small "$tmp/small.json"
kpy fit small "$data" "$tmp/kt"

# Keras's own file, evaluated and predicted by pstrain.
"$build/pstrain" evaluate --model "$tmp/kt.keras" --set data.dir="$data" > "$tmp/eval.out"
grep -q 'accuracy: 0\.[0-9]* (10000 examples)' "$tmp/eval.out" || fail "evaluate: $(cat "$tmp/eval.out")"
"$build/pstrain" predict --model "$tmp/kt.keras" --probs --labels "$labels" "$images" > "$tmp/kt.out"
kpy predict "$tmp/kt.keras" "$tmp/kt.out" "$images"

# Keras's weights warm-start pstrain.
"$build/pstrain-worker" --set model="$tmp/small.json" --set train.warm_start_from="$tmp/kt.weights.h5" \
  --set train.max_steps=1 --set train.optimizer=sgd --set train.learning_rate=1e-30 \
  --set checkpoint.model_dir="$tmp/run" 2> "$tmp/log" || fail "warm start: $(tail -3 "$tmp/log")"
grep -q "warm-started the variables matching \".\*\" from $tmp/kt.weights.h5" "$tmp/log" ||
  fail "no warm-start line: $(cat "$tmp/log")"
"$build/pstrain" predict --model "$tmp/run/export/1" --probs --labels "$labels" "$images" \
  > "$tmp/ws.out"
kpy predict "$tmp/kt.keras" "$tmp/ws.out" "$images"

# Files that do not fit: one error naming the tensor and what the file has.
expect_error 65 'no weights for dense_2/kernel (Keras'"'"'s group layers/dense_2); the file has weights for: conv2d, conv2d_1, dense, dense_1' \
  "$build/pstrain-worker" --set model=mlp --set train.max_steps=1 \
  --set train.warm_start_from="$tmp/kt.keras" --set train.warm_start_vars='dense_2.*' \
  --set checkpoint.model_dir="$tmp/bad1"
expect_error 65 "layers/conv2d/vars/0 has shape [3, 3, 1, 8]; pstrain's conv2d/kernel is [3, 3, 1, 32]" \
  "$build/pstrain-worker" --set model=cnn --set train.max_steps=1 \
  --set train.warm_start_from="$tmp/kt.keras" --set checkpoint.model_dir="$tmp/bad2"
echo '{"input": [28, 28, 1], "layers": [{"type": "flatten"}, {"type": "dense", "name": "head",
  "units": 10, "activation": "softmax"}]}' > "$tmp/head.json"
expect_error 65 'it has no tensor "head/kernel"; the names found: features/kernel, features/bias' \
  "$build/pstrain-worker" --set model="$tmp/head.json" --set train.max_steps=1 \
  --set train.warm_start_from="$tmp/run/export/1" --set checkpoint.model_dir="$tmp/bad3"
expect_error 65 "kt.weights.h5 holds weights only" "$build/pstrain" evaluate --model "$tmp/kt.weights.h5"
# Damaged files: one error naming the file and what is wrong.
echo "not a zip" > "$tmp/text.keras"
expect_error 65 "$tmp/text.keras: not a readable .keras (zip) file" \
  "$build/pstrain" evaluate --model "$tmp/text.keras"
python3 - "$tmp/kt.keras" "$tmp/noweights.keras" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as src, zipfile.ZipFile(sys.argv[2], "w") as dst:
    for name in ("config.json", "metadata.json"):
        dst.writestr(name, src.read(name))
PY
expect_error 65 "$tmp/noweights.keras: no model.weights.h5 inside" \
  "$build/pstrain" evaluate --model "$tmp/noweights.keras"
head -c 5000 "$tmp/kt.weights.h5" > "$tmp/cut.weights.h5"
expect_error 65 "$tmp/cut.weights.h5: not a readable HDF5 file" \
  "$build/pstrain-worker" --set model="$tmp/small.json" --set train.max_steps=1 \
  --set train.warm_start_from="$tmp/cut.weights.h5" --set checkpoint.model_dir="$tmp/bad4"
echo ok

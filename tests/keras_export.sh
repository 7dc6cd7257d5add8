#!/usr/bin/env bash
# .keras out: real Keras writes a model's to_json() (the new layers and
# activations: gelu, silu, tanh, sigmoid, average pooling, reshape); the
# standalone worker trains it 300 steps on Fashion-MNIST and exports; Keras's
# keras.models.load_model opens the export's model.keras and its predictions
# on the whole test set match `pstrain predict --probs` within 1e-4.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
need_fashion_mnist

venv=$("$root/scripts/peers_venv.sh") || fail "scripts/peers_venv.sh could not make the venv"
kpy() { KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" \
  "$root/tests/lib/keras_models.py" "$@"; }

unset TF_CONFIG
kpy json small "$tmp/small.json"
"$build/pstrain-worker" --set model="$tmp/small.json" --set train.max_steps=300 \
  --set train.batch_size=32 --set train.optimizer=adam --set train.learning_rate=0.003 \
  --set checkpoint.model_dir="$tmp/run" 2> "$tmp/log" || fail "training: $(tail -3 "$tmp/log")"
grep -q 'Keras JSON; loss sparse_categorical_crossentropy' "$tmp/log" ||
  fail "no log line for the inferred loss: $(head -5 "$tmp/log")"
export=$tmp/run/export/300
[ -f "$export/model.keras" ] || fail "no model.keras in $export: $(ls "$export")"
"$build/pstrain" predict --model "$export" --probs --labels "$data/t10k-labels-idx1-ubyte.gz" \
  "$data/t10k-images-idx3-ubyte.gz" > "$tmp/predict.out"
kpy predict "$export/model.keras" "$tmp/predict.out" "$data/t10k-images-idx3-ubyte.gz" \
  | tee "$tmp/compare.out"
# Trained, not a constant: well above chance after 300 steps.
acc=$(sed -n 's/.*accuracy \([0-9.]*\)$/\1/p' "$tmp/compare.out")
python3 -c "import sys; sys.exit(0 if float('$acc') > 0.6 else 1)" ||
  fail "accuracy $acc after 300 steps"
echo ok

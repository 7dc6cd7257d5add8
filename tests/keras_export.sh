#!/usr/bin/env bash
# .keras out: real Keras writes models' to_json() (the new layers and
# activations: gelu, silu, tanh, sigmoid, average pooling, reshape; and a
# residual Functional graph); the standalone worker trains each 300 steps on
# Fashion-MNIST and exports; Keras's
# keras.models.load_model opens the export's model.keras and its predictions
# on the whole test set match `pstrain predict --probs` within 1e-4.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
need_fashion_mnist

need_keras

unset TF_CONFIG
# small: the new layers and activations (Sequential); residual: a Functional
# graph of residual blocks (Add), a gate (Multiply) and two branches joined by
# Concatenate.
for name in small residual; do
  kpy json $name "$tmp/$name.json"
  "$build/pstrain-worker" --set model="$tmp/$name.json" --set train.max_steps=300 \
    --set train.batch_size=32 --set train.optimizer=adam --set train.learning_rate=0.003 \
    --set checkpoint.model_dir="$tmp/$name" 2> "$tmp/$name.log" ||
    fail "training $name: $(tail -3 "$tmp/$name.log")"
  grep -q 'Keras JSON; loss sparse_categorical_crossentropy' "$tmp/$name.log" ||
    fail "no log line for the inferred loss: $(head -5 "$tmp/$name.log")"
  export=$tmp/$name/export/300
  [ -f "$export/model.keras" ] || fail "no model.keras in $export: $(ls "$export")"
  "$build/pstrain" predict --model "$export" --probs --labels "$data/t10k-labels-idx1-ubyte.gz" \
    "$data/t10k-images-idx3-ubyte.gz" > "$tmp/$name.out"
  kpy predict "$export/model.keras" "$tmp/$name.out" "$data/t10k-images-idx3-ubyte.gz" \
    | tee "$tmp/$name.compare"
  # Trained, not a constant: well above chance after 300 steps.
  acc=$(sed -n 's/.*accuracy \([0-9.]*\)$/\1/p' "$tmp/$name.compare")
  python3 -c "import sys; sys.exit(0 if float('$acc') > 0.6 else 1)" ||
    fail "$name: accuracy $acc after 300 steps"
  echo "$name: trained 300 steps, accuracy $acc; Keras's load_model predicts the same"
done
echo ok

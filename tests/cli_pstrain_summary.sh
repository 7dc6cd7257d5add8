#!/usr/bin/env bash
# `pstrain summary` prints Keras's model.summary() table for builtin and file
# models, and names what is wrong with a bad one.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$build/pstrain" summary)
for want in 'conv2d (Conv2D)' '(None, 28, 28, 64)' 'max_pooling2d (MaxPooling2D)' \
            'dense (Dense)' '(None, 128)' '1605760' 'Total params: 1,625,866'; do
  grep -qF "$want" <<< "$out" || fail "summary lacks '$want': $out"
done
out=$("$build/pstrain" summary --model mlp)
grep -qF 'Total params: 118,282' <<< "$out" || fail "mlp summary: $out"

cat > "$tmp/m.json" <<'JSON'
{"input": [28, 28, 1], "layers": [
  {"type": "conv2d", "filters": 8, "kernel_size": [5, 5], "strides": 2, "name": "stem"},
  {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}]}
JSON
out=$("$build/pstrain" summary --model "$tmp/m.json")
grep -qF 'stem (Conv2D)' <<< "$out" || fail "named layer: $out"
grep -qF '(None, 12, 12, 8)' <<< "$out" || fail "valid stride-2 shape: $out"

echo '{"input": [28, 28, 1], "layers": [{"type": "conv2d", "filters": 8}]}' > "$tmp/bad.json"
set +e
err=$("$build/pstrain" summary --model "$tmp/bad.json" 2>&1 >/dev/null)
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "bad model exited $rc, want 2"
grep -qF 'layer 0 (conv2d): "kernel_size"' <<< "$err" || fail "error: $err"
grep -qF "$tmp/bad.json" <<< "$err" || fail "error does not name the file: $err"
echo ok

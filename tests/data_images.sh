#!/usr/bin/env bash
# Image folders in Keras's image_dataset_from_directory layout: Fashion-MNIST
# as PNG files in one folder per class train to sensible accuracy; the class
# names (sorted folder names) land in model_dir/class_names.json and the
# export, and `pstrain predict` prints them; RGB JPEGs of another size are
# made gray and resized to the model's input; streamed (data.stream) they
# train exactly as read whole. An undecodable image or a
# class the training set lacks is one error naming the file, exit 65.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
worker=$build/pstrain-worker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
need_fashion_mnist
need_python3 numpy PIL
unset TF_CONFIG

"$py" "$root/tests/lib/make_image_folders.py" "$data" "$tmp/img" 6000 1000
run() {
  local dir=$1
  shift
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  "$worker" --set model=mlp --set train.max_steps=400 --set threads=1 --set train.seed=5 \
    --set checkpoint.model_dir="$tmp/$dir" --set log.every_secs=100 "${sets[@]}" \
    2> "$tmp/$dir.log" || fail "$dir: $(tail -3 "$tmp/$dir.log")"
}

run png data.train="$tmp/img/train" data.test="$tmp/img/test"
grep -q "6000 training, 0 validation and 1000 test examples" "$tmp/png.log" ||
  fail "counts: $(grep 'model mlp' "$tmp/png.log")"
python3 - "$tmp/png" <<'PY' || fail "image folder training"
import json, sys
d = sys.argv[1]
r = json.load(open(d + "/eval_results.json"))
print("PNG folders, 6000 train, 1000 test:", r["accuracy"])
assert r["examples"] == 1000 and r["accuracy"] > 0.7, r
names = json.load(open(d + "/class_names.json"))
want = sorted(["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle_boot"])
assert names == want, names
PY
ls "$tmp"/png/export/*/class_names.json > /dev/null || fail "the export lacks class_names.json"

# predict names the class: test image 0 is an ankle boot, 1 a pullover.
"$build/pstrain" predict --model "$tmp/png" "$tmp/img/test/Ankle_boot/00000.png" \
  "$tmp/img/test/Pullover/00001.png" > "$tmp/predict.out"
cat "$tmp/predict.out"
grep -q "00000.png: class 0 (Ankle_boot)" "$tmp/predict.out" || fail "predict: no class name"
grep -q "00001.png: class [0-9] (Pullover)" "$tmp/predict.out" || fail "predict: wrong or no name"

# pstrain evaluate names its data: the same test folder, the same accuracy.
"$build/pstrain" evaluate --model "$tmp/png" --set data.train="$tmp/img/train" \
  --set data.test="$tmp/img/test" > "$tmp/evaluate.out"
want=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["accuracy"])' \
  "$tmp/png/eval_results.json")
grep -q "accuracy: $want (1000 examples)" "$tmp/evaluate.out" ||
  fail "evaluate: $(cat "$tmp/evaluate.out"), want accuracy $want"

# RGB JPEGs at 36x36 (test classes only: a subset of training's), with a
# validation folder: gray, resized, labelled by the training classes.
run rgb data.train="$tmp/img/train" data.val="$tmp/img/rgb" data.test="$tmp/img/rgb"
grep -q "eval on validation" "$tmp/rgb.log" || fail "no validation evaluation"
python3 - "$tmp/rgb" <<'PY' || fail "RGB JPEG folders"
import json, sys
r = json.load(open(sys.argv[1] + "/eval_results.json"))
print("36x36 RGB JPEG test folder:", r["accuracy"])
assert r["examples"] == 100 and r["accuracy"] > 0.5, r
PY

# Streamed (data.stream): without shuffling, the same batches and numbers
# as read whole without shuffling (class by class, so it learns little:
# the point is that the two are equal); the class names are kept.
run mem data.train="$tmp/img/train" data.test="$tmp/img/test" data.shuffle=false
run stream data.train="$tmp/img/train" data.test="$tmp/img/test" data.shuffle=false \
  data.stream=true
result() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(repr(r["loss"]), repr(r["accuracy"]))' "$1"; }
a=$(result "$tmp/mem/eval_results.json")
b=$(result "$tmp/stream/eval_results.json")
echo "image folders unshuffled in memory: $a; streamed: $b"
[ "$a" = "$b" ] || fail "the streamed image folders train differently: $b vs $a"
cmp -s "$tmp/mem/class_names.json" "$tmp/stream/class_names.json" ||
  fail "the stream's class names: $(cat "$tmp/stream/class_names.json")"

bad() {
  local sets=()
  for kv in "${@:2}"; do sets+=(--set "$kv"); done
  expect_error 65 "$1" "$worker" --set model=mlp --set checkpoint.model_dir="$tmp/bad" \
    "${sets[@]}"
}
mkdir -p "$tmp/broken/Bag" "$tmp/other/Hat"
cp "$tmp/img/test/Bag/"*.png "$tmp/broken/Bag/"
head -c 100 "$(ls "$tmp"/img/test/Bag/*.png | head -1)" > "$tmp/broken/Bag/zz.png"
echo "not an image" > "$tmp/broken/Bag/zz2.jpg"
bad "$tmp/broken/Bag/zz.png: bad PNG" data.train="$tmp/broken" data.test="$tmp/img/test"
rm "$tmp/broken/Bag/zz.png"
bad "$tmp/broken/Bag/zz2.jpg: neither a PNG nor a JPEG image" data.train="$tmp/broken" \
  data.test="$tmp/img/test"
cp "$tmp/img/test/Bag/"*.png "$tmp/other/Hat/"
bad "$tmp/other/Hat: class \"Hat\" is not one of the training set's 10 classes" \
  data.train="$tmp/img/train" data.test="$tmp/other"
echo ok

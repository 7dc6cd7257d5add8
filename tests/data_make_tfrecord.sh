#!/usr/bin/env bash
# pstrain make-tfrecord: IDX, image folders and CSV converted to sharded
# TFRecord files of tf.train.Example, images raw or (--encode png) as PNG
# bytes. TensorFlow (the peers venv's tf.data.TFRecordDataset, and
# tf.io.decode_png) reads the shards back to the IDX bytes and labels;
# training on the shards, raw or PNG, gives exactly the numbers training on
# the source gives (same examples, same order). A bad source is exit 65.
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

"$build/pstrain" make-tfrecord --input "$data/train-images-idx3-ubyte.gz" --out "$tmp/train" \
  --shards 3 --gzip > "$tmp/mk.out"
"$build/pstrain" make-tfrecord --input "$data/t10k-images-idx3-ubyte.gz" --out "$tmp/test" \
  > /dev/null
grep -q "train-00002-of-00003.tfrecord.gz: 20000 examples" "$tmp/mk.out" || fail "$(cat "$tmp/mk.out")"

# --encode png: the images as PNG bytes, as the Estimator template's
# make_tfrec wrote them (tf.io.encode_png).
"$build/pstrain" make-tfrecord --input "$data/train-images-idx3-ubyte.gz" --out "$tmp/png" \
  --shards 2 --encode png > /dev/null
expect_error 2 '--encode "jpeg": raw or png' "$build/pstrain" make-tfrecord \
  --input "$data/t10k-images-idx3-ubyte.gz" --out "$tmp/x" --encode jpeg

need_keras
"$venv/bin/python" - "$tmp" "$data" <<'PY' 2> "$tmp/tf.log" || fail "TensorFlow: $(tail -3 "$tmp/tf.log")"
import glob, gzip, sys
import numpy as np
import tensorflow as tf
tmp, data = sys.argv[1:]
def idx(name):
    b = gzip.open(f"{data}/{name}", "rb").read()
    return np.frombuffer(b, np.uint8, offset=16 if b[3] == 3 else 8)
images, labels = idx("train-images-idx3-ubyte.gz").reshape(-1, 784), idx("train-labels-idx1-ubyte.gz")
files = sorted(glob.glob(tmp + "/train-*.tfrecord.gz"))
n = 0
for rec in tf.data.TFRecordDataset(files, compression_type="GZIP"):
    f = tf.train.Example.FromString(rec.numpy()).features.feature
    assert f["label"].int64_list.value[0] == labels[n], n
    assert f["image"].bytes_list.value[0] == images[n].tobytes(), n
    assert [f[k].int64_list.value[0] for k in ("height", "width", "depth")] == [28, 28, 1]
    n += 1
assert n == 60000, n
print("TensorFlow read", n, "examples equal to the IDX files")
# Every 10th record of both shards (decoding all takes long in Python).
n = 0
for rec in tf.data.TFRecordDataset(sorted(glob.glob(tmp + "/png-*.tfrecord"))).shard(10, 0):
    f = tf.train.Example.FromString(rec.numpy()).features.feature
    png = tf.io.decode_png(f["image"].bytes_list.value[0]).numpy()
    assert png.shape == (28, 28, 1) and png.tobytes() == images[n * 10].tobytes(), n
    assert f["label"].int64_list.value[0] == labels[n * 10], n
    n += 1
assert n == 6000, n
print("TensorFlow decoded", n, "PNG examples (every 10th) equal to the IDX images")
PY
grep "TensorFlow read\|TensorFlow decoded" "$tmp/tf.log" || true

train() {
  local run=$1 model=$2
  shift 2
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  "$worker" --set model="$model" --set train.max_steps=200 --set threads=1 --set train.seed=9 \
    --set checkpoint.model_dir="$tmp/$run" --set log.every_secs=100 "${sets[@]}" \
    2> "$tmp/$run.log" || fail "$run: $(tail -3 "$tmp/$run.log")"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["examples"], repr(r["loss"]), repr(r["accuracy"]))' \
    "$tmp/$run/eval_results.json"
}
a=$(train idx mlp)
b=$(train shards mlp data.train="$tmp/train-*.tfrecord.gz" data.test="$tmp/test.tfrecord")
echo "IDX: $a; shards: $b"
[ "$a" = "$b" ] || fail "the shards train differently from IDX"
c=$(train png mlp data.train="$tmp/png-*.tfrecord" data.test="$tmp/test.tfrecord")
echo "PNG shards: $c"
[ "$a" = "$c" ] || fail "the PNG shards train differently from IDX: $c vs $a"

# Image folders (classes by folder name) through make-tfrecord.
"$py" "$root/tests/lib/make_image_folders.py" "$data" "$tmp/img" 2000 500
"$build/pstrain" make-tfrecord --input "$tmp/img/train" --out "$tmp/folders" > /dev/null
a=$(train folders mlp data.train="$tmp/img/train" data.test="$tmp/img/test")
b=$(train folders_tfr mlp data.train="$tmp/folders.tfrecord" data.test="$tmp/img/test")
echo "folders: $a; their TFRecord: $b"
[ "$a" = "$b" ] || fail "image folders and their TFRecord train differently"

# CSV (features as a float list).
digits=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
echo '{"input": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
  {"type": "dense", "units": 10, "activation": "softmax"}]}' > "$tmp/mlp64.json"
"$build/pstrain" make-tfrecord --input "$digits" --csv-header none --out "$tmp/digits" \
  --shards 2 > /dev/null
a=$(train csv "$tmp/mlp64.json" data.train="$digits" data.test="$digits" data.csv_header=none)
b=$(train csv_tfr "$tmp/mlp64.json" data.train="$tmp/digits-*.tfrecord" \
  data.test="$tmp/digits-*.tfrecord")
echo "digits CSV: $a; its TFRecord: $b"
[ "$a" = "$b" ] || fail "the CSV and its TFRecord train differently"

printf 'a,b\n1,x\n' > "$tmp/bad.csv"
expect_error 65 "$tmp/bad.csv: line 2, column 2: \"x\" is not a finite number" \
  "$build/pstrain" make-tfrecord --input "$tmp/bad.csv" --out "$tmp/bad"
expect_error 2 "--shards" "$build/pstrain" make-tfrecord --input "$digits" --out "$tmp/x" --shards 0
echo ok

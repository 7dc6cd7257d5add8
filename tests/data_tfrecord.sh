#!/usr/bin/env bash
# TFRecord files of tf.train.Example as TensorFlow writes them (the peers
# venv's tf.io.TFRecordWriter, as the Estimator template's make_tfrec did):
# training on them gives exactly the numbers training on the same images as
# IDX gives (same seed, same order); PNG in gzip shards named by a glob
# equals raw pixels; JPEG trains. Every bad record is one error naming the
# file and the record, exit 65.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
worker=$build/pstrain-worker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
need_fashion_mnist
unset TF_CONFIG

need_keras
"$venv/bin/python" "$root/tests/lib/make_tfrec.py" "$data" "$tmp" 2> "$tmp/tf.log" ||
  fail "make_tfrec.py: $(tail -5 "$tmp/tf.log")"

# train RUN KEY=VALUE...: a short, seeded standalone MLP run; prints the
# final evaluation's loss and accuracy as eval_results.json has them.
train() {
  local run=$1
  shift
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  "$worker" --set model=mlp --set train.max_steps=300 --set threads=1 --set train.seed=7 \
    --set checkpoint.model_dir="$tmp/$run" --set log.every_secs=100 "${sets[@]}" \
    2> "$tmp/$run.log" || fail "$run: $(tail -3 "$tmp/$run.log")"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["set"], r["examples"], repr(r["loss"]), repr(r["accuracy"]))' \
    "$tmp/$run/eval_results.json"
}

idx=$(train idx)
tfr=$(train tfr data.train="$tmp/train.tfrecords" data.test="$tmp/test.tfrecords")
echo "IDX:      $idx"
echo "TFRecord: $tfr"
[ "$idx" = "$tfr" ] || fail "TFRecord training differs from IDX: $tfr vs $idx"
case $idx in "test 10000 "*) ;; *) fail "unexpected evaluation: $idx" ;; esac
awk -v a="${idx##* }" 'BEGIN { exit !(a > 0.7) }' || fail "accuracy $idx too low to mean learning"

# The same 2000 images raw, and as PNG in two gzip shards under another
# feature name: the same numbers.
raw=$(train raw data.train="$tmp/small.tfrecords" data.test="$tmp/small.tfrecords")
png=$(train png data.train="$tmp/small-png-*.tfrecord.gz" data.test="$tmp/small-png-*.tfrecord.gz" \
  data.image_feature=image_png data.format=tfrecord)
echo "raw: $raw; PNG: $png"
[ "$raw" = "$png" ] || fail "PNG records train differently from raw ones: $png vs $raw"
grep -q "2000 training" "$tmp/png.log" || fail "the glob did not take both shards"

# JPEG (lossy, so only: it decodes and learns something).
jpg=$(train jpg data.train="$tmp/small.jpg.tfrecords" data.test="$tmp/test.tfrecords")
echo "JPEG: $jpg"
# Records of 887 bytes: 12 of length and its CRC, 871 of Example, 4 of CRC.
awk -v a="${jpg##* }" 'BEGIN { exit !(a > 0.5) }' || fail "JPEG training did not learn: $jpg"

# Streaming (data.stream): without shuffling it reads the files in order, so
# it trains exactly as the in-memory loader without shuffling does.
mem=$(train mem data.train="$tmp/train.tfrecords" data.test="$tmp/test.tfrecords" data.shuffle=false)
st=$(train stream data.train="$tmp/train.tfrecords" data.test="$tmp/test.tfrecords" \
  data.shuffle=false data.stream=true)
echo "unshuffled in memory: $mem; streamed: $st"
[ "$mem" = "$st" ] || fail "the stream trains differently from the in-memory loader"
# Shuffled through a 5000-example buffer over 4 copies of the training set
# (240000 examples, 212 MB of records): it learns, and memory holds the
# buffer, not the data (whole, the images alone would take 188 MiB).
for i in 1 2 3 4; do cp "$tmp/train.tfrecords" "$tmp/big-$i.tfrecords"; done
big=$(train big data.train="$tmp/big-*.tfrecords" data.test="$tmp/test.tfrecords" \
  data.stream=true data.shuffle_buffer=5000)
rss=$(sed -n 's/.*peak RSS \([0-9.]*\) MiB.*/\1/p' "$tmp/big.log")
echo "streamed 4 x 60000 examples: $big; peak RSS $rss MiB"
grep -q "240000 training" "$tmp/big.log" || fail "stream size: $(grep 'model mlp' "$tmp/big.log")"
awk -v a="${big##* }" -v r="$rss" 'BEGIN { exit !(a > 0.7 && r < 100) }' ||
  fail "streaming: accuracy ${big##* } or peak RSS $rss MiB out of bounds"
rm "$tmp"/big-*.tfrecords

# A streamed file cut during the run: one error naming it, exit 65, and the
# steps trained so far are kept in a checkpoint.
cp "$tmp/train.tfrecords" "$tmp/cut-live.tfrecords"
set +e
"$worker" --set model=mlp --set train.max_steps=100000 --set threads=1 --set data.stream=true \
  --set data.train="$tmp/cut-live.tfrecords" --set data.test="$tmp/test.tfrecords" \
  --set checkpoint.model_dir="$tmp/live" --set checkpoint.every_secs=0 \
  --set checkpoint.every_steps=0 2> "$tmp/live.log" &
pid=$!
set -e
wait_log "$tmp/live.log" "steps per epoch" "the streaming run never started"
truncate -s 20000000 "$tmp/cut-live.tfrecords"
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" -eq 65 ] || fail "a file cut mid-run exited $rc, want 65: $(tail -3 "$tmp/live.log")"
grep -q "ERROR $tmp/cut-live.tfrecords: record [0-9]* at offset [0-9]*: truncated" "$tmp/live.log" ||
  fail "no error naming the cut file's record: $(grep ERROR "$tmp/live.log")"
ls -d "$tmp"/live/ckpt-* > /dev/null || fail "the steps trained before the cut were not checkpointed"
echo "cut mid-run: $(grep ERROR "$tmp/live.log" | sed 's/.*ERROR //'); kept $(ls -d "$tmp"/live/ckpt-* | sed 's/.*ckpt-/step /')"

# Bad files: one error line naming the file and the record, exit 65.
bad() {
  local sets=()
  for kv in "${@:2}"; do sets+=(--set "$kv"); done
  expect_error 65 "$1" "$worker" --set model=mlp --set checkpoint.model_dir="$tmp/bad" \
    --set data.test="$tmp/test.tfrecords" "${sets[@]}"
}
head -c 5000 "$tmp/small.tfrecords" > "$tmp/cut.tfrecords"
bad "$tmp/cut.tfrecords: record 5 at offset 4435: truncated data" data.train="$tmp/cut.tfrecords"
cp "$tmp/small.tfrecords" "$tmp/crc.tfrecords"
printf '\x55' | dd of="$tmp/crc.tfrecords" bs=1 seek=$((887 * 3 + 500)) conv=notrunc 2> /dev/null
bad "$tmp/crc.tfrecords: record 3 at offset 2661: data CRC mismatch" data.train="$tmp/crc.tfrecords"
bad "$tmp/label12.tfrecords: record 3: label 12 is out of range [0, 10)" \
  data.train="$tmp/label12.tfrecords"
bad "$tmp/badpng.tfrecords: record 1: bad PNG" data.train="$tmp/badpng.tfrecords"
bad "$tmp/cutjpeg.tfrecords: record 2: bad JPEG" data.train="$tmp/cutjpeg.tfrecords"
bad "$tmp/junk.tfrecords: record 1: not a tf.train.Example" data.train="$tmp/junk.tfrecords"
bad "$tmp/small.tfrecords: record 0: no feature \"klass\"" data.train="$tmp/small.tfrecords" \
  data.label_feature=klass
bad "$tmp/nothing-*.tfrecords: no file matches" data.train="$tmp/nothing-*.tfrecords"
echo ok

#!/usr/bin/env bash
# Images/s of standalone training with the default CNN at 2 threads, fed from
# the same Fashion-MNIST images as IDX, as TFRecord (one raw file written by
# TensorFlow; 4 gzip shards from pstrain make-tfrecord) and as PNG image
# folders, with each source's load time and
# peak RSS. Every source is read whole before training, so after the load
# the input path is the same; what differs is the load.
#
#   scripts/bench_data.sh [BUILD_DIR (build)] [STEPS (300)]
#
# Last, data.stream over 40 names of TensorFlow's training file (hard links:
# 2.1 GB of records read, 53 MB of disk): the peak RSS of streaming 2 GiB.
#
# Needs the peers venv (scripts/peers_venv.sh) to write the TFRecord files
# as TensorFlow does, and Debian's python3-pil for the PNG folders.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
steps=${2:-300}
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset TF_CONFIG

echo "writing the sources..."
"$("$root/scripts/peers_venv.sh")/bin/python" "$root/tests/lib/make_tfrec.py" "$data" "$tmp" \
  2> /dev/null
/usr/bin/python3 "$root/tests/lib/make_image_folders.py" "$data" "$tmp/img" 60000 10000
"$build/pstrain" make-tfrecord --input "$tmp/img/train" --out "$tmp/shard" --shards 4 --gzip \
  > /dev/null

run() {
  local name=$1
  shift
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  local t0 t1
  t0=$(date +%s.%N)
  "$build/pstrain-worker" --set threads=2 --set train.max_steps="$steps" \
    --set eval.every_epoch=false --set checkpoint.model_dir="$tmp/run-$name" \
    --set log.every_secs=1000 "${sets[@]}" 2> "$tmp/$name.log"
  t1=$(date +%s.%N)
  python3 - "$tmp/$name.log" "$name" "$t0" "$t1" <<'PY'
import re, sys
log, name, t0, t1 = open(sys.argv[1]).read(), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
stamp = lambda line: sum(float(x) * m for x, m in zip(line.split()[1].split(":"), (3600, 60, 1)))
lines = log.splitlines()
start = next(l for l in lines if "starting" in l)
ready = next(l for l in lines if " model " in l and "parameters" in l)
rate = re.findall(r"([0-9.]+) images/s", log)[-1]
rss = re.search(r"peak RSS ([0-9.]+) MiB", log).group(1)
print(f"{name:28s} load {stamp(ready) - stamp(start):6.2f} s   {float(rate):8.0f} images/s   "
      f"peak RSS {rss} MiB")
PY
}
echo "default CNN, batch 64, 2 threads, $steps steps (images/s of the last progress line):"
run idx
run tfrecord-raw data.train="$tmp/train.tfrecords" data.test="$tmp/test.tfrecords"
run tfrecord-gzip-4-shards data.train="$tmp/shard-*.tfrecord.gz" data.test="$tmp/test.tfrecords"
run image-folders data.train="$tmp/img/train" data.test="$tmp/img/test"

mkdir -p "$tmp/big"
for i in $(seq -w 1 40); do ln "$tmp/train.tfrecords" "$tmp/big/train-$i.tfrecords"; done
run stream-2GiB-buffer-10000 data.train="$tmp/big/train-*.tfrecords" \
  data.test="$tmp/test.tfrecords" data.stream=true

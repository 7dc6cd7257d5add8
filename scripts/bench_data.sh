#!/usr/bin/env bash
# Images/s of standalone training with the default CNN at 2 threads, fed from
# the same Fashion-MNIST images as IDX, as TFRecord (one raw file written by
# TensorFlow; PNG bytes from pstrain make-tfrecord --encode png, in 4 gzip
# shards), as PNG image folders, and streamed (data.stream) from the raw
# TFRecord file and from the image folders, with each run's load time and
# peak RSS. Each round runs every other source right after an IDX run of
# its own (the pairs in a rotated order, so none always runs first), and
# the summary gives each source's median images/s and the median over the
# rounds of its ratio to the IDX run just before it: on a shared machine
# the load moves every figure, and a load that drifts over the minutes of
# a round cancels out of the paired ratio. `uptime` is printed with every
# run.
#
#   scripts/bench_data.sh [BUILD_DIR (build)] [STEPS (300)] [ROUNDS (3)]
#
# Last, data.stream over 40 distinct copies of TensorFlow's training file
# (2.1 GB of records on disk, not hard links of one file): the peak RSS of
# streaming 2 GiB. The page cache is not process memory (RSS), but copies
# keep the opening pass reading new data rather than one cached file; the
# cache cannot be dropped here (no root), so the pass may be served from it.
#
# Needs the peers venv (scripts/peers_venv.sh) to write the TFRecord files
# as TensorFlow does, and Debian's python3-pil for the PNG folders.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
steps=${2:-300}
rounds=${3:-3}
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset TF_CONFIG

echo "writing the sources..."
"$("$root/scripts/peers_venv.sh")/bin/python" "$root/tests/lib/make_tfrec.py" "$data" "$tmp" \
  2> /dev/null
/usr/bin/python3 "$root/tests/lib/make_image_folders.py" "$data" "$tmp/img" 60000 10000
"$build/pstrain" make-tfrecord --input "$data/train-images-idx3-ubyte.gz" --out "$tmp/png" \
  --shards 4 --gzip --encode png > /dev/null

# run NAME KEY=VALUE...: one training run; appends "NAME RATE LOAD RSS" to
# $tmp/results and prints the line with the load average.
run() {
  local name=$1
  shift
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  rm -rf "$tmp/run-$name"
  "$build/pstrain-worker" --set threads=2 --set train.max_steps="$steps" \
    --set eval.every_epoch=false --set checkpoint.model_dir="$tmp/run-$name" \
    --set log.every_secs=1000 "${sets[@]}" 2> "$tmp/$name.log" ||
    { echo "bench_data: $name failed: $(tail -3 "$tmp/$name.log")" >&2; return 1; }
  python3 - "$tmp/$name.log" "$name" "$(uptime | sed 's/.*load average: //')" <<'PY' | tee -a "$tmp/results"
import re, sys
log, name, load = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
stamp = lambda line: sum(float(x) * m for x, m in zip(line.split()[1].split(":"), (3600, 60, 1)))
lines = log.splitlines()
start = next(l for l in lines if "starting" in l)
ready = next(l for l in lines if " model " in l and "parameters" in l)
rate = float(re.findall(r"([0-9.]+) images/s", log)[-1])
rss = float(re.search(r"peak RSS ([0-9.]+) MiB", log).group(1))
print(f"{name} {rate:.0f} {stamp(ready) - stamp(start):.2f} {rss:.1f} load {load}")
PY
}

names=(idx tfrecord-raw tfrecord-png-4-gzip png-folders stream-tfrecord stream-png-folders)
source_sets() {
  case $1 in
  idx) ;;
  tfrecord-raw) echo "data.train=$tmp/train.tfrecords" ;;
  tfrecord-png-4-gzip) echo "data.train=$tmp/png-*.tfrecord.gz" ;;
  png-folders) echo "data.train=$tmp/img/train" ;;
  stream-tfrecord) echo "data.train=$tmp/train.tfrecords data.stream=true" ;;
  stream-png-folders) echo "data.train=$tmp/img/train data.stream=true" ;;
  esac
}
echo "default CNN, batch 64, 2 threads, $steps steps, $rounds rounds; columns: source, images/s" \
  "(the last progress line: training only), load s, peak RSS MiB, load average"
others=("${names[@]:1}")
for ((r = 0; r < rounds; r++)); do
  echo "round $((r + 1)):"
  for ((k = 0; k < ${#others[@]}; k++)); do
    name=${others[$(((r + k) % ${#others[@]}))]}
    run idx data.test="$tmp/test.tfrecords"
    # shellcheck disable=SC2046
    run "$name" data.test="$tmp/test.tfrecords" $(source_sets "$name")
  done
done
echo "over $rounds rounds: median images/s; median of the ratios to the IDX run just before;" \
  "median load s; peak RSS MiB"
python3 - "$tmp/results" "${names[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda name, col: statistics.median(float(r[col]) for r in rows if r[0] == name)
ratios = {}
for before, r in zip(rows, rows[1:]):
    if before[0] == "idx" and r[0] != "idx":
        ratios.setdefault(r[0], []).append(float(r[1]) / float(before[1]))
for name in sys.argv[2:]:
    ratio = statistics.median(ratios[name]) if name in ratios else 1.0
    spread = " ".join("%.3f" % x for x in ratios.get(name, []))
    print(f"  {name:22s} {med(name, 1):8.0f} images/s  {ratio:6.3f} x IDX ({spread or 'itself'})  "
          f"load {med(name, 2):6.2f} s   peak RSS {med(name, 3):7.1f} MiB")
PY

mkdir -p "$tmp/big"
for i in $(seq -w 1 40); do cp "$tmp/train.tfrecords" "$tmp/big/train-$i.tfrecords"; done
echo "2 GiB streamed ($(du -sh "$tmp/big" | cut -f1) in 40 distinct files; buffer 10000):"
run stream-2GiB-buffer-10000 data.train="$tmp/big/train-*.tfrecords" \
  data.test="$tmp/test.tfrecords" data.stream=true

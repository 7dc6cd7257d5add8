#!/usr/bin/env bash
# A cluster (master, 1 PS, 2 workers as real processes) on TFRecord shards:
# with 4 files and 2 workers each worker reads only its 2 files (30000 of
# the 60000 examples) yet counts all 60000 for its epochs; the run trains to
# a sensible accuracy on a TFRecord test set.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist

"$build/pstrain" make-tfrecord --input "$data/train-images-idx3-ubyte.gz" --out "$tmp/train" \
  --shards 4 > /dev/null
"$build/pstrain" make-tfrecord --input "$data/t10k-images-idx3-ubyte.gz" --out "$tmp/test" \
  > /dev/null
# shellcheck disable=SC2206
extra_sets=(${PSTRAIN_TEST_SETS:-})
PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --ps 1 --workers 2 \
  --set model=mlp --set train.epochs=1 --set checkpoint.model_dir="$tmp/run" \
  --set data.train="$tmp/train-*.tfrecord" --set data.test="$tmp/test.tfrecord" \
  --set log.every_secs=5 ${extra_sets[@]+"${extra_sets[@]}"} > "$tmp/out" 2>&1 ||
  fail "run: $(tail -5 "$tmp/out")"
for w in worker0 worker1; do
  grep -q "reading 30000 of the 60000 training examples" "$tmp/runlogs/$w.log" ||
    fail "$w did not read its share of the files: $(grep -i 'examples\|ERROR' "$tmp/runlogs/$w.log")"
done
python3 - "$tmp/run/eval_results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("2 workers on 4 TFRecord shards: accuracy %.4f at global step %d" % (r["accuracy"], r["global_step"]))
assert r["examples"] == 10000 and r["accuracy"] >= 0.75, r
assert r["global_step"] >= 938, r
PY
echo ok

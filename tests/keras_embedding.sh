#!/usr/bin/env bash
# Embedding tables pulled and pushed by rows, end to end: real Keras writes an
# Embedding model (Embedding -> GlobalAveragePooling1D -> Dense) whose input
# is 196 token ids per Fashion-MNIST image (a 14x14 downsample, token =
# position * 16 + pixel // 16; CSV files); a master, 2 PS and 2 workers train
# it 300 steps; each worker's log says it moved only the rows its batches
# read (bytes a step within twice those rows' bytes plus the rest of the
# model and framing, and under the table's size); Keras's load_model of the
# export predicts what `pstrain predict --probs` does within 1e-4; a token
# id outside the table is one error naming the layer and the id, exit 65.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist
unset TF_CONFIG

need_keras

"$venv/bin/python" - "$data" "$tmp" <<'PY'
import gzip, sys
import numpy as np
def tokens(images, labels, n, path):
    with gzip.open(images) as f:
        x = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)[:n].astype(np.int64)
    with gzip.open(labels) as f:
        y = np.frombuffer(f.read()[8:], np.uint8)[:n]
    small = x.reshape(n, 14, 2, 14, 2).mean(axis=(2, 4)).astype(np.int64).reshape(n, 196)
    t = np.arange(196) * 16 + small // 16
    np.savetxt(path, np.concatenate([t, y[:, None]], axis=1), fmt="%d", delimiter=",")
d, out = sys.argv[1], sys.argv[2]
tokens(f"{d}/train-images-idx3-ubyte.gz", f"{d}/train-labels-idx1-ubyte.gz", 12000, f"{out}/train.csv")
tokens(f"{d}/t10k-images-idx3-ubyte.gz", f"{d}/t10k-labels-idx1-ubyte.gz", 1000, f"{out}/test.csv")
PY

kpy json embedding "$tmp/embedding.json"
PSTRAIN_BUILD=$build PSTRAIN_RUNLOGS=$tmp/runlogs PSTRAIN_TRAINING_LOG=$tmp/training_log.md \
  "$root/scripts/train_local_dist.sh" --set model="$tmp/embedding.json" \
  --set data.train="$tmp/train.csv" --set data.test="$tmp/test.csv" --set data.csv_header=none \
  --set train.max_steps=300 --set train.batch_size=32 --set train.optimizer=adam \
  --set train.learning_rate=0.01 --set train.staleness_lr=off \
  --set checkpoint.model_dir="$tmp/run" > "$tmp/out" 2>&1 || fail "cluster run: $(tail -5 "$tmp/out")"
for role in master0 ps0 ps1 worker0 worker1; do
  grep -q ERROR "$tmp/runlogs/$role.log" && fail "$role: $(grep ERROR "$tmp/runlogs/$role.log")"
done

# The rows each worker moved: 16 floats a row; the rest of the model is the
# head (16*32+32+32*10+10 floats); 4 KiB a step for framing.
for w in worker0 worker1; do
  line=$(grep 'embedding rows:' "$tmp/runlogs/$w.log") || fail "$w: no 'embedding rows:' line"
  echo "$w: ${line#*embedding rows: }"
  python3 - "$line" <<'PY' || fail "$w moved more than its rows: $line"
import re, sys
rows, pulled, pushed, table = (float(v) for v in re.search(
    r"([0-9.]+) rows a step; bytes a step: pulled ([0-9]+), pushed ([0-9]+) \(the tables whole "
    r"are ([0-9]+) bytes", sys.argv[1]).groups())
bound = 2 * rows * 16 * 4 + (16 * 32 + 32 + 32 * 10 + 10) * 4 + 4096
sys.exit(0 if 0 < rows and pulled <= bound and pushed <= bound and pulled < table else 1)
PY
done

step=$(sed -n 's/.*"global_step": *\([0-9]*\).*/\1/p' "$tmp/run/eval_results.json")
export=$tmp/run/export/$step
[ -f "$export/model.keras" ] || fail "no model.keras in $export: $(ls "$tmp/run/export")"
"$build/pstrain" predict --model "$export" --probs "$tmp/test.csv" > "$tmp/pred.out" ||
  fail "pstrain predict on the tokens"
kpy predict "$export/model.keras" "$tmp/pred.out" "$tmp/test.csv" | tee "$tmp/compare.out"
acc=$(sed -n 's/.*accuracy \([0-9.]*\)$/\1/p' "$tmp/compare.out")
python3 -c "import sys; sys.exit(0 if float('$acc') > 0.6 else 1)" ||
  fail "accuracy $acc after $step steps on the cluster"

# A token id outside the table (3136 rows): one error naming it, exit 65.
head -5 "$tmp/test.csv" > "$tmp/bad.csv"
echo "$(seq -s, 0 194),3136,1" >> "$tmp/bad.csv"
rc=0
"$build/pstrain-worker" --set model="$tmp/embedding.json" --set data.train="$tmp/bad.csv" \
  --set data.test="$tmp/bad.csv" --set data.csv_header=none --set train.max_steps=1 \
  --set checkpoint.model_dir="$tmp/bad" 2> "$tmp/bad.log" || rc=$?
[ "$rc" = 65 ] || fail "a token id outside the table: exit $rc, want 65: $(tail -2 "$tmp/bad.log")"
grep -q 'layer "embedding" (Embedding): example 5, position 195: token id 3136 is not an integer in \[0, 3136)' \
  "$tmp/bad.log" || fail "no clear error: $(grep ERROR "$tmp/bad.log")"
echo "embedding: $step steps on 2 PS and 2 workers by rows (accuracy $acc); Keras predicts as pstrain; ok"

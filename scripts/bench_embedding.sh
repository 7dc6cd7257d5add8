#!/usr/bin/env bash
# Embedding tables on the wire: bytes a worker pulls and pushes a step with
# the tables moved by the rows each batch reads (train.sparse_embeddings,
# the default) against the tables moved whole, for two token schemes of
# Fashion-MNIST on a local cluster (scripts/train_local_dist.sh: master, 2
# PS, 2 workers, async, batch 32, 100 steps):
#   small: a 14x14 downsample, token = position * 16 + pixel // 16
#          (3,136 rows of 16: 200,704 bytes)
#   large: 28x28, token = position * 64 + pixel // 4
#          (50,176 rows of 16: 3,211,264 bytes)
# The model: Embedding(rows, 16) -> GlobalAveragePooling1D -> Dense(32, relu)
# -> Dense(10, softmax). One line per run: rows a step, bytes pulled and
# pushed a step (worker 0's log) and the training rate. The data is made
# with numpy from the peers venv (scripts/peers_venv.sh).
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${PSTRAIN_BUILD:-$root/build}
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d)
trap 'PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/stop.sh" > /dev/null 2>&1 || true; rm -rf "$tmp"' EXIT

venv=$("$root/scripts/peers_venv.sh")
"$venv/bin/python" - "$data" "$tmp" <<'PY'
import gzip, sys
import numpy as np
d, out = sys.argv[1], sys.argv[2]
with gzip.open(f"{d}/train-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)[:12000].astype(np.int64)
with gzip.open(f"{d}/train-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read()[8:], np.uint8)[:12000, None]
small = x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).astype(np.int64).reshape(-1, 196)
large = x.reshape(-1, 784)
for name, t, n, rows in (("small", np.arange(196) * 16 + small // 16, 196, 196 * 16),
                         ("large", np.arange(784) * 64 + large // 4, 784, 784 * 64)):
    rows_out = np.concatenate([t, y], axis=1)
    np.savetxt(f"{out}/{name}.csv", rows_out, fmt="%d", delimiter=",")
    np.savetxt(f"{out}/{name}_test.csv", rows_out[:1000], fmt="%d", delimiter=",")
    with open(f"{out}/{name}.json", "w") as f:
        f.write('{"input": [%d], "layers": [{"type": "embedding", "input_dim": %d, '
                '"output_dim": 16}, {"type": "global_avg_pool1d"}, {"type": "dense", '
                '"units": 32, "activation": "relu"}, {"type": "dense", "units": 10, '
                '"activation": "softmax"}]}' % (n, rows))
PY

echo "# uptime: $(uptime)"
for model in small large; do
  for sparse in true false; do
    rm -rf "$tmp/run" "$tmp/runlogs"
    PSTRAIN_BUILD=$build PSTRAIN_RUNLOGS=$tmp/runlogs PSTRAIN_TRAINING_LOG=$tmp/log.md \
      "$root/scripts/train_local_dist.sh" --set model="$tmp/$model.json" \
      --set data.train="$tmp/$model.csv" --set data.csv_header=none --set data.test="$tmp/${model}_test.csv" \
      --set train.max_steps=100 --set train.batch_size=32 --set train.optimizer=adam \
      --set train.sparse_embeddings=$sparse --set checkpoint.model_dir="$tmp/run" \
      > "$tmp/out" 2>&1 || { tail -5 "$tmp/out"; exit 1; }
    line=$(grep -h 'embedding \(rows\|tables moved whole\):' "$tmp/runlogs/worker0.log")
    rate=$(grep -ho '[0-9]* images/s over the run' "$tmp/runlogs/worker0.log")
    printf '%-6s sparse=%-5s %s; %s\n' "$model" "$sparse" "${line#*embedding }" "$rate"
  done
done

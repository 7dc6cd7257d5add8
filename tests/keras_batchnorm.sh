#!/usr/bin/env bash
# BatchNormalization on a real cluster: real Keras writes a residual CNN
# with BatchNormalization and GlobalAveragePooling2D (to_json()); a master,
# 2 PS and 2 workers (separate processes, gRPC over loopback) train it 250
# steps, the workers pushing their batch statistics and the PS keeping the
# moving ones; Keras's load_model opens the final export's model.keras and
# predicts the test set as `pstrain predict` does (within 1e-4), which holds
# only if the moving statistics made it out in Keras's order (Keras checks
# the file's layout); and `pstrain evaluate` reads that model.keras back to
# the same accuracy.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist

need_keras
images=$data/t10k-images-idx3-ubyte.gz
labels=$data/t10k-labels-idx1-ubyte.gz

kpy json bn_residual "$tmp/bn.json"
PSTRAIN_BUILD=$build PSTRAIN_RUNLOGS=$tmp/runlogs PSTRAIN_TRAINING_LOG=$tmp/training_log.md \
  "$root/scripts/train_local_dist.sh" --set model="$tmp/bn.json" --set train.max_steps=250 \
  --set train.batch_size=32 --set train.optimizer=adam --set train.learning_rate=0.002 \
  --set train.staleness_lr=off --set checkpoint.model_dir="$tmp/run" > "$tmp/out" 2>&1 ||
  fail "cluster run: $(tail -5 "$tmp/out")"
for role in master0 ps0 ps1 worker0 worker1; do
  grep -q ERROR "$tmp/runlogs/$role.log" && fail "$role: $(grep ERROR "$tmp/runlogs/$role.log")"
done
step=$(sed -n 's/.*"global_step": *\([0-9]*\).*/\1/p' "$tmp/run/eval_results.json")
export=$tmp/run/export/$step
[ -f "$export/model.keras" ] || fail "no model.keras in $export: $(ls "$tmp/run/export")"

# The moving statistics moved away from their start (0 and 1) on the PS.
python3 - "$export/weights.npz" <<'PY' || fail "moving statistics not updated"
import sys, zipfile, struct
z = zipfile.ZipFile(sys.argv[1])
names = [n for n in z.namelist() if "moving_" in n]
assert len(names) == 6, names
for n in names:
    raw = z.read(n)
    hlen = struct.unpack("<H", raw[8:10])[0]
    vals = struct.unpack("<16f", raw[10 + hlen:])
    start = 0.0 if "moving_mean" in n else 1.0
    assert max(abs(v - start) for v in vals) > 1e-3, (n, vals)
PY

"$build/pstrain" predict --model "$export" --probs --labels "$labels" "$images" > "$tmp/pred.out"
kpy predict "$export/model.keras" "$tmp/pred.out" "$images" | tee "$tmp/compare.out"
acc=$(sed -n 's/.*accuracy \([0-9.]*\)$/\1/p' "$tmp/compare.out")
python3 -c "import sys; sys.exit(0 if float('$acc') > 0.4 else 1)" ||
  fail "accuracy $acc after $step steps on the cluster"

# model.keras read back: the same accuracy as the export it came from.
"$build/pstrain" evaluate --model "$export/model.keras" --set data.dir="$data" > "$tmp/eval.out"
grep -q "accuracy: $acc" "$tmp/eval.out" || fail "evaluate model.keras: $(cat "$tmp/eval.out"), want $acc"
echo "cluster: the BatchNormalization model trained $step steps (accuracy $acc); Keras predicts as pstrain"
echo ok

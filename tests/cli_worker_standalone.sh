#!/usr/bin/env bash
# The standalone worker as a user runs it: real binary, real Fashion-MNIST
# (skipped with a message where it is not installed), real files; plus its
# errors for bad input: each one line, naming what is wrong, with the exit
# code of DESIGN.md's rule.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
worker=$build/pstrain-worker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"

unset TF_CONFIG
# --help lists every key with its default.
"$worker" --help > "$tmp/help"
for key in train.batch_size train.learning_rate train.optimizer data.dir checkpoint.model_dir; do
  grep -q "$key" "$tmp/help" || fail "--help does not list $key"
done

expect_error 2 'train.batchsize' "$worker" --set train.batchsize=3
expect_error 2 'train.batch_size' "$worker" --set train.batch_size=abc
expect_error 2 'train.optimizer' "$worker" --set train.optimizer=adamw
echo '{"train": {"epochs": "three"}}' > "$tmp/bad.json"
expect_error 2 'train.epochs' "$worker" --config "$tmp/bad.json"
echo '{"train": ' > "$tmp/notjson.json"
expect_error 2 "$tmp/notjson.json" "$worker" --config "$tmp/notjson.json"
expect_error 2 'unknown argument' "$worker" --bogus
TF_CONFIG='{"cluster": {"ps": ["h:1"]}}' expect_error 2 'TF_CONFIG' "$worker"
echo '{"input": [28, 28, 1], "layers": [{"type": "dense", "units": 10, "activation": "softmax"}]}' \
  > "$tmp/model.json"
expect_error 2 'layer 0 (dense)' "$worker" --set model="$tmp/model.json" --set data.dir="$tmp"
[ "$("$worker" --set train.epochs=7 --print-config train.epochs)" = 7 ] || fail "--print-config"

# A data directory with a truncated file is one clear error, exit 65.
mkdir -p "$tmp/data"
printf '\x00\x00\x08\x03\x00\x00\x00\x10\x00\x00\x00\x1c\x00\x00\x00\x1c\x01\x02' \
  > "$tmp/data/train-images-idx3-ubyte"
printf '\x00\x00\x08\x01\x00\x00\x00\x10' > "$tmp/data/train-labels-idx1-ubyte"
cp "$tmp/data/train-images-idx3-ubyte" "$tmp/data/t10k-images-idx3-ubyte"
cp "$tmp/data/train-labels-idx1-ubyte" "$tmp/data/t10k-labels-idx1-ubyte"
expect_error 65 'train-images-idx3-ubyte' "$worker" --set data.dir="$tmp/data" \
  --set checkpoint.model_dir="$tmp/run"
expect_error 65 'nonexistent' "$worker" --set data.dir="$tmp/nonexistent" --set checkpoint.model_dir="$tmp/run"

data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP training part: $data is not installed (scripts/setup.sh installs it)"
  exit 0
fi

# Short standalone training of the MLP on the real data: learns, evaluates,
# writes eval_results.json with numbers.
"$worker" --set model=mlp --set train.max_steps=400 --set train.batch_size=64 \
  --set checkpoint.model_dir="$tmp/run" --set log.every_secs=1 2> "$tmp/log"
grep -q 'epoch 1/1' "$tmp/log" || fail "no progress lines: $(cat "$tmp/log")"
grep -q 'images/s' "$tmp/log" || fail "progress lines lack images/s"
python3 - "$tmp/run/eval_results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["global_step"] == 400, r
assert isinstance(r["loss"], float) and r["loss"] > 0, r
assert r["accuracy"] >= 0.75, r
assert len(r["per_class_accuracy"]) == 10, r
print("standalone mlp: accuracy %.4f after %d steps" % (r["accuracy"], r["global_step"]))
PY

# SIGTERM stops after the current step with status 0.
"$worker" --set model=mlp --set train.epochs=1000 --set checkpoint.model_dir="$tmp/run2" 2> "$tmp/log2" &
pid=$!
sleep 3
kill -TERM "$pid"
wait "$pid" || fail "worker exited $? after SIGTERM"
grep -q 'stopping on signal 15' "$tmp/log2" || fail "no stop line: $(tail -3 "$tmp/log2")"
echo "ok"

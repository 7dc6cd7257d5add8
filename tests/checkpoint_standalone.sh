#!/usr/bin/env bash
# A standalone run checkpoints, stops and resumes without changing a bit:
# 400 steps in one go and 300 + 100 after a resume (weights, momentum, data
# order and dropout all restored) export the same weights, byte for byte.
# SIGTERM checkpoints before exiting, and the next start resumes from there.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"

need_fashion_mnist
model='{"input": [28, 28, 1], "layers": [{"type": "flatten"},
  {"type": "dense", "units": 64, "activation": "relu"}, {"type": "dropout", "rate": 0.3},
  {"type": "dense", "units": 10, "activation": "softmax"}]}'
echo "$model" > "$tmp/model.json"
train() { # train MODEL_DIR MAX_STEPS [ARGS...]
  local dir=$1 steps=$2
  shift 2
  "$build/pstrain-worker" --set model="$tmp/model.json" --set train.max_steps="$steps" \
    --set checkpoint.every_steps=100 --set checkpoint.model_dir="$dir" --set train.optimizer=adam \
    --set eval.every_epoch=false "$@" 2>> "$tmp/log" || fail "training $dir to $steps: $(tail -3 "$tmp/log")"
}
train "$tmp/once" 400
train "$tmp/twice" 300
train "$tmp/twice" 400
grep -q "resumed from $tmp/twice/ckpt-300: step 300" "$tmp/log" || fail "no resume: $(cat "$tmp/log")"
cmp "$tmp/once/export/400/weights.safetensors" "$tmp/twice/export/400/weights.safetensors" ||
  fail "300 + 100 steps differ from 400"

# TensorBoard: training scalars every log.summary_steps (100) steps in
# model_dir, the evaluation in model_dir/eval, read by an independent decoder.
read_model_events "$tmp/once"
"$py" - "$tmp/train.ev" "$tmp/eval.ev" "$tmp/once/eval_results.json" <<'PY'
import json, sys
train = [json.loads(l) for l in open(sys.argv[1])]
ev = [json.loads(l) for l in open(sys.argv[2])]
res = json.load(open(sys.argv[3]))
want = {"loss", "accuracy", "learning_rate", "global_step/sec", "examples/sec"}
assert {e["tag"] for e in train} == want, train
steps = sorted({e["step"] for e in train})
assert steps == [100, 200, 300, 400], steps
assert all(abs(e["value"] - 0.01) < 1e-8 for e in train if e["tag"] == "learning_rate"), train
assert all(0 < e["value"] < 3 for e in train if e["tag"] == "loss"), train
last = [e for e in ev if e["tag"] == "accuracy" and e["step"] == res["global_step"]]
assert last and abs(last[-1]["value"] - res["accuracy"]) < 1e-6, (last, res)
PY

# SIGTERM: checkpoint, then exit 0; a new start goes on from that step.
"$build/pstrain-worker" --set model="$tmp/model.json" --set train.epochs=50 --set train.optimizer=adam \
  --set checkpoint.model_dir="$tmp/term" --set checkpoint.every_secs=0 2> "$tmp/term.log" &
pid=$!
for _ in $(seq 1 100); do grep -q "epoch 1/50" "$tmp/term.log" && break; sleep 0.1; done
sleep 0.5
kill -TERM "$pid"
wait "$pid" || fail "SIGTERM exit status $?: $(tail -3 "$tmp/term.log")"
grep -q "checkpoint first" "$tmp/term.log" || fail "no checkpoint on SIGTERM: $(tail -3 "$tmp/term.log")"
step=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latest_step'])" "$tmp/term/checkpoint")
[ "$step" -gt 0 ] || fail "checkpoint at step 0"
train "$tmp/term" $((step + 10))
grep -q "resumed from $tmp/term/ckpt-$step: step $step" "$tmp/log" || fail "no resume after SIGTERM"

# A NaN written into the newest checkpoint (issue 17, item 4): the resume
# names the file and tensor, falls back to ckpt-200 (ckpt-300 is written
# anew), every checkpoint kept loads, and 200 + 200 steps are bit for bit
# the 400 of one go.
train "$tmp/nan" 300
python3 - "$tmp/nan/ckpt-300/ps-0-of-1.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    head = json.loads(f.read(n))
    f.seek(8 + n + head["dense/kernel"]["data_offsets"][0] + 4 * 17)
    f.write(struct.pack("<f", float("nan")))
PY
train "$tmp/nan" 400
grep -q "nan/ckpt-300/ps-0-of-1.safetensors: tensor dense/kernel: CRC32C mismatch" "$tmp/log" ||
  fail "the damaged ckpt-300 was not named: $(tail -3 "$tmp/log")"
grep -q "resumed from $tmp/nan/ckpt-200: step 200" "$tmp/log" || fail "no fallback to ckpt-200"
cmp "$tmp/once/export/400/weights.safetensors" "$tmp/nan/export/400/weights.safetensors" ||
  fail "200 + 200 steps after the fallback differ from 400"
for k in $(python3 -c "import json,sys; print(*json.load(open(sys.argv[1]))['kept_steps'])" "$tmp/nan/checkpoint"); do
  "$build/pstrain" export --checkpoint "$tmp/nan/ckpt-$k" --out "$tmp/x" > /dev/null || fail "ckpt-$k does not load"
  rm -rf "$tmp/x"
done
echo "standalone resume: bit-identical at 400 steps, also after falling back from a NaN in ckpt-300; SIGTERM checkpointed step $step"

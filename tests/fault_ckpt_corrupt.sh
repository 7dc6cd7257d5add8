#!/usr/bin/env bash
# Damaged checkpoints with real processes (issue 17, items 4 and 5): a
# cluster whose newest checkpoint has a shard with flipped bits, then one
# whose newest has a truncated shard, resumes from the checkpoint before it
# (every PS, and the master drops the damaged one from the manifest) and
# finishes; a cluster whose every checkpoint is damaged exits non-zero within
# 30 s with one error naming the file.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
export PSTRAIN_RUNLOGS=$tmp/runlogs
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT

need_fashion_mnist
md=$tmp/model
logs=$tmp/runlogs
manifest() { manifest_key "$md" "$1"; }
flip() { # flip FILE: XORs 4 bytes three quarters into FILE (tensor data)
  python3 - "$1" << 'PY'
import os, sys
p = sys.argv[1]
at = os.path.getsize(p) * 3 // 4
with open(p, "r+b") as f:
    f.seek(at)
    b = bytearray(f.read(4))
    f.seek(at)
    f.write(bytes(x ^ 0x5A for x in b))
PY
}
train() { # train STEPS: a cluster on $md to STEPS global steps (batches of 512
  # slow the MLP down to a few checkpoints a second)
  "$root/scripts/train_local_dist.sh" --set model=mlp --set train.max_steps="$1" \
    --set train.batch_size=512 --set checkpoint.every_steps=50 --set checkpoint.keep=5 --set log.every_secs=2 \
    --set cluster.heartbeat_secs=0.5 --set checkpoint.model_dir="$md" > "$tmp/run.out" 2>&1
}
all_load() { # every checkpoint the manifest names loads
  local step
  for step in $(manifest kept_steps); do
    "$build/pstrain" export --checkpoint "$md/ckpt-$step" --out "$tmp/x" > /dev/null ||
      fail "ckpt-$step does not load"
    rm -rf "$tmp/x"
  done
}
# resumes_after DAMAGE MESSAGE STEPS: the newest checkpoint, damaged by
# DAMAGE (a command given its ps-0 or ps-1 shard), is reported with MESSAGE
# by every PS and the master; the cluster resumes from the one before and
# trains to STEPS.
resumes_after() {
  local damage=$1 message=$2 steps=$3
  local kept latest prev shard
  kept=($(manifest kept_steps))
  latest=${kept[-1]} prev=${kept[-2]}
  shard=$md/ckpt-$latest/ps-1-of-2.safetensors
  $damage "$shard"
  train "$steps" || fail "the run after $damage of ckpt-$latest: $(tail -5 "$tmp/run.out")"
  for ps in ps0 ps1; do
    grep -q "$shard: .*$message" "$logs/$ps.log" || fail "$ps did not name $shard: $(cat "$logs/$ps.log")"
    grep -q "resumed from $md/ckpt-$prev:" "$logs/$ps.log" ||
      fail "$ps did not resume from ckpt-$prev: $(grep -i resum "$logs/$ps.log")"
  done
  grep -q "ERROR $shard: .*$message" "$logs/master0.log" ||
    fail "the master did not name $shard: $(grep -E 'ERROR|WARN' "$logs/master0.log")"
  grep -q "ckpt-$latest dropped from the manifest" "$logs/master0.log" ||
    fail "the master did not drop ckpt-$latest"
  [ "$(manifest final)" = True ] || fail "the manifest is not final after the resumed run"
  [ "$(manifest latest_step)" -ge "$steps" ] || fail "latest step $(manifest latest_step) < $steps"
  all_load
  echo "$damage of ckpt-$latest: every PS resumed from ckpt-$prev and the run reached $(manifest latest_step)"
}
truncate_half() { truncate -s $(($(stat -c %s "$1") / 2)) "$1"; }

train 300 || fail "first run: $(tail -5 "$tmp/run.out")"
[ "$(manifest kept_steps | wc -w)" -ge 2 ] || fail "the first run kept $(manifest kept_steps)"
resumes_after flip "CRC32C mismatch" 600
resumes_after truncate_half "truncated: " 900
acc=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$md/eval_results.json")
python3 -c "import sys; a=float(sys.argv[1]); assert a >= 0.70, 'accuracy %.4f' % a" "$acc" ||
  fail "accuracy $acc after two fallbacks"

# Every checkpoint damaged: each PS exits 65 with one error line naming the
# newest's file, and the launcher, which watches every role, stops the rest
# of the cluster (the master too, which would otherwise give up by itself:
# master_rollback_refused_gives_up) and exits 65 naming them, within 30 s.
for step in $(manifest kept_steps); do flip "$md/ckpt-$step/ps-0-of-2.safetensors"; done
newest=$md/ckpt-$(manifest latest_step)/ps-0-of-2.safetensors
start=$(date +%s)
set +e
timeout 60 "$root/scripts/train_local_dist.sh" --set model=mlp --set train.max_steps=1600 \
  --set train.batch_size=512 --set checkpoint.model_dir="$md" > "$tmp/run.out" 2>&1
rc=$?
set -e
took=$(($(date +%s) - start))
[ "$rc" -eq 65 ] || fail "train_local_dist.sh exited $rc, not 65, with no checkpoint that verifies: $(tail -5 "$tmp/run.out")"
[ "$took" -le 30 ] || fail "giving up took ${took}s"
for ps in ps0 ps1; do
  grep -q "ERROR cannot resume: no checkpoint of $md verifies" "$logs/$ps.log" || fail "$ps did not give up"
  [ "$(grep -c ' ERROR ' "$logs/$ps.log")" -eq 1 ] || fail "$ps: more than one error line"
  grep -q "ERROR .*$newest: tensor .*: CRC32C mismatch" "$logs/$ps.log" || fail "$ps did not name $newest"
done
grep -q "ps[01] failed with exit status 65: .*$newest: tensor" "$tmp/run.out" ||
  fail "the launcher does not name the PS and $newest: $(tail -5 "$tmp/run.out")"
for name in master0 ps0 ps1 worker0 worker1; do
  pid=$(cat "$logs/$name.pid" 2> /dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null && fail "$name still runs after the launcher gave up"
done
echo "every checkpoint damaged: the PS exited 65 and the launcher stopped the cluster in ${took}s naming $newest; accuracy before: $acc"

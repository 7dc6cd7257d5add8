#!/usr/bin/env bash
# data.stream in a cluster (master, 1 PS, 2 sync workers as real
# processes) on 4 TFRecord shards: each worker streams its 2 files. One of
# worker1's files is cut while it trains: worker1 stops with one error
# naming the file and the record, exit 65, without pushing a gradient of
# the batch that did not read: the sync step it was computing never
# completes, so the PS step stays where worker1 stopped, and the master's
# checkpoint on the launcher's stop holds that step. With the file
# restored, the same command resumes from that checkpoint, each worker's
# stream continues at its data position, and the run trains to the end.
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
md=$tmp/md
# run MAX_STEPS: the cluster, streaming, in the background; its output in $tmp/out.
run() {
  PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --ps 1 --workers 2 \
    --set model=mlp --set train.mode=sync --set train.max_steps="$1" --set threads=1 \
    --set data.stream=true --set data.shuffle_buffer=2000 --set cluster.dead_after_secs=120 \
    --set data.train="$tmp/train-*.tfrecord" --set data.test="$tmp/test.tfrecord" \
    --set checkpoint.model_dir="$md" --set checkpoint.every_steps=100000 \
    --set log.every_secs=2 > "$tmp/out" 2>&1 &
  pid=$!
}

# 1. Worker 1 reads files 1 and 3 (of 0-3); both are cut to half while it
# trains, once worker0 has opened its stream too (its opening pass counts
# the records of every file).
run 100000
for w in worker0 worker1; do
  wait_log "$tmp/runlogs/$w.log" "streaming 30000 of the 60000 training examples" \
    "$w does not stream its share" 60
done
wait_log "$tmp/runlogs/worker1.log" "first step done" "worker1 never trained" 60
for f in 1 3; do
  cp "$tmp/train-0000$f-of-00004.tfrecord" "$tmp/keep-$f"
  truncate -s $(($(stat -c %s "$tmp/keep-$f") / 2)) "$tmp/train-0000$f-of-00004.tfrecord"
done
wait_exit "$pid"
[ "$rc" -eq 65 ] || fail "the launcher exited $rc, want 65: $(tail -5 "$tmp/out")"
w1=$tmp/runlogs/worker1.log
[ "$(grep -c ' ERROR ' "$w1")" -eq 1 ] || fail "want one error line: $(grep ERROR "$w1")"
grep -Eq "ERROR $tmp/train-0000[13]-of-00004.tfrecord: record [0-9]+" "$w1" ||
  fail "the error does not name the cut file and record: $(grep ERROR "$w1")"
grep -q "worker1 failed with exit status 65: .*train-0000[13]-of-00004.tfrecord: record" "$tmp/out" ||
  fail "the launcher does not report worker1's error: $(tail -5 "$tmp/out")"
stopped=$(sed -n 's/.*global step \([0-9]*\): no gradient of the batch that did not read was pushed.*/\1/p' "$w1")
[ -n "$stopped" ] || fail "worker1 does not say where it stopped: $(tail -3 "$w1")"
ckpt=$(ls -d "$md"/ckpt-* | sed 's/.*ckpt-//' | sort -n | tail -1)
echo "cut mid-run: $(grep ERROR "$w1" | sed 's/.*ERROR //'); worker1 stopped at step $stopped; the master checkpointed step $ckpt"
# Sync: a step needs both workers' gradients, so no step after worker1's last push.
[ "$ckpt" = "$stopped" ] || fail "the PS step moved to $ckpt after worker1 stopped at $stopped"

# 2. Restored, the same cluster resumes there and trains to the end.
for f in 1 3; do cp "$tmp/keep-$f" "$tmp/train-0000$f-of-00004.tfrecord"; done
run $((stopped + 300))
wait "$pid" || fail "the resumed run: $(tail -5 "$tmp/out")"
grep -q "resumed from ckpt-$stopped" "$tmp/runlogs/master0.log" ||
  fail "the master did not resume from ckpt-$stopped: $(grep -i resume "$tmp/runlogs/master0.log")"
for w in worker0 worker1; do
  grep -q "global step $stopped: this worker's data resumes at batch $stopped" "$tmp/runlogs/$w.log" ||
    fail "$w restarted its data: $(grep -i 'resumes\|ERROR' "$tmp/runlogs/$w.log")"
done
python3 - "$md/eval_results.json" "$((stopped + 300))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("resumed and finished: accuracy %.4f at global step %d" % (r["accuracy"], r["global_step"]))
assert r["examples"] == 10000 and r["accuracy"] >= 0.7 and r["global_step"] >= int(sys.argv[2]), r
PY
echo ok

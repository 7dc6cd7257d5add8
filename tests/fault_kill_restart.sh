#!/usr/bin/env bash
# Real processes, real kill -9: a local cluster (master, 2 PS, 2 workers,
# the MLP) trains while a worker, a PS and the master are each killed mid-run
# and restarted by scripts/restart_role.sh. Training finishes, within 1 point
# of the same run undisturbed; the global step keeps rising while the master
# is down; the PS are rolled back to one checkpoint; every checkpoint the
# manifest names loads.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
export PSTRAIN_RUNLOGS=$tmp/runlogs
cleanup() {
  PSTRAIN_STOP_GRACE=2 "$root/scripts/stop.sh" > /dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/lib/check.sh"

data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: $data is not installed (scripts/setup.sh installs it)"
  exit 77
fi
args=(--set model=mlp --set train.epochs=4 --set checkpoint.every_steps=100
  --set log.every_secs=0.5 --set cluster.heartbeat_secs=0.5 --set cluster.dead_after_secs=2)
accuracy() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$1/eval_results.json"; }
# The global step the workers last logged (they keep logging while the master is down).
logged_step() {
  cat "$tmp"/runlogs/worker*.log 2> /dev/null | sed -n 's/.*global step \([0-9]*\)\/.*/\1/p' | sort -n | tail -1
}
wait_step() { # wait_step N: until a worker logged global step >= N
  for _ in $(seq 1 600); do
    [ "$(logged_step || echo 0)" -ge "$1" ] 2> /dev/null && return 0
    sleep 0.1
  done
  fail "global step $1 never reached: $(tail -3 "$tmp/runlogs/master0.log")"
}

"$root/scripts/train_local_dist.sh" "${args[@]}" --set checkpoint.model_dir="$tmp/calm" \
  > "$tmp/calm.out" 2>&1 || fail "undisturbed run: $(tail -5 "$tmp/calm.out")"
calm=$(accuracy "$tmp/calm")
rm -rf "$tmp/runlogs"

"$root/scripts/train_local_dist.sh" "${args[@]}" --set checkpoint.model_dir="$tmp/hurt" \
  > "$tmp/hurt.out" 2>&1 &
run=$!
wait_step 400
kill -9 "$(cat "$tmp/runlogs/worker1.pid")"
"$root/scripts/restart_role.sh" worker 1 > /dev/null
wait_step 900
kill -9 "$(cat "$tmp/runlogs/ps1.pid")"
sleep 0.5
"$root/scripts/restart_role.sh" ps 1 > /dev/null
for _ in $(seq 1 100); do grep -q "rolled back to ckpt-" "$tmp/runlogs/master0.log" && break; sleep 0.1; done
grep -q "rolled back to ckpt-" "$tmp/runlogs/master0.log" || fail "no rollback after ps1 restarted"
wait_step 1800
kill -9 "$(cat "$tmp/runlogs/master0.pid")"
down=$(logged_step)
sleep 3
up=$(logged_step)
[ "$up" -gt "$down" ] || fail "global step stuck at $down while the master was down"
"$root/scripts/restart_role.sh" master 0 > /dev/null
wait "$run" || fail "disturbed run: $(tail -5 "$tmp/hurt.out")"
hurt=$(accuracy "$tmp/hurt")
grep -q "worker1 restarted" "$tmp/runlogs/master0.log" || fail "the master never saw worker1 restart"
grep -q "resumed from $tmp/hurt/ckpt-" "$tmp/runlogs/ps1.log" || fail "ps1 did not restore a checkpoint"
python3 - "$calm" "$hurt" <<'PY'
import sys
calm, hurt = map(float, sys.argv[1:])
assert abs(calm - hurt) <= 0.01, "undisturbed %.4f, disturbed %.4f" % (calm, hurt)
print("kill -9 of a worker, a PS and the master: accuracy %.4f (undisturbed %.4f)" % (hurt, calm))
PY
for step in $(python3 -c "import json,sys; print(*json.load(open(sys.argv[1]))['kept_steps'])" "$tmp/hurt/checkpoint"); do
  "$build/pstrain" export --checkpoint "$tmp/hurt/ckpt-$step" --out "$tmp/x" > /dev/null ||
    fail "ckpt-$step in the manifest does not load"
done

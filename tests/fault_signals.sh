#!/usr/bin/env bash
# Signals, exits and pid files, with real processes:
# - a pid file left by a dead process is replaced; one naming a live daemon
#   of the same program is one error line and exit 2; a clean exit removes it;
# - SIGTERM stops a PS (finishing calls in flight) with status 0;
# - in a training cluster, SIGTERM stops a worker after its step and the
#   master after a checkpoint of the step it reached (pid files removed,
#   so the daemons went through their clean exit); both restart through
#   scripts/restart_role.sh and the run finishes;
# - start order: a worker started before its PS listens gets through within
#   seconds of the PS coming up (gRPC alone kept failing fast for over 20 s);
# - the stall watchdog: with every worker frozen (SIGSTOP) for longer than
#   cluster.stall_secs, the master logs STALL and restores every PS from the
#   latest checkpoint; thawed, the run finishes.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
export PSTRAIN_RUNLOGS=$tmp/runlogs
. "$(dirname "$0")/lib/check.sh"
test_cleanup() {
  [ -n "${ps_pid:-}" ] && kill -9 "$ps_pid" 2> /dev/null
  [ -n "${worker_pid:-}" ] && kill -9 "$worker_pid" 2> /dev/null
}
trap cluster_test_cleanup EXIT
unset TF_CONFIG

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
wait_gone() { # wait_gone PID: until PID has exited (20 s)
  for _ in $(seq 1 200); do kill -0 "$1" 2> /dev/null || return 0; sleep 0.1; done
  fail "process $1 is still running"
}

# --- pid files and SIGTERM, one PS on its own ---
port=$(free_port)
export TF_CONFIG="{\"cluster\": {\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:$port\"], \"worker\": [\"127.0.0.1:2\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}"
sh -c 'exit 0' &
dead=$!
wait "$dead"
echo "$dead" > "$tmp/ps.pid"
"$build/pstrain-ps" --pid-file "$tmp/ps.pid" --set checkpoint.model_dir="$tmp/ps-model" \
  > "$tmp/ps.log" 2>&1 &
ps_pid=$!
for _ in $(seq 1 100); do [ "$(cat "$tmp/ps.pid")" = "$ps_pid" ] && break; sleep 0.1; done
[ "$(cat "$tmp/ps.pid")" = "$ps_pid" ] || fail "the PS did not replace a stale pid file: $(cat "$tmp/ps.log")"
grep -q "named process $dead, which is gone" "$tmp/ps.log" || fail "stale pid file not reported: $(cat "$tmp/ps.log")"
wait_log "$tmp/ps.log" "listening on" "the PS never listened"

# A second PS on the same pid file while the first runs: refused, file kept.
expect_error 2 "is still running" "$build/pstrain-ps" --pid-file "$tmp/ps.pid" \
  --set checkpoint.model_dir="$tmp/ps-model"
[ "$(cat "$tmp/ps.pid")" = "$ps_pid" ] || fail "the refused PS changed the pid file"

kill -TERM "$ps_pid"
rc=0
wait "$ps_pid" || rc=$?
ps_pid=
[ "$rc" -eq 0 ] || fail "the PS exited $rc on SIGTERM, want 0: $(tail -3 "$tmp/ps.log")"
grep -q "stopping on signal 15: finishing calls in flight" "$tmp/ps.log" || fail "no stop line: $(tail -3 "$tmp/ps.log")"
[ ! -e "$tmp/ps.pid" ] || fail "the PS left its pid file after a clean exit"
unset TF_CONFIG

# --- a worker started before its PS ---
need_fashion_mnist
port=$(free_port)
cl="{\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:$port\"], \"worker\": [\"127.0.0.1:2\"]}"
TF_CONFIG="{\"cluster\": $cl, \"task\": {\"type\": \"worker\", \"index\": 0}}" \
  "$build/pstrain-worker" --set model=mlp --set train.max_steps=20 \
  --set checkpoint.model_dir="$tmp/early" > "$tmp/early-worker.log" 2>&1 &
worker_pid=$!
wait_log "$tmp/early-worker.log" "Pull to 127.0.0.1:$port: UNAVAILABLE" "the worker never tried the PS"
sleep 1
TF_CONFIG="{\"cluster\": $cl, \"task\": {\"type\": \"ps\", \"index\": 0}}" \
  "$build/pstrain-ps" --set model=mlp --set checkpoint.model_dir="$tmp/early" > "$tmp/early-ps.log" 2>&1 &
ps_pid=$!
wait_log "$tmp/early-ps.log" "listening on" "the late PS never listened"
# Our retries are at most rpc.retry_max_secs (2 s) apart: 10 s is ample.
wait_log "$tmp/early-worker.log" "every PS answered again" "the worker never reached the PS that came up late" 10
wait "$worker_pid" || fail "the early worker exited $?: $(tail -3 "$tmp/early-worker.log")"
worker_pid=
kill -TERM "$ps_pid"
wait "$ps_pid" || fail "the late PS exited $? on SIGTERM"
ps_pid=

# --- SIGTERM to a worker and to the master of a training cluster ---
dir=$tmp/model
"$root/scripts/train_local_dist.sh" --set model=mlp --set train.epochs=3 \
  --set checkpoint.every_secs=600 --set log.every_secs=0.2 \
  --set cluster.heartbeat_secs=0.5 --set cluster.dead_after_secs=2 \
  --set checkpoint.model_dir="$dir" > "$tmp/run.out" 2>&1 &
run=$!
wait_log "$tmp/runlogs/worker1.log" "global step [1-9][0-9][0-9]/" "training never reached step 100"

pid=$(cat "$tmp/runlogs/worker1.pid")
kill -TERM "$pid"
wait_gone "$pid"
grep -q "stopping on signal 15 after local step" "$tmp/runlogs/worker1.log" ||
  fail "worker1 did not stop after its step: $(tail -3 "$tmp/runlogs/worker1.log")"
[ ! -e "$tmp/runlogs/worker1.pid" ] || fail "worker1 left its pid file after SIGTERM"
"$root/scripts/restart_role.sh" worker 1 > /dev/null

# checkpoint.every_secs is 600: the only checkpoint before the end is the
# one SIGTERM makes.
pid=$(cat "$tmp/runlogs/master0.pid")
kill -TERM "$pid"
wait_gone "$pid"
grep -q "stopping on signal 15: checkpoint first" "$tmp/runlogs/master0.log" ||
  fail "the master did not checkpoint on SIGTERM: $(tail -3 "$tmp/runlogs/master0.log")"
[ -f "$dir/checkpoint" ] || fail "no manifest after the master's SIGTERM"
step=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latest_step'])" "$dir/checkpoint")
[ "$step" -ge 100 ] || fail "the SIGTERM checkpoint is at step $step, want the step training reached"
"$build/pstrain" export --checkpoint "$dir/ckpt-$step" --out "$tmp/x" > /dev/null ||
  fail "the SIGTERM checkpoint ckpt-$step does not load"
[ ! -e "$tmp/runlogs/master0.pid" ] || fail "the master left its pid file after SIGTERM"
"$root/scripts/restart_role.sh" master 0 > /dev/null

wait "$run" || fail "run: $(tail -5 "$tmp/run.out")"
python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['accuracy']; assert a >= 0.80, a" \
  "$dir/eval_results.json" || fail "accuracy after the restarts: $(cat "$dir/eval_results.json")"
for role in master0 ps0 ps1 worker0 worker1; do
  [ ! -e "$tmp/runlogs/$role.pid" ] || fail "$role left its pid file at the end"
done
echo "SIGTERM: worker1 stopped after its step, the master checkpointed ckpt-$step; the run finished"

# --- the stall watchdog ---
dir=$tmp/stall
rm -rf "$tmp/runlogs"
"$root/scripts/train_local_dist.sh" --set model=mlp --set train.epochs=2 \
  --set checkpoint.every_steps=100 --set log.every_secs=0.2 --set cluster.stall_secs=2 \
  --set cluster.heartbeat_secs=0.5 --set cluster.dead_after_secs=30 \
  --set checkpoint.model_dir="$dir" > "$tmp/stall.out" 2>&1 &
run=$!
wait_log "$tmp/runlogs/worker1.log" "global step [3-9][0-9][0-9]/" "training never reached step 300"
workers="$(cat "$tmp/runlogs/worker0.pid") $(cat "$tmp/runlogs/worker1.pid")"
kill -STOP $workers
wait_log "$tmp/runlogs/master0.log" "STALL: the global step has not moved" "no stall reported" 20
wait_log "$tmp/runlogs/master0.log" "STALL.*every PS rolled back to ckpt-" "the stall did not restore the PS"
kill -CONT $workers
wait "$run" || fail "stall run: $(tail -5 "$tmp/stall.out")"
python3 -c "import json,sys; a=json.load(open(sys.argv[1]))['accuracy']; assert a >= 0.80, a" \
  "$dir/eval_results.json" || fail "accuracy after the stall: $(cat "$dir/eval_results.json")"
echo "stall watchdog: $(grep -m1 'STALL.*rolled back' "$tmp/runlogs/master0.log" | sed 's/.*WARN //')"

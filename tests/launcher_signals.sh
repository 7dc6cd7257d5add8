#!/usr/bin/env bash
# Signals and stop.sh against scripts/train_local_dist.sh, real processes:
# SIGINT to the launcher's process group (Ctrl-C) and SIGTERM to the launcher
# stop the whole cluster, the master checkpointing first, and no pstrain
# process is left after 15 s;
# `stop.sh --help` prints its usage and leaves a running cluster running;
# stop.sh then ends the launcher's wait at once (exit 143, no metrics); every
# script answers --help with usage and exit 0, doing nothing else; a master
# stopped during an evaluation does not wait for it.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist
export PSTRAIN_RUNLOGS=$tmp/runlogs

# start_run NAME: a long MLP run in the background, in a process group of
# its own (the launcher is its leader), once a worker has stepped. As a
# terminal's foreground job: SIGINT back to its default (bash starts a
# background command with SIGINT ignored, and a shell cannot trap a signal
# ignored on entry).
start_run() {
  md=$tmp/$1
  rm -rf "$tmp/runlogs"
  python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setpgid(0, 0)
os.execvp(sys.argv[1], sys.argv[1:])' "$root/scripts/train_local_dist.sh" --set model=mlp \
    --set train.max_steps=100000 --set checkpoint.model_dir="$md" > "$tmp/$1.out" 2>&1 &
  run=$!
  wait_log "$tmp/runlogs/worker1.log" "first step done" "$1: worker1 never made a step" 60
}
# gone_within SECS: no daemon of the run is left after at most SECS seconds.
gone_within() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    pgrep -f -- "checkpoint.model_dir=$md" > /dev/null || return 0
    sleep 0.1
  done
  fail "processes left $1 s after the stop: $(pgrep -af -- "checkpoint.model_dir=$md")"
}

# Ctrl-C: SIGINT to the whole process group.
start_run sigint
sleep 1
kill -INT -- "-$run"
gone_within 15
rc=0
wait "$run" || rc=$?
[ "$rc" -eq 130 ] || fail "SIGINT: the launcher exited $rc, want 130: $(tail -5 "$tmp/sigint.out")"
# The daemons run in sessions of their own: the launcher stops the master
# first (SIGTERM), whose checkpoint needs every PS still up.
grep -q "stopping on signal 15: checkpoint first" "$tmp/runlogs/master0.log" &&
  grep -q "checkpoint .*/ckpt-[0-9]* written by 2 PS" "$tmp/runlogs/master0.log" ||
  fail "the master did not checkpoint on stop: $(tail -3 "$tmp/runlogs/master0.log")"
[ -f "$md/checkpoint" ] || fail "no checkpoint after SIGINT"
grep -q "stopped at global step [1-9]" "$tmp/sigint.out" || fail "SIGINT: no stop line: $(cat "$tmp/sigint.out")"
echo "SIGINT to the process group: exit 130, no process left"

# SIGTERM to the launcher alone: the same, exit 143.
start_run sigterm
kill -TERM "$run"
gone_within 15
rc=0
wait "$run" || rc=$?
[ "$rc" -eq 143 ] || fail "SIGTERM: the launcher exited $rc, want 143: $(tail -5 "$tmp/sigterm.out")"
grep -q "checkpoint .*/ckpt-[0-9]* written by 2 PS" "$tmp/runlogs/master0.log" ||
  fail "the master did not checkpoint on the launcher's SIGTERM: $(tail -3 "$tmp/runlogs/master0.log")"
echo "SIGTERM to the launcher: exit 143, no process left"

# SIGTERM while the master evaluates (held there by a failpoint): the
# master checkpoints and exits without waiting for the evaluation, within
# stop.sh's grace (no SIGKILL).
rm -rf "$tmp/runlogs"
md=$tmp/evaluating
PSTRAIN_FAILPOINT=master0:evaluate@1 "$root/scripts/train_local_dist.sh" --set model=mlp \
  --set train.max_steps=100000 --set checkpoint.every_steps=100 --set checkpoint.model_dir="$md" \
  > "$tmp/evaluating.out" 2>&1 &
run=$!
wait_log "$tmp/runlogs/master0.log" "failpoint evaluate reached" "the master never began an evaluation" 60
PSTRAIN_STOP_GRACE=10 "$root/scripts/stop.sh" > "$tmp/stop.out"
grep -q SIGKILL "$tmp/stop.out" && fail "the master needed SIGKILL during an evaluation: $(cat "$tmp/stop.out")"
grep -q "stopping during an evaluation: not waiting for it" "$tmp/runlogs/master0.log" ||
  fail "no line about the evaluation: $(tail -3 "$tmp/runlogs/master0.log")"
wait "$run" || true
gone_within 5
echo "SIGTERM during an evaluation: the master exited within the grace"

# stop.sh --help stops nothing; stop.sh ends the launcher at once.
start_run stophelp
pids=$(cat "$tmp/runlogs"/*.pid)
"$root/scripts/stop.sh" --help > "$tmp/help.out" || fail "stop.sh --help exited $?"
grep -q "usage: scripts/stop.sh" "$tmp/help.out" || fail "stop.sh --help: $(cat "$tmp/help.out")"
sleep 2
for pid in $pids; do kill -0 "$pid" 2> /dev/null || fail "stop.sh --help stopped pid $pid"; done
[ ! -e "$tmp/runlogs/stopped" ] || fail "stop.sh --help marked the cluster stopped"
t0=$(date +%s)
PSTRAIN_STOP_GRACE=10 "$root/scripts/stop.sh" > /dev/null
rc=0
wait "$run" || rc=$?
secs=$(($(date +%s) - t0))
[ "$rc" -eq 143 ] || fail "after stop.sh the launcher exited $rc, want 143: $(tail -5 "$tmp/stophelp.out")"
[ "$secs" -le 15 ] || fail "the launcher took ${secs}s to end after stop.sh"
grep -q "stopped by scripts/stop.sh" "$tmp/stophelp.out" || fail "no stop line: $(cat "$tmp/stophelp.out")"
grep -q "final test metrics" "$tmp/stophelp.out" && fail "metrics printed after stop.sh: $(cat "$tmp/stophelp.out")"
gone_within 5
echo "stop.sh --help: the cluster ran on; stop.sh: the launcher ended in ${secs}s"

# Every script: --help prints usage, exits 0, starts nothing.
export PSTRAIN_RUNLOGS=$tmp/help-runlogs
for f in "$root"/scripts/*.sh; do
  rc=0
  out=$(timeout 10 bash "$f" --help 2>&1) || rc=$?
  [ "$rc" -eq 0 ] || fail "$(basename "$f") --help exited $rc: $out"
  grep -qi "usage\|scripts/" <<< "$out" || fail "$(basename "$f") --help: no usage: $out"
done
[ ! -e "$tmp/help-runlogs" ] || fail "a script's --help made $tmp/help-runlogs"
echo ok

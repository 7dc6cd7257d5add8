#!/usr/bin/env bash
# scripts/train_local_dist.sh watches every role and tells the truth, with
# real processes: a run finishes and reports this run's own evaluation; the
# same finished model_dir again is refused (non-zero, no metrics); a PS that
# cannot resume (another optimizer) stops the cluster within 30 s naming ps0
# and its error; a longer target resumes and says so; device=gpu without a
# GPU fails naming the worker (exit 69); a worker killed with kill -9 is
# restarted by the launcher and the run finishes. Nothing is appended to the
# checkout's training_log.md.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist
export PSTRAIN_RUNLOGS=$tmp/runlogs PSTRAIN_TRAINING_LOG=$tmp/training_log.md
md=$tmp/model
user_log_lines() { if [ -f "$root/training_log.md" ]; then wc -l < "$root/training_log.md"; else echo 0; fi; }
user_log_before=$(user_log_lines)

# launch NAME ARGS...: runs the launcher; its output in $tmp/NAME.out, its
# status in $rc and its time in $secs.
launch() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  set +e
  timeout 120 "$root/scripts/train_local_dist.sh" --set model=mlp --set checkpoint.model_dir="$md" \
    "$@" > "$tmp/$name.out" 2>&1
  rc=$?
  set -e
  secs=$(($(date +%s) - t0))
  [ "$rc" -ne 124 ] || fail "$name: the launcher hung: $(tail -5 "$tmp/$name.out")"
}
# no_process: no daemon of the test's runs is left.
no_process() {
  pgrep -f -- "checkpoint.model_dir=$md" > /dev/null && fail "$1: daemons left: $(pgrep -af -- "checkpoint.model_dir=$md")"
  return 0
}

launch first --set train.max_steps=200
[ "$rc" -eq 0 ] || fail "first run exited $rc: $(tail -5 "$tmp/first.out")"
grep -q "final test metrics of this run .*global_step=20[0-9] loss=[0-9]\.[0-9]\{4\} accuracy=0\.[0-9]\{4\}$" "$tmp/first.out" ||
  fail "first run: no final metrics line: $(tail -3 "$tmp/first.out")"
grep -q "global_step=20[0-9] loss=[0-9]\.[0-9]\{4\} accuracy=0\.[0-9]\{4\};" "$tmp/training_log.md" ||
  fail "training log line not rounded to 4 digits: $(cat "$tmp/training_log.md")"
grep -q "evaluation of ckpt-" "$tmp/first.out" || fail "the evaluation was not shown: $(cat "$tmp/first.out")"

launch finished --set train.max_steps=200
[ "$rc" -ne 0 ] || fail "a finished model_dir was run again with exit 0"
grep -q "$md already finished at step 20[0-9]; use a new checkpoint.model_dir or raise train.epochs" "$tmp/finished.out" ||
  fail "finished model_dir: no clear line: $(cat "$tmp/finished.out")"
grep -qi "accuracy" "$tmp/finished.out" && fail "finished model_dir: old metrics printed: $(cat "$tmp/finished.out")"
no_process "finished"

launch optimizer --set train.max_steps=400 --set train.optimizer=adam
[ "$rc" -ne 0 ] || fail "a PS that cannot resume: the launcher exited 0"
[ "$secs" -le 30 ] || fail "a PS that cannot resume: the launcher took ${secs}s"
grep -q "ps0 failed with exit status $rc: .*cannot resume: .*optimizer sgd; train.optimizer is adam" "$tmp/optimizer.out" ||
  fail "the failure does not name ps0 and its error: $(cat "$tmp/optimizer.out")"
grep -q "  log: $tmp/runlogs/ps0.log" "$tmp/optimizer.out" || fail "no log path: $(cat "$tmp/optimizer.out")"
no_process "ps0 cannot resume"
echo "a PS that cannot resume: exit $rc after ${secs}s, naming ps0"

launch resumed --set train.max_steps=400
[ "$rc" -eq 0 ] || fail "resumed run exited $rc: $(tail -5 "$tmp/resumed.out")"
grep -q "resumed from ckpt-20[0-9] (step 20[0-9] of 400)" "$tmp/resumed.out" ||
  fail "the resumed run did not say so: $(cat "$tmp/resumed.out")"

# The GPU plugin may well be built (nvcc and cuDNN are installed on CI); what
# makes device=gpu work is a GPU device.
if [ -e /dev/nvidia0 ]; then
  echo "SKIP device=gpu part: this machine has a GPU (/dev/nvidia0)"
else
  md=$tmp/gpu
  launch gpu --set train.max_steps=100 --set device=gpu
  [ "$rc" -eq 69 ] || fail "device=gpu without a GPU: exit $rc, want 69: $(cat "$tmp/gpu.out")"
  grep -q "worker[0-9]* failed with exit status 69: .*device=gpu" "$tmp/gpu.out" ||
    fail "device=gpu: the worker is not named: $(cat "$tmp/gpu.out")"
  no_process "device=gpu"
fi

# kill -9 of a worker (exit 137): restarted by the launcher, the run finishes.
md=$tmp/killed
"$root/scripts/train_local_dist.sh" --set model=mlp --set checkpoint.model_dir="$md" \
  --set train.max_steps=30000 > "$tmp/killed.out" 2>&1 &
run=$!
wait_log "$tmp/runlogs/worker1.log" "first step done" "worker1 never made a step"
pid=$(cat "$tmp/runlogs/worker1.pid" 2> /dev/null) || fail "the run ended before worker1 could be killed"
kill -9 "$pid"
wait "$run" || fail "run with a killed worker: $(tail -5 "$tmp/killed.out")"
grep -q "worker1 ended with status 137 .*restarted it (pid [0-9]*, restart 1 of 3)" "$tmp/killed.out" ||
  fail "the killed worker was not restarted: $(cat "$tmp/killed.out")"
grep -q "== restart .* by scripts/train_local_dist.sh (it ended with status 137)" "$tmp/runlogs/worker1.log" || fail "no restart mark in worker1.log"

[ "$(user_log_lines)" -eq "$user_log_before" ] ||
  fail "the test appended to the checkout's training_log.md"
echo ok

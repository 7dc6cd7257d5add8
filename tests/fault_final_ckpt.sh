#!/usr/bin/env bash
# A final checkpoint that cannot be written (issue 17, item 3), with real
# processes: ps0's disk is "full" for its first 5 checkpoint files (the error
# failpoint PSTRAIN_FAILPOINT=ps0:checkpoint_write@1-5). The master tries the
# final checkpoint 5 times with backoff, does not tell the PS that training
# is over, and exits 130 (a restart may cure it); both PS stay up with the
# trained model; a restarted master takes the final checkpoint, evaluates,
# and the run ends with a final manifest at the step training reached.
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
alive_pid() { [ -n "$1" ] && kill -0 "$1" 2> /dev/null; }

# No periodic checkpoints: the final one is ps0's first checkpoint file.
PSTRAIN_FAILPOINT=ps0:checkpoint_write@1-5 "$root/scripts/train_local_dist.sh" --set model=mlp \
  --set train.max_steps=300 --set checkpoint.every_steps=0 --set checkpoint.every_secs=0 \
  --set cluster.heartbeat_secs=0.5 --set checkpoint.model_dir="$md" > "$tmp/run.out" 2>&1 &
run=$!
# The pid now: the master removes its pid file when it exits.
for _ in $(seq 1 100); do [ -s "$logs/master0.pid" ] && break; sleep 0.1; done
master=$(cat "$logs/master0.pid")
wait_log "$logs/master0.log" "attempt 5 of 5" "the master did not try the final checkpoint 5 times" 120
for _ in $(seq 1 100); do alive_pid "$master" || break; sleep 0.1; done
alive_pid "$master" && fail "the master still runs after 5 failed final checkpoints"
set +e
wait "$run"
set -e
grep -q "the master exited with status 130" "$tmp/run.out" ||
  fail "the master did not exit 130: $(tail -3 "$tmp/run.out")"
grep -q "ERROR no final checkpoint at step" "$logs/master0.log" || fail "no line says why the master exits"
for ps in ps0 ps1; do
  alive_pid "$(cat "$logs/$ps.pid")" || fail "$ps exited: $(tail -3 "$logs/$ps.log")"
  grep -q "training is over" "$logs/$ps.log" && fail "$ps was told training is over"
done
[ "$(grep -c 'failpoint checkpoint_write: failing here' "$logs/ps0.log")" -eq 5 ] ||
  fail "ps0 did not fail 5 writes: $(grep failpoint "$logs/ps0.log")"
[ -f "$md/checkpoint" ] && fail "a manifest was committed although every final checkpoint failed"

# Restarted, the master finishes the job from the PS's model.
"$root/scripts/restart_role.sh" master 0 > /dev/null
master=$(cat "$logs/master0.pid" 2> /dev/null || true)
for _ in $(seq 1 600); do alive_pid "$master" || break; sleep 0.1; done
alive_pid "$master" && fail "the restarted master did not finish in 60 s"
grep -q "final evaluation at global step" "$logs/master0.log" || fail "no final evaluation"
final=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['final'], m['latest_step'])" "$md/checkpoint")
step=${final#* }
[ "${final% *}" = True ] && [ "$step" -ge 300 ] || fail "manifest: $final"
got=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['global_step'])" "$md/eval_results.json")
[ "$got" = "$step" ] || fail "eval_results.json is at step $got, the manifest at $step"
for ps in ps0 ps1; do
  for _ in $(seq 1 100); do alive_pid "$(cat "$logs/$ps.pid" 2> /dev/null)" || break; sleep 0.1; done
  alive_pid "$(cat "$logs/$ps.pid" 2> /dev/null)" && fail "$ps still runs after the final checkpoint"
  grep -q "training is over" "$logs/$ps.log" || fail "$ps was not told training is over"
done
"$build/pstrain" export --checkpoint "$md/ckpt-$step" --out "$tmp/x" > /dev/null || fail "ckpt-$step does not load"
echo "final checkpoint failed 5 times: master exited 130, PS stayed up; the restarted master wrote ckpt-$step (final)"

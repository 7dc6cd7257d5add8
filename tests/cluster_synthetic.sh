#!/usr/bin/env bash
# Synthetic workers (train.synthetic_step_ms): a master, 2 PS and 6 workers
# that read no data and sleep instead of computing, as real processes on
# loopback, finish a short async run and a short sync run: every process
# exits 0, every worker made steps and says it is synthetic, the global
# step reaches the target, and the model the master evaluates is still
# sane (finite loss, no worse than the initial model's chance level).
# Bounded staleness (train.mode=ssp): with one worker 20x slower than the
# others, no worker ends more than train.staleness (+1 for its last push,
# +1 for counting) steps ahead of it; killed, the slow worker holds the
# others only until cluster.dead_after_secs, and the run finishes.
# A worker alone (no TF_CONFIG) refuses the key with one clear line.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
pids=()
declare -A wargs # extra arguments of worker i
kill_worker=""   # a worker killed (SIGKILL) after its first step
solo_first=""    # start worker 0 alone and the others once it has pushed
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

need_fashion_mnist
need_python3 json

# ports N: N consecutive ports that nothing listens on, from a random base
# below the kernel's ephemeral range, in $ports (no subshell: each run of
# this function sees what it handed out).
ports() {
  local n=$1 low base p ok
  low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || echo 32768)
  while :; do
    base=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000 - n)))
    ok=1
    for ((p = base; p < base + n; p++)); do
      if (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then ok=0 && break; fi
    done
    [ "$ok" = 1 ] && break
  done
  ports=()
  for ((p = base; p < base + n; p++)); do ports+=("$p"); done
}

# run_cluster NAME NWORKERS ARGS...: a master, 2 PS and NWORKERS synthetic
# workers with ARGS; waits for every process (at most 180 s) and fails on
# any non-zero exit.
run_cluster() {
  local name=$1 nw=$2
  shift 2
  local nps=2 i
  ports $((1 + nps + nw))
  local addr=() w=()
  for i in "${ports[@]}"; do addr+=("\"127.0.0.1:$i\""); done
  local cluster="{\"master\": [${addr[0]}], \"ps\": [${addr[1]}, ${addr[2]}], \"worker\": [$(
    IFS=,
    echo "${addr[*]:3}"
  )]}"
  local logs=$tmp/$name
  mkdir -p "$logs"
  local args=(--set model=mlp --set threads=1 --set train.synthetic_step_ms=20
    --set checkpoint.model_dir="$logs/model" --set log.every_secs=1 "$@")
  pids=()
  local names=()
  start() {
    # shellcheck disable=SC2086
    TF_CONFIG="{\"cluster\": $cluster, \"task\": {\"type\": \"$1\", \"index\": $2}}" \
      timeout 180 "$build/pstrain-$1" "${args[@]}" ${3:-} --pid-file "$logs/$1$2.pid" \
      > "$logs/$1$2.log" 2>&1 &
    pids+=($!)
    names+=("$1$2")
  }
  start master 0
  for ((i = 0; i < nps; i++)); do start ps "$i"; done
  for ((i = 0; i < nw; i++)); do
    start worker "$i" "${wargs[$i]:-}"
    if [ "$i" = 0 ] && [ -n "$solo_first" ]; then
      wait_log "$logs/worker0.log" "first step done" "$name: worker0 never stepped" 60
    fi
  done
  if [ -n "$kill_worker" ]; then
    wait_log "$logs/worker$kill_worker.log" "first step done" "$name: worker$kill_worker never stepped" 60
    sleep 0.5
    kill -KILL "$(cat "$logs/worker$kill_worker.pid")"
  fi
  local rc want
  for i in "${!pids[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    want=0
    [ "${names[$i]}" = "worker$kill_worker" ] && want=137
    [ "$rc" -eq "$want" ] || fail "$name: ${names[$i]} exited $rc: $(tail -3 "$logs/${names[$i]}.log")"
  done
  pids=()
  for ((i = 0; i < nw; i++)); do
    grep -q "synthetic, [0-9]* ms a step" "$logs/worker$i.log" || fail "$name: worker$i is not synthetic"
    grep -q "first step done" "$logs/worker$i.log" || fail "$name: worker$i made no step"
  done
  if grep -H " ERROR " "$logs"/*.log; then fail "$name: a process logged an error"; fi
}

# Async: every push is a global step, so the workers' local steps add up to
# at least the target, and the weight-decay gradients leave the model sane.
steps=300
run_cluster async 6 --set train.max_steps=$steps
local_steps=$(sed -n 's/.*training is over at global step [0-9]* (\([0-9]*\) local steps.*/\1/p' \
  "$tmp"/async/worker*.log | paste -sd+ | bc)
[ "${local_steps:-0}" -ge "$steps" ] || fail "async: the workers' local steps add up to ${local_steps:-0} < $steps"
"$py" - "$tmp/async/model/eval_results.json" "$steps" << 'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["global_step"] >= int(sys.argv[2]), r
# The MLP's initial loss is about ln(10) = 2.30; decay gradients keep it there.
assert math.isfinite(r["loss"]) and r["loss"] < 3.0, r
print("synthetic async: global step %d, loss %.4f" % (r["global_step"], r["loss"]))
PY

# Sync: each global step averages one push of each of the 4 workers.
run_cluster sync 4 --set train.max_steps=30 --set train.mode=sync
"$py" - "$tmp/sync/model/eval_results.json" << 'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))
assert r["global_step"] >= 30, r
assert math.isfinite(r["loss"]) and r["loss"] < 3.0, r
print("synthetic sync: global step %d, loss %.4f" % (r["global_step"], r["loss"]))
PY

# local_steps DIR I: the local steps worker I made, from its last line.
local_steps() {
  sed -n 's/.*training is over at global step [0-9]* (\([0-9]*\) local steps.*/\1/p' "$1/worker$2.log"
}
# ssp: worker 0 takes 200 ms a step, workers 1 and 2 take 10 ms. Worker 0
# starts first: a worker counts for the bound once it has pushed, so the
# others start level with it.
wargs=([0]="--set train.synthetic_step_ms=200")
solo_first=1
run_cluster ssp 3 --set train.mode=ssp --set train.staleness=2 --set train.synthetic_step_ms=10 \
  --set train.max_steps=60
grep -q "ssp: a worker's pull waits while it is over 2 steps ahead" "$tmp/ssp/ps0.log" ||
  fail "ssp: ps0 does not say it bounds staleness"
slow=$(local_steps "$tmp/ssp" 0)
for i in 1 2; do
  fast=$(local_steps "$tmp/ssp" "$i")
  [ -n "$fast" ] && [ -n "$slow" ] || fail "ssp: no local step counts: $(tail -2 "$tmp"/ssp/worker*.log)"
  [ "$fast" -le $((slow + 4)) ] || fail "ssp: worker$i made $fast local steps, the slow worker $slow (staleness 2)"
done
echo "synthetic ssp: slow worker $slow local steps, fast ones $(local_steps "$tmp/ssp" 1) and $(local_steps "$tmp/ssp" 2)"
# Without the bound (async), the fast workers run far ahead: the check above can fail.
run_cluster async-skew 3 --set train.synthetic_step_ms=10 --set train.max_steps=60
[ "$(local_steps "$tmp/async-skew" 1)" -gt $(($(local_steps "$tmp/async-skew" 0) + 4)) ] ||
  fail "async: the fast workers did not run ahead; the ssp check proves nothing"
# A dead slow worker holds the others only until it counts as dead.
solo_first=""
kill_worker=0
run_cluster ssp-dead 3 --set train.mode=ssp --set train.staleness=2 --set train.synthetic_step_ms=10 \
  --set train.max_steps=300 --set cluster.dead_after_secs=2
kill_worker=""
wargs=()
"$py" - "$tmp/ssp-dead/model/eval_results.json" << 'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["global_step"] >= 300, r
print("synthetic ssp, slow worker killed: global step %d" % r["global_step"])
PY

unset TF_CONFIG
expect_error 2 "train.synthetic_step_ms needs a cluster" "$build/pstrain-worker" --set model=mlp \
  --set train.synthetic_step_ms=5 --set checkpoint.model_dir="$tmp/alone"
echo "PASS: cluster_synthetic"

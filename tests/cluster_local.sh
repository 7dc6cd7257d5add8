#!/usr/bin/env bash
# End to end: a master, 2 PS and 2 workers as real processes on loopback
# (scripts/train_local_dist.sh) train the Keras guide's MLP to >= 0.80 test
# accuracy, once async and once sync; every process exits 0 and removes its
# pid file. Then the daemons' answers to bad TF_CONFIGs and a busy port.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
test_cleanup() {
  # A run still going in the background (a check failed) ends with the test.
  [ -n "${run_pid:-}" ] && pkill -f -- "checkpoint.model_dir=$tmp/" 2> /dev/null
  [ -n "${holder:-}" ] && kill "$holder" 2> /dev/null
}
trap cluster_test_cleanup EXIT

need_fashion_mnist

# PSTRAIN_TEST_SETS: more --set flags for every run, e.g. the TSan stage's
# longer heartbeat and call timeouts for daemons that run 5-15x slower.
# shellcheck disable=SC2206
extra_sets=(${PSTRAIN_TEST_SETS:-})
check_run() {
  local mode=$1 epochs=$2
  local dir=$tmp/run-$mode
  PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --set model=mlp \
    --set train.epochs="$epochs" --set train.mode="$mode" --set checkpoint.model_dir="$dir" \
    --set log.every_secs=2 ${extra_sets[@]+"${extra_sets[@]}"} > "$tmp/out-$mode" 2>&1 || fail "$mode run: $(tail -5 "$tmp/out-$mode")"
  python3 - "$dir/eval_results.json" "$mode" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["accuracy"] >= 0.80, r
assert r["global_step"] >= 468, r
print("cluster %s: accuracy %.4f at global step %d" % (sys.argv[2], r["accuracy"], r["global_step"]))
PY
  for role in master0 ps0 ps1 worker0 worker1; do
    grep -q "ERROR" "$tmp/runlogs/$role.log" && fail "$role logged an error: $(grep ERROR "$tmp/runlogs/$role.log")"
    [ -f "$tmp/runlogs/$role.pid" ] && fail "$role left its pid file"
  done
  grep -q "training is over" "$tmp/runlogs/ps1.log" || fail "ps1 did not hear that training is over"
  grep -q "registered with the master" "$tmp/runlogs/worker1.log" || fail "worker1 never registered"
}
check_run async 3 &
run_pid=$!
# A PS frozen for 2 s mid-run (SIGSTOP): workers wait for it, without
# crashing or spinning, and the run finishes when it thaws. The run takes
# seconds, so the PS is frozen as soon as a worker has made its first step.
wait_log "$tmp/runlogs/worker0.log" "first step done" "worker0 never made a step"
ps1=$(cat "$tmp/runlogs/ps1.pid")
kill -STOP "$ps1"
[ -f "$tmp/run-async/eval_results.json" ] && fail "the async run was over before ps1 froze"
sleep 2
kill -CONT "$ps1"
wait "$run_pid" || fail "async run with a frozen PS failed"
run_pid=
check_run sync 2
grep -q "stale 0\|0 stale" "$tmp/runlogs/worker0.log" ||
  fail "sync run: stale pushes counted: $(grep -H 'stale [1-9]\|averaging\|dead\|retrying\|registered' "$tmp"/runlogs/*.log | head -20)"

# The CNN with one worker: moving the dense head during compute (overlap)
# gives the same model as moving it between steps, bit for bit; the
# one-step pipeline runs to the end too.
cnn_run() {
  local name=$1
  shift
  PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --ps 2 --workers 1 \
    --set train.max_steps=20 --set data.shuffle=false --set checkpoint.model_dir="$tmp/cnn-$name" \
    "$@" > "$tmp/out-cnn-$name" 2>&1 || fail "cnn $name: $(tail -5 "$tmp/out-cnn-$name")"
}
cnn_run overlap --set train.overlap=true
grep -q "moving the head" "$tmp/runlogs/worker0.log" || fail "overlap did not engage"
cnn_run serial --set train.overlap=false
cnn_run pipeline --set train.pipeline=true
python3 - "$tmp" <<'PY'
import json, sys
r = {n: json.load(open("%s/cnn-%s/eval_results.json" % (sys.argv[1], n)))
     for n in ("overlap", "serial", "pipeline")}
assert r["overlap"]["loss"] == r["serial"]["loss"], r
assert r["overlap"]["global_step"] == r["serial"]["global_step"] == 20, r
assert r["pipeline"]["global_step"] >= 20, r
print("cnn overlap == serial: loss %.6f" % r["serial"]["loss"])
PY

c='"cluster": {"master": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"], "worker": ["127.0.0.1:3"]}'
TF_CONFIG="{$c}" expect_error 2 'missing "task"' "$build/pstrain-ps"
TF_CONFIG="{$c, \"task\": {\"type\": \"worker\", \"index\": 0}}" expect_error 2 'ps' "$build/pstrain-ps"
TF_CONFIG="{$c, \"task\": {\"type\": \"ps\", \"index\": 3}}" expect_error 2 'index 3' "$build/pstrain-ps"
TF_CONFIG="{$c, \"task\": {\"type\": \"ps\", \"index\": 0}}" expect_error 2 'master' "$build/pstrain-master"
TF_CONFIG='{"cluster": ' expect_error 2 'not JSON' "$build/pstrain-worker"
TF_CONFIG="{$c, \"task\": {\"type\": \"boss\", \"index\": 0}}" expect_error 2 'boss' "$build/pstrain-master"
unset TF_CONFIG
expect_error 2 'TF_CONFIG' "$build/pstrain-ps"
echo "{$c, \"task\": {\"type\": \"ps\", \"index\": 0}}" > "$tmp/tf.json"
expect_error 2 'tls.ca, tls.cert and tls.key' "$build/pstrain-ps" --tf-config "$tmp/tf.json" --set tls.ca=/x

# A busy port is an error naming the address, not a silent shared bind.
port=$(( 20000 + RANDOM % 40000 ))
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', $port)); s.listen(); time.sleep(60)" &
holder=$!
# Wait until the holder listens (a slow machine may take seconds to start python).
for _ in $(seq 1 100); do (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done
echo "{\"cluster\": {\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:$port\"], \"worker\": [\"127.0.0.1:3\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}" > "$tmp/busy.json"
set +e
timeout 30 "$build/pstrain-ps" --tf-config "$tmp/busy.json" --set model=mlp \
  --set checkpoint.model_dir="$tmp/busy-md" 2> "$tmp/e"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "a PS on a busy port started"
grep -q "127.0.0.1:$port" "$tmp/e" || fail "busy port error does not name the address: $(cat "$tmp/e")"
kill "$holder"
holder=""
# Mutual TLS: a cluster whose certificates come from one CA trains; a
# client without a certificate is refused.
if command -v openssl > /dev/null; then
  (
    cd "$tmp"
    printf '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = x\n[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n[node]\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth,clientAuth\n' > x.cnf
    k="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl req -x509 -new $k -keyout ca.key -out ca.pem -days 2 -config x.cnf -extensions ca -subj /CN=ca
    openssl req -new $k -keyout node.key -out node.csr -config x.cnf -subj /CN=node
    openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile x.cnf -extensions node -out node.pem
  ) > "$tmp/openssl.log" 2>&1 || fail "openssl: $(cat "$tmp/openssl.log")"
  tls=(--set tls.ca="$tmp/ca.pem" --set tls.cert="$tmp/node.pem" --set tls.key="$tmp/node.key")
  PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --set model=mlp \
    --set train.max_steps=200 --set checkpoint.model_dir="$tmp/run-tls" "${tls[@]}" \
    > "$tmp/out-tls" 2>&1 || fail "TLS run: $(tail -5 "$tmp/out-tls")"
  python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["global_step"] >= 200' \
    "$tmp/run-tls/eval_results.json" || fail "TLS run did not finish"
  # A master alone (its PS never come): plaintext status is refused, TLS works.
  mport=$(( 20000 + RANDOM % 40000 ))
  TF_CONFIG="{\"cluster\": {\"master\": [\"127.0.0.1:$mport\"], \"ps\": [\"127.0.0.1:1\"], \"worker\": [\"127.0.0.1:2\"]}, \"task\": {\"type\": \"master\", \"index\": 0}}" \
    "$build/pstrain-master" --set model=mlp --set checkpoint.model_dir="$tmp/run-m" "${tls[@]}" \
    2> "$tmp/master-tls.log" &
  holder=$!
  for _ in $(seq 1 50); do "$build/pstrain" status --master "127.0.0.1:$mport" "${tls[@]}" \
    > "$tmp/status" 2>&1 && break; sleep 0.1; done
  grep -q "ps0" "$tmp/status" || fail "status over TLS: $(cat "$tmp/status")"
  set +e
  "$build/pstrain" status --master "127.0.0.1:$mport" > /dev/null 2> "$tmp/e"
  rc=$?
  set -e
  [ "$rc" -ne 0 ] || fail "a plaintext client was served by a TLS master"
  grep -q "UNAVAILABLE" "$tmp/e" || fail "plaintext refusal: $(cat "$tmp/e")"
  kill -TERM "$holder"
  wait "$holder" || fail "master exited $? on SIGTERM"
  holder=""
else
  echo "SKIP TLS part: openssl is not installed (scripts/setup.sh installs it)"
fi
echo ok

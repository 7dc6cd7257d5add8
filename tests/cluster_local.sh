#!/usr/bin/env bash
# End to end: a master, 2 PS and 2 workers as real processes on loopback
# (scripts/train_local_dist.sh) train the Keras guide's MLP to >= 0.80 test
# accuracy, once async and once sync; every process exits 0 and removes its
# pid file. Then the daemons' answers to bad TF_CONFIGs and a busy port.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
cleanup() {
  PSTRAIN_RUNLOGS=$tmp/runlogs PSTRAIN_STOP_GRACE=2 "$root/scripts/stop.sh" > /dev/null 2>&1 || true
  [ -n "${holder:-}" ] && kill "$holder" 2> /dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/lib/check.sh"

data=/usr/share/datasets/fashion-mnist
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: $data is not installed (scripts/setup.sh installs it)"
  exit 0
fi

check_run() {
  local mode=$1
  local dir=$tmp/run-$mode
  PSTRAIN_RUNLOGS=$tmp/runlogs "$root/scripts/train_local_dist.sh" --set model=mlp \
    --set train.epochs=2 --set train.mode="$mode" --set checkpoint.model_dir="$dir" \
    --set log.every_secs=2 > "$tmp/out-$mode" 2>&1 || fail "$mode run: $(tail -5 "$tmp/out-$mode")"
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
check_run async
check_run sync
grep -q "stale 0\|0 stale" "$tmp/runlogs/worker0.log" || fail "sync run: stale pushes counted"

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
sleep 0.5
echo "{\"cluster\": {\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:$port\"], \"worker\": [\"127.0.0.1:3\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}" > "$tmp/busy.json"
set +e
"$build/pstrain-ps" --tf-config "$tmp/busy.json" --set model=mlp 2> "$tmp/e"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "a PS on a busy port started"
grep -q "127.0.0.1:$port" "$tmp/e" || fail "busy port error does not name the address: $(cat "$tmp/e")"
echo ok

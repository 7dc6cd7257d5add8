# Helpers for the shell tests (sourced, not run: tests/*.sh are the tests).
# Each test sets $tmp to a scratch directory first.

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# expect_error CODE FRAGMENT CMD...: CMD exits CODE, and its stderr holds
# exactly one error line (log lines at INFO or WARN aside: a daemon's banner
# may come first), which contains FRAGMENT.
expect_error() {
  local code=$1 fragment=$2
  shift 2
  set +e
  "$@" > "$tmp/expect.out" 2> "$tmp/expect.err"
  local rc=$?
  set -e
  [ "$rc" -eq "$code" ] || fail "$* exited $rc, want $code; stderr: $(cat "$tmp/expect.err")"
  grep -qF -- "$fragment" "$tmp/expect.err" ||
    fail "$*: stderr lacks '$fragment': $(cat "$tmp/expect.err")"
  local lines
  lines=$(grep -v -E '^[0-9-]+ [0-9:.]+ [a-z]+[0-9]*\[[0-9]+\] (INFO|WARN) ' "$tmp/expect.err" |
    grep -c . || true)
  [ "$lines" -eq 1 ] || fail "$*: $lines error lines, want one: $(cat "$tmp/expect.err")"
  grep -F -- "$fragment" "$tmp/expect.err" | grep -qv -E ' (INFO|WARN) ' ||
    fail "$*: '$fragment' is not in the error line: $(cat "$tmp/expect.err")"
}

# need_python3 MODULE...: Debian's python3 (not a pyenv or venv one first on
# PATH), with the Debian packages' modules the test imports; sets $py.
need_python3() {
  py=/usr/bin/python3
  local m
  for m in "$@"; do
    "$py" -c "import $m" 2> /dev/null ||
      fail "/usr/bin/python3 cannot import $m: run scripts/setup.sh"
  done
}

# need_fashion_mnist: skips the test (exit 77) where the data set is missing.
need_fashion_mnist() {
  data=/usr/share/datasets/fashion-mnist
  if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "SKIP: $data is not installed (scripts/setup.sh installs it)"
    exit 77
  fi
}

# need_keras: the real peers' venv (Keras 3, tensorflow-cpu, tensorboard;
# scripts/peers_venv.sh makes it once) in $venv, and kpy ARGS... to run
# tests/lib/keras_models.py with real Keras on the TensorFlow backend.
need_keras() {
  venv=$("$root/scripts/peers_venv.sh") || fail "scripts/peers_venv.sh could not make the venv"
}
kpy() {
  KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" \
    "$root/tests/lib/keras_models.py" "$@"
}

# manifest_key MODEL_DIR KEY: KEY of MODEL_DIR's checkpoint manifest,
# space-separated when it is a list.
manifest_key() {
  python3 -c "import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(*v) if isinstance(v, list) else print(v)" "$1/checkpoint" "$2"
}

# worker_bytes WORKER_LOG: "PULLED PUSHED MODEL", a cluster worker's bytes a
# step pulled and pushed and its model's float32 weights, from its last lines.
worker_bytes() {
  sed -n 's/.*bytes a step: pulled \([0-9]*\), pushed \([0-9]*\) (the model.s weights are \([0-9]*\) bytes).*/\1 \2 \3/p' "$1"
}

# wait_log FILE PATTERN WHAT [SECS]: waits until FILE holds PATTERN (a grep
# regex), at most SECS (30) seconds; fails with WHAT when it does not.
wait_log() {
  local i
  for ((i = 0; i < ${4:-30} * 10; i++)); do
    grep -q -- "$2" "$1" 2> /dev/null && return 0
    sleep 0.1
  done
  fail "$3: no \"$2\" in $1"
}

# wait_exit PID [SECS]: waits for PID, a child of this shell, at most SECS
# (120) seconds; sets $rc to its exit status (124: it still runs).
wait_exit() {
  if ! timeout "${2:-120}" tail --pid="$1" -f /dev/null; then
    rc=124
    return 0
  fi
  set +e
  wait "$1"
  rc=$?
  set -e
}

# cluster_test_cleanup: the EXIT trap of a test that starts clusters in
# $tmp/runlogs: runs the test's own test_cleanup, when it defines one, stops
# what is left of the clusters and removes $tmp (PSTRAIN_TEST_KEEP=1 keeps it
# and names it).
cluster_test_cleanup() {
  if declare -F test_cleanup > /dev/null; then test_cleanup || true; fi
  stop_cluster
  if [ -n "${PSTRAIN_TEST_KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}

# stop_cluster: stops what scripts/train_local_dist.sh started in $tmp/runlogs.
stop_cluster() {
  PSTRAIN_RUNLOGS=$tmp/runlogs PSTRAIN_STOP_GRACE=2 "$root/scripts/stop.sh" > /dev/null 2>&1 || true
}

# read_model_events MODEL_DIR: decodes MODEL_DIR's TensorBoard event files with
# an independent reader (its own CRC-32C, protoc's classes) into
# $tmp/train.ev and $tmp/eval.ev, one JSON scalar per line; sets $py.
read_model_events() {
  local lib
  lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  need_python3 google.protobuf
  command -v protoc > /dev/null || fail "needs protoc (protobuf-compiler): run scripts/setup.sh"
  mkdir -p "$tmp/pb"
  protoc --python_out="$tmp/pb" -I"$lib/../../proto" "$lib/../../proto/tensorboard.proto"
  "$py" "$lib/read_events.py" "$tmp/pb" "$1"/events.out.tfevents.* > "$tmp/train.ev" ||
    fail "train events of $1 do not decode"
  "$py" "$lib/read_events.py" "$tmp/pb" "$1"/eval/events.out.tfevents.* > "$tmp/eval.ev" ||
    fail "eval events of $1 do not decode"
}

# The tests' runs of scripts/train_local_dist.sh append to a training log in
# the test's own folder, never to the checkout's training_log.md.
if [ -n "${tmp:-}" ]; then export PSTRAIN_TRAINING_LOG=$tmp/training_log.md; fi

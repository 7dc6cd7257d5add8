#!/usr/bin/env bash
# One view of a local cluster, real processes: without a cluster,
# scripts/status.sh, `pstrain status` and `pstrain top` say "no cluster
# running" in one line (no gRPC dump); with one, `pstrain status` finds the
# master from runlogs/master.addr (no --master) and shows every role with the
# workers' loss and accuracy, `pstrain top` adds images/s and ETA, and the
# launcher prints a combined line (global step/target, loss, accuracy,
# images/s, ETA, roles alive) every few seconds.
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist
export PSTRAIN_RUNLOGS=$tmp/runlogs

# one_line CMD...: CMD fails with exactly one line that says no cluster runs.
one_line() {
  set +e
  "$@" > "$tmp/one.out" 2>&1
  local rc=$?
  set -e
  [ "$rc" -ne 0 ] || fail "$*: exit 0 without a cluster"
  [ "$(wc -l < "$tmp/one.out")" -eq 1 ] || fail "$*: more than one line: $(cat "$tmp/one.out")"
  grep -q "no cluster running" "$tmp/one.out" || fail "$*: $(cat "$tmp/one.out")"
  grep -q "failed to connect\|ipv4:" "$tmp/one.out" && fail "$*: a raw gRPC status: $(cat "$tmp/one.out")"
  return 0
}
one_line "$root/scripts/status.sh"
one_line "$build/pstrain" status
mkdir -p "$tmp/runlogs"
echo "127.0.0.1:1" > "$tmp/runlogs/master.addr"
one_line "$build/pstrain" status
one_line "$build/pstrain" top --count 1

"$root/scripts/train_local_dist.sh" --set model=mlp --set train.max_steps=1000000 \
  --set checkpoint.model_dir="$tmp/md" --progress-secs 2 > "$tmp/run.out" 2>&1 &
run=$!
wait_log "$tmp/run.out" "images/s, ETA [0-9]" "the launcher printed no progress line" 60
grep -E "^\[[0-9]+s\] global step [0-9]+/1000000, 2 workers alive, loss [0-9.]+, accuracy [0-9.]+, [0-9]+ images/s, ETA [0-9hms]+; roles alive 5/5" \
  "$tmp/run.out" > /dev/null || fail "progress line: $(grep 'global step' "$tmp/run.out")"
(cd "$tmp" && "$build/pstrain" status > "$tmp/status.out") || fail "pstrain status: $(cat "$tmp/status.out")"
grep -q "^global step [0-9]* of 1000000" "$tmp/status.out" || fail "status: $(cat "$tmp/status.out")"
grep -qE "^worker1 .* alive .* [0-9]\.[0-9]{4} +0\.[0-9]{4}$" "$tmp/status.out" ||
  fail "status: no worker loss and accuracy: $(cat "$tmp/status.out")"
"$build/pstrain" top --count 2 --interval 1 > "$tmp/top.out" || fail "pstrain top: $(cat "$tmp/top.out")"
[ "$(grep -c '^pstrain top: the master at' "$tmp/top.out")" -eq 2 ] || fail "top: not 2 refreshes: $(cat "$tmp/top.out")"
grep -qE "global step [0-9]+/1000000, loss [0-9.]+, accuracy [0-9.]+, [0-9]+ images/s, ETA [0-9]+m[0-9]{2}s, roles alive 5/5" \
  "$tmp/top.out" || fail "top: no rates: $(cat "$tmp/top.out")"
"$root/scripts/status.sh" > "$tmp/sh.out" || fail "status.sh with a cluster: $(cat "$tmp/sh.out")"
grep -q "^worker0 .* alive" "$tmp/sh.out" || fail "status.sh: $(cat "$tmp/sh.out")"
"$root/scripts/stop.sh" > /dev/null
wait "$run" || [ $? -eq 143 ] || fail "the launcher after stop.sh: $(tail -3 "$tmp/run.out")"
echo ok

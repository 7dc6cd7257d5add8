#!/usr/bin/env bash
# Issue 17's attacks on a real PS through its shared-memory socket, as a
# local user makes them (tests/lib/stream_attack.py): an ordinary file
# passed as the memory and truncated (was SIGBUS), another uid pulling,
# pushing and shutting it down (was served), tensor names that forge log
# lines (were logged raw), a pull for a step that never comes sent without
# a deadline (waited for ever). The PS must refuse each, log each refusal
# in one escaped line, and live on.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
tmp=$(mktemp -d)
ps_pid=""
cleanup() {
  [ -z "$ps_pid" ] || kill -9 "$ps_pid" 2> /dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
. "$(dirname "$0")/lib/check.sh"
need_python3
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root to run a client as uid 65534"; exit 77; }
free_port() { "$py" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

port=$(free_port)
echo "{\"cluster\": {\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:$port\"],
 \"worker\": [\"127.0.0.1:2\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}" > "$tmp/tf.json"
"$build/pstrain-ps" --tf-config "$tmp/tf.json" --set model=mlp --set rpc.deadline_secs=1 \
  --set checkpoint.model_dir="$tmp/md" 2> "$tmp/ps.log" &
ps_pid=$!
for _ in $(seq 1 100); do
  kill -0 "$ps_pid" 2> /dev/null || fail "the PS did not start: $(cat "$tmp/ps.log")"
  grep -q "@pstrain-$ps_pid-" /proc/net/unix && (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null &&
    break
  sleep 0.1
done
"$py" "$(dirname "$0")/lib/stream_attack.py" "$ps_pid" || fail "see above; PS log: $(cat -v "$tmp/ps.log")"
kill -0 "$ps_pid" || fail "the PS died: $(cat -v "$tmp/ps.log")"

# Each refusal one line, escaped: no forged line, no ESC byte.
grep -q 'not a sealable memfd; connection closed' "$tmp/ps.log" || fail "no line for the plain file"
[ "$(grep -c 'uid 65534 may not use' "$tmp/ps.log")" -ge 1 ] || fail "no line for uid 65534"
[ "$(grep -c 'uid 65534 may not use' "$tmp/ps.log")" -le 5 ] || fail "refusals not limited"
! grep -q '^2026-01-01' "$tmp/ps.log" || fail "a forged line: $(cat -v "$tmp/ps.log")"
! grep -q "$(printf '\033')" "$tmp/ps.log" || fail "an ESC byte in the log: $(cat -v "$tmp/ps.log")"
grep -qF 'ERROR forged line\x1b[2J' "$tmp/ps.log" || fail "the name not escaped: $(cat -v "$tmp/ps.log")"
kill -TERM "$ps_pid"
wait "$ps_pid" || true
ps_pid=""
echo ok

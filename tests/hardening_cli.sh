#!/usr/bin/env bash
# Hostile input to the real daemons (issue 17, items 6 and 9): a TF_CONFIG
# or a model spec that holds a newline and a terminal escape sequence gives
# one escaped error line (no forged line, no ESC byte on the terminal), and
# TF_CONFIG's small faults (null, a NUL in an address, a key given twice)
# are each one clear line.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
ps=$build/pstrain-ps
worker=$build/pstrain-worker
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
unset TF_CONFIG

esc=$(printf '\033')
# no_forgery FILE: no line of FILE starts with the forged text, no ESC byte.
no_forgery() {
  ! grep -q '^ERROR forged' "$1" || fail "a forged line: $(cat -v "$1")"
  ! grep -q "$esc" "$1" || fail "an ESC byte reached stderr: $(cat -v "$1")"
  grep -qF 'x\nERROR forged\x1b[2J' "$1" || fail "not escaped: $(cat -v "$1")"
}

bad='x\nERROR forged\u001b[2J'
TF_CONFIG="{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"$bad\"], \"worker\": [\"w:1\"]},
 \"task\": {\"type\": \"ps\", \"index\": 0}}" expect_error 2 'cluster.ps[0]' "$ps"
no_forgery "$tmp/expect.err"

TF_CONFIG="{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]},
 \"task\": {\"type\": \"$bad\", \"index\": 0}}" expect_error 2 'task.type' "$ps"
no_forgery "$tmp/expect.err"

echo "{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"$bad\"}]}" > "$tmp/model.json"
expect_error 2 'layer 0' "$worker" --set model="$tmp/model.json" --set data.dir="$tmp"
no_forgery "$tmp/expect.err"

expect_error 2 'unknown config key' "$worker" --set "$(printf 'x\nERROR forged\033[2J')=1"
! grep -q "$esc" "$tmp/expect.err" || fail "an ESC byte reached stderr: $(cat -v "$tmp/expect.err")"

# A checkpoint file's tensor names and metadata, as `pstrain inspect` prints them.
python3 - "$tmp/evil.safetensors" << 'PY'
import json, struct, sys
bad = "x\nERROR forged\x1b[2J"
h = json.dumps({"__metadata__": {bad: bad},
                bad: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<f", 1.0))
PY
"$build/pstrain" inspect "$tmp/evil.safetensors" > "$tmp/inspect.out" 2>&1 || true
no_forgery "$tmp/inspect.out"

# Item 9.
TF_CONFIG=null expect_error 2 'got null' "$ps"
TF_CONFIG='{"cluster": {"master": ["m:1"], "ps": ["127.0.0.1:31002\u0000junk"], "worker": ["w:1"]},
 "task": {"type": "ps", "index": 0}}' expect_error 2 'holds a NUL character' "$ps"
TF_CONFIG='{"cluster": {"master": ["m:1"], "ps": ["127.0.0.1:1"], "worker": ["w:1"],
 "ps": ["127.0.0.1:2"]}, "task": {"type": "ps", "index": 0}}' \
  expect_error 2 'key "ps" appears twice' "$ps"
echo '{"input": [28, 28, 1], "layers": [{"type": "flatten"}, {"type": "dense", "units": 100000000}]}' \
  > "$tmp/big.json"
expect_error 2 '"units" must be at most 16777216' "$worker" --set model="$tmp/big.json" \
  --set data.dir="$tmp"
expect_error 2 'rpc.stream_allowed_uids' "$ps" --set rpc.stream_allowed_uids=root
echo ok

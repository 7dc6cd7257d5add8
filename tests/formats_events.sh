#!/usr/bin/env bash
# TensorBoard event files as an outside reader sees them: the C writer
# (through pstrain_formats_tool) writes two files into one directory in the
# same second; Python decodes each with its own CRC-32C and TFRecord framing
# and protobuf classes that protoc makes from proto/tensorboard.proto.
# Where TensorBoard itself is importable, its EventAccumulator reads them too
# (an extra check, skipped with a message where it is not installed).
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"

need_python3 google.protobuf
command -v protoc > /dev/null || fail "needs protoc (protobuf-compiler): run scripts/setup.sh"
mkdir "$tmp/pb"
protoc --python_out="$tmp/pb" -I"$root/proto" "$root/proto/tensorboard.proto"

tool=$build/pstrain_formats_tool
first=$("$tool" events "$tmp/logs/train" 20)
second=$("$tool" events "$tmp/logs/train" 3)
[ "$first" != "$second" ] || fail "two writers made the same file $first"
[ "$(ls "$tmp/logs/train" | wc -l)" -eq 2 ] || fail "want 2 files: $(ls "$tmp/logs/train")"
case $(basename "$first") in
  events.out.tfevents.[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9].$(hostname).*) ;;
  *) fail "unexpected file name $first" ;;
esac
"$py" "$root/tests/lib/check_events.py" "$tmp/pb" "$first" 20
"$py" "$root/tests/lib/check_events.py" "$tmp/pb" "$second" 3

# The optional check, with whichever Python has tensorboard.
rm "$second"
checked=no
for p in "$py" python3; do
  set +e
  "$p" "$root/tests/lib/check_tensorboard.py" "$tmp/logs/train" 20
  rc=$?
  set -e
  [ "$rc" -eq 3 ] && continue
  [ "$rc" -eq 0 ] || fail "TensorBoard's EventAccumulator rejected $first"
  checked=yes
  break
done
[ "$checked" = yes ] || echo "tensorboard is not installed: skipped the optional EventAccumulator check"
echo ok

#!/usr/bin/env bash
# npz as numpy sees it: the C writer's file loads with np.load (names, order,
# shapes, values; each entry byte for byte np.save's); files numpy writes
# (np.savez with names or positional, savez_compressed, float64) read back in
# C; damaged and unsupported files are refused with one error line naming the
# file.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"

need_python3 numpy
tool=$build/pstrain_formats_tool

"$tool" npz-write "$tmp/w.npz"
"$py" "$root/tests/lib/check_npz.py" load "$tmp/w.npz"
# And back through the C reader.
"$tool" npz-read "$tmp/w.npz" > "$tmp/w.out"
grep -qP '^conv2d/kernel\t3,3,1,2\t-3 -2.75 ' "$tmp/w.out" || fail "npz-read: $(head -1 "$tmp/w.out")"
grep -qP '^step\t\t3997$' "$tmp/w.out" || fail "npz-read of a scalar: $(cat "$tmp/w.out")"

"$py" "$root/tests/lib/check_npz.py" make "$tmp"
for name in named compressed positional; do
  "$tool" npz-read "$tmp/$name.npz" > "$tmp/$name.out"
  cmp -s "$tmp/$name.out" "$tmp/$name.want" ||
    fail "$name.npz: $(diff "$tmp/$name.out" "$tmp/$name.want" | head -5)"
done
echo "npz: the C reader reads np.savez, np.savez_compressed and positional files"

size=$(stat -c %s "$tmp/w.npz")
head -c $((size / 2)) "$tmp/w.npz" > "$tmp/cut.npz"
expect_error 1 "$tmp/cut.npz: not a readable npz (zip) file" "$tool" npz-read "$tmp/cut.npz"
cp "$tmp/w.npz" "$tmp/flip.npz"
# The first float of conv2d/kernel: local header (30 + 17 name bytes) + 128.
printf '\x11' | dd of="$tmp/flip.npz" bs=1 seek=$((30 + 17 + 128)) conv=notrunc status=none
expect_error 1 "$tmp/flip.npz: entry \"conv2d/kernel.npy\": CRC error" \
  "$tool" npz-read "$tmp/flip.npz"
expect_error 1 "$tmp/ints.npz: entry \"labels.npy\": dtype is not float32" \
  "$tool" npz-read "$tmp/ints.npz"
expect_error 1 "$tmp/fortran.npz: entry \"w.npy\": Fortran order" "$tool" npz-read "$tmp/fortran.npz"
echo "not a zip" > "$tmp/text.npz"
expect_error 1 "$tmp/text.npz: not a readable npz (zip) file" "$tool" npz-read "$tmp/text.npz"
echo ok

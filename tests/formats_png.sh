#!/usr/bin/env bash
# PNG input as users' files come: PIL writes gray, gray+alpha, RGB, RGBA,
# palette, 16-bit and 1-bit images, and images to shrink and to enlarge; the
# C loader (through pstrain_formats_tool) must give the values that PIL and
# numpy compute for the rules of common/formats/image.h. Damaged files are refused
# with one error line naming the file.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"

need_python3 numpy PIL
tool=$build/pstrain_formats_tool

"$py" "$root/tests/lib/check_png.py" "$tmp"
n=0
while read -r name h w c; do
  "$tool" png-load "$tmp/$name.png" "$h" "$w" "$c" > "$tmp/$name.got"
  "$py" "$root/tests/lib/compare_floats.py" "$tmp/$name.got" "$tmp/$name.want" 1e-6 ||
    fail "$name.png loaded as $h x $w x $c differs from PIL's"
  n=$((n + 1))
done < "$tmp/cases"
echo "png: $n images load as PIL computes them"

size=$(stat -c %s "$tmp/shrink.png")
head -c $((size / 2)) "$tmp/shrink.png" > "$tmp/cut.png"
expect_error 1 "$tmp/cut.png: bad PNG: truncated" "$tool" png-load "$tmp/cut.png" 28 28 1
echo "GIF89a" > "$tmp/not.png"
expect_error 1 "$tmp/not.png: not a PNG file" "$tool" png-load "$tmp/not.png" 28 28 1
expect_error 1 "$tmp/none.png: No such file" "$tool" png-load "$tmp/none.png" 28 28 1
echo ok

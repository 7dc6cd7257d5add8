#!/usr/bin/env bash
# scripts/bench_scale.sh end to end on its smallest grid: a master, 1 PS
# and 1 then 3 synthetic workers, each in a network namespace of its own
# behind a shaped veth, give one row per configuration with global steps
# in the window, no ERROR line, bytes per step of a pull and a push of the
# MLP (2 x 473,128 bytes, within 25% for headers and acks), and PS CPU per
# step above 0; its rows feed scripts/scale_model.py --check. Its bad
# arguments are one clear line and exit 2. No timing is asserted. Exits 77
# (a skip) where the benchmark skips (no root, ip, tc or namespaces).
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap 'rm -rf "$tmp"' EXIT

export PSTRAIN_BUILD=$build
expect_error 2 '--mode wants async, sync or ssp' bash "$root/scripts/bench_scale.sh" --mode often
expect_error 2 '--workers: "0"' bash "$root/scripts/bench_scale.sh" --workers 0

set +e
bash "$root/scripts/bench_scale.sh" --workers 1,3 --ps 1 --window 3 --warmup 1 --step-ms 50 \
  --out "$tmp/rows.tsv" > "$tmp/out" 2>&1
rc=$?
set -e
if [ "$rc" -eq 77 ]; then
  cat "$tmp/out"
  exit 77
fi
[ "$rc" -eq 0 ] || fail "bench_scale.sh exited $rc: $(tail -5 "$tmp/out")"
cat "$tmp/out"
rows=$(grep -c '^ *[0-9]' "$tmp/out" || true)
[ "$rows" -eq 2 ] || fail "$rows rows, want 2"
awk '/^ *[0-9]/ {
  if ($NF != "errors=0") { print "row logs errors: " $0; bad = 1 }
  if (NF < 15) { print "row without figures: " $0; bad = 1; next }
  if ($5 <= 0) { print "no steps: " $0; bad = 1 }
  if ($9 < 0.75 * 0.946256 || $9 > 1.25 * 0.946256) { print "MB/step not a pull and a push of the MLP: " $0; bad = 1 }
  if ($10 <= 0) { print "no PS CPU: " $0; bad = 1 }
} END { exit bad }' "$tmp/out" || fail "bad rows"
python3 "$root/scripts/scale_model.py" --check "$tmp/rows.tsv" > "$tmp/check" ||
  fail "scale_model.py --check: $(cat "$tmp/check")"
grep -q "^# 2 rows: median |error|" "$tmp/check" || fail "scale_model.py --check: $(cat "$tmp/check")"
# The projection: the 64-worker grid by cores per PS picks a PS count and K,
# and more cores per PS never project less.
python3 "$root/scripts/scale_model.py" > "$tmp/proj" || fail "scale_model.py: $(cat "$tmp/proj")"
grep -q "^picked: [0-9]* PS of [0-9]* cores: " "$tmp/proj" || fail "no picked PS count and K: $(head -12 "$tmp/proj")"
awk '/^## cnn, 64 workers/ {g = 1; next} g && /^ +[0-9]+ / {
  for (i = 2; i <= NF; i += 2) { split($i, e, "/"); if (prev[i] != "" && e[1] < prev[i]) bad = 1; prev[i] = e[1] } }
  g && /^picked/ {exit} END {exit bad}' "$tmp/proj" || fail "more cores per PS projected less: $(head -9 "$tmp/proj")"
if python3 "$root/scripts/scale_model.py" --ps-serial 2 > "$tmp/bad" 2>&1; then fail "--ps-serial 2 accepted"; fi
grep -q "ps-serial" "$tmp/bad" || fail "--ps-serial 2: $(cat "$tmp/bad")"
echo "PASS: bench_scale_smoke"

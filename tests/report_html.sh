#!/usr/bin/env bash
# `pstrain report` with real runs, rendered by a real browser: a local
# cluster whose worker1 is killed (kill -9) and restarted by the launcher,
# then a second run; the report of the first and the report of both are
# rendered by headless Chromium (Debian's chromium, scripts/setup.sh), whose
# DOM must hold the loss and accuracy curves (train and test), the confusion
# matrix with class names, the per-class bars, the timeline with worker1's
# restart, and for two runs the overlaid curves and table; the browser must
# log no console message (a page with a console error is shown to be caught).
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist
chromium=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chromium" ] || fail "needs chromium (Debian's package): run scripts/setup.sh"
export PSTRAIN_RUNLOGS=$tmp/runlogs

# render HTML NAME: the page's DOM after load in $tmp/NAME.dom, the console
# messages in $tmp/NAME.console, a screenshot in $tmp/NAME.png.
render() {
  local profile=$tmp/chromium-profile
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --user-data-dir="$profile" \
    --enable-logging=stderr --v=0 --dump-dom "file://$1" > "$tmp/$2.dom" 2> "$tmp/$2.err" ||
    fail "chromium could not render $1: $(tail -3 "$tmp/$2.err")"
  grep ':CONSOLE' "$tmp/$2.err" > "$tmp/$2.console" || true
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --user-data-dir="$profile" \
    --window-size=1300,2000 --screenshot="$tmp/$2.png" "file://$1" > /dev/null 2>&1 || true
}
# The checker catches a console error.
echo '<html><body><script>console.error("broken page")</script></body></html>' > "$tmp/bad.html"
render "$tmp/bad.html" bad
grep -q "broken page" "$tmp/bad.console" || fail "a console error went unnoticed: $(cat "$tmp/bad.err")"

"$root/scripts/train_local_dist.sh" --set model=mlp --set train.max_steps=4000 --set checkpoint.every_steps=500 \
  --set log.summary_steps=50 --set checkpoint.model_dir="$tmp/a/model" > "$tmp/a.out" 2>&1 &
run=$!
wait_log "$tmp/runlogs/worker1.log" "first step done" "worker1 never made a step"
kill -9 "$(cat "$tmp/runlogs/worker1.pid")"
wait "$run" || fail "run a: $(tail -5 "$tmp/a.out")"
mv "$tmp/runlogs" "$tmp/a/runlogs"
"$root/scripts/train_local_dist.sh" --set model=mlp --set train.max_steps=2000 --set train.learning_rate=0.05 \
  --set checkpoint.every_steps=500 --set checkpoint.model_dir="$tmp/b/model" > "$tmp/b.out" 2>&1 ||
  fail "run b: $(tail -5 "$tmp/b.out")"
mv "$tmp/runlogs" "$tmp/b/runlogs"

"$build/pstrain" report "$tmp/a/model" > "$tmp/report.out" || fail "pstrain report: $(cat "$tmp/report.out")"
[ -f "$tmp/a/model/report.html" ] || fail "no $tmp/a/model/report.html"
grep -q "http" <(grep -o 'src="[^"]*"\|href="[^"]*"' "$tmp/a/model/report.html") && fail "the report loads something from the network"
render "$tmp/a/model/report.html" one
[ ! -s "$tmp/one.console" ] || fail "console messages: $(cat "$tmp/one.console")"
for want in 'class="chart loss"' 'class="chart accuracy"' 'class="curve" data-series="train"' \
  'class="curve" data-series="test"' 'class="confusion"' '>Ankle boot<' 'class="per-class"' \
  'class="timeline"' 'class="event restart"' 'class="event kill"'; do
  grep -qF "$want" "$tmp/one.dom" || fail "the rendered report lacks $want"
done
[ "$(grep -o 'class="curve"' "$tmp/one.dom" | wc -l)" -eq 4 ] || fail "want 4 curves (loss and accuracy, train and test)"
python3 - "$tmp/one.dom" <<'PY' || fail "a curve has too few points"
import re, sys
for m in re.finditer(r'<polyline class="curve" data-series="(\w+)" points="([^"]*)"', open(sys.argv[1]).read()):
    assert len(m.group(2).split()) >= 3, (m.group(1), m.group(2))
PY
"$build/pstrain" report "$tmp/a/model" "$tmp/b/model" --out "$tmp/both.html" > /dev/null || fail "report of two runs"
render "$tmp/both.html" both
[ ! -s "$tmp/both.console" ] || fail "console messages: $(cat "$tmp/both.console")"
grep -qF 'class="chart overlay-accuracy"' "$tmp/both.dom" || fail "no overlaid curves"
[ "$(grep -o '<tr><td>' "$tmp/both.dom" | wc -l)" -ge 2 ] || fail "no table of the two runs"
if [ -n "${PSTRAIN_REPORT_SCREENSHOT:-}" ]; then cp "$tmp/one.png" "$PSTRAIN_REPORT_SCREENSHOT"; fi
echo ok

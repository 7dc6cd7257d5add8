#!/usr/bin/env bash
# pstrain-bench-ps (scripts/bench_ps.sh) starts its PS on a model_dir of its
# own, removed afterwards (never the checkout's runs/default, where a trained
# model made the PS refuse to resume), and stops with one line when its only
# PS exits for good, instead of retrying for ever.
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap 'rm -rf "$tmp"' EXIT
# A PS that records its arguments, then runs.
printf '#!/bin/sh\necho "$@" > %s/args\nexec %s "$@"\n' "$tmp" "$build/pstrain-ps" > "$tmp/ps.sh"
chmod +x "$tmp/ps.sh"
(cd "$tmp" && timeout 120 "$build/pstrain-bench-ps" --ps-binary "$tmp/ps.sh" --sizes 1 --reps 2 > out 2> err) ||
  fail "bench against a real PS: $(cat "$tmp/err")"
grep -q "transport=shm size_mib=1" "$tmp/out" || fail "no result line: $(cat "$tmp/out")"
dir=$(grep -o 'checkpoint.model_dir=[^ ]*' "$tmp/args" | cut -d= -f2)
[ -n "$dir" ] || fail "the PS got no model_dir of its own: $(cat "$tmp/args")"
[ ! -e "$dir" ] || fail "the bench left its model_dir $dir"
[ ! -e "$tmp/runs" ] || fail "the PS wrote runs/ in the working directory"
# A PS that exits 65 at once (as one that cannot resume does).
printf '#!/bin/sh\necho "cannot resume: test" >&2\nexit 65\n' > "$tmp/bad.sh"
chmod +x "$tmp/bad.sh"
set +e
timeout 30 "$build/pstrain-bench-ps" --ps-binary "$tmp/bad.sh" --sizes 1 --reps 2 > "$tmp/out" 2> "$tmp/err"
rc=$?
set -e
[ "$rc" -ne 124 ] || fail "the bench retried for ever against a PS that exited"
[ "$rc" -ne 0 ] || fail "the bench exited 0 without its PS"
grep -q "exited (status 65) before the benchmark ended" "$tmp/err" || fail "no clear line: $(cat "$tmp/err")"
echo ok

#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan, in
# build-fuzz), replays each one's committed corpus (tests/fuzz/corpus/NAME,
# every seed and every reproducer of a fault found before), then fuzzes each
# for SECONDS. New inputs go to a scratch copy of the corpus, never into the
# checkout; a crash, a leak, a sanitizer report or a hang keeps its input
# in a temporary directory (printed) and fails the script.
#   scripts/fuzz.sh [SECONDS] [NAME...]   default 10 s each, every target
#   NAME: log tf_config config model idx safetensors manifest npz png push tfrecord stream
#         keras_json example csv
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-10}
shift || true
case $secs in
  '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;;
esac
build=$root/build-fuzz

CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPSTRAIN_FUZZ=ON \
  -DPSTRAIN_CUDA=off > /dev/null
cmake --build "$build" -j "$(nproc)" --target pstrain_fuzzers > /dev/null

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.c; do
    n=$(basename "$f" .c)
    n=${n#fuzz_}
    [ "$n" = util ] || names+=("$n")
  done
fi

scratch=$(mktemp -d)
found=$(mktemp -d -t pstrain-fuzz-found.XXXXXX)
trap 'rm -rf "$scratch"; rmdir "$found"/* "$found" 2> /dev/null || true' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
for n in "${names[@]}"; do
  bin=$build/fuzz_$n
  seeds=tests/fuzz/corpus/$n
  [ -x "$bin" ] || { echo "fuzz.sh: no target $n (tests/fuzz/fuzz_$n.c)" >&2; exit 2; }
  [ -d "$seeds" ] || { echo "fuzz.sh: no corpus $seeds" >&2; exit 2; }
  out=$found/$n
  mkdir -p "$scratch/$n" "$out"
  cp "$seeds"/* "$scratch/$n/"
  t0=$(date +%s)
  # The committed inputs, once each, then fuzzing from them.
  if ! "$bin" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/" "$seeds"/* \
    > "$scratch/$n.replay" 2>&1; then
    echo "FAIL fuzz_$n: a committed input fails; see $out/ and:" >&2
    tail -30 "$scratch/$n.replay" >&2
    failed=1
    continue
  fi
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$out/" "$scratch/$n" > "$scratch/$n.log" 2>&1; then
    echo "FAIL fuzz_$n: an input fails; it is kept in $out/:" >&2
    tail -30 "$scratch/$n.log" >&2
    failed=1
    continue
  fi
  runs=$(grep -oE '^Done [0-9]+ runs' "$scratch/$n.log" | grep -oE '[0-9]+' || echo '?')
  echo "fuzz_$n: $(ls "$seeds" | wc -l) committed inputs replayed, $runs runs in $(($(date +%s) - t0)) s, nothing found"
  rmdir "$out" 2> /dev/null || true
done
exit $failed

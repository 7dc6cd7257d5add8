#!/usr/bin/env bash
# Installs what is missing, builds, runs every test, then the unit tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer, the unit tests and the
# cluster test under ThreadSanitizer, and checks formatting.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)

scripts/setup.sh

echo "== format (clang-format)"
files=$(git ls-files '*.c' '*.h' '*.cu' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
clang-format --dry-run -Werror $files

echo "== build (Release)"
# PSTRAIN_CUDA=auto even over an old cache: the plugin is built wherever nvcc
# and cuDNN are, and its build and load checks run.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPSTRAIN_CUDA=auto > /dev/null
cmake --build build -j "$jobs"

echo "== tests (Release)"
(cd build && ctest --output-on-failure -j "$jobs" -L unit)
(cd build && ctest --output-on-failure -L integration)

echo "== unit tests (ASan + UBSan)"
# Without the GPU plugin: nvcc's objects are not instrumented anyway, and the
# Release build above builds and tests it.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPSTRAIN_SANITIZE=ON \
  -DPSTRAIN_CUDA=off > /dev/null
cmake --build build-asan -j "$jobs" --target pstrain_tests
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$jobs" -L unit)

echo "== unit tests and cluster test (TSan)"
# clang: GCC's TSan needs the CPU backend's target_clones off (they are, see
# kernels/cpu/cpu_backend.c), clang has none and its TSan runtime is the
# reference one. A race, a lock-order inversion or a report in a thread
# leak fails the test (halt_on_error, exitcode 66); tests/tsan.supp lists
# what is gRPC's own, each with its reason; tests/tsan_grpc.c shows TSan
# gRPC's hand-offs. The stage prints its time.
t0=$(date +%s)
CC=clang cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPSTRAIN_SANITIZE=thread \
  -DPSTRAIN_CUDA=off > /dev/null
# All of it: the cluster test's scripts/train_local_dist.sh builds the whole
# of $PSTRAIN_BUILD.
cmake --build build-tsan -j "$jobs"
export TSAN_OPTIONS="suppressions=$root/tests/tsan.supp:halt_on_error=1:exitcode=66:second_deadlock_stack=1"
(cd build-tsan && ctest --output-on-failure -j "$jobs" -L unit)
# Daemons under TSan run 5-15x slower: heartbeats and calls get the time a
# slow machine would need, so that a worker is not declared dead (and a sync
# step taken without it) for slowness alone; every check stays as it is.
PSTRAIN_BUILD=$root/build-tsan \
  PSTRAIN_TEST_SETS="--set cluster.dead_after_secs=30 --set rpc.deadline_secs=120" \
  bash tests/cluster_local.sh "$root/build-tsan"
unset TSAN_OPTIONS
echo "TSan stage: $(($(date +%s) - t0)) s"

echo "== fuzzing (libFuzzer, ASan + UBSan)"
# Each parser's committed corpus (with every reproducer of issue 17) once,
# then 8 s of fuzzing each: 15 targets at 8 s take what 12 took at 10 s
# (about 140 s besides the build). The stage prints its time.
t0=$(date +%s)
bash scripts/fuzz.sh 8
echo "fuzz stage: $(($(date +%s) - t0)) s"

echo "== all tests passed"

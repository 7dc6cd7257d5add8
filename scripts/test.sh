#!/usr/bin/env bash
# Installs what is missing, builds, runs every test, then the unit tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer, and checks formatting.
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

echo "== all tests passed"

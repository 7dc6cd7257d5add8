#!/usr/bin/env bash
# Configures and builds pstrain into build/ (or $PSTRAIN_BUILD); incremental.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${PSTRAIN_BUILD:-$root/build}
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
fi
cmake --build "$build" -j "$(nproc)" > /dev/null

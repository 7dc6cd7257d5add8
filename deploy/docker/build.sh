#!/usr/bin/env bash
# The build stages of deploy/docker/Dockerfile: installs the build's packages
# (Debian 12 or Ubuntu 24.04), builds pstrain's programs from /src with the
# given CMake options, and lays out in OUT what install-runtime.sh puts into
# a runtime image: bin/, lib/ (plugins, if the build made any), packages.txt
# (the runtime packages that they link), data/fashion-mnist (Debian's
# package, unless OUT has it already), the entrypoint and install-runtime.sh.
#   deploy/docker/build.sh OUT [CMAKE_OPTION]...
set -euo pipefail
out=${1:?usage: build.sh OUT [CMAKE_OPTION]...}
shift
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential cmake pkg-config \
  libopenblas-dev libjson-c-dev zlib1g-dev protobuf-c-compiler libprotobuf-c-dev libgrpc-dev
# The GPU stage gets the data from the Debian stage.
if [ ! -d "$out/data/fashion-mnist" ]; then
  apt-get install -y -qq --no-install-recommends dataset-fashion-mnist
  mkdir -p "$out/data"
  cp -r /usr/share/datasets/fashion-mnist "$out/data/"
fi

build=$(mktemp -d)
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$(nproc)" --target pstrain-master pstrain-ps pstrain-worker pstrain
mkdir -p "$out/bin" "$out/lib"
cp "$build/pstrain-master" "$build/pstrain-ps" "$build/pstrain-worker" "$build/pstrain" "$out/bin/"
find "$build" -maxdepth 2 -name '*.so' -exec cp {} "$out/lib/" \;
shopt -s nullglob
"$here/runtime-packages.sh" "$out"/bin/* "$out"/lib/*.so > "$out/packages.txt"
cp "$here/entrypoint.sh" "$out/pstrain-entrypoint"
cp "$here/install-runtime.sh" "$out/install-runtime.sh"
rm -rf "$build"
echo "build: runtime packages: $(tr '\n' ' ' < "$out/packages.txt")"

#!/usr/bin/env bash
# Installs every Debian package that pstrain's build, tests and default data
# need. Idempotent: installs only what is missing and says what that is.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail

packages=(
  build-essential cmake pkg-config       # the build
  libopenblas-dev                        # CPU math
  libjson-c-dev zlib1g-dev               # configs, model specs, results; gzip
  libzip-dev libpng-dev                  # npz weight files; PNG input
  libhdf5-dev                            # .keras files' model.weights.h5
  protobuf-c-compiler libprotobuf-c-dev  # RPC messages (proto/pstrain.proto)
  libgrpc-dev                            # RPC between roles (gRPC C core)
  libuv1-dev                             # the tensor stream's event loop
  openssl                                # certificates for the mutual TLS test
  dataset-fashion-mnist                  # the default data (/usr/share/datasets/fashion-mnist)
  clang-format                           # the format check of scripts/test.sh
  python3                                # the tests' JSON checks and port holder
  python3-numpy python3-pil              # tests: npz and PNG read and written by numpy, PIL
  python3-protobuf protobuf-compiler     # tests: event files decoded from proto/tensorboard.proto
  python3-yaml                           # the deployment test parses deploy/k8s/*.yaml
  jq                                     # the container entrypoint; the deployment test
  iproute2                               # ip netns: the multi-host test's "VMs"
  systemd                                # systemd-analyze verify of deploy/systemd's units
  libjpeg62-turbo-dev                    # JPEG input (TFRecord images, image folders)
  python3-sklearn                        # tests: its bundled digits CSV (data_csv.sh)
  clang libclang-rt-14-dev               # the TSan build; libFuzzer for scripts/fuzz.sh
  chromium                               # the report test renders pstrain report's HTML headless
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"

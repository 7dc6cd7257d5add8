#!/usr/bin/env bash
# The runtime stages of deploy/docker/Dockerfile: run from the folder that
# build.sh filled (mounted read-only), installs the runtime packages it
# lists and jq (for the entrypoint), the programs, plugins and data, and the
# non-root user pstrain (uid and gid 10001) with /var/lib/pstrain and
# /run/pstrain (pid files).
set -euo pipefail
from=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2046 # one package a word
apt-get install -y -qq --no-install-recommends jq $(cat "$from/packages.txt")
rm -rf /var/lib/apt/lists/*
install -m 0755 "$from"/bin/* /usr/local/bin/
install -m 0755 "$from/pstrain-entrypoint" /usr/local/bin/pstrain-entrypoint
if [ -n "$(ls -A "$from/lib")" ]; then
  install -m 0644 "$from"/lib/* /usr/local/lib/
  ldconfig
fi
if [ -d "$from/data/fashion-mnist" ]; then
  mkdir -p /usr/share/datasets
  cp -r "$from/data/fashion-mnist" /usr/share/datasets/
fi
groupadd --system --gid 10001 pstrain
useradd --system --uid 10001 --gid pstrain --home-dir /var/lib/pstrain --create-home \
  --shell /usr/sbin/nologin pstrain
install -d -o pstrain -g pstrain -m 0755 /run/pstrain /etc/pstrain

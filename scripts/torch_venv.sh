#!/usr/bin/env bash
# Makes (once) and prints the path of the Python venv that holds the current
# PyTorch from PyPI, the bar scripts/bench_compute.sh --pytorch-pypi measures
# pstrain against (Debian's python3-torch is the other). The default wheel
# brings its CUDA libraries (several GB); it runs on the CPU all the same.
#
#   scripts/torch_venv.sh           make it if missing, print its path
#   scripts/torch_venv.sh --check   print its path if it is ready, else exit 1
#
# Where: $PSTRAIN_TORCH_VENV, or ~/.cache/pstrain/torch-venv. A lock file
# beside it lets concurrent runs share one install.
set -euo pipefail

case "${1:-}" in
  -h | --help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

venv=${PSTRAIN_TORCH_VENV:-$HOME/.cache/pstrain/torch-venv}
stamp=$venv/.pstrain-ready

if [ "${1:-}" = "--check" ]; then
  [ -f "$stamp" ] && echo "$venv" && exit 0
  exit 1
fi

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$stamp" ]; then
  echo "torch_venv: installing torch from PyPI into $venv (once; large)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check torch >&2
  "$venv/bin/python" -c 'import torch; torch.ones(1)' >&2
  touch "$stamp"
fi
echo "$venv"

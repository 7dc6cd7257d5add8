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

. "$(dirname "$0")/lib/venv.sh"
ARG1=${1:-} make_venv torch_venv "${PSTRAIN_TORCH_VENV:-$HOME/.cache/pstrain/torch-venv}" 'import torch; torch.ones(1)' torch

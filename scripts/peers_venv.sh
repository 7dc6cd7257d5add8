#!/usr/bin/env bash
# Makes (once) and prints the path of the Python venv that holds the real
# peers the interop tests check pstrain against: TensorFlow (CPU), which
# brings Keras 3 and TensorBoard. PyPI is for these test helpers only; the
# product itself uses Debian's packages.
#
#   scripts/peers_venv.sh           make it if missing, print its path
#   scripts/peers_venv.sh --check   print its path if it is ready, else exit 1
#
# Where: $PSTRAIN_PEERS_VENV, or ~/.cache/pstrain/peers-venv. A lock file
# beside it lets concurrent tests share one install.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail

. "$(dirname "$0")/lib/venv.sh"
ARG1=${1:-} make_venv peers_venv "${PSTRAIN_PEERS_VENV:-$HOME/.cache/pstrain/peers-venv}" 'import tensorflow, keras, tensorboard, h5py' tensorflow-cpu tensorboard

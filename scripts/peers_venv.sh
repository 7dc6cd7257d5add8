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

case "${1:-}" in
  -h | --help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

venv=${PSTRAIN_PEERS_VENV:-$HOME/.cache/pstrain/peers-venv}
stamp=$venv/.pstrain-ready

if [ "${1:-}" = "--check" ]; then
  [ -f "$stamp" ] && echo "$venv" && exit 0
  exit 1
fi

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -f "$stamp" ]; then
  echo "peers_venv: installing tensorflow-cpu (Keras 3, TensorBoard) into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check tensorflow-cpu tensorboard >&2
  "$venv/bin/python" -c 'import tensorflow, keras, tensorboard, h5py' >&2
  touch "$stamp"
fi
echo "$venv"

# make_venv TAG DIR CHECK PACKAGES...: makes (once) the Python venv DIR with
# PACKAGES from PyPI, proves it with the Python statement CHECK and prints
# DIR; "--check" as $ARG1 of the calling script only prints DIR when it is
# ready (else exit 1). A lock file beside DIR lets concurrent runs share one
# install. Sourced by scripts/peers_venv.sh and scripts/torch_venv.sh.
make_venv() {
  local tag=$1 venv=$2 check=$3
  shift 3
  local stamp=$venv/.pstrain-ready
  if [ "${ARG1:-}" = "--check" ]; then
    [ -f "$stamp" ] && echo "$venv" && return 0
    return 1
  fi
  mkdir -p "$(dirname "$venv")"
  exec 9> "$venv.lock"
  flock 9
  if [ ! -f "$stamp" ]; then
    echo "$tag: installing $* from PyPI into $venv (once)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@" >&2
    "$venv/bin/python" -c "$check" >&2
    touch "$stamp"
  fi
  echo "$venv"
}

#!/usr/bin/env bash
# Keras JSON as a model spec: real Keras 3 writes model.to_json() of
# Sequential and Functional models; `pstrain summary` on each shows every
# layer's name, class, output shape and parameter count as Keras counts them;
# models with what pstrain lacks are refused with one error line naming the
# layer, the key and what is supported.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"

need_keras
KERAS_BACKEND=tensorflow "$venv/bin/python" "$root/tests/lib/keras_models.py" summary \
  "$build/pstrain" "$tmp"
echo ok

#!/usr/bin/env bash
# docs/configuration.md is what the config table says (regenerate it with
# scripts/gen_config_doc.sh after changing a key).
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/scripts" "$tmp/" && mkdir -p "$tmp/docs"
bash "$tmp/scripts/gen_config_doc.sh" "$build"
if ! diff -u "$root/docs/configuration.md" "$tmp/docs/configuration.md"; then
  echo "FAIL: docs/configuration.md is stale; run scripts/gen_config_doc.sh" >&2
  exit 1
fi
echo ok

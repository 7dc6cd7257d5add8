#!/usr/bin/env bash
# Prints the Debian (or Ubuntu) packages that hold the shared libraries the
# given programs link directly, one per line: what a runtime image built on
# the same distribution must install for them.
#   deploy/docker/runtime-packages.sh PROGRAM...
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: runtime-packages.sh PROGRAM..." >&2; exit 2; }
needed=$(objdump -p "$@" | awk '$1 == "NEEDED" { print $2 }' | sort -u)
# The loader's own choice of file for each (ldd), not a namesake of another
# architecture.
ldd "$@" | awk 'NR == FNR { need[$1] = 1; next } ($1 in need) && $3 ~ /^\// { print $3 }' \
  <(echo "$needed") - | sort -u | while read -r path; do
  path=$(readlink -f "$path")
  # Merged /usr: dpkg may know the file by its /lib name.
  dpkg -S "$path" 2> /dev/null || dpkg -S "${path#/usr}"
done | cut -d: -f1 | sort -u

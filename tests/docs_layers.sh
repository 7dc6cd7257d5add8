#!/usr/bin/env bash
# common/'s layers depend one way only (docs/design.md, "The layers of
# common/"): a file includes headers of its own layer or of a lower one,
# never of a higher one or of a sibling; no file in common/ or kernels/
# includes a daemon's (ps/, worker/, master/) or tools/ code, and no daemon
# includes another daemon's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Each layer with the layers it may use (data/'s readers use formats/).
declare -A may=(
  [base]="base"
  [formats]="formats base"
  [rpc]="rpc base"
  [model]="model base"
  [data]="data formats base"
  [train]="train model data formats base"
  [peers]="peers train model data formats rpc base"
  [daemon]="daemon peers train model data formats rpc base"
)
bad=0
for layer in "${!may[@]}"; do
  [ -d "common/$layer" ] || { echo "FAIL: common/$layer is missing" >&2; bad=1; continue; }
  while IFS=: read -r file _ used; do
    ok=0
    for allowed in ${may[$layer]}; do
      [ "$used" = "$allowed" ] && ok=1
    done
    if [ $ok -eq 0 ]; then
      echo "FAIL: $file ($layer) includes common/$used/, a layer it may not use" >&2
      bad=1
    fi
  done < <(grep -Ho '#include "common/[a-z]*/' common/$layer/*.[ch] |
           sed -E 's|^([^:]*):#include "common/([a-z]*)/|\1::\2|')
done
for f in common/*; do
  [ -d "$f" ] || { echo "FAIL: $f: common/ holds only its layers' folders" >&2; bad=1; }
done
if grep -Hn '#include "\(ps\|worker\|master\|tools\)/' common/*/*.[ch] kernels/*.[ch] kernels/*/*.[ch]; then
  echo "FAIL: common/ or kernels/ includes a daemon's or a tool's code" >&2
  bad=1
fi
for role in ps worker master; do
  for other in ps worker master; do
    [ "$role" = "$other" ] && continue
    if grep -Hn "#include \"$other/" $role/*.[ch]; then
      echo "FAIL: $role/ includes $other/'s code: roles meet over RPC" >&2
      bad=1
    fi
  done
done
[ $bad -eq 0 ] && echo ok
exit $bad

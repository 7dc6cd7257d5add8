#!/usr/bin/env bash
# Shows each role of a local cluster: pid, whether it is alive, and the
# master's view of the cluster (build/pstrain status).
. "$(dirname "$0")/lib/help.sh" "$@"
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/alive.sh"
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
shopt -s nullglob
printf '%-10s %-8s %s\n' ROLE PID STATE
for f in "$runlogs"/*.pid; do
  pid=$(cat "$f" 2> /dev/null)
  state=dead
  alive "$pid" && state=alive
  printf '%-10s %-8s %s\n' "$(basename "$f" .pid)" "$pid" "$state"
done
if [ -f "$runlogs/master.addr" ]; then
  echo
  "$root/build/pstrain" status --master "$(cat "$runlogs/master.addr")" || true
fi

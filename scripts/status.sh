#!/usr/bin/env bash
# Shows each role of a local cluster: pid, whether it is alive, and the
# master's view of the cluster (build/pstrain status); "no cluster running"
# in one line (exit 1) when no role of runlogs/ (PSTRAIN_RUNLOGS) is alive.
. "$(dirname "$0")/lib/help.sh" "$@"
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/alive.sh"
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
shopt -s nullglob
# No live role: one line, not a table of dead pids and a gRPC error.
live=0
for f in "$runlogs"/*.pid; do alive "$(cat "$f" 2> /dev/null)" && live=1; done
if [ "$live" = 0 ]; then
  echo "no cluster running (no live role in $runlogs)"
  exit 1
fi
printf '%-10s %-8s %s\n' ROLE PID STATE
for f in "$runlogs"/*.pid; do
  pid=$(cat "$f" 2> /dev/null)
  state=dead
  alive "$pid" && state=alive
  printf '%-10s %-8s %s\n' "$(basename "$f" .pid)" "$pid" "$state"
done
echo
PSTRAIN_RUNLOGS=$runlogs "$root/build/pstrain" status || true

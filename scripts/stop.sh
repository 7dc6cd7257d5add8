#!/usr/bin/env bash
# Stops every role of a local cluster by its pid file: SIGTERM (a graceful
# stop), then SIGKILL after a grace period (PSTRAIN_STOP_GRACE seconds, 10);
# the master first, so that its checkpoint on SIGTERM finds every PS up.
# It leaves runlogs/stopped behind, which ends scripts/train_local_dist.sh's
# wait at once (its next start removes it).
#   scripts/stop.sh        (PSTRAIN_RUNLOGS: the runlogs folder, runlogs/)
. "$(dirname "$0")/lib/help.sh" "$@"
set -uo pipefail
if [ $# -gt 0 ]; then
  case $1 in
  *) echo "stop: unknown argument \"$1\" (usage: scripts/stop.sh; see --help)" >&2; exit 2 ;;
  esac
fi
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/alive.sh"
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
grace=${PSTRAIN_STOP_GRACE:-10}
shopt -s nullglob
[ -d "$runlogs" ] && date '+%F %T' > "$runlogs/stopped"
# stop_roles FILE...: SIGTERM each live role, then waits for them all,
# SIGKILL for any still running after the grace period.
stop_roles() {
  local f pid pids=() deadline
  for f in "$@"; do
    pid=$(cat "$f" 2> /dev/null) || continue
    if alive "$pid"; then
      echo "stop: SIGTERM $(basename "$f" .pid) (pid $pid)"
      kill -TERM "$pid" 2> /dev/null || true # it may have exited since the check
      pids+=("$pid")
    fi
  done
  deadline=$(($(date +%s) + grace))
  for pid in "${pids[@]}"; do
    while alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid"; then
      echo "stop: SIGKILL pid $pid (still running after ${grace}s)"
      kill -KILL "$pid" 2> /dev/null || true
    fi
  done
}
# The master first: on SIGTERM it checkpoints, which needs every PS up.
stop_roles "$runlogs"/master*.pid
others=()
for f in "$runlogs"/*.pid; do case $(basename "$f") in master*) ;; *) others+=("$f") ;; esac; done
stop_roles "${others[@]}"
for f in "$runlogs"/*.pid; do
  pid=$(cat "$f" 2> /dev/null) || continue
  alive "$pid" || rm -f "$f"
done
echo "stop: done"

#!/usr/bin/env bash
# Restarts one role of a local cluster (scripts/train_local_dist.sh) by its
# pid file: stops it if it still runs (SIGTERM, SIGKILL after
# PSTRAIN_STOP_GRACE seconds), then starts it again with the same TF_CONFIG
# and flags (runlogs/<role><index>.cmd), appending to the same log.
#   scripts/restart_role.sh ROLE INDEX      e.g. scripts/restart_role.sh ps 1
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/alive.sh"
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
grace=${PSTRAIN_STOP_GRACE:-10}
if [ $# -ne 2 ] || [ "$1" = --help ]; then
  echo "usage: scripts/restart_role.sh ROLE INDEX   (ROLE: master, ps or worker)" >&2
  exit 2
fi
role=$1 index=$2
case $role in master | chief | ps | worker) ;; *)
  echo "restart_role: unknown role \"$role\" (want master, ps or worker)" >&2
  exit 2
  ;;
esac
[ "$role" = chief ] && role=master
name=$role$index
cmd=$runlogs/$name.cmd
if [ ! -f "$cmd" ]; then
  echo "restart_role: $cmd does not exist (did scripts/train_local_dist.sh start $name?)" >&2
  exit 2
fi
pidfile=$runlogs/$name.pid
if pid=$(cat "$pidfile" 2> /dev/null) && alive "$pid"; then
  # It may still die between the check and the signal (a kill -9 just sent).
  kill -TERM "$pid" 2> /dev/null || true
  deadline=$(($(date +%s) + grace))
  while alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.05; done
  alive "$pid" && kill -KILL "$pid" 2> /dev/null && echo "restart_role: SIGKILL $name (pid $pid)"
fi
echo "== restart $(date '+%F %T.%3N') by scripts/restart_role.sh" >> "$runlogs/$name.log"
nohup bash "$cmd" >> "$runlogs/$name.log" 2>&1 < /dev/null &
newpid=$!
echo "$newpid" > "$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
echo "restart_role: $name started (pid $newpid)"

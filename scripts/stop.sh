#!/usr/bin/env bash
# Stops every role of a local cluster by its pid file: SIGTERM (a graceful
# stop), then SIGKILL after a grace period (PSTRAIN_STOP_GRACE seconds, 10).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
grace=${PSTRAIN_STOP_GRACE:-10}
shopt -s nullglob
pids=()
for f in "$runlogs"/*.pid; do
  pid=$(cat "$f" 2> /dev/null) || continue
  if kill -0 "$pid" 2> /dev/null; then
    echo "stop: SIGTERM $(basename "$f" .pid) (pid $pid)"
    kill -TERM "$pid"
    pids+=("$pid")
  fi
done
deadline=$(( $(date +%s) + grace ))
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2> /dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  if kill -0 "$pid" 2> /dev/null; then
    echo "stop: SIGKILL pid $pid (still running after ${grace}s)"
    kill -KILL "$pid"
  fi
done
for f in "$runlogs"/*.pid; do
  pid=$(cat "$f" 2> /dev/null) || continue
  kill -0 "$pid" 2> /dev/null || rm -f "$f"
done
echo "stop: done"

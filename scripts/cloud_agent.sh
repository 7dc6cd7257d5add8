#!/usr/bin/env bash
# The host side of scripts/train_cloud.sh: copied to every host as
# <remote dir>/bin/pstrain-agent and run there by the launcher through its
# transport (ssh). It starts, inspects and stops the roles whose run scripts
# the launcher wrote into <remote dir>/run/, by their pid files:
#   pstrain-agent start NAME...     start each (refused while it runs); wait for its pid file
#   pstrain-agent status NAME...    one line each: NAME PID STATE (running, exited N, ...)
#   pstrain-agent stop NAME...      SIGTERM, SIGKILL after PSTRAIN_STOP_GRACE seconds (10)
#   pstrain-agent restart NAME      stop it if it runs, then start it again
# NAME is a role and its index (ps1). run/NAME.sh runs the daemon holding a
# lock on run/NAME.lock and writes its exit status to run/NAME.exit; the
# daemon writes run/NAME.pid itself.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
grace=${PSTRAIN_STOP_GRACE:-10}

# pid_of NAME: the pid in run/NAME.pid when that process is alive and is a
# pstrain daemon (a stale pid file whose pid was reused does not count).
pid_of() {
  local pid
  pid=$(cat "run/$1.pid" 2> /dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2> /dev/null || return 1
  case "$(cat "/proc/$pid/comm" 2> /dev/null)" in pstrain-*) ;; *) return 1 ;; esac
  echo "$pid"
}

name_ok() {
  [[ "$1" =~ ^[a-z]+[0-9]+$ ]] && return 0
  echo "pstrain-agent: \"$1\" is not a role and index such as ps1" >&2
  return 1
}

# check_name NAME: a role whose run script is here.
check_name() {
  name_ok "$1" || return 1
  [ -f "run/$1.sh" ] && return 0
  echo "pstrain-agent: no role \"$1\" here (no run/$1.sh in $PWD)" >&2
  return 1
}

# start_one NAME: runs run/NAME.sh in a session of its own, so that it
# outlives the transport's connection. The lock waits out a run script that
# is still writing the exit status of a daemon that has just died.
start_one() {
  local pid
  if pid=$(pid_of "$1"); then
    echo "pstrain-agent: $1 already runs (pid $pid); stop or restart it" >&2
    return 1
  fi
  if ! flock -w 5 "run/$1.lock" true; then
    echo "pstrain-agent: $1 still holds run/$1.lock; is it stopping?" >&2
    return 1
  fi
  rm -f "run/$1.pid" "run/$1.exit"
  setsid -f bash "run/$1.sh" > /dev/null 2>&1 < /dev/null
}

# await NAME: waits until the daemon has written its pid file (it runs) or
# the run script has written an exit status (it stopped at once).
await() {
  local i
  for ((i = 0; i < 150; i++)); do
    if [ -s "run/$1.pid" ]; then
      echo "$1 started: pid $(cat "run/$1.pid")"
      return 0
    fi
    if [ -f "run/$1.exit" ]; then
      echo "pstrain-agent: $1 exited with status $(cat "run/$1.exit") at once; its log ends:" >&2
      tail -n 5 "run/$1.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "pstrain-agent: $1 wrote no pid file within 15 s; see $PWD/run/$1.log" >&2
  return 1
}

cmd_start() {
  local n rc=0
  local -a started=()
  for n in "$@"; do check_name "$n" || return 2; done
  for n in "$@"; do
    if start_one "$n"; then started+=("$n"); else rc=1; fi
  done
  for n in "${started[@]}"; do await "$n" || rc=1; done
  return $rc
}

cmd_status() {
  local n pid state
  for n in "$@"; do
    name_ok "$n" || return 2
    if pid=$(pid_of "$n"); then
      state=running
    elif [ -f "run/$n.exit" ]; then
      pid=-
      state="exited $(cat "run/$n.exit")"
    elif [ -f "run/$n.pid" ]; then
      pid=-
      state="dead (stale pid file)"
    else
      # No run script yet, or never started.
      pid=-
      state="not started"
    fi
    echo "$n $pid $state"
  done
}

cmd_stop() {
  local n pid deadline
  local -a names=() pids=()
  for n in "$@"; do
    name_ok "$n" || return 2
    # A role never started here has nothing to stop.
    if pid=$(pid_of "$n"); then
      echo "$n: SIGTERM pid $pid"
      kill -TERM "$pid"
      names+=("$n")
      pids+=("$pid")
    fi
  done
  deadline=$(($(date +%s) + grace))
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    while kill -0 "$pid" 2> /dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2> /dev/null; then
      echo "${names[$i]}: SIGKILL pid $pid (still running after ${grace}s)"
      kill -KILL "$pid"
    fi
  done
  # A killed daemon leaves its pid file behind; a stopped role has none.
  for n in "$@"; do pid_of "$n" > /dev/null || rm -f "run/$n.pid"; done
  return 0
}

cmd_restart() {
  [ $# -eq 1 ] || { echo "pstrain-agent: restart takes one NAME" >&2; return 2; }
  check_name "$1" || return 2
  cmd_stop "$1"
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) restarted by train_cloud.sh" >> "run/$1.log"
  cmd_start "$1"
}

cmd=${1:-}
shift || true
case "$cmd" in
  start) cmd_start "$@" ;;
  status) cmd_status "$@" ;;
  stop) cmd_stop "$@" ;;
  restart) cmd_restart "$@" ;;
  -h | --help) sed -n '2,/^[^#]/p' "$0" | sed '/^[^#]/d; s/^# \{0,1\}//' ;;
  *)
    echo "pstrain-agent: unknown command \"$cmd\" (want start, status, stop or restart)" >&2
    exit 2
    ;;
esac

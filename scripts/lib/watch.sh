# Watching every role of a local cluster (sourced by scripts/train_local_dist.sh,
# after scripts/lib/alive.sh). The launcher starts each role as its own child,
# so `wait` gives its exit status; a role restarted by scripts/restart_role.sh
# is followed by its pid file, and its status is read from what it left: a
# pid file left behind means it was killed (a signal: 128 and up), none means
# it exited by itself, 0 unless its log ends in an ERROR line.
# Globals: runlogs, roles (names: master0 ps0 ... worker0 ...), and per role
# the associative arrays cur_pid, is_child, gone (exit status once it ended),
# restarts.

declare -A cur_pid=() is_child=() gone=() restarts=() gone_at=()

# last_error NAME: the last ERROR line of the role's log since its last
# start (or its last line when it has none: an error printed before logging).
last_error() {
  local log=$runlogs/$1.log line
  line=$(grep -E ' ERROR |^pstrain-[a-z]+: ' "$log" 2> /dev/null | tail -n 1 || true)
  [ -n "$line" ] || line=$(tail -n 1 "$log" 2> /dev/null || true)
  echo "$line"
}

# role_status NAME: sets $rc to the exit status of the role's process that
# just ended (not printed: `wait` in a $(...) subshell knows no children).
role_status() {
  local name=$1 pid=${cur_pid[$1]}
  rc=0
  if [ "${is_child[$name]}" = 1 ]; then
    wait "$pid" 2> /dev/null || rc=$?
  elif [ "$(cat "$runlogs/$name.pid" 2> /dev/null)" = "$pid" ]; then
    rc=137 # killed: it could not remove its pid file
  elif tail -n 3 "$runlogs/$name.log" 2> /dev/null | grep -q ' ERROR '; then
    rc=1
  fi
}

# follow_role NAME: notices a role restarted by someone else (a new live pid
# in its pid file), and a role that ended (sets gone[NAME] to its status).
# Returns 0 when the role's state changed to ended.
follow_role() {
  local name=$1 p
  p=$(cat "$runlogs/$name.pid" 2> /dev/null || true)
  if [ -n "$p" ] && [ "$p" != "${cur_pid[$name]}" ] && alive "$p"; then
    cur_pid[$name]=$p
    is_child[$name]=0
    unset "gone[$name]"
    return 1
  fi
  [ -z "${gone[$name]+x}" ] || return 1
  alive "${cur_pid[$name]}" && return 1
  local rc
  role_status "$name"
  gone[$name]=$rc
  gone_at[$name]=$(date +%s)
  return 0
}

# relaunch_role NAME: starts the role again from its runlogs/NAME.cmd, as
# scripts/restart_role.sh does, but as this shell's child.
relaunch_role() {
  local name=$1
  echo "== restart $(date '+%F %T.%3N') by scripts/train_local_dist.sh (it ended with status ${gone[$name]:-?})" >> "$runlogs/$name.log"
  setsid bash "$runlogs/$name.cmd" >> "$runlogs/$name.log" 2>&1 < /dev/null &
  cur_pid[$name]=$!
  is_child[$name]=1
  echo "$!" > "$runlogs/$name.pid.tmp" && mv "$runlogs/$name.pid.tmp" "$runlogs/$name.pid"
  unset "gone[$name]"
  restarts[$name]=$((${restarts[$name]:-0} + 1))
}

# roles_alive: "N/M" roles running.
roles_alive() {
  local n=0 name
  for name in "${roles[@]}"; do alive "${cur_pid[$name]}" && n=$((n + 1)); done
  echo "$n/${#roles[@]}"
}

#!/usr/bin/env bash
# Runs a pstrain cluster on several machines from one shell, over ssh (or
# any transport). HOSTS_FILE has one line per role: ROLE INDEX HOST PORT [GPU]
#     master 0 10.0.0.1 2222
#     ps     0 10.0.0.1 2223
#     ps     1 10.0.0.2 2222
#     worker 0 10.0.0.3 2222 0
#     worker 1 10.0.0.3 2223 1
# (ROLE is master or chief, ps, worker; HOST:PORT is the role's address in
# TF_CONFIG and HOST is also where the transport logs in; GPU, for workers
# only, becomes CUDA_VISIBLE_DEVICES, and a worker without one uses the CPU.)
#   train_cloud.sh [run] HOSTS_FILE [--set k=v]... [--config FILE] [--tls DIR]
#                      start, wait for the master, gather the logs, print the metrics
#   train_cloud.sh start HOSTS_FILE [same options]
#                      copy the binaries, the configuration and each role's run
#                      script to every host and start every role there
#   train_cloud.sh wait HOSTS_FILE      wait for the master, gather logs, print metrics
#   train_cloud.sh status HOSTS_FILE    each role's pid and state; the master's view
#   train_cloud.sh stop HOSTS_FILE      SIGTERM every role by its pid file, SIGKILL later
#   train_cloud.sh restart HOSTS_FILE ROLE INDEX
#                      stop that role if it runs, and start it again on its host
#   train_cloud.sh logs HOSTS_FILE      copy every role's log here
#   train_cloud.sh tf-config HOSTS_FILE DIR [HOST]
#                      write each role's (or HOST's roles') TF_CONFIG to DIR/ROLE-I.json
#                      and a worker's GPU to DIR/worker-I.env, as the systemd units read them
# checkpoint.model_dir must be an absolute path on storage every host mounts.
# --tls DIR: DIR/ca.pem and, per host, DIR/HOST.pem + DIR/HOST.key (or
# DIR/node.pem + DIR/node.key for all) are copied and set as tls.* (mutual TLS).
# On each host, in PSTRAIN_REMOTE_DIR (default: pstrain, under the login
# folder): bin/, etc/, and run/ with ROLEi.sh, ROLEi.log, ROLEi.pid, ROLEi.exit.
# Environment: PSTRAIN_SSH (the transport, run as: $PSTRAIN_SSH HOST COMMAND;
# default "ssh -o BatchMode=yes"), PSTRAIN_REMOTE_DIR, PSTRAIN_BUILD (the build
# to copy; default: build/, built first), PSTRAIN_CLOUD_LOGS (default
# runlogs/cloud), PSTRAIN_STOP_GRACE (seconds before SIGKILL, 10).
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

die() {
  echo "train_cloud: $*" >&2
  exit 2
}
# The comment at the top of this file.
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

read -r -a transport <<< "${PSTRAIN_SSH:-ssh -o BatchMode=yes}"
[ ${#transport[@]} -gt 0 ] || die "PSTRAIN_SSH is empty: give a command such as \"ssh -o BatchMode=yes\""
remote_dir=${PSTRAIN_REMOTE_DIR:-pstrain}
[[ "$remote_dir" =~ ^[A-Za-z0-9._/~+-]+$ ]] ||
  die "PSTRAIN_REMOTE_DIR \"$remote_dir\" may hold only letters, digits and ._/~+-"
logs_dir=${PSTRAIN_CLOUD_LOGS:-$root/runlogs/cloud}
grace=${PSTRAIN_STOP_GRACE:-10}
[[ "$grace" =~ ^[0-9]+$ ]] || die "PSTRAIN_STOP_GRACE \"$grace\" is not a number of seconds"

# ---- the hosts file ----

names=() roles=() indexes=() hosts=() ports=() gpus=() addrs=()

# parse_line FILE LINENO FIELDS...: one role, checked, appended to the arrays.
parse_line() {
  local at="$1:$2" role=$3 index=$4 host=$5 port=$6 gpu=${7:-} i
  case "$role" in master | chief | ps | worker) ;; *)
    die "$at: role \"$role\" is not master, chief, ps or worker" ;;
  esac
  [[ "$index" =~ ^(0|[1-9][0-9]{0,4})$ ]] || die "$at: index \"$index\" is not a number"
  [[ "$host" =~ ^[A-Za-z0-9._-]+$ || "$host" =~ ^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*$ ]] ||
    die "$at: host \"$host\" is not a host name or an IP address"
  [[ "$port" =~ ^[1-9][0-9]{0,4}$ ]] && [ "$port" -le 65535 ] ||
    die "$at: port \"$port\" is not in 1..65535"
  [ -z "$gpu" ] || [ "$role" = worker ] || die "$at: only a worker takes a GPU, not a $role"
  [[ -z "$gpu" || "$gpu" =~ ^[A-Za-z0-9,_-]+$ ]] || die "$at: GPU \"$gpu\" is not a device list"
  local addr=$host:$port
  [[ "$host" == *:* ]] && addr="[$host]:$port"
  for i in "${!names[@]}"; do
    [ "${names[$i]}" != "$role$index" ] || die "$at: $role $index is listed twice"
    [ "${addrs[$i]}" != "$addr" ] || die "$at: $addr is already ${names[$i]}'s address"
  done
  names+=("$role$index") roles+=("$role") indexes+=("$index") hosts+=("$host")
  ports+=("$port") gpus+=("$gpu") addrs+=("$addr")
}

# count_role ROLE...: how many lines name one of these roles.
count_role() {
  local r n=0 want
  for r in "${roles[@]}"; do
    for want in "$@"; do [ "$r" != "$want" ] || n=$((n + 1)); done
  done
  echo "$n"
}

# find_role ROLE INDEX: the line number (in the arrays) of that role, or fails.
find_role() {
  local i
  for i in "${!names[@]}"; do
    [ "${roles[$i]}" = "$1" ] && [ "${indexes[$i]}" = "$2" ] && { echo "$i"; return 0; }
  done
  return 1
}

# The indexes of ps and of workers run from 0 to n-1 (TF_CONFIG's lists).
check_dense() {
  local file=$1 role=$2 n k
  n=$(count_role "$role")
  [ "$n" -gt 0 ] || die "$file: no $role line (a cluster needs at least one $role)"
  for ((k = 0; k < n; k++)); do
    find_role "$role" "$k" > /dev/null || die "$file: $n $role lines, but no $role $k: indexes run from 0"
  done
}

read_hosts() {
  local file=$1 line lineno=0
  [ -f "$file" ] || die "hosts file \"$file\" does not exist"
  while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line=${line%%#*}
    local -a f
    read -r -a f <<< "$line"
    [ ${#f[@]} -gt 0 ] || continue
    [ ${#f[@]} -ge 4 ] && [ ${#f[@]} -le 5 ] ||
      die "$file:$lineno: want ROLE INDEX HOST PORT [GPU], got ${#f[@]} fields"
    parse_line "$file" "$lineno" "${f[@]}"
  done < "$file"
  local nmaster
  nmaster=$(count_role master chief)
  [ "$nmaster" -eq 1 ] || die "$file: want one master (or chief) line, got $nmaster"
  master_i=$(find_role master 0 || find_role chief 0) ||
    die "$file: the master's index must be 0"
  check_dense "$file" ps
  check_dense "$file" worker
}

# The hosts, each once, in the order of the file.
unique_hosts() {
  local h seen=" "
  for h in "${hosts[@]}"; do
    case "$seen" in *" $h "*) continue ;; esac
    seen+="$h "
    echo "$h"
  done
}

# names_on HOST: the roles that run there.
names_on() {
  local i list=()
  for i in "${!names[@]}"; do [ "${hosts[$i]}" != "$1" ] || list+=("${names[$i]}"); done
  echo "${list[*]}"
}

cluster_json() {
  local role sep k i n key out=""
  for role in master ps worker; do
    key=$role
    [ "$role" != master ] || key=${roles[$master_i]}
    n=$(count_role "$key")
    [ -z "$out" ] || out+=", "
    out+="\"$key\": ["
    sep=""
    for ((k = 0; k < n; k++)); do
      i=$(find_role "$key" "$k")
      out+="$sep\"${addrs[$i]}\""
      sep=", "
    done
    out+="]"
  done
  echo "{$out}"
}

tf_config() { # LINE
  echo "{\"cluster\": $cluster, \"task\": {\"type\": \"${roles[$1]}\", \"index\": ${indexes[$1]}}, \"environment\": \"cloud\"}"
}

binary_of() { # ROLE
  case "$1" in master | chief) echo pstrain-master ;; *) echo "pstrain-$1" ;; esac
}

# ---- the transport ----

# on HOST COMMAND: runs COMMAND (one shell command line) on HOST.
on() { "${transport[@]}" "$1" "$2"; }
# agent HOST ARGS...: the host's pstrain-agent in the remote folder.
agent() {
  local host=$1
  shift
  on "$host" "cd $remote_dir && PSTRAIN_STOP_GRACE=$grace bash bin/pstrain-agent $*" < /dev/null
}

# ---- start ----

opts=() tls_dir="" config_file=""
parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --config) [ $# -ge 2 ] || die "--config wants a FILE"; config_file=$2; shift 2 ;;
      --config=*) config_file=${1#--config=}; shift ;;
      --tls) [ $# -ge 2 ] || die "--tls wants a DIR"; tls_dir=$2; shift 2 ;;
      --pid-file* | --tf-config*) die "$1: the launcher sets each role's pid file and TF_CONFIG" ;;
      *) opts+=("$1"); shift ;;
    esac
  done
  [ -z "$config_file" ] || [ -f "$config_file" ] || die "--config: no file \"$config_file\""
  [ -z "$tls_dir" ] || [ -f "$tls_dir/ca.pem" ] || die "--tls: no ca.pem in \"$tls_dir\""
}

# tls_file HOST pem|key: the host's certificate or key in the --tls folder.
tls_file() {
  if [ -f "$tls_dir/$1.$2" ]; then
    echo "$tls_dir/$1.$2"
  elif [ -f "$tls_dir/node.$2" ]; then
    echo "$tls_dir/node.$2"
  else
    die "--tls: neither $tls_dir/$1.$2 nor $tls_dir/node.$2 exists"
  fi
}

# role_args LINE local|remote: the options a role runs with, naming the
# configuration and certificates where they are (here, or on its host).
role_args() {
  local i=$1 where=$2 args=("${opts[@]}")
  if [ -n "$config_file" ]; then
    if [ "$where" = local ]; then args=(--config "$config_file" "${args[@]}"); else args=(--config etc/config.json "${args[@]}"); fi
  fi
  if [ -n "$tls_dir" ]; then
    if [ "$where" = local ]; then
      args+=(--set "tls.ca=$tls_dir/ca.pem" --set "tls.cert=$(tls_file "${hosts[$i]}" pem)"
        --set "tls.key=$(tls_file "${hosts[$i]}" key)")
    else
      args+=(--set tls.ca=etc/tls/ca.pem --set tls.cert=etc/tls/node.pem --set tls.key=etc/tls/node.key)
    fi
  fi
  [ ${#args[@]} -eq 0 ] || printf '%s\n' "${args[@]}"
}

# Every role's TF_CONFIG and options pass the daemon's own check here before
# anything is copied.
check_roles() {
  local i bin err
  local -a args
  mapfile -t args < <(role_args "$master_i" local)
  model_dir=$(TF_CONFIG="" "$build/pstrain-worker" "${args[@]}" --print-config checkpoint.model_dir)
  [[ "$model_dir" == /* ]] ||
    die "checkpoint.model_dir is \"$model_dir\": give an absolute path on storage that every host mounts, e.g. --set checkpoint.model_dir=/mnt/pstrain/run1"
  for i in "${!names[@]}"; do
    bin=$(binary_of "${roles[$i]}")
    mapfile -t args < <(role_args "$i" local)
    err=$(TF_CONFIG=$(tf_config "$i") "$build/$bin" "${args[@]}" --check-config 2>&1 > /dev/null) ||
      die "${names[$i]}: ${err:-$bin refuses its configuration}"
  done
}

# write_run_script LINE FILE: the script that runs one role on its host.
write_run_script() {
  local i=$1 name=${names[$1]}
  local -a args
  mapfile -t args < <(role_args "$i" remote)
  {
    echo "#!/usr/bin/env bash"
    echo "# $name of a pstrain cluster, written by scripts/train_cloud.sh; bin/pstrain-agent runs it."
    echo 'cd "$(dirname "$0")/.." || exit 1'
    echo "exec 9> run/$name.lock"
    echo "flock -n 9 || { echo '$name already runs' >> run/$name.log; exit 1; }"
    # The hosts file's characters were checked: no quote can occur in it.
    echo "export TF_CONFIG='$(tf_config "$i")'"
    printf 'export CUDA_VISIBLE_DEVICES=%q\n' "${gpus[$i]}"
    if [ -n "${PSTRAIN_OPENBLAS_CORETYPE:-}" ]; then
      printf 'export OPENBLAS_CORETYPE=%q\n' "$PSTRAIN_OPENBLAS_CORETYPE"
    else
      echo "unset OPENBLAS_CORETYPE"
    fi
    printf 'bin/%s' "$(binary_of "${roles[$i]}")"
    printf ' %q' "${args[@]}"
    printf ' --pid-file "$PWD/run/%s.pid" >> run/%s.log 2>&1 < /dev/null\n' "$name" "$name"
    echo "echo \$? > run/$name.exit"
  } > "$2"
}

# stage HOST DIR: what HOST gets, laid out in DIR.
stage() {
  local host=$1 dir=$2 i b
  mkdir -p "$dir/bin" "$dir/etc" "$dir/run"
  for b in pstrain-master pstrain-ps pstrain-worker pstrain; do cp "$build/$b" "$dir/bin/"; done
  cp "$root/scripts/cloud_agent.sh" "$dir/bin/pstrain-agent"
  [ -z "$config_file" ] || cp "$config_file" "$dir/etc/config.json"
  if [ -n "$tls_dir" ]; then
    mkdir -p "$dir/etc/tls"
    cp "$tls_dir/ca.pem" "$dir/etc/tls/ca.pem"
    cp "$(tls_file "$host" pem)" "$dir/etc/tls/node.pem"
    cp "$(tls_file "$host" key)" "$dir/etc/tls/node.key"
    chmod 600 "$dir/etc/tls/node.key"
  fi
  for i in "${!names[@]}"; do
    [ "${hosts[$i]}" != "$host" ] || write_run_script "$i" "$dir/run/${names[$i]}.sh"
  done
  echo "${addrs[$master_i]}" > "$dir/run/master.addr"
  echo "$model_dir" > "$dir/run/model_dir"
}

# Nothing of this cluster may still run when it starts again.
check_stopped() {
  local host line
  for host in $(unique_hosts); do
    line=$(on "$host" "cd $remote_dir 2> /dev/null && [ -f bin/pstrain-agent ] && bash bin/pstrain-agent status $(names_on "$host") || true" < /dev/null | grep ' running$' | head -n 1) || true
    [ -z "$line" ] ||
      die "${line%% *} still runs on $host (pid $(echo "$line" | cut -d' ' -f2)): train_cloud.sh stop $hosts_file first"
  done
}

cmd_start() {
  parse_options "$@"
  if [ -z "${PSTRAIN_BUILD:-}" ]; then "$root/scripts/build.sh"; fi
  build=${PSTRAIN_BUILD:-$root/build}
  local b host n clear rc=0
  for b in pstrain-master pstrain-ps pstrain-worker pstrain; do
    [ -x "$build/$b" ] || die "$build/$b is missing: build first (scripts/build.sh)"
  done
  cluster=$(cluster_json)
  check_roles
  check_stopped
  stage_dir=$(mktemp -d)
  trap 'rm -rf "$stage_dir"' EXIT
  for host in $(unique_hosts); do
    stage "$host" "$stage_dir/$host"
    clear=""
    for n in $(names_on "$host"); do clear+=" : > run/$n.log;"; done
    tar -C "$stage_dir/$host" -cf - . |
      on "$host" "mkdir -p $remote_dir && rm -rf $remote_dir/etc/tls && tar -xf - -C $remote_dir && cd $remote_dir &&$clear true" ||
      die "copying to $host failed (transport: ${transport[*]})"
    echo "$host: copied to $remote_dir; starting $(names_on "$host")"
    agent "$host" start "$(names_on "$host")" || rc=1
  done
  [ $rc -eq 0 ] || { echo "train_cloud: some roles did not start (above); stop the rest with: $0 stop $hosts_file" >&2; exit 1; }
  echo "cluster: master ${addrs[$master_i]}, $(count_role ps) ps, $(count_role worker) workers; model_dir $model_dir"
  echo "  watch: $0 status $hosts_file   stop: $0 stop $hosts_file"
}

# ---- status, stop, restart, logs, wait ----

cmd_status() {
  local host name pid state out rc=0 mhost=${hosts[$master_i]} tls
  printf '%-10s %-24s %-8s %s\n' ROLE HOST PID STATE
  for host in $(unique_hosts); do
    if ! out=$(agent "$host" status "$(names_on "$host")" 2>&1); then
      for name in $(names_on "$host"); do printf '%-10s %-24s %-8s %s\n' "$name" "$host" - unknown; done
      echo "  $host: $(echo "$out" | tail -n 1)"
      rc=1
      continue
    fi
    while read -r name pid state; do
      printf '%-10s %-24s %-8s %s\n' "$name" "$host" "$pid" "$state"
    done <<< "$out"
  done
  echo
  tls='$([ -f etc/tls/ca.pem ] && echo --set tls.ca=etc/tls/ca.pem --set tls.cert=etc/tls/node.pem --set tls.key=etc/tls/node.key)'
  on "$mhost" "cd $remote_dir && bin/pstrain status --master \$(cat run/master.addr) $tls 2> /dev/null" < /dev/null ||
    echo "${names[$master_i]} at ${addrs[$master_i]} does not answer"
  return $rc
}

cmd_stop() {
  local host out rc=0
  out=$(mktemp -d)
  for host in $(unique_hosts); do
    { agent "$host" stop "$(names_on "$host")" > "$out/$host" 2>&1 || echo "failed" > "$out/$host.failed"; } &
  done
  wait
  for host in $(unique_hosts); do
    sed "s/^/$host: /" "$out/$host"
    [ ! -f "$out/$host.failed" ] || rc=1
  done
  rm -rf "$out"
  if [ $rc -ne 0 ]; then
    echo "train_cloud: could not stop every host (above)" >&2
    exit 1
  fi
  echo "stop: done"
}

cmd_restart() {
  [ $# -eq 2 ] || die "restart wants ROLE INDEX, e.g. restart $hosts_file ps 1"
  local role=$1 i
  i=$(find_role "$role" "$2") || { [ "$role" = master ] && i=$(find_role chief "$2"); } ||
    { [ "$role" = chief ] && i=$(find_role master "$2"); } ||
    die "$hosts_file lists no $role $2"
  echo "${names[$i]} on ${hosts[$i]}:"
  agent "${hosts[$i]}" restart "${names[$i]}" || {
    echo "train_cloud: ${names[$i]} did not restart on ${hosts[$i]} (above)" >&2
    exit 1
  }
}

cmd_logs() {
  local host n files
  mkdir -p "$logs_dir"
  for host in $(unique_hosts); do
    files=""
    for n in $(names_on "$host"); do files+=" $n.log"; done
    on "$host" "cd $remote_dir/run && tar -cf - --ignore-failed-read$files 2> /dev/null" < /dev/null |
      tar -xf - -C "$logs_dir" || echo "train_cloud: could not copy every log from $host" >&2
  done
  echo "logs: $logs_dir"
}

# state_of LINE: the role's state as its host's agent reports it.
state_of() {
  agent "${hosts[$1]}" status "${names[$1]}" | cut -d' ' -f3-
}

cmd_wait() {
  local state i mhost=${hosts[$master_i]} results
  trap 'echo; echo "train_cloud: stopped waiting; the cluster still runs ($0 stop $hosts_file stops it)" >&2; exit 130' INT
  while :; do
    state=$(state_of "$master_i") || die "cannot reach the master's host ${hosts[$master_i]}"
    [ "$state" = running ] || break
    sleep "${PSTRAIN_POLL_SECS:-2}"
  done
  [ "$state" != "not started" ] || die "${names[$master_i]} was never started on $mhost"
  # The others follow the master within a few heartbeats.
  for i in "${!names[@]}"; do
    for _ in $(seq 1 60); do
      [ "$(state_of "$i")" = running ] || break
      sleep 0.5
    done
  done
  cmd_logs
  if [ "$state" != "exited 0" ]; then
    echo "train_cloud: ${names[$master_i]} $state; its log: $logs_dir/${names[$master_i]}.log" >&2
    tail -n 5 "$logs_dir/${names[$master_i]}.log" >&2 || true
    exit 1
  fi
  results=$(on "$mhost" "cd $remote_dir && cat \"\$(cat run/model_dir)/eval_results.json\"" < /dev/null) ||
    die "no eval_results.json in the model_dir that $mhost sees"
  echo "== final test metrics: $(echo "$results" | tr -d '\n ' |
    sed -E 's/.*"global_step":([0-9]+).*"loss":([0-9.e+-]+),"accuracy":([0-9.e+-]+).*/global_step=\1 loss=\2 accuracy=\3/')"
}

# The files of deploy/systemd's units: the master's is master-0.json, even
# when the hosts file calls it chief.
cmd_tf_config() {
  [ $# -ge 1 ] && [ $# -le 2 ] || die "tf-config wants DIR [HOST]"
  local dir=$1 host=${2:-} i file n=0
  mkdir -p "$dir"
  cluster=$(cluster_json)
  for i in "${!names[@]}"; do
    [ -z "$host" ] || [ "${hosts[$i]}" = "$host" ] || continue
    file=$dir/${roles[$i]/chief/master}-${indexes[$i]}
    tf_config "$i" > "$file.json"
    echo "$file.json"
    if [ -n "${gpus[$i]}" ]; then
      echo "CUDA_VISIBLE_DEVICES=${gpus[$i]}" > "$file.env"
      echo "$file.env"
    fi
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "$hosts_file lists no role on $host"
}

# ---- main ----

cmd=run
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  run | start | wait | status | stop | restart | logs | tf-config) cmd=$1; shift ;;
  "") usage >&2; exit 2 ;;
esac
[ $# -ge 1 ] || die "$cmd wants a HOSTS_FILE (see --help)"
hosts_file=$1
shift
read_hosts "$hosts_file"
case "$cmd" in
  run) cmd_start "$@"; cmd_wait ;;
  start) cmd_start "$@" ;;
  restart) cmd_restart "$@" ;;
  tf-config) cmd_tf_config "$@" ;;
  *)
    [ $# -eq 0 ] || die "$cmd takes only a HOSTS_FILE, not \"$1\""
    "cmd_$cmd"
    ;;
esac

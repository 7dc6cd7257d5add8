#!/usr/bin/env bash
# Starts a pstrain cluster as local processes on free loopback ports: one
# master, --ps N parameter servers (default 2) and --workers N workers
# (default 2), each with its own TF_CONFIG, logs in runlogs/<role><i>.log and
# pid files in runlogs/<role><i>.pid; waits for training to finish, appends a
# line to training_log.md and prints the final metrics. Other arguments
# (--set key=value, --config FILE) go to every process.
#   scripts/train_local_dist.sh --workers 3 --set train.mode=sync
# Worker i gets CUDA_VISIBLE_DEVICES=i (or the i-th entry of --gpus 0,1,...)
# and device=auto: it computes on that GPU when it is usable, else on the CPU
# (one log line says why); --set device=gpu makes a missing GPU an error
# (exit 69), --set device=cpu keeps every worker on the CPU. The PS and the
# master get an empty CUDA_VISIBLE_DEVICES and stay on the CPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/alive.sh"
cd "$root"
# The binaries of $PSTRAIN_BUILD (scripts/build.sh builds there too), else build/.
build=${PSTRAIN_BUILD:-$root/build}
nps=2
nworkers=2
gpus=""
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ps) nps=$2; shift 2 ;;
    --workers) nworkers=$2; shift 2 ;;
    --gpus) gpus=$2; shift 2 ;;
    --runlogs) runlogs=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ "$nps" =~ ^[1-9][0-9]*$ ]] || { echo "train_local_dist: --ps wants a count >= 1" >&2; exit 2; }
[[ "$nworkers" =~ ^[1-9][0-9]*$ ]] || { echo "train_local_dist: --workers wants a count >= 1" >&2; exit 2; }

scripts/setup.sh > /dev/null
scripts/build.sh
unset OPENBLAS_CORETYPE
[ -n "${PSTRAIN_OPENBLAS_CORETYPE:-}" ] && export OPENBLAS_CORETYPE=$PSTRAIN_OPENBLAS_CORETYPE
# Compute threads per worker: the CPUs shared among the workers, unless
# the arguments set threads themselves.
threads=$(( $(nproc) / nworkers )); [ "$threads" -ge 1 ] || threads=1
thread_args=(--set "threads=$threads")
for a in "${args[@]}"; do
  case "$a" in threads=*|--set=threads=*) thread_args=() ;; esac
done
# Workers compute on their GPU when they have one (device=auto), unless the
# arguments or a --config file choose the device themselves.
worker_device=(--set device=auto)
prev=""
for a in "${args[@]}"; do
  case "$a" in device=*|--set=device=*) worker_device=() ;; esac
  if [ "$prev" = --config ] && grep -q '"device' "$a" 2> /dev/null; then worker_device=(); fi
  prev=$a
done

mkdir -p "$runlogs"
if ls "$runlogs"/*.pid > /dev/null 2>&1; then
  for f in "$runlogs"/*.pid; do
    if alive "$(cat "$f")"; then
      echo "train_local_dist: $(basename "$f" .pid) (pid $(cat "$f")) still runs; scripts/stop.sh first" >&2
      exit 2
    fi
  done
fi

# A port nothing listens on (bash's /dev/tcp fails to connect to it), below
# the kernel's range for ephemeral ports: a port taken from that range could
# be handed to another socket before its daemon binds it.
used_ports=" "
ephemeral_low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || echo 32768)
[ "$ephemeral_low" -gt 12000 ] 2> /dev/null || ephemeral_low=32768
free_port() {
  local p
  while :; do
    p=$(( 10000 + (RANDOM * 32768 + RANDOM) % (ephemeral_low - 10000) ))
    case "$used_ports" in *" $p "*) continue ;; esac
    if ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
      used_ports+="$p "
      echo "$p"
      return
    fi
  done
}
join() { local IFS=,; echo "$*"; }
master_addr="127.0.0.1:$(free_port)"
ps_addrs=(); for ((i = 0; i < nps; i++)); do ps_addrs+=("\"127.0.0.1:$(free_port)\""); done
worker_addrs=(); for ((i = 0; i < nworkers; i++)); do worker_addrs+=("\"127.0.0.1:$(free_port)\""); done
cluster="{\"master\": [\"$master_addr\"], \"ps\": [$(join "${ps_addrs[@]}")], \"worker\": [$(join "${worker_addrs[@]}")]}"
echo "$cluster" > "$runlogs/cluster.json"
echo "$master_addr" > "$runlogs/master.addr"
model_dir=$("$build/pstrain-worker" "${args[@]}" --print-config checkpoint.model_dir)

# start ROLE INDEX BINARY GPU: one daemon with its TF_CONFIG, log and pid file.
# Its command line is kept in runlogs/<role><i>.cmd for scripts/restart_role.sh.
# Each PS gets a port of its own for its tensor stream (rpc.stream_port),
# kept across restarts.
start() {
  local role=$1 index=$2 bin=$3 gpu=$4
  local name=$role$index
  local device_args=()
  if [ "$role" = worker ]; then device_args=("${worker_device[@]}"); fi
  local role_args=()
  if [ "$role" = ps ]; then role_args=(--set "rpc.stream_port=$(free_port)"); fi
  local tf="{\"cluster\": $cluster, \"task\": {\"type\": \"$role\", \"index\": $index}, \"environment\": \"local\"}"
  {
    printf 'export TF_CONFIG=%q\n' "$tf"
    printf 'export CUDA_VISIBLE_DEVICES=%q\n' "$gpu"
    printf 'exec %q' "$build/$bin"
    printf ' %q' "${device_args[@]}" "${thread_args[@]}" "${args[@]}" "${role_args[@]}" \
      --pid-file "$runlogs/$name.pid"
    printf '\n'
  } > "$runlogs/$name.cmd"
  bash "$runlogs/$name.cmd" >> "$runlogs/$name.log" 2>&1 &
  echo $! > "$runlogs/$name.pid"
}

: > "$runlogs/master0.log"
start master 0 pstrain-master ""
for ((i = 0; i < nps; i++)); do : > "$runlogs/ps$i.log"; start ps "$i" pstrain-ps ""; done
IFS=, read -r -a gpu_list <<< "$gpus"
for ((i = 0; i < nworkers; i++)); do
  : > "$runlogs/worker$i.log"
  gpu=$i
  [ -n "$gpus" ] && gpu=${gpu_list[$((i % ${#gpu_list[@]}))]}
  start worker "$i" pstrain-worker "$gpu"
done
echo "cluster: master $master_addr, $nps ps, $nworkers workers; logs in $runlogs"
echo "  watch: scripts/status.sh   stop: scripts/stop.sh"

start_time=$(date +%s)
# The master exits when training is done; everyone else follows. A master
# killed (pid file left) or stopped (SIGTERM: pid file removed) before the end
# is waited for, up to PSTRAIN_MASTER_WAIT seconds, until scripts/restart_role.sh
# starts it again; training is done when the manifest is final and the
# evaluation of its last checkpoint is written.
done_training() {
  python3 - "$model_dir" 2> /dev/null << 'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/checkpoint"))
r = json.load(open(sys.argv[1] + "/eval_results.json"))
sys.exit(0 if m.get("final") and r.get("global_step") == m.get("latest_step") else 1)
PY
}
master_pid=$(cat "$runlogs/master0.pid")
status=0
while true; do
  pid=$(cat "$runlogs/master0.pid" 2> /dev/null || true)
  if [ -n "$pid" ] && alive "$pid"; then
    [ "$pid" != "$master_pid" ] && restarted=1
    sleep 0.5
    continue
  fi
  if [ -z "${restarted:-}" ]; then # our own child: its exit status
    rc=0
    wait "$master_pid" 2> /dev/null || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 137 ]; then
      status=$rc
      break
    fi
  fi
  done_training && break
  # Gone before the end: wait for a restart (a live process in a new pid file).
  echo "train_local_dist: the master stopped before the end of training; waiting for scripts/restart_role.sh master 0" >&2
  waited=0
  while [ "$waited" -lt "${PSTRAIN_MASTER_WAIT:-300}" ]; do
    new=$(cat "$runlogs/master0.pid" 2> /dev/null || true)
    [ -n "$new" ] && [ "$new" != "$pid" ] && alive "$new" && break
    done_training && break # restarted, and already finished
    sleep 1
    waited=$((waited + 1))
  done
  [ "$waited" -lt "${PSTRAIN_MASTER_WAIT:-300}" ] || {
    status=1
    break
  }
  restarted=1
done
for f in "$runlogs"/*.pid; do
  pid=$(cat "$f" 2> /dev/null) || continue
  for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
done
elapsed=$(( $(date +%s) - start_time ))

results="$model_dir/eval_results.json"
if [ "$status" -ne 0 ] || [ ! -f "$results" ]; then
  echo "train_local_dist: the master exited with status $status; see $runlogs/master0.log" >&2
  tail -n 5 "$runlogs/master0.log" >&2
  exit 1
fi
metrics=$(tr -d '\n ' < "$results" | sed -E 's/.*"global_step":([0-9]+).*"loss":([0-9.e+-]+),"accuracy":([0-9.e+-]+).*/global_step=\1 loss=\2 accuracy=\3/')
# PSTRAIN_TRAINING_LOG: where the line goes (tests put it in their own folder).
training_log=${PSTRAIN_TRAINING_LOG:-training_log.md}
{
  [ -f "$training_log" ] || printf '# Training log\n\nOne line per run of scripts/train_local_dist.sh.\n\n'
  printf -- '- %s: master + %s ps + %s workers; overrides: %s; %s; %ss\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$nps" "$nworkers" "${args[*]:-(none)}" "$metrics" "$elapsed"
} >> "$training_log"
echo "== final test metrics after ${elapsed}s ($results): $metrics"

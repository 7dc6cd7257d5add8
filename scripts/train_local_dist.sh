#!/usr/bin/env bash
# Starts a pstrain cluster as local processes on free loopback ports: one
# master, --ps N parameter servers (default 2) and --workers N workers
# (default 2), each with its own TF_CONFIG, logs in runlogs/<role><i>.log and
# pid files in runlogs/<role><i>.pid; watches every role until training is
# over, appends a line to training_log.md and prints the final metrics of
# this run's own evaluation. Other arguments (--set key=value, --config FILE)
# go to every process.
#   scripts/train_local_dist.sh --workers 3 --set train.mode=sync
# A role that exits 1-127 (a permanent error) stops the cluster: the launcher
# names it, prints its last ERROR line and log, and exits with its status. A
# role that exits 128-255 (killed, or a failure a restart may cure) is
# restarted, at most --max-restarts N times (3) per role; --no-restart leaves
# restarts to scripts/restart_role.sh. Ctrl-C or SIGTERM stops the cluster
# (the master checkpoints first); so does scripts/stop.sh, which also ends
# this wait. --training-log FILE (or PSTRAIN_TRAINING_LOG) names the log to
# append to. Every few seconds (--progress-secs S, 5; 0: never) one line
# shows the global step, loss, accuracy, images/s, ETA and roles alive.
# Worker i gets CUDA_VISIBLE_DEVICES=i (or the i-th entry of --gpus 0,1,...)
# and device=auto: it computes on that GPU when it is usable, else on the CPU
# (one log line says why); --set device=gpu makes a missing GPU an error
# (exit 69), --set device=cpu keeps every worker on the CPU. The PS and the
# master get an empty CUDA_VISIBLE_DEVICES and stay on the CPU.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/alive.sh"
. "$root/scripts/lib/ports.sh"
. "$root/scripts/lib/watch.sh"
cd "$root"
# The binaries of $PSTRAIN_BUILD (scripts/build.sh builds there too), else build/.
build=${PSTRAIN_BUILD:-$root/build}
nps=2
nworkers=2
gpus=""
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
training_log=${PSTRAIN_TRAINING_LOG:-$root/training_log.md}
restart=1
max_restarts=3
progress_secs=5
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ps) nps=$2; shift 2 ;;
    --workers) nworkers=$2; shift 2 ;;
    --gpus) gpus=$2; shift 2 ;;
    --runlogs) runlogs=$2; shift 2 ;;
    --training-log) training_log=$2; shift 2 ;;
    --no-restart) restart=0; shift ;;
    --restart) restart=1; shift ;;
    --max-restarts) max_restarts=$2; shift 2 ;;
    --progress-secs) progress_secs=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ "$nps" =~ ^[1-9][0-9]*$ ]] || { echo "train_local_dist: --ps wants a count >= 1" >&2; exit 2; }
[[ "$nworkers" =~ ^[1-9][0-9]*$ ]] || { echo "train_local_dist: --workers wants a count >= 1" >&2; exit 2; }
[[ "$max_restarts" =~ ^[0-9]+$ ]] || { echo "train_local_dist: --max-restarts wants a count >= 0" >&2; exit 2; }
[[ "$progress_secs" =~ ^[0-9]+$ ]] || { echo "train_local_dist: --progress-secs wants whole seconds >= 0" >&2; exit 2; }

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
# The master logs its progress line as often as the launcher shows it,
# unless the arguments set log.every_secs.
master_log_args=()
[ "$progress_secs" -gt 0 ] && master_log_args=(--set "log.every_secs=$progress_secs")
for a in "${args[@]}"; do
  case "$a" in log.every_secs=*|--set=log.every_secs=*) master_log_args=() ;; esac
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
# An earlier cluster's files go: its .cmd files would let restart_role.sh
# start roles this cluster does not have.
rm -f "$runlogs"/*.pid "$runlogs"/*.cmd "$runlogs"/*.log "$runlogs"/*.pid.tmp \
  "$runlogs/cluster.json" "$runlogs/master.addr" "$runlogs/stopped"

join() { local IFS=,; echo "$*"; }
free_port
master_addr="127.0.0.1:$port"
ps_addrs=(); for ((i = 0; i < nps; i++)); do free_port; ps_addrs+=("\"127.0.0.1:$port\""); done
worker_addrs=(); for ((i = 0; i < nworkers; i++)); do free_port; worker_addrs+=("\"127.0.0.1:$port\""); done
stream_ports=(); for ((i = 0; i < nps; i++)); do free_port; stream_ports+=("$port"); done
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
  if [ "$role" = master ]; then role_args=("${master_log_args[@]}"); fi
  if [ "$role" = ps ]; then role_args=(--set "rpc.stream_port=${stream_ports[$index]}"); fi
  local tf="{\"cluster\": $cluster, \"task\": {\"type\": \"$role\", \"index\": $index}, \"environment\": \"local\"}"
  {
    printf 'export TF_CONFIG=%q\n' "$tf"
    printf 'export CUDA_VISIBLE_DEVICES=%q\n' "$gpu"
    printf 'exec %q' "$build/$bin"
    printf ' %q' "${device_args[@]}" "${thread_args[@]}" "${args[@]}" "${role_args[@]}" \
      --pid-file "$runlogs/$name.pid"
    printf '\n'
  } > "$runlogs/$name.cmd"
  # A session of its own: a Ctrl-C at the terminal reaches the launcher
  # alone, which stops the master first (its checkpoint needs the PS).
  setsid bash "$runlogs/$name.cmd" >> "$runlogs/$name.log" 2>&1 < /dev/null &
  cur_pid[$name]=$!
  is_child[$name]=1
  echo $! > "$runlogs/$name.pid"
  roles+=("$name")
}

roles=()
start_time=$(date +%s)
start master 0 pstrain-master ""
for ((i = 0; i < nps; i++)); do start ps "$i" pstrain-ps ""; done
IFS=, read -r -a gpu_list <<< "$gpus"
for ((i = 0; i < nworkers; i++)); do
  gpu=$i
  [ -n "$gpus" ] && gpu=${gpu_list[$((i % ${#gpu_list[@]}))]}
  start worker "$i" pstrain-worker "$gpu"
done
echo "cluster: master $master_addr, $nps ps, $nworkers workers; logs in $runlogs (started in $(($(date +%s) - start_time))s)"
echo "  watch: scripts/status.sh   stop: scripts/stop.sh"
# Signals only set a flag; the loop stops the cluster.
stop_signal=""
trap 'stop_signal=INT' INT
trap 'stop_signal=TERM' TERM
master_log=$runlogs/master0.log
restart_wait=${PSTRAIN_RESTART_WAIT:-${PSTRAIN_MASTER_WAIT:-300}}

# master_finished: this run's master logged its final evaluation (an old
# eval_results.json of the model_dir never counts).
master_finished() { grep -q "final evaluation at global step" "$master_log" 2> /dev/null; }

# global_step: the last global step this run's master logged (0 before any):
# in its progress lines, or in the checkpoint it wrote on a stop (the
# progress lines come every log.every_secs only).
global_step() {
  local s
  s=$({ grep -o 'global step [0-9]*' "$master_log" 2> /dev/null || true
    grep -o 'ckpt-[0-9]* written' "$master_log" 2> /dev/null || true; } |
    grep -o '[0-9][0-9]*' | sort -n | tail -n 1)
  echo "${s:-0}"
}

# on_role_end NAME: what the launcher does when a role has ended; sets
# $outcome when the run is over (finished, failed, already_over).
on_role_end() {
  local name=$1 rc=${gone[$1]}
  if [ "$rc" -eq 0 ]; then
    [ "$name" = master0 ] || return 0
    if grep -q "training is already over" "$master_log"; then
      outcome=already_over
    elif master_finished; then
      outcome=finished
    else
      echo "train_local_dist: master0 stopped before the end of training; waiting up to ${restart_wait}s for scripts/restart_role.sh master 0" >&2
    fi
  elif [ "$rc" -lt 128 ]; then
    outcome=failed failed=$name
  elif [ "$restart" = 1 ] && [ "${restarts[$name]:-0}" -lt "$max_restarts" ]; then
    relaunch_role "$name"
    echo "train_local_dist: $name ended with status $rc (a failure a restart may cure): restarted it (pid ${cur_pid[$name]}, restart ${restarts[$name]} of $max_restarts); log $runlogs/$name.log" >&2
  elif [ "$restart" = 1 ]; then
    echo "train_local_dist: $name ended with status $rc after $max_restarts restarts: giving up" >&2
    outcome=failed failed=$name
  else
    echo "train_local_dist: $name ended with status $rc; waiting up to ${restart_wait}s for scripts/restart_role.sh" >&2
  fi
}

# check_waits: a role that ended and was not restarted within $restart_wait
# seconds (the master stopped before the end, or --no-restart) fails the run.
check_waits() {
  local name now
  now=$(date +%s)
  for name in "${!gone[@]}"; do
    [ "${gone[$name]}" -ne 0 ] || [ "$name" = master0 ] || continue
    if [ $((now - gone_at[$name])) -ge "$restart_wait" ]; then
      echo "train_local_dist: $name did not come back within ${restart_wait}s" >&2
      outcome=failed failed=$name
      [ "${gone[$name]}" -ne 0 ] || gone[$name]=1
    fi
  done
}

# announce: prints the master's new lines that matter to the user: resumed,
# each evaluation, stalls and rollbacks, roles restarted or dead.
master_seen=0
announce() {
  local n
  n=$(wc -l < "$master_log" 2> /dev/null || echo 0)
  [ "$n" -gt "$master_seen" ] || return 0
  # A finished model_dir's re-evaluation is not this run's result.
  grep -q "training is already over" "$master_log" && return 0
  sed -n "$((master_seen + 1)),${n}p" "$master_log" |
    grep -E 'resumed from ckpt-|evaluation of ckpt-|STALL|rolled back|restarted \(pid|marked dead|ERROR' |
    sed -E 's/^[0-9-]+ [0-9:.]+ master0\[[0-9]+\] (INFO |WARN |ERROR )?/master0: /' || true
  master_seen=$n
}

# progress: one line every $progress_secs seconds: the master's last view
# (global step/target, loss, accuracy, images/s, ETA) and the roles alive.
next_progress=$((start_time + progress_secs))
progress() {
  [ "$progress_secs" -gt 0 ] && [ "$(date +%s)" -ge "$next_progress" ] || return 0
  next_progress=$(($(date +%s) + progress_secs))
  local line
  line=$(grep -o 'global step [0-9]*/[0-9]*.*' "$master_log" 2> /dev/null | tail -n 1 || true)
  echo "[$(($(date +%s) - start_time))s] ${line:-starting}; roles alive $(roles_alive)"
}

elapsed() { echo $(($(date +%s) - start_time)); }

outcome=""
while [ -z "$outcome" ]; do
  if [ -n "$stop_signal" ]; then outcome=signal; break; fi
  if [ -f "$runlogs/stopped" ]; then outcome=stopped; break; fi
  for name in "${roles[@]}"; do
    follow_role "$name" || continue
    on_role_end "$name"
    [ -z "$outcome" ] || break
  done
  [ -n "$outcome" ] || check_waits
  # Every role gone before the end (a Ctrl-C reached them but not this
  # shell, which started in the background with SIGINT ignored): no one is
  # left to wait for.
  # (Counted from gone[], which on_role_end has seen: a master that ended
  # since its check this round is handled next round.)
  # A master restarted by scripts/restart_role.sh may have run and finished
  # between two looks (a final checkpoint and evaluation of the MLP take
  # well under the 0.5 s between them): its log says so.
  if [ -z "$outcome" ] && [ "${#gone[@]}" -eq "${#roles[@]}" ]; then
    if master_finished; then outcome=finished; else outcome=all_stopped; fi
  fi
  announce
  [ -n "$outcome" ] || progress
  [ -n "$outcome" ] || sleep 0.5 || true # a signal cuts it short
done
# A signal is why, when it came while the roles were ending.
if [ -n "$stop_signal" ]; then outcome=signal; fi

# stop_all: stops what still runs, by pid file (SIGTERM: the master
# checkpoints first), and reaps this shell's children, keeping each one's
# exit status in gone[].
stop_all() {
  PSTRAIN_RUNLOGS=$runlogs "$root/scripts/stop.sh" | grep -v '^stop: done' >&2 || true
  local name
  for name in "${roles[@]}"; do follow_role "$name" || true; done
}

case $outcome in
signal)
  echo "train_local_dist: SIG$stop_signal: stopping the cluster (the master checkpoints first)" >&2
  stop_all
  echo "train_local_dist: stopped at global step $(global_step) after $(elapsed)s; run the same command again to resume" >&2
  [ "$stop_signal" = INT ] && exit 130
  exit 143
  ;;
stopped)
  for name in "${roles[@]}"; do
    for _ in $(seq 1 200); do alive "${cur_pid[$name]}" || break; sleep 0.1; done
    follow_role "$name" || true
  done
  echo "train_local_dist: stopped by scripts/stop.sh at global step $(global_step) after $(elapsed)s; run the same command again to resume" >&2
  exit 143
  ;;
all_stopped)
  echo "train_local_dist: every role stopped before the end of training, at global step $(global_step) after $(elapsed)s; run the same command again to resume" >&2
  exit 143
  ;;
already_over)
  stop_all
  step=$(grep -o 'ckpt-[0-9]* is final' "$master_log" | tail -n 1 | grep -o '[0-9]*' || true)
  echo "train_local_dist: $model_dir already finished at step ${step:-?}; use a new checkpoint.model_dir or raise train.epochs" >&2
  exit 3
  ;;
failed)
  stop_all
  # Every role that failed, in the order of the cluster spec (two PS that
  # cannot resume fail together); the first one's status is the launcher's.
  failures=()
  for name in "${roles[@]}"; do
    rc=${gone[$name]:-0}
    if [ "$name" = "$failed" ] || { [ "$rc" -gt 0 ] && [ "$rc" -lt 128 ]; }; then failures+=("$name"); fi
  done
  for name in "${failures[@]}"; do
    echo "train_local_dist: $name failed with exit status ${gone[$name]}: $(last_error "$name")" >&2
    echo "train_local_dist:   log: $runlogs/$name.log" >&2
  done
  echo "train_local_dist: the cluster is stopped" >&2
  exit "${gone[${failures[0]}]}"
  ;;
esac

# Finished: the other roles end on their own within seconds.
for name in "${roles[@]}"; do
  for _ in $(seq 1 100); do alive "${cur_pid[$name]}" || break; sleep 0.1; done
done
if [ "$(roles_alive)" != "0/${#roles[@]}" ]; then
  echo "train_local_dist: roles still running 10 s after the end of training: stopping them" >&2
  stop_all
fi
for name in "${roles[@]}"; do follow_role "$name" || true; done
read -r step loss accuracy < <(grep -o 'final evaluation at global step [0-9]*: loss: [0-9.e+-]* - accuracy: [0-9.e+-]*' "$master_log" |
  tail -n 1 | sed -E 's/.*step ([0-9]+): loss: ([^ ]+) - accuracy: ([^ ]+)/\1 \2 \3/')
metrics=$(printf 'global_step=%s loss=%.4f accuracy=%.4f' "$step" "$loss" "$accuracy")
{
  [ -s "$training_log" ] || printf '# Training log\n\nOne line per run of scripts/train_local_dist.sh.\n\n'
  printf -- '- %s: master + %s ps + %s workers; overrides: %s; %s; %ss\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$nps" "$nworkers" "${args[*]:-(none)}" "$metrics" "$(elapsed)"
} >> "$training_log"
echo "== final test metrics of this run after $(elapsed)s ($model_dir/eval_results.json): $metrics"

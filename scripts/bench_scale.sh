#!/usr/bin/env bash
# Scaling on an emulated network: a master, P parameter servers and N
# synthetic workers (train.synthetic_step_ms: no data, a sleep for compute,
# the real model's pulls and pushes), each in a network namespace of its own
# ("a machine"), joined by veth pairs to a bridge. Every machine's NIC is
# shaped with tc: tbf at the link rate both ways and, where the kernel has
# netem, a one-way delay on its way out (a round trip is twice the delay).
# For each configuration it prints the global steps/s, the worker steps/s,
# the efficiency against the ideal (N steps per synthetic step time) and
# against linear (N times the 1-worker rate with the same PS and network),
# the bytes through the PS's NICs per step, the CPU per step of the PS and
# of the workers (/proc/PID/stat), the PS's RSS at the window's start and
# end, the start-up time and the ERROR lines logged.
#   scripts/bench_scale.sh                   # small grid: 1,4,16,64 workers x 1,4 PS, 10 Gbit/s, 100 us
#   scripts/bench_scale.sh --full            # 1..64 workers x 1..8 PS x 10,25 Gbit/s x 50,200 us
#   scripts/bench_scale.sh --workers 64 --ps 4 --window 600   # a long run: PS RSS over 10 minutes
# Options: --workers LIST --ps LIST --rate LIST (Gbit/s) --delay LIST (us)
#   --model cnn|mlp (mlp) --step-ms N (100) --window SECS (10) --warmup SECS (3)
#   --start-timeout SECS (120) --transport stream|grpc (stream) --mode async|sync|ssp
#   --out FILE (the rows as a TSV, for scripts/scale_model.py --check)
#   --rss-every SECS (windows of 2 minutes or more sample every 60 s; this
#     samples every SECS in any window): each PS's RSS and the global step
#     per sample, then first/median/max/last of each PS's RSS and their sum
#   --set KEY=VALUE (to every role, e.g. rpc.wire_dtype=fp16, rpc.push_topk=0.01;
#     repeatable)
#   --keep (keep the scratch folder and name it)
# Needs root, ip (iproute2) and tc; exits 77 with one SKIP line where they
# or network namespaces are missing. All the machines share this one's
# CPUs: with few cores the CPU, not the emulated network, limits the larger
# configurations (the CPU columns say how much).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${PSTRAIN_BUILD:-$root/build}
workers_list="1 4 16 64"
ps_list="1 4"
rate_list="10"
delay_list="100"
model=mlp
step_ms=100
window=10
warmup=3
start_timeout=120
transport=stream
mode=async
out=""
keep=""
rss_every=0
extra=()
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
die() {
  echo "bench_scale: $*" >&2
  exit 2
}
skip() {
  echo "SKIP: bench_scale: $*"
  exit 77
}
while [ $# -gt 0 ]; do
  case "$1" in
    --full) workers_list="1 2 4 8 16 32 64" ps_list="1 2 4 8" rate_list="10 25" delay_list="50 200"; shift ;;
    --workers) workers_list=${2//,/ }; shift 2 ;;
    --ps) ps_list=${2//,/ }; shift 2 ;;
    --rate) rate_list=${2//,/ }; shift 2 ;;
    --delay) delay_list=${2//,/ }; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --step-ms) step_ms=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --start-timeout) start_timeout=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --rss-every) rss_every=$2; shift 2 ;;
    --set) extra+=(--set "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument \"$1\" (--help lists them)" ;;
  esac
done
for n in $workers_list; do [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 250 ] || die "--workers: \"$n\" is not a count in 1..250"; done
for n in $ps_list; do [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 250 ] || die "--ps: \"$n\" is not a count in 1..250"; done
for n in $rate_list $delay_list $step_ms $window $warmup $start_timeout $rss_every; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "\"$n\" is not a whole number"
done
case "$transport" in stream | grpc) ;; *) die "--transport wants stream or grpc, not \"$transport\"" ;; esac
case "$mode" in async | sync | ssp) ;; *) die "--mode wants async, sync or ssp, not \"$mode\"" ;; esac
[ "$step_ms" -ge 1 ] || die "--step-ms wants at least 1"
[ "$window" -ge 1 ] || die "--window wants at least 1 second"

[ "$(id -u)" -eq 0 ] || skip "network namespaces need root"
command -v ip > /dev/null || skip "no ip command (Debian package iproute2)"
command -v tc > /dev/null || skip "no tc command (Debian package iproute2)"
for b in pstrain-master pstrain-ps pstrain-worker pstrain; do
  [ -x "$build/$b" ] || die "no $build/$b: build first (scripts/build.sh)"
done

tmp=$(mktemp -d /tmp/bench_scale.XXXXXX)
tag=psb$$
made=()
# teardown: ends whatever runs in this run's namespaces (all of it started
# here) and deletes them.
teardown() {
  local ns pid
  for ns in "${made[@]}"; do
    for pid in $(ip netns pids "$ns" 2> /dev/null); do kill -KILL "$pid" 2> /dev/null || true; done
  done
  for ns in "${made[@]}"; do ip netns del "$ns" 2> /dev/null || true; done
  made=()
  if [ -n "$keep" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap teardown EXIT
trap 'exit 130' INT TERM

workers_list=$(printf "%s\n" $workers_list | sort -n | tr "\n" " ")
max_of() { printf '%s\n' "$@" | sort -n | tail -1; }
max_workers=$(max_of $workers_list)
max_ps=$(max_of $ps_list)
sw=$tag-sw
master_ns=$tag-m
ps_ns() { echo "$tag-p$1"; }
worker_ns() { echo "$tag-w$1"; }
master_ip=10.78.0.2
ps_ip() { echo "10.78.1.$(($1 + 1))"; }
worker_ip() { echo "10.78.2.$(($1 + 1))"; }

# ---- the machines: a bridge in its own namespace, one veth to each ----
ip netns add "$sw" 2> "$tmp/err" || skip "cannot make a network namespace: $(cat "$tmp/err")"
made+=("$sw")
ip -n "$sw" link add br0 type bridge 2> "$tmp/err" || skip "cannot make a bridge: $(cat "$tmp/err")"
ip -n "$sw" link set br0 up
ports=() # the switch's side of every machine's veth, to shape
# machine NS PORT IP: a namespace joined to the bridge at PORT with address IP.
machine() {
  ip netns add "$1"
  made+=("$1")
  ip -n "$sw" link add "$2" type veth peer name eth0 netns "$1" 2> "$tmp/err" ||
    skip "cannot make a veth pair: $(cat "$tmp/err")"
  ip -n "$sw" link set "$2" master br0 up
  ip -n "$1" addr add "$3/16" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" link set lo up
  ports+=("$2")
}
t0=$(date +%s)
machine "$master_ns" vethm "$master_ip"
for ((i = 0; i < max_ps; i++)); do machine "$(ps_ns $i)" "vethp$i" "$(ps_ip $i)"; done
for ((i = 0; i < max_workers; i++)); do machine "$(worker_ns $i)" "vethw$i" "$(worker_ip $i)"; done
# Reachable: a connection to a closed port is refused (not timed out).
ip netns exec "$(worker_ns 0)" timeout 5 bash -c "exec 3<> /dev/tcp/$master_ip/1" 2> "$tmp/err" || true
grep -q refused "$tmp/err" || skip "the emulated machines cannot reach each other: $(cat "$tmp/err")"
echo "# $((1 + max_ps + max_workers)) machines up in $(($(date +%s) - t0)) s"

# shape RATE_GBIT DELAY_US: every NIC at RATE both ways (tbf, with a burst
# of 1 ms at that rate); DELAY on the way out of each machine (netem under
# the tbf), where the kernel has netem.
shape() {
  local rate=$1 delay=$2 ns dev
  qdisc() { # NS DEV [DELAY]
    tc -n "$1" qdisc replace dev "$2" root handle 1: tbf rate "${rate}gbit" \
      burst $((rate * 125000)) latency 10ms &&
      if [ -n "${3:-}" ] && [ "$3" != 0 ]; then
        tc -n "$1" qdisc replace dev "$2" parent 1:1 handle 10: netem delay "${3}us" limit 100000
      fi
  }
  for ns in "${made[@]}"; do
    [ "$ns" = "$sw" ] && continue
    qdisc "$ns" eth0 "$delay" 2> "$tmp/err" || skip "tc cannot shape a veth: $(cat "$tmp/err")"
  done
  for dev in "${ports[@]}"; do qdisc "$sw" "$dev" "" 2> "$tmp/err" || skip "tc: $(cat "$tmp/err")"; done
}
# netem is a module some kernels lack (this one's VM may): then the delays
# are not emulated, and the rows say 0 us.
if ! tc -n "$sw" qdisc replace dev "${ports[0]}" root netem delay 1us 2> "$tmp/err"; then
  echo "# no netem in this kernel ($(head -1 "$tmp/err")): one-way delays not emulated, rows say 0 us"
  delay_list=0
fi
tc -n "$sw" qdisc del dev "${ports[0]}" root 2> /dev/null || true

# ---- one configuration ----
clk=$(getconf CLK_TCK)
# cpu_secs PID: user + system CPU seconds of a process so far.
cpu_secs() {
  local s
  s=$(cat "/proc/$1/stat" 2> /dev/null) || { echo 0; return; }
  s=${s##*) }
  # Fields after the command: state is 3rd overall, utime 14th, stime 15th.
  awk -v clk="$clk" '{ printf "%.3f\n", ($12 + $13) / clk }' <<< "$s"
}
rss_mib() { awk '/^VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status" 2> /dev/null || echo 0; }
nic_bytes() {
  ip netns exec "$1" cat /sys/class/net/eth0/statistics/rx_bytes /sys/class/net/eth0/statistics/tx_bytes |
    paste -sd+ | bc
}
global_step() {
  ip netns exec "$master_ns" "$build/pstrain" status --master "$master_ip:2222" 2> /dev/null |
    sed -n 's/^global step \([0-9]*\).*/\1/p'
}
sum() { paste -sd+ | bc; }

# sleep_sampling SECS PID...: sleeps SECS; every --rss-every seconds (in
# windows of 2 minutes or more, every minute by default) prints each PS's
# RSS, their sum and the global step, so that growth shows; at the end
# first/median/max/last of each over the samples.
sleep_sampling() {
  local secs=$1 t=0 every=$rss_every p
  shift
  [ "$every" -eq 0 ] && [ "$secs" -ge 120 ] && every=60
  if [ "$every" -eq 0 ] || [ "$every" -gt "$secs" ]; then
    sleep "$secs"
    return
  fi
  local samples=$tmp/rss.$$.$RANDOM
  : > "$samples"
  while [ $((t + every)) -le "$secs" ]; do
    sleep "$every"
    t=$((t + every))
    local each gs
    each=$(for p in "$@"; do rss_mib "$p"; done | tr '\n' ' ')
    gs=$(global_step)
    echo "$(date +%s.%N) ${gs:-0} $each" >> "$samples"
    echo "#   ${t}s: PS RSS ${each}(sum $(tr ' ' '\n' <<< "$each" | sed '/^$/d' | sum)) MiB, global step $gs"
  done
  python3 - "$samples" << 'PY'
import statistics, sys
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
rows = [[float(x) for x in l[2:]] for l in lines]
if len(lines) > 1:
    rates = [(int(b[1]) - int(a[1])) / (float(b[0]) - float(a[0])) for a, b in zip(lines, lines[1:])]
    print("#   global steps/s between samples: first %.1f median %.1f min %.1f max %.1f last %.1f"
          % (rates[0], statistics.median(rates), min(rates), max(rates), rates[-1]))
if rows:
    cols = list(zip(*rows)) + [tuple(sum(r) for r in rows)]
    names = ["ps%d" % i for i in range(len(cols) - 1)] + ["sum"]
    for n, c in zip(names, cols):
        print("#   RSS %-4s MiB over %d samples: first %.1f median %.1f max %.1f last %.1f (last/first %.3f)"
              % (n, len(c), c[0], statistics.median(c), max(c), c[-1], c[-1] / c[0] if c[0] else 0))
PY
  [ "$t" -lt "$secs" ] && sleep $((secs - t))
  return 0
}

declare -A base_rate # 1-worker steps/s by "ps rate delay"
# run_config NW NPS RATE DELAY: one measured run; prints one row.
run_config() {
  local nw=$1 nps=$2 rate=$3 delay=$4 i
  local dir=$tmp/w$nw-p$nps-r$rate-d$delay
  mkdir -p "$dir"
  local psl=() wl=()
  for ((i = 0; i < nps; i++)); do psl+=("\"$(ps_ip $i):2222\""); done
  for ((i = 0; i < nw; i++)); do wl+=("\"$(worker_ip $i):2222\""); done
  local cluster
  cluster="{\"master\": [\"$master_ip:2222\"], \"ps\": [$(IFS=,; echo "${psl[*]}")], \"worker\": [$(IFS=,; echo "${wl[*]}")]}"
  local stream=false
  [ "$transport" = stream ] && stream=true
  local args=(--set model="$model" --set threads=1 --set train.synthetic_step_ms="$step_ms"
    --set train.max_steps=1000000000 --set train.mode="$mode" --set rpc.shm=false
    --set rpc.stream="$stream" --set checkpoint.model_dir="$dir/model" --set checkpoint.every_secs=86400
    --set eval.every_epoch=false --set log.every_secs=5 --set cluster.dead_after_secs=30
    --set cluster.stall_secs=0 --set rpc.deadline_secs=60 "${extra[@]}")
  start() { # ROLE INDEX NS
    TF_CONFIG="{\"cluster\": $cluster, \"task\": {\"type\": \"$1\", \"index\": $2}}" \
      ip netns exec "$3" "$build/pstrain-$1" "${args[@]}" --pid-file "$dir/$1$2.pid" \
      > "$dir/$1$2.log" 2>&1 &
  }
  start master 0 "$master_ns"
  for ((i = 0; i < nps; i++)); do start ps "$i" "$(ps_ns $i)"; done
  for ((i = 0; i < nw; i++)); do start worker "$i" "$(worker_ns $i)"; done
  # Bounded start-up: every worker has made a step, or the row says so.
  local t_start=$SECONDS ready=0
  while [ $((SECONDS - t_start)) -lt "$start_timeout" ]; do
    ready=$(cat "$dir"/worker*.log 2> /dev/null | grep -c "first step done" || true)
    [ "$ready" -ge "$nw" ] && break
    sleep 0.5
  done
  local startup=$((SECONDS - t_start))
  local row
  if [ "$ready" -lt "$nw" ]; then
    row=$(printf '%7d %4d %5d %6d  start-up timed out after %ds: %d of %d workers stepped' \
      "$nw" "$nps" "$rate" "$delay" "$startup" "$ready" "$nw")
  else
    sleep "$warmup"
    local pids=() wpids=() p
    for ((i = 0; i < nps; i++)); do pids+=("$(cat "$dir/ps$i.pid")"); done
    for ((i = 0; i < nw; i++)); do wpids+=("$(cat "$dir/worker$i.pid")"); done
    local s0 c0 b0 r0 tw0 s1 c1 b1 r1 tw1 wc0 wc1
    tw0=$(date +%s.%N)
    s0=$(global_step)
    c0=$(for p in "${pids[@]}"; do cpu_secs "$p"; done | sum)
    wc0=$(for p in "${wpids[@]}"; do cpu_secs "$p"; done | sum)
    b0=$(for ((i = 0; i < nps; i++)); do nic_bytes "$(ps_ns $i)"; done | sum)
    r0=$(for p in "${pids[@]}"; do rss_mib "$p"; done | sum)
    sleep_sampling "$window" "${pids[@]}"
    s1=$(global_step)
    tw1=$(date +%s.%N)
    c1=$(for p in "${pids[@]}"; do cpu_secs "$p"; done | sum)
    wc1=$(for p in "${wpids[@]}"; do cpu_secs "$p"; done | sum)
    b1=$(for ((i = 0; i < nps; i++)); do nic_bytes "$(ps_ns $i)"; done | sum)
    r1=$(for p in "${pids[@]}"; do rss_mib "$p"; done | sum)
    local key="$nps $rate $delay"
    row=$(python3 - "$nw" "$nps" "$rate" "$delay" "$step_ms" "$mode" "$s0" "$s1" "$tw0" "$tw1" \
      "$c0" "$c1" "$b0" "$b1" "$r0" "$r1" "${base_rate[$key]:-}" "$startup" "$wc0" "$wc1" << 'PY'
import sys
a = sys.argv[1:]
nw, nps, rate, delay, step_ms = (int(x) for x in a[:5])
mode = a[5]
s0, s1 = int(a[6] or 0), int(a[7] or 0)
secs = float(a[9]) - float(a[8])
cpu, nbytes = float(a[11]) - float(a[10]), int(a[13]) - int(a[12])
rss0, rss1 = float(a[14]), float(a[15])
wcpu = float(a[19]) - float(a[18])
base = float(a[16]) if a[16] else None
steps = s1 - s0
# Worker steps per second: in sync mode a global step takes one push of each worker.
per_global = nw if mode == "sync" else 1
rate_steps = steps / secs
wsteps = rate_steps * per_global
ideal = nw * 1000.0 / step_ms
lin = "%9.2f" % (wsteps / (nw * base)) if base and nw > 1 else "%9s" % ("1.00" if nw == 1 else "-")
if steps <= 0:
    print("%7d %4d %5d %6d  no global steps in the window" % (nw, nps, rate, delay))
else:
    print("%7d %4d %5d %6d %9.1f %9.1f %9.2f %s %9.3f %10.3f %10.3f %8.1f %8.1f %5d"
          % (nw, nps, rate, delay, rate_steps, wsteps, wsteps / ideal, lin,
             nbytes / steps / 1e6, 1e3 * cpu / steps, 1e3 * wcpu / steps, rss0, rss1, int(a[17])))
PY
)
    [ "$nw" -eq 1 ] && base_rate[$key]=$(awk '{ print $6 }' <<< "$row")
  fi
  local errors f dead=""
  errors=$(cat "$dir"/*.log | grep -c " ERROR " || true)
  # A daemon that ended by itself (a crash logs no ERROR line) spoils the row.
  for f in master0 $(seq -f ps%g 0 $((nps - 1))) $(seq -f worker%g 0 $((nw - 1))); do
    kill -0 "$(cat "$dir/$f.pid" 2> /dev/null || echo none)" 2> /dev/null || dead+=" $f"
  done
  [ -n "$dead" ] && row+="  DIED:$dead"
  echo "$row  errors=$errors"
  stop_daemons "$dir"/worker*.pid
  stop_daemons "$dir"/*.pid
  # What each PS saw of staleness (it logs it as it ends): a pile-up of
  # stale pushes shows as a growing mean or max.
  if [ "$rss_every" -gt 0 ]; then
    for ((i = 0; i < nps; i++)); do
      sed -n 's/.*\(pushes applied: .*\)/#   ps'"$i"': \1/p' "$dir/ps$i.log" | tail -1
    done
  fi
  [ -n "$out" ] && printf '%s\t%s\t%s\t%s\n' "$model" "$step_ms" "$transport" "$row  errors=$errors" | tr -s ' ' '\t' >> "$out"
  wait 2> /dev/null || true
}

# stop_daemons PIDFILE...: SIGTERM to each (the workers first, so that none
# sees its PS go), SIGKILL after 10 s to what is left.
stop_daemons() {
  local f i
  for f in "$@"; do kill -TERM "$(cat "$f" 2> /dev/null)" 2> /dev/null || true; done
  for ((i = 0; i < 100; i++)); do
    ls "$@" > /dev/null 2>&1 || return 0
    sleep 0.1
  done
  for f in "$@"; do kill -KILL "$(cat "$f" 2> /dev/null)" 2> /dev/null || true; done
  return 0
}

[ -n "$out" ] && : > "$out"
params=$("$build/pstrain" summary --model "$model" | sed -n 's/^Total params: \([0-9,]*\).*/\1/p' | tr -d ,)
echo "# model $model ($params parameters, $((params * 4)) bytes), $mode, synthetic step $step_ms ms," \
  "transport $transport${extra[*]:+, ${extra[*]}}, window ${window}s after ${warmup}s; $(nproc) CPUs here, load average $(cut -d" " -f1-3 /proc/loadavg)"
echo "# workers ps Gbit/s delay_us gsteps/s wsteps/s eff_ideal eff_linear MB/step PS_ms/step W_ms/step PS_RSS0_MiB PS_RSS1_MiB startup_s"
for rate in $rate_list; do
  for delay in $delay_list; do
    shape "$rate" "$delay"
    for nps in $ps_list; do
      for nw in $workers_list; do run_config "$nw" "$nps" "$rate" "$delay"; done
    done
  done
done

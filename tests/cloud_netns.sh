#!/usr/bin/env bash
# A cluster across "VMs" on this one machine: one network namespace per VM,
# each with its own IP address on a bridge (in a namespace of its own, so
# the machine's own network is not touched), and a home folder per VM.
# scripts/train_cloud.sh reaches them through a transport that runs its
# command inside the VM's namespace, with mutual TLS and one certificate per
# host: the MLP trains to >= 0.80 test accuracy although one worker and one
# PS are killed by their pid files mid-run and restarted through the
# launcher (the PS resumes from a checkpoint on the shared model_dir, and
# the master rolls the other PS back to it); a second cluster is stopped by
# the launcher mid-run. Exits 77
# (a ctest skip) where namespaces cannot be made.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
skip() {
  echo "SKIP: $*"
  exit 77
}

tag=pst$$
switch=$tag-sw
vms=("$tag-vm1" "$tag-vm2" "$tag-vm3")
ips=(10.77.0.11 10.77.0.12 10.77.0.13)
made=()
teardown() {
  local ns pid
  for ns in "${made[@]}"; do
    # Whatever still runs in a VM was started by this test.
    for pid in $(ip netns pids "$ns" 2> /dev/null); do kill -KILL "$pid" 2> /dev/null || true; done
  done
  for ns in "${made[@]}"; do ip netns del "$ns" 2> /dev/null || true; done
  made=()
}
trap 'teardown; rm -rf "$tmp"' EXIT

data=/usr/share/datasets/fashion-mnist
[ -f "$data/train-images-idx3-ubyte.gz" ] || skip "$data is not installed (scripts/setup.sh installs it)"
[ "$(id -u)" -eq 0 ] || skip "making network namespaces needs root"
command -v ip > /dev/null || skip "no ip command (Debian package iproute2)"
command -v openssl > /dev/null || skip "no openssl for the test's certificates"
need_python3 json

# ---- the VMs: a bridge in its own namespace, a veth into each VM ----
ip netns add "$switch" 2> "$tmp/err" || skip "cannot make a network namespace: $(cat "$tmp/err")"
made+=("$switch")
ip -n "$switch" link add br0 type bridge 2> "$tmp/err" || skip "cannot make a bridge: $(cat "$tmp/err")"
ip -n "$switch" link set br0 up
for i in "${!vms[@]}"; do
  ns=${vms[$i]}
  ip netns add "$ns"
  made+=("$ns")
  ip -n "$switch" link add "p$i" type veth peer name eth0 netns "$ns" 2> "$tmp/err" ||
    skip "cannot make a veth pair: $(cat "$tmp/err")"
  ip -n "$switch" link set "p$i" master br0 up
  ip -n "$ns" addr add "${ips[$i]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

# The transport: vm-ssh HOST COMMAND runs COMMAND in HOST's namespace, in
# that VM's home folder, as ssh runs it in the login folder.
{
  echo '#!/usr/bin/env bash'
  echo 'case "$1" in'
  for i in "${!vms[@]}"; do echo "  ${ips[$i]}) ns=${vms[$i]} ;;"; done
  echo '  *) echo "vm-ssh: no VM $1" >&2; exit 255 ;;'
  echo 'esac'
  echo "export HOME=$tmp/home/\$1"
  echo 'mkdir -p "$HOME" && cd "$HOME" && exec ip netns exec "$ns" bash -c "$2"'
} > "$tmp/vm-ssh"
chmod +x "$tmp/vm-ssh"
export PSTRAIN_SSH=$tmp/vm-ssh PSTRAIN_BUILD=$build PSTRAIN_CLOUD_LOGS=$tmp/logs PSTRAIN_STOP_GRACE=5
"$tmp/vm-ssh" "${ips[2]}" "bash -c 'exec 3<> /dev/tcp/${ips[0]}/1'" 2> "$tmp/err" &&
  fail "a connection to a closed port was accepted"
grep -q "refused" "$tmp/err" || fail "vm3 cannot reach vm1: $(cat "$tmp/err")"

# ---- mutual TLS: a CA and one certificate per host, naming its address ----
(
  mkdir -p "$tmp/tls" && cd "$tmp/tls"
  k="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  printf '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = x\n[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign\n' > ca.cnf
  openssl req -x509 -new $k -keyout ca.key -out ca.pem -days 2 -config ca.cnf -extensions ca -subj /CN=ca
  for ip in "${ips[@]}"; do
    printf '[n]\nsubjectAltName = IP:%s\nextendedKeyUsage = serverAuth,clientAuth\n' "$ip" > "$ip.cnf"
    openssl req -new $k -keyout "$ip.key" -out "$ip.csr" -subj "/CN=$ip"
    openssl x509 -req -in "$ip.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile "$ip.cnf" -extensions n -out "$ip.pem"
  done
) > "$tmp/openssl.log" 2>&1 || fail "openssl: $(tail -5 "$tmp/openssl.log")"

# ---- the cluster: five roles on three VMs ----
cat > "$tmp/hosts" << EOF
# role  index host          port  gpu
master  0     ${ips[0]}    2222
ps      0     ${ips[0]}    2223
ps      1     ${ips[1]}    2222
worker  0     ${ips[1]}    2223
worker  1     ${ips[2]}    2222  0
EOF
cloud() { "$root/scripts/train_cloud.sh" "$@"; }
steps=3000
# A checkpoint every 250 steps: the PS killed after step 300 comes back from one.
args=(--set model=mlp --set threads=1 --set log.every_secs=2 --set checkpoint.every_steps=250
  --tls "$tmp/tls")

# global_step: the master's global step, from the launcher's status.
global_step() {
  cloud status "$tmp/hosts" 2> /dev/null | sed -n 's/^global step \([0-9]*\) of.*/\1/p'
}
wait_step() {
  local want=$1 step
  for _ in $(seq 1 300); do
    step=$(global_step)
    [ -n "$step" ] && [ "$step" -ge "$want" ] && return 0
    sleep 0.2
  done
  fail "the global step never reached $want; status: $(cloud status "$tmp/hosts" 2>&1)
errors: $(grep -h " ERROR " "$tmp"/home/*/pstrain/run/*.log 2> /dev/null | tail -6)"
}
# state NAME: the state the launcher's status gives for one role.
state() {
  cloud status "$tmp/hosts" 2> /dev/null | awk -v n="$1" 'NF == 0 { exit } $1 == n { $1 = $2 = $3 = ""; sub(/^ +/, ""); print }'
}
home_of() { echo "$tmp/home/$1/pstrain"; }

start=$(date +%s)
cloud start "$tmp/hosts" "${args[@]}" --set train.max_steps=$steps \
  --set checkpoint.model_dir="$tmp/shared/model" > "$tmp/start.out" 2>&1 ||
  fail "start: $(cat "$tmp/start.out")"
# Every role runs in its own VM's namespace, with its own TF_CONFIG and GPU.
for spec in "master0 0" "ps1 1" "worker1 2"; do
  set -- $spec
  pid=$(cat "$(home_of "${ips[$2]}")/run/$1.pid")
  [ "$(ip netns identify "$pid")" = "${vms[$2]}" ] || fail "$1 (pid $pid) is not in ${vms[$2]}"
done
environ=$(tr '\0' '\n' < "/proc/$pid/environ")
grep -qx 'CUDA_VISIBLE_DEVICES=0' <<< "$environ" || fail "worker1 lacks CUDA_VISIBLE_DEVICES=0"
grep -q '^TF_CONFIG=.*"task": {"type": "worker", "index": 1}' <<< "$environ" ||
  fail "worker1's TF_CONFIG: $(grep TF_CONFIG <<< "$environ")"

# Mid-run, kill a worker and a PS as an operator would, by their pid files
# on their hosts; the launcher sees them dead and restarts them.
wait_step 300
for _ in $(seq 1 150); do [ -f "$tmp/shared/model/checkpoint" ] && break; sleep 0.2; done
[ -f "$tmp/shared/model/checkpoint" ] || fail "no checkpoint in the shared model_dir by step $(global_step)"
"$tmp/vm-ssh" "${ips[2]}" 'kill -KILL $(cat pstrain/run/worker1.pid)'
"$tmp/vm-ssh" "${ips[1]}" 'kill -KILL $(cat pstrain/run/ps1.pid)'
for _ in $(seq 1 50); do
  [ "$(state worker1)" = "exited 137" ] && [ "$(state ps1)" = "exited 137" ] && break
  sleep 0.1
done
[ "$(state worker1)" = "exited 137" ] || fail "killed worker1 is \"$(state worker1)\""
[ "$(state ps1)" = "exited 137" ] || fail "killed ps1 is \"$(state ps1)\""
killed_at=$(global_step)
cloud restart "$tmp/hosts" worker 1 > "$tmp/restart.out" 2>&1 || fail "restart worker 1: $(cat "$tmp/restart.out")"
cloud restart "$tmp/hosts" ps 1 >> "$tmp/restart.out" 2>&1 || fail "restart ps 1: $(cat "$tmp/restart.out")"
[ "$(state worker1)" = running ] || fail "restarted worker1 is \"$(state worker1)\""
[ "$(state ps1)" = running ] || fail "restarted ps1 is \"$(state ps1)\""
# The restart script refuses a role that runs.
"$tmp/vm-ssh" "${ips[1]}" 'cd pstrain && bash bin/pstrain-agent start ps1' 2> "$tmp/err" &&
  fail "the agent started ps1 twice"
grep -q "ps1 already runs" "$tmp/err" || fail "second start of ps1: $(cat "$tmp/err")"

cloud wait "$tmp/hosts" > "$tmp/wait.out" 2>&1 || fail "wait: $(cat "$tmp/wait.out")"
elapsed=$(($(date +%s) - start))
"$py" - "$tmp/shared/model/eval_results.json" "$steps" "$killed_at" "$elapsed" << 'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["accuracy"] >= 0.80, r
assert r["global_step"] >= int(sys.argv[2]), r
print("cloud: accuracy %.4f at global step %d; worker1 and ps1 killed at step %s; %ss"
      % (r["accuracy"], r["global_step"], sys.argv[3], sys.argv[4]))
PY
grep -q "final test metrics: global_step=" "$tmp/wait.out" || fail "wait printed no metrics: $(cat "$tmp/wait.out")"
for name in master0 ps0 ps1 worker0 worker1; do
  log=$tmp/logs/$name.log
  [ -s "$log" ] || fail "the launcher did not gather $name's log"
  [ "$(state "$name")" = "exited 0" ] || fail "$name ended \"$(state "$name")\""
done
for name in ps1 worker1; do
  grep -q "restarted by train_cloud.sh" "$tmp/logs/$name.log" || fail "$name's log has no restart mark"
  [ "$(grep -c 'starting: pid' "$tmp/logs/$name.log")" -eq 2 ] || fail "$name did not start twice"
done
[ "$(grep -c 'registered with the master' "$tmp/logs/worker1.log")" -ge 2 ] ||
  fail "restarted worker1 did not register again"
grep -q "training is over" "$tmp/logs/ps1.log" || fail "restarted ps1 did not hear that training is over"
# The restarted PS resumed from the checkpoint on the shared model_dir, and
# the master brought the other PS back to the same one.
sed -n '/restarted by train_cloud.sh/,$p' "$tmp/logs/ps1.log" | grep -q "restored .*ckpt" ||
  fail "restarted ps1 did not restore a checkpoint: $(grep -i restor "$tmp/logs/ps1.log")"
grep -q "rolled back to ckpt-" "$tmp/logs/master0.log" ||
  fail "the master did not roll the PS back: $(grep -i -E 'roll|restart' "$tmp/logs/master0.log")"

# A cluster started again, without TLS and with the TCP tensor stream, is
# stopped by the launcher mid-run: SIGTERM by pid file on every host, every
# daemon exits 0 and removes its pid file. Meanwhile a worker reaches the
# PS of its own VM through shared memory and the other VM's PS over the
# stream (its Unix socket is out of reach from another namespace).
plain=(--set model=mlp --set threads=1 --set log.every_secs=2 --set rpc.stream=true)
cloud start "$tmp/hosts" "${plain[@]}" --set train.max_steps=1000000 \
  --set checkpoint.model_dir="$tmp/shared/model2" > "$tmp/start2.out" 2>&1 ||
  fail "second start: $(cat "$tmp/start2.out")"
expect_error 2 "master0 still runs on ${ips[0]}" cloud start "$tmp/hosts" "${plain[@]}" \
  --set checkpoint.model_dir="$tmp/shared/model3"
wait_step 50
w0=$(home_of "${ips[1]}")/run/worker0.log
grep -q "ps1: pushes and pulls through shared memory" "$w0" ||
  fail "worker0 does not reach ps1 on its VM through shared memory: $(grep 'pushes and pulls' "$w0")"
grep -q "ps0: pushes and pulls over its tensor stream (TCP port" "$w0" ||
  fail "worker0 does not reach ps0 on another VM over the stream: $(grep 'pushes and pulls' "$w0")"
cloud stop "$tmp/hosts" > "$tmp/stop.out" 2>&1 || fail "stop: $(cat "$tmp/stop.out")"
grep -q "SIGKILL" "$tmp/stop.out" && fail "stop needed SIGKILL: $(cat "$tmp/stop.out")"
for name in master0 ps0 ps1 worker0 worker1; do
  [ "$(state "$name")" = "exited 0" ] || fail "stopped $name is \"$(state "$name")\""
done
for ns in "${vms[@]}"; do
  [ -z "$(ip netns pids "$ns")" ] || fail "processes left in $ns after stop: $(ip netns pids "$ns")"
done
ls "$tmp"/home/*/pstrain/run/*.pid > /dev/null 2>&1 && fail "pid files left after stop"

teardown
for ns in "$switch" "${vms[@]}"; do
  ip netns list | grep -qw "$ns" && fail "namespace $ns was not removed"
done
echo ok

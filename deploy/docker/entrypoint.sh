#!/usr/bin/env bash
# The images' entrypoint: starts the daemon that TF_CONFIG's task type names
# (master or chief: pstrain-master, ps: pstrain-ps, worker: pstrain-worker,
# evaluator: pstrain-master --evaluate-only) with the container's arguments.
#
# TF_CONFIG comes from the environment, where Kubeflow's TFJob writes it.
# Without it, PSTRAIN_ROLE (master, ps or worker) asks for one made from the
# pod's ordinal, as a StatefulSet names its pods (<name>-<role>-<ordinal>):
#   PSTRAIN_NAME (pstrain), PSTRAIN_PS_REPLICAS, PSTRAIN_WORKER_REPLICAS,
#   PSTRAIN_NAMESPACE (default), PSTRAIN_PORT (2222), PSTRAIN_DOMAIN
#   (cluster.local); task i of role r is at
#   <name>-<r>-<i>.<name>-<r>.<namespace>.svc.<domain>:<port>, the DNS name
#   of a StatefulSet's pod behind the headless Service <name>-<r>.
# $PSTRAIN_ETC/pstrain.json (PSTRAIN_ETC: /etc/pstrain), when it exists, is
# given with --config before the container's arguments.
#
# A daemon listens on the address that TF_CONFIG gives its task, and a
# Service's DNS name can lag the pod's start, so the daemon starts only once
# that name resolves (PSTRAIN_DNS_WAIT_SECS, 300; then exit 129, which a
# restart may cure). With PSTRAIN_IDLE_AFTER_EXIT=1 (the StatefulSets set
# it), an exit in 0-127 -- training is over, or an error that a restart
# would repeat -- leaves the container idle instead of exiting, since a
# StatefulSet restarts every exit; exits in 128-255 still end the container.
set -euo pipefail
bin_dir=${PSTRAIN_BIN_DIR:-/usr/local/bin}
etc=${PSTRAIN_ETC:-/etc/pstrain}
run_dir=${PSTRAIN_RUN_DIR:-/run/pstrain}

# die MESSAGE [STATUS]: one line, and exit STATUS (2: a configuration error).
die() {
  echo "pstrain-entrypoint: $1" >&2
  exit "${2:-2}"
}

# TF_CONFIG for task $ordinal of PSTRAIN_ROLE, from the StatefulSets' names.
tf_config_from_ordinal() {
  local role=$PSTRAIN_ROLE name=${PSTRAIN_NAME:-pstrain} host=${HOSTNAME:-$(hostname)}
  local ordinal=${host##*-}
  case "$role" in master | ps | worker) ;; *) die "PSTRAIN_ROLE \"$role\" is not master, ps or worker" ;; esac
  [[ "$ordinal" =~ ^[0-9]+$ ]] || die "host name \"$host\" does not end in a StatefulSet ordinal (-N)"
  [[ "${PSTRAIN_PS_REPLICAS:-}" =~ ^[1-9][0-9]*$ ]] || die "PSTRAIN_PS_REPLICAS must be a count >= 1"
  [[ "${PSTRAIN_WORKER_REPLICAS:-}" =~ ^[1-9][0-9]*$ ]] || die "PSTRAIN_WORKER_REPLICAS must be a count >= 1"
  jq -cn --arg name "$name" --arg ns "${PSTRAIN_NAMESPACE:-default}" \
    --arg domain "${PSTRAIN_DOMAIN:-cluster.local}" --arg port "${PSTRAIN_PORT:-2222}" \
    --arg role "$role" --argjson index "$ordinal" \
    --argjson nps "$PSTRAIN_PS_REPLICAS" --argjson nworkers "$PSTRAIN_WORKER_REPLICAS" '
    def addrs($r; $n): [range($n) | "\($name)-\($r)-\(.).\($name)-\($r).\($ns).svc.\($domain):\($port)"];
    {cluster: {master: addrs("master"; 1), ps: addrs("ps"; $nps), worker: addrs("worker"; $nworkers)},
     task: {type: $role, index: $index}, environment: "cloud"}'
}

# wait_for_name HOST: until it resolves, or PSTRAIN_DNS_WAIT_SECS pass.
wait_for_name() {
  local host=$1 waited=0 limit=${PSTRAIN_DNS_WAIT_SECS:-300}
  [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]] && return 0
  until getent hosts "$host" > /dev/null; do
    [ "$waited" -lt "$limit" ] ||
      die "$host (this task's address in TF_CONFIG) did not resolve within ${limit}s" 129
    [ "$waited" -gt 0 ] || echo "pstrain-entrypoint: waiting for $host to resolve" >&2
    sleep 1
    waited=$((waited + 1))
  done
}

if [ -z "${TF_CONFIG:-}" ] && [ -n "${PSTRAIN_ROLE:-}" ]; then
  TF_CONFIG=$(tf_config_from_ordinal)
  export TF_CONFIG
fi
[ -n "${TF_CONFIG:-}" ] || die "TF_CONFIG is not set (nor PSTRAIN_ROLE, to make one from the pod's ordinal)"
type=$(jq -r '.task.type // empty' <<< "$TF_CONFIG" 2> /dev/null) ||
  die "TF_CONFIG is not JSON: $TF_CONFIG"
index=$(jq -r '.task.index // 0' <<< "$TF_CONFIG")
extra=()
case "$type" in
  master | chief) daemon=pstrain-master ;;
  ps) daemon=pstrain-ps ;;
  worker) daemon=pstrain-worker ;;
  evaluator)
    daemon=pstrain-master
    extra=(--evaluate-only)
    ;;
  "") die "TF_CONFIG has no task.type" ;;
  *) die "TF_CONFIG's task.type \"$type\" is not master, chief, ps, worker or evaluator" ;;
esac

args=("${extra[@]}")
[ ! -f "$etc/pstrain.json" ] || args+=(--config "$etc/pstrain.json")
args+=("$@")
checking=0
for a in "$@"; do case "$a" in --check-config | --help | -h | --version) checking=1 ;; esac; done
if [ $checking -eq 0 ]; then
  self=$(jq -r --arg t "$type" --argjson i "$index" \
    '.cluster[$t] | if type == "array" then .[$i] else .[($i | tostring)] end // empty' <<< "$TF_CONFIG")
  [ -z "$self" ] || wait_for_name "$(sed -E 's/^\[?(.*[^]])\]?:[0-9]+$/\1/' <<< "$self")"
  mkdir -p "$run_dir"
  args+=(--pid-file "$run_dir/$type$index.pid")
fi

if [ "${PSTRAIN_IDLE_AFTER_EXIT:-0}" != 1 ] || [ $checking -eq 1 ]; then
  exec "$bin_dir/$daemon" "${args[@]}"
fi
# Under a StatefulSet: forward a stop, and idle after an exit a restart cannot change.
"$bin_dir/$daemon" "${args[@]}" &
child=$!
stopping=0
trap 'stopping=1; kill -TERM "$child" 2> /dev/null || true' TERM INT
# wait returns early when a signal is trapped; bash keeps the child's status.
while kill -0 "$child" 2> /dev/null; do wait "$child" || true; done
status=0
wait "$child" || status=$?
if [ $stopping -eq 1 ] || [ "$status" -ge 128 ]; then
  exit "$status"
fi
echo "pstrain-entrypoint: $daemon exited with status $status; idle from now on, so that the" \
  "StatefulSet does not start it again (delete the StatefulSets when the run is over)" >&2
sleep infinity &
sleeper=$!
trap 'kill "$sleeper" 2> /dev/null; exit 0' TERM INT
wait "$sleeper" || true

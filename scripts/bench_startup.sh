#!/usr/bin/env bash
# Start-up: milliseconds from exec to a listening port for pstrain-ps and
# pstrain-master (the CNN, defaults), median of --reps starts each, polling
# the port with connect() every millisecond or so.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
reps=${1:-5}
scripts/build.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
port() { echo $(( 20000 + RANDOM % 40000 )); }
listen_ms() {
  local role=$1 bin=$2 p
  p=$(port)
  local cluster="{\"master\": [\"127.0.0.1:$( [ "$role" = master ] && echo "$p" || port)\"], \"ps\": [\"127.0.0.1:$( [ "$role" = ps ] && echo "$p" || port)\"], \"worker\": [\"127.0.0.1:$(port)\"]}"
  local t0 t1
  t0=$(date +%s%N)
  TF_CONFIG="{\"cluster\": $cluster, \"task\": {\"type\": \"$role\", \"index\": 0}}" \
    "build/$bin" --set log.level=error --set checkpoint.model_dir="$tmp/run" 2> /dev/null &
  local pid=$!
  until (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; do :; done
  t1=$(date +%s%N)
  kill -TERM "$pid"; wait "$pid" 2> /dev/null || true
  echo $(( (t1 - t0) / 1000000 ))
}
for role in ps master; do
  bin=pstrain-$role
  times=()
  for ((i = 0; i < reps; i++)); do times+=("$(listen_ms "$role" "$bin")"); done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n | tr '\n' ' ')
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (reps + 1) / 2 ))p")
  echo "$bin listen_ms_median=$median all=[$sorted]"
done

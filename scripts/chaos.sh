#!/usr/bin/env bash
# Chaos: trains a local cluster (scripts/train_local_dist.sh, with the
# arguments given) and, every few seconds, kill -9's a random role and
# restarts it with scripts/restart_role.sh; stops killing after --kills
# kills or --secs seconds; then waits for training to finish and reports
# whether it did, with what accuracy, and whether every checkpoint the
# manifest names loads, and each kill's recovery time: from the restart to
# the cluster's next progress that needs the role (scripts/chaos_report.py).
# --corrupt also flips bits in one random shard of a random kept checkpoint
# halfway through the kills, and makes the next kill a PS's: the cluster must
# refuse that checkpoint and fall back (docs/checkpoints.md); at the end it
# must be refused if the manifest still names it.
#   scripts/chaos.sh [--kills N] [--secs S] [--every-min S] [--every-max S]
#                    [--corrupt] [train_local_dist.sh args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/alive.sh"
runlogs=${PSTRAIN_RUNLOGS:-$root/runlogs}
export PSTRAIN_RUNLOGS=$runlogs
kills=20 secs=600 every_min=2 every_max=6 corrupt=0
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --kills) kills=$2; shift 2 ;;
    --secs) secs=$2; shift 2 ;;
    --every-min) every_min=$2; shift 2 ;;
    --every-max) every_max=$2; shift 2 ;;
    --corrupt) corrupt=1; shift ;;
    --help | -h) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
model_dir=runs/default
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[$i]} in checkpoint.model_dir=*) model_dir=${args[$i]#checkpoint.model_dir=} ;; esac
done
if [ -e "$model_dir/checkpoint" ]; then
  echo "chaos: $model_dir already holds checkpoints; give a fresh --set checkpoint.model_dir=DIR" >&2
  exit 2
fi
# corrupt_one: flips 4 bytes in the data of one random shard of a random
# checkpoint the manifest keeps; prints ckpt-N/FILE.
corrupt_one() {
  python3 - "$model_dir" << 'PY'
import json, os, random, struct, sys
d = sys.argv[1]
steps = json.load(open(os.path.join(d, "checkpoint")))["kept_steps"]
ck = "ckpt-%d" % random.choice(steps)
name = random.choice(sorted(f for f in os.listdir(os.path.join(d, ck)) if f.endswith(".safetensors")))
p = os.path.join(d, ck, name)
with open(p, "r+b") as f:
    hlen = struct.unpack("<Q", f.read(8))[0]
    at = random.randrange(8 + hlen, os.path.getsize(p) - 4)
    f.seek(at)
    b = bytearray(f.read(4))
    f.seek(at)
    f.write(bytes(x ^ 0x5A for x in b))
print(ck + "/" + name)
PY
}
"$root/scripts/train_local_dist.sh" "${args[@]}" > "$runlogs.chaos.out" 2>&1 &
run=$!
for _ in $(seq 1 100); do [ -f "$runlogs/master0.pid" ] && break; sleep 0.1; done
sleep 2
start=$(date +%s)
n=0
kills_file=$runlogs.chaos.kills
: > "$kills_file"
while [ "$n" -lt "$kills" ] && [ $(($(date +%s) - start)) -lt "$secs" ] && alive "$run"; do
  sleep "$(awk -v a="$every_min" -v b="$every_max" 'BEGIN { srand(); printf "%.2f", a + rand() * (b - a) }')"
  mapfile -t roles < <(cd "$runlogs" && ls ./*.cmd | sed 's|^\./||; s|\.cmd$||')
  name=${roles[$((RANDOM % ${#roles[@]}))]}
  if [ "$corrupt" = 1 ] && [ "$n" -ge $((kills / 2)) ] && corrupted=$(corrupt_one 2> /dev/null); then
    echo "chaos: flipped bits in $corrupted"
    corrupt=done
    mapfile -t roles < <(cd "$runlogs" && ls ./ps*.cmd | sed 's|^\./||; s|\.cmd$||')
    name=${roles[$((RANDOM % ${#roles[@]}))]}
  fi
  pid=$(cat "$runlogs/$name.pid" 2> /dev/null) || continue
  alive "$pid" || continue
  kill -9 "$pid" 2> /dev/null || continue
  n=$((n + 1))
  sleep 0.3
  echo "$name $(date +%s%3N)" >> "$kills_file"
  "$root/scripts/restart_role.sh" "${name%%[0-9]*}" "${name##*[a-z]}" > /dev/null
  echo "chaos: kill $n: $name (pid $pid), restarted"
done
status=0
wait "$run" || status=$?
echo "chaos: $n kills; training $([ $status -eq 0 ] && echo finished || echo FAILED: status $status)"
tail -1 "$runlogs.chaos.out"
python3 "$root/scripts/chaos_report.py" "$runlogs" "$kills_file" | sed 's/^/chaos: /'
bad=0
for step in $(python3 -c "import json,sys; print(*json.load(open(sys.argv[1]))['kept_steps'])" "$model_dir/checkpoint"); do
  if ! "$root/build/pstrain" export --checkpoint "$model_dir/ckpt-$step" --out "$runlogs.chaos.export" > /dev/null 2> "$runlogs.chaos.err"; then
    case ${corrupted:-} in
      ckpt-$step/*)
        echo "chaos: ckpt-$step (bits flipped on purpose) is refused: $(tail -1 "$runlogs.chaos.err")"
        refused=1
        ;;
      *) echo "chaos: ckpt-$step does not load"; bad=1 ;;
    esac
  fi
done
if [ -n "${corrupted:-}" ]; then
  seen=$(cat "$runlogs"/*.log | grep -c "$corrupted: " || true)
  echo "chaos: $seen log lines name $corrupted"
fi
rm -rf "$runlogs.chaos.export"
[ "$bad" -eq 0 ] && echo "chaos: every checkpoint in the manifest loads${refused:+, but the one with bits flipped}"
exit $((status != 0 || bad != 0))

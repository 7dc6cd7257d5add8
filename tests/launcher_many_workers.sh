#!/usr/bin/env bash
# 24 workers on one machine (issue #18): scripts/train_local_dist.sh hands
# every role and every PS stream a port of its own (free_port once ran in a
# subshell and forgot them: 32 workers got duplicate ports), starts the
# cluster in bounded time, and the MLP trains a few steps to the end with
# every worker registered and no process left. Sync mode, so that every step
# waits for all 24 workers: in async mode a fast machine trained the 150
# steps before the last worker had loaded its data and registered.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT
need_fashion_mnist
n=24
t0=$(date +%s)
PSTRAIN_RUNLOGS=$tmp/runlogs timeout 600 "$root/scripts/train_local_dist.sh" --ps 2 --workers $n \
  --set model=mlp --set train.mode=sync --set train.max_steps=150 --set threads=1 --set checkpoint.model_dir="$tmp/md" \
  --set cluster.dead_after_secs=60 > "$tmp/out" 2>&1 || fail "$n workers: exit $?: $(tail -8 "$tmp/out")"
secs=$(($(date +%s) - t0))
started=$(grep -o 'started in [0-9]*s' "$tmp/out" | grep -o '[0-9]*')
[ "$started" -le 10 ] || fail "starting $n workers took ${started}s"
python3 - "$tmp/runlogs" $n <<'PY' || fail "ports are not unique"
import glob, json, re, sys
c = json.load(open(sys.argv[1] + "/cluster.json"))
ports = [a for job in c.values() for a in job]
assert len(c["worker"]) == int(sys.argv[2]), c
for f in glob.glob(sys.argv[1] + "/ps*.cmd"):
    ports += ["stream:" + m for m in re.findall(r"rpc\.stream_port=(\d+)", open(f).read())]
addrs = [p.split(":")[-1] for p in ports]
assert len(addrs) == len(set(addrs)), sorted(addrs)
print("%d unique ports" % len(addrs))
PY
for ((i = 0; i < n; i++)); do
  grep -q "registered with the master" "$tmp/runlogs/worker$i.log" || fail "worker$i never registered"
done
# The steps in flight when step 150 is reached may still count, up to one
# per worker (an async CI run once ended at 162 of 150 with 24 workers).
final=$(grep -o "final test metrics of this run .*global_step=[0-9]*" "$tmp/out" | grep -o "[0-9]*$" || true)
[ -n "$final" ] || fail "no final metrics: $(tail -3 "$tmp/out")"
[ "$final" -ge 150 ] && [ "$final" -le $((150 + n)) ] || fail "final step $final not in 150..$((150 + n))"
pgrep -f -- "checkpoint.model_dir=$tmp/md" > /dev/null && fail "processes left after the run"
echo "$n workers: started in ${started}s, finished in ${secs}s"
echo ok

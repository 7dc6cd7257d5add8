#!/usr/bin/env bash
# A PS killed (kill -9) halfway through writing a checkpoint: ps1 is stopped
# inside its third checkpoint's file by a failpoint (PSTRAIN_FAILPOINT) and
# killed there. The manifest never names the partial checkpoint, every
# checkpoint it names loads, the restarted ps1 and the others roll back to the
# last whole one, the run finishes, and no partial file or directory is left.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
export PSTRAIN_RUNLOGS=$tmp/runlogs
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT

need_fashion_mnist
dir=$tmp/model
manifest() { manifest_key "$dir" "$1"; }
loads() { # loads STEP: the checkpoint of STEP loads
  "$build/pstrain" export --checkpoint "$dir/ckpt-$1" --out "$tmp/x" > /dev/null ||
    fail "ckpt-$1 does not load"
  rm -rf "$tmp/x"
}

PSTRAIN_FAILPOINT=ps1:safetensors_write@3 "$root/scripts/train_local_dist.sh" --no-restart \
  --set model=mlp --set train.epochs=2 --set checkpoint.every_steps=150 --set checkpoint.keep=10 \
  --set cluster.heartbeat_secs=0.5 --set cluster.dead_after_secs=2 \
  --set checkpoint.model_dir="$dir" > "$tmp/run.out" 2>&1 &
run=$!
wait_log "$tmp/runlogs/ps1.log" "failpoint safetensors_write reached" "ps1 never reached its third checkpoint" 60
partial=$(ls -d "$dir"/ckpt-*/ps-1-of-2.safetensors.tmp.* 2> /dev/null | head -1)
[ -n "$partial" ] || fail "no partial checkpoint file of ps1: $(ls -R "$dir")"
partial_dir=$(basename "$(dirname "$partial")")
kill -9 "$(cat "$tmp/runlogs/ps1.pid")"

# The manifest names two whole checkpoints, not the partial one, and both load.
kept=$(manifest kept_steps)
latest=$(manifest latest_step)
[ "$(echo "$kept" | wc -w)" -eq 2 ] || fail "manifest keeps '$kept', want the 2 whole checkpoints"
case " $kept " in *" ${partial_dir#ckpt-} "*) fail "the manifest names the partial $partial_dir" ;; esac
for step in $kept; do loads "$step"; done

"$root/scripts/restart_role.sh" ps 1 > /dev/null
wait_log "$tmp/runlogs/ps1.log" "resumed from $dir/ckpt-$latest" "the restarted ps1 did not restore ckpt-$latest"
wait_log "$tmp/runlogs/master0.log" "rolled back to ckpt-$latest" "the other PS were not rolled back to ckpt-$latest"
wait "$run" || fail "run: $(tail -5 "$tmp/run.out")"
acc=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['accuracy'])" "$dir/eval_results.json")
python3 -c "import sys; a=float(sys.argv[1]); assert a >= 0.80, 'accuracy %.4f' % a" "$acc" ||
  fail "accuracy $acc after the rollback"

# Every checkpoint the final manifest names loads; nothing partial is left.
kept=$(manifest kept_steps)
for step in $kept; do loads "$step"; done
leftovers=$(find "$dir" -name '*.tmp.*')
[ -z "$leftovers" ] || fail "partial files left: $leftovers"
for d in "$dir"/ckpt-*; do
  case " $kept " in *" ${d##*/ckpt-} "*) ;; *) fail "$d is not in the manifest and was not removed" ;; esac
done
echo "ps1 killed inside ${partial_dir}: the manifest kept $(echo "$kept" | wc -w) whole checkpoints, accuracy $acc"

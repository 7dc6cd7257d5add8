#!/usr/bin/env bash
# train.async_momentum (ps/dana.h) end to end: by default an async cluster
# of 4 workers training with SGD momentum keeps a momentum per worker on
# each PS and trains the MLP to >= 0.80 in one epoch; with Adam the default
# keeps one momentum and says why; dana asked for in sync mode stops each
# PS at the start with one line naming the setting.
set -euo pipefail
: "${1:?usage: $0 BUILD_DIR}"
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
. "$(dirname "$0")/lib/check.sh"
trap cluster_test_cleanup EXIT

need_fashion_mnist

# shellcheck disable=SC2206
extra_sets=(${PSTRAIN_TEST_SETS:-})
# run NAME ARGS...: a 2-PS cluster on loopback; its status in $rc.
run() {
  local name=$1
  shift
  set +e
  PSTRAIN_RUNLOGS=$tmp/logs-$name "$root/scripts/train_local_dist.sh" --progress-secs 0 \
    --set model=mlp --set checkpoint.model_dir="$tmp/$name" "$@" \
    ${extra_sets[@]+"${extra_sets[@]}"} > "$tmp/out-$name" 2>&1
  rc=$?
  set -e
}

run default --workers 4 --set train.epochs=1
[ "$rc" -eq 0 ] || fail "default run: $(tail -5 "$tmp/out-default")"
for ps in ps0 ps1; do
  grep -q "a momentum per worker (train.async_momentum dana), 4 of them" "$tmp/logs-default/$ps.log" ||
    fail "$ps: no dana: $(grep -i momentum "$tmp/logs-default/$ps.log")"
done
python3 - "$tmp/default/eval_results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["accuracy"] >= 0.80, r
print("dana, 4 workers, 1 epoch: accuracy %.4f at global step %d" % (r["accuracy"], r["global_step"]))
PY

run adam --workers 2 --set train.max_steps=20 --set train.optimizer=adam
[ "$rc" -eq 0 ] || fail "adam run: $(tail -5 "$tmp/out-adam")"
grep -q "train.async_momentum auto: one momentum (train.async_momentum=dana needs train.optimizer sgd" \
  "$tmp/logs-adam/ps0.log" || fail "adam: no line saying why: $(grep -i momentum "$tmp/logs-adam/ps0.log")"

run sync --workers 2 --set train.max_steps=20 --set train.mode=sync --set train.async_momentum=dana
[ "$rc" -eq 2 ] || fail "sync + dana exited $rc, want 2: $(tail -5 "$tmp/out-sync")"
[ "$(grep -c ERROR "$tmp/logs-sync/ps0.log")" -eq 1 ] || fail "sync + dana: not one error line: $(cat "$tmp/logs-sync/ps0.log")"
grep -q "ERROR train.async_momentum=dana is for train.mode async and ssp, not sync" "$tmp/logs-sync/ps0.log" ||
  fail "sync + dana: $(grep ERROR "$tmp/logs-sync/ps0.log")"
echo "cluster_dana: ok"

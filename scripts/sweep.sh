#!/usr/bin/env bash
# A hyper-parameter sweep: runs the trials a spec describes (JSON or YAML, in
# the spirit of Cloud ML Engine's hptuning_config.yaml: goal, metric,
# maxTrials, maxParallelTrials, params as discrete lists or ranges on a
# linear or log scale, grid or random search, median early stopping), each
# a standalone run or a local cluster in its own model_dir and runlogs under
# --out DIR (runs/sweep-<time>), then prints the results table and writes it
# to DIR/results.csv and training_log.md (--training-log FILE).
#   scripts/sweep.sh SPEC [--out DIR] [--training-log FILE]
# The spec's fields: scripts/sweep.py --help; an example: docs/sweeps.md.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/build.sh"
unset OPENBLAS_CORETYPE
[ -n "${PSTRAIN_OPENBLAS_CORETYPE:-}" ] && export OPENBLAS_CORETYPE=$PSTRAIN_OPENBLAS_CORETYPE
exec python3 "$root/scripts/sweep.py" "$@"

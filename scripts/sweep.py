#!/usr/bin/env python3
"""A hyper-parameter sweep of pstrain runs (scripts/sweep.sh runs this).

The spec is JSON or YAML in the spirit of Cloud ML Engine's
hptuning_config.yaml (its trainingInput.hyperparameters, or those fields at
the top level):

  goal                      MAXIMIZE or MINIMIZE
  hyperparameterMetricTag   accuracy or loss, of the validation-set evaluations
                            when a trial has them (data.val or data.val_split),
                            else of the test-set ones
  hyperparameterMetricSet   auto (that rule, the default), validation or test
  maxTrials                 trials to run
  maxParallelTrials         trials at once (1)
  algorithm                 GRID_SEARCH or RANDOM_SEARCH (the default)
  enableTrialEarlyStopping  stop a trial whose metric is worse than the
                            median of finished trials at the same step
  params                    [{parameterName: a config key,
                              type: DOUBLE | INTEGER | DISCRETE | CATEGORICAL,
                              minValue, maxValue, scaleType: UNIT_LINEAR_SCALE |
                              UNIT_LOG_SCALE, discreteValues, categoricalValues,
                              gridPoints: points of a range in a grid (3)}]
  trial                     {runner: standalone | cluster, ps: N, workers: N,
                             args: [more pstrain arguments, e.g. "--set", "model=mlp"]}
  seed                      of the random search (0)

Each trial is a run in OUT/trial-<n>/ (its model_dir model/, its runlogs
runlogs/ for a cluster, its output out.log). The results table (trial,
parameters, best metric, steps, time, status) is printed and written to
OUT/results.csv and appended to the training log.
"""
import csv
import datetime
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SpecError(Exception):
    pass


def load_spec(path):
    """The spec's hyperparameters section, from JSON or YAML."""
    with open(path) as f:
        text = f.read()
    try:
        spec = json.loads(text)
    except json.JSONDecodeError:
        try:
            import yaml
        except ImportError:
            raise SpecError("%s is not JSON, and PyYAML is not installed for YAML" % path)
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpecError("%s is neither JSON nor YAML: %s" % (path, str(e).splitlines()[0]))
    if not isinstance(spec, dict):
        raise SpecError("%s: the spec must be an object" % path)
    hp = spec.get("trainingInput", {}).get("hyperparameters", spec)
    return check_spec(hp, path)


def check_spec(hp, path):
    def need(cond, what):
        if not cond:
            raise SpecError("%s: %s" % (path, what))
    hp = dict(hp)
    hp["goal"] = str(hp.get("goal", "MAXIMIZE")).upper()
    need(hp["goal"] in ("MAXIMIZE", "MINIMIZE"), "goal must be MAXIMIZE or MINIMIZE")
    hp["hyperparameterMetricTag"] = hp.get("hyperparameterMetricTag", "accuracy")
    need(hp["hyperparameterMetricTag"] in ("accuracy", "loss"),
         "hyperparameterMetricTag must be accuracy or loss")
    hp["hyperparameterMetricSet"] = str(hp.get("hyperparameterMetricSet", "auto")).lower()
    need(hp["hyperparameterMetricSet"] in ("auto", "validation", "test"),
         "hyperparameterMetricSet must be auto, validation or test")
    hp["algorithm"] = str(hp.get("algorithm", "RANDOM_SEARCH")).upper()
    need(hp["algorithm"] in ("GRID_SEARCH", "RANDOM_SEARCH"),
         "algorithm must be GRID_SEARCH or RANDOM_SEARCH")
    for k in ("maxTrials", "maxParallelTrials"):
        hp[k] = hp.get(k, 1)
        need(isinstance(hp[k], int) and hp[k] >= 1, "%s must be a whole number >= 1" % k)
    params = hp.get("params")
    need(isinstance(params, list) and params, "params must be a non-empty list")
    for p in params:
        check_param(p, need)
    trial = hp.setdefault("trial", {})
    trial.setdefault("runner", "standalone")
    need(trial["runner"] in ("standalone", "cluster"), "trial.runner must be standalone or cluster")
    need(isinstance(trial.setdefault("args", []), list), "trial.args must be a list of strings")
    return hp


def check_param(p, need):
    name = p.get("parameterName")
    need(isinstance(name, str) and name, "every param needs a parameterName")
    t = p.get("type")
    need(t in ("DOUBLE", "INTEGER", "DISCRETE", "CATEGORICAL"),
         "param %s: type must be DOUBLE, INTEGER, DISCRETE or CATEGORICAL" % name)
    if t in ("DOUBLE", "INTEGER"):
        lo, hi = p.get("minValue"), p.get("maxValue")
        need(isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo <= hi,
             "param %s: minValue <= maxValue, both numbers" % name)
        scale = p.setdefault("scaleType", "UNIT_LINEAR_SCALE")
        need(scale in ("UNIT_LINEAR_SCALE", "UNIT_LOG_SCALE"),
             "param %s: scaleType must be UNIT_LINEAR_SCALE or UNIT_LOG_SCALE" % name)
        need(scale != "UNIT_LOG_SCALE" or lo > 0, "param %s: a log scale needs minValue > 0" % name)
    else:
        key = "discreteValues" if t == "DISCRETE" else "categoricalValues"
        need(isinstance(p.get(key), list) and p[key], "param %s: %s must be a non-empty list" % (name, key))


def scaled(p, u):
    """The value at u in [0, 1] of a range parameter, on its scale."""
    lo, hi = p["minValue"], p["maxValue"]
    if p["scaleType"] == "UNIT_LOG_SCALE":
        v = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    else:
        v = lo + u * (hi - lo)
    return int(round(v)) if p["type"] == "INTEGER" else v


def grid_values(p):
    if p["type"] == "DISCRETE":
        return list(p["discreteValues"])
    if p["type"] == "CATEGORICAL":
        return list(p["categoricalValues"])
    n = int(p.get("gridPoints", 3))
    vals = [scaled(p, i / (n - 1) if n > 1 else 0.0) for i in range(n)]
    return list(dict.fromkeys(vals))


def random_value(p, rng):
    if p["type"] == "DISCRETE":
        return rng.choice(p["discreteValues"])
    if p["type"] == "CATEGORICAL":
        return rng.choice(p["categoricalValues"])
    return scaled(p, rng.random())


def trial_params(hp):
    """maxTrials parameter sets: the grid in order (cycled no further than
    its size), or random draws."""
    names = [p["parameterName"] for p in hp["params"]]
    if hp["algorithm"] == "GRID_SEARCH":
        grid = list(itertools.product(*(grid_values(p) for p in hp["params"])))
        return [dict(zip(names, g)) for g in grid[:hp["maxTrials"]]]
    rng = random.Random(hp.get("seed", 0))
    return [{p["parameterName"]: random_value(p, rng) for p in hp["params"]}
            for _ in range(hp["maxTrials"])]


def text(v):
    return "%.6g" % v if isinstance(v, float) else str(v)


class Trial:
    def __init__(self, n, params, out):
        self.n, self.params = n, params
        self.dir = os.path.join(out, "trial-%d" % n)
        self.model_dir = os.path.join(self.dir, "model")
        self.proc, self.start, self.secs = None, None, 0.0
        self.status = "pending"

    def command(self, hp, build):
        t = hp["trial"]
        sets = []
        for k, v in self.params.items():
            sets += ["--set", "%s=%s" % (k, text(v))]
        sets += ["--set", "checkpoint.model_dir=" + self.model_dir]
        if t["runner"] == "cluster":
            return ([os.path.join(ROOT, "scripts/train_local_dist.sh"), "--progress-secs", "0",
                     "--ps", str(t.get("ps", 1)), "--workers", str(t.get("workers", 2))]
                    + t["args"] + sets)
        return [os.path.join(build, "pstrain-worker")] + t["args"] + sets

    def launch(self, hp, build, training_log):
        os.makedirs(self.dir, exist_ok=True)
        env = dict(os.environ, PSTRAIN_RUNLOGS=os.path.join(self.dir, "runlogs"),
                   PSTRAIN_TRAINING_LOG=training_log)
        env.pop("TF_CONFIG", None)
        self.log = open(os.path.join(self.dir, "out.log"), "w")
        # A session of its own: stopping a trial stops all its processes.
        self.proc = subprocess.Popen(self.command(hp, build), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.start, self.status = time.time(), "running"

    def evaluations(self):
        """The rows of its eval_history.jsonl so far."""
        try:
            with open(os.path.join(self.model_dir, "eval_history.jsonl")) as f:
                lines = f.readlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:  # the last line may be half written
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def metric_set(self, hp):
        """The set its metric comes from: hyperparameterMetricSet, or with
        auto the validation set once it has a validation evaluation (a run
        with data.val or data.val_split evaluates it at every checkpoint
        and the test set only at the end), else the test set."""
        want = hp.get("hyperparameterMetricSet", "auto")
        if want != "auto":
            return want
        return "validation" if any(e.get("set") == "validation" for e in self.evaluations()) else "test"

    def history(self, metric, hp):
        """[(step, metric)] of its evaluations so far on metric_set."""
        which = self.metric_set(hp)
        return [(e["step"], e[metric]) for e in self.evaluations()
                if e.get("set", "test") == which and "step" in e and metric in e]

    def stop(self):
        """SIGTERM to its session (a cluster's launcher stops its roles)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def best(values, goal):
    return (max if goal == "MAXIMIZE" else min)(values) if values else None


def median_says_stop(trial, finished, hp):
    """Median stopping: the trial's best metric so far is worse than the
    median of the finished trials' best metric up to the same step."""
    metric, goal = hp["hyperparameterMetricTag"], hp["goal"]
    mine = trial.history(metric, hp)
    if len(finished) < 2 or not mine:
        return False
    step = mine[-1][0]
    others = [best([m for s, m in t.history(metric, hp) if s <= step], goal) for t in finished]
    others = sorted(v for v in others if v is not None)
    if len(others) < 2:
        return False
    med = others[len(others) // 2] if len(others) % 2 else (others[len(others) // 2 - 1] + others[len(others) // 2]) / 2
    mine_best = best([m for _, m in mine], goal)
    return mine_best < med if goal == "MAXIMIZE" else mine_best > med


def run(hp, out, build, training_log, poll=0.5):
    trials = [Trial(i + 1, p, out) for i, p in enumerate(trial_params(hp))]
    pending, running, finished = list(trials), [], []
    try:
        loop(hp, out, build, training_log, poll, pending, running, finished)
    except KeyboardInterrupt:
        print("sweep: interrupted: stopping the running trials", file=sys.stderr)
        for t in running:
            t.stop()
        for t in running:
            t.proc.wait()
        raise
    return trials


def loop(hp, out, build, training_log, poll, pending, running, finished):
    """Starts trials up to maxParallelTrials, stops the weak ones early,
    collects the finished ones."""
    while pending or running:
        while pending and len(running) < hp["maxParallelTrials"]:
            t = pending.pop(0)
            t.launch(hp, build, training_log)
            print("sweep: trial %d started: %s" % (t.n, " ".join("%s=%s" % (k, text(v)) for k, v in t.params.items())), flush=True)
            running.append(t)
        time.sleep(poll)
        for t in list(running):
            rc = t.proc.poll()
            if rc is None:
                if hp.get("enableTrialEarlyStopping") and t.status == "running" and median_says_stop(t, finished, hp):
                    t.status = "stopped early"
                    print("sweep: trial %d is below the median of the finished trials: stopping it" % t.n, flush=True)
                    t.stop()
                continue
            t.secs = time.time() - t.start
            t.log.close()
            if t.status == "running":
                t.status = "done" if rc == 0 else "failed (exit %d, see %s)" % (rc, os.path.join(t.dir, "out.log"))
            running.remove(t)
            finished.append(t)
            print("sweep: trial %d %s after %.0fs" % (t.n, t.status, t.secs), flush=True)


def table(trials, hp):
    metric, goal = hp["hyperparameterMetricTag"], hp["goal"]
    names = [p["parameterName"] for p in hp["params"]]
    rows = []
    sets = set()
    for t in trials:
        h = t.history(metric, hp)
        if h:
            sets.add(t.metric_set(hp))
        b = best([m for _, m in h], goal)
        rows.append([str(t.n)] + [text(t.params[k]) for k in names] +
                    ["%.4f" % b if b is not None else "-", str(h[-1][0]) if h else "-",
                     "%.0f" % t.secs, t.status])
    # "best accuracy" is of the test set, as before validation sets.
    on = "validation " if sets == {"validation"} else "" if sets <= {"test"} else "validation or test "
    header = ["trial"] + names + ["best " + on + metric, "steps", "secs", "status"]

    def rank(r):
        """Best first; trials without a metric last."""
        if r[-4] == "-":
            return (1, 0.0)
        return (0, -float(r[-4]) if goal == "MAXIMIZE" else float(r[-4]))
    return header, sorted(rows, key=rank)


def report(header, rows, out, spec_path, training_log):
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    new = not os.path.exists(training_log) or os.path.getsize(training_log) == 0
    with open(training_log, "a") as f:
        if new:
            f.write("# Training log\n\nOne line per run of scripts/train_local_dist.sh.\n\n")
        f.write("- %s: sweep %s, %d trials in %s:\n\n" % (
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            spec_path, len(rows), out))
        f.write("  | " + " | ".join(header) + " |\n  |" + "---|" * len(header) + "\n")
        for r in rows:
            f.write("  | " + " | ".join(r) + " |\n")
        f.write("\n")
    print("sweep: results in %s/results.csv and %s" % (out, training_log))


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="scripts/sweep.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", help="the sweep's spec, JSON or YAML")
    ap.add_argument("--out", help="the sweep's folder (runs/sweep-<time>)")
    ap.add_argument("--build", default=os.environ.get("PSTRAIN_BUILD", os.path.join(ROOT, "build")))
    ap.add_argument("--training-log", default=os.environ.get("PSTRAIN_TRAINING_LOG", os.path.join(ROOT, "training_log.md")))
    a = ap.parse_args(argv)
    try:
        hp = load_spec(a.spec)
    except (OSError, SpecError) as e:
        print("sweep: %s" % e, file=sys.stderr)
        return 2
    out = a.out or os.path.join(ROOT, "runs", "sweep-" + time.strftime("%Y%m%d-%H%M%S"))
    if os.path.exists(os.path.join(out, "results.csv")):
        print("sweep: %s already holds a sweep; give a new --out" % out, file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    try:
        trials = run(hp, out, a.build, a.training_log)
    except KeyboardInterrupt:
        return 130
    header, rows = table(trials, hp)
    report(header, rows, out, a.spec, a.training_log)
    return 0 if any(t.status == "done" for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

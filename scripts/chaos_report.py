#!/usr/bin/env python3
"""Recovery times of a chaos run (scripts/chaos.sh), read from its logs.

    chaos_report.py RUNLOGS KILLS_FILE

KILLS_FILE has one line per kill: ROLE_NAME (e.g. ps1) and the time in ms
since the epoch just before scripts/restart_role.sh was started for it. A
role's recovery is the time from its restart (the "== restart" line that
restart_role.sh writes to its log just before it starts the daemon) to the
cluster's next progress that needs the role:
  worker  its first step done (its gradient pushed) after the restart;
  ps      the first step any worker logs after the master rolled every PS
          back to the checkpoint the new PS restored (restore included);
  master  its first line showing the global step after the restart.
Prints one line per kill, then the median and the worst per role kind.
"""
import datetime
import glob
import os
import re
import statistics
import sys

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


RESTART = re.compile(r"^== restart (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def ms(line):
    m = STAMP.match(line) or RESTART.match(line)
    if not m:
        return None
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
    return int(t.timestamp() * 1000)


def lines(path):
    """(ms, text) of every timestamped line of a log."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            t = ms(line)
            if t is not None:
                out.append((t, line))
    return out


def first_after(log, t0, pattern):
    rx = re.compile(pattern)
    for t, line in log:
        if t >= t0 and rx.search(line):
            return t
    return None


def main():
    runlogs, kills_file = sys.argv[1], sys.argv[2]
    logs = {os.path.basename(p)[:-4]: lines(p) for p in glob.glob(os.path.join(runlogs, "*.log"))}
    worker_steps = sorted(
        t for name, log in logs.items() if name.startswith("worker")
        for t, line in log if "global step" in line or "first step done" in line)
    per_kind = {}
    with open(kills_file) as f:
        kills = [line.split() for line in f if line.strip()]
    for i, (name, t0s) in enumerate(kills, 1):
        # the restart marker after the kill (the log's clock)
        t0 = first_after(logs.get(name, []), int(t0s), r"^== restart")
        if t0 is None:
            print("kill %d: %s: no restart in its log" % (i, name))
            continue
        kind = re.sub(r"\d+$", "", name)
        done = None
        if kind == "worker":
            done = first_after(logs.get(name, []), t0, r"first step done")
        elif kind == "master":
            done = first_after(logs.get(name, []), t0, r"global step \d+")
        elif kind == "ps":
            back = first_after(logs.get("master0", []), t0, r"rolled back to ckpt-|back at the initial weights")
            if back is not None:
                done = next((t for t in worker_steps if t > back), None)
        if done is None:
            print("kill %d: %s: no recovery seen in the logs" % (i, name))
            continue
        per_kind.setdefault(kind, []).append(done - t0)
        print("kill %d: %s back to work in %d ms" % (i, name, done - t0))
    for kind in sorted(per_kind):
        v = per_kind[kind]
        print("recovery of a %s: median %d ms, worst %d ms (%d kills)" %
              (kind, statistics.median(v), max(v), len(v)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""One self-contained HTML report (inline SVG, no network, no script) of
one or more pstrain model_dirs (scripts/report.sh and `pstrain report` run
this):

  - loss and accuracy curves: training (the master's or standalone
    worker's TensorBoard scalars, events.out.tfevents.*), validation (when
    the run has a validation set) and test (every evaluation,
    eval_history.jsonl);
  - the last evaluation's confusion matrix and per-class accuracy, with
    class names (eval_results.json);
  - the cluster timeline: each role's runs, restarts, kills, errors,
    stops and the master's rollbacks, from the runlogs (--runlogs DIR, else
    MODEL_DIR/../runlogs when it exists);
  - for several model_dirs (a sweep): the test curves overlaid and a table
    of the runs.
"""
import argparse
import glob
import html
import json
import os
import re
import struct
import sys
from datetime import datetime

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]


# ---- reading a model_dir ----

def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf):
    """(field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            return
        yield num, wt, v


def read_scalars(path):
    """{tag: [(step, value)]} of a TensorBoard event file (TFRecord of Event
    protos: step = 2, summary = 5 > value = 1 > tag = 1, simple_value = 2)."""
    out = {}
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i + 12 <= len(data):
        (n,) = struct.unpack_from("<Q", data, i)
        rec = data[i + 12:i + 12 + n]
        i += 12 + n + 4
        step = 0
        values = []
        for num, wt, v in fields(rec):
            if num == 2 and wt == 0:
                step = v
            elif num == 5 and wt == 2:
                for vn, vwt, val in fields(v):
                    if vn != 1 or vwt != 2:
                        continue
                    tag, x = None, None
                    for fn, fwt, fv in fields(val):
                        if fn == 1 and fwt == 2:
                            tag = fv.decode("utf-8", "replace")
                        elif fn == 2 and fwt == 5:
                            (x,) = struct.unpack("<f", fv)
                    if tag is not None and x is not None:
                        values.append((tag, x))
        for tag, x in values:
            out.setdefault(tag, []).append((step, x))
    return out


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def load_run(model_dir, runlogs):
    run = {"dir": model_dir, "name": os.path.basename(os.path.normpath(model_dir))}
    if run["name"] == "model":  # a sweep's trial-<n>/model
        run["name"] = os.path.basename(os.path.dirname(os.path.normpath(model_dir)))
    run["history"] = []
    try:
        with open(os.path.join(model_dir, "eval_history.jsonl")) as f:
            run["history"] = [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        pass
    run["results"] = load_json(os.path.join(model_dir, "eval_results.json"), {})
    run["config"] = load_json(os.path.join(model_dir, "config.json"), {}).get("config", {})
    run["train"] = {}
    for p in sorted(glob.glob(os.path.join(model_dir, "events.out.tfevents.*"))):
        for tag, pts in read_scalars(p).items():
            run["train"].setdefault(tag, []).extend(pts)
    if runlogs is None:
        guess = os.path.join(os.path.dirname(os.path.normpath(model_dir)), "runlogs")
        runlogs = guess if os.path.isdir(guess) else None
    run["runlogs"] = runlogs
    run["timeline"] = read_timeline(runlogs) if runlogs else None
    return run


LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ([a-z]+\d+)\[(\d+)\] (\w+) (.*)$")
RESTART = re.compile(r"^== restart (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) by (\S+)(?: \(it ended with status (\d+)\))?")


def when(text):
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def read_timeline(runlogs):
    """{role: {"runs": [[start, end]], "events": [(t, kind, text)]}} from
    the logs of a local cluster."""
    roles = {}
    for path in sorted(glob.glob(os.path.join(runlogs, "*.log"))):
        name = os.path.basename(path)[:-4]
        if not re.match(r"^(master|ps|worker|evaluator)\d+$", name):
            continue
        r = {"runs": [], "events": []}
        last = None
        with open(path, errors="replace") as f:
            for line in f:
                m = RESTART.match(line)
                if m:
                    t = when(m.group(1))
                    if r["runs"] and last is not None:
                        r["runs"][-1][1] = last
                    status = int(m.group(3)) if m.group(3) else None
                    if status is not None and status >= 128 and last is not None:
                        r["events"].append((last, "kill", "ended with status %d" % status))
                    r["events"].append((t, "restart", "restarted by " + m.group(2)))
                    continue
                m = LINE.match(line.rstrip("\n"))
                if not m:
                    continue
                t, level, msg = when(m.group(1)), m.group(4), m.group(5)
                if " starting: pid " in msg:
                    if r["runs"] and r["runs"][-1][1] is None:
                        r["runs"][-1][1] = last
                        r["events"].append((last, "kill", "ended without a last word (killed?)"))
                    r["runs"].append([t, None])
                elif level == "ERROR":
                    r["events"].append((t, "error", msg))
                elif msg.startswith("stopping on signal"):
                    r["events"].append((t, "stop", msg))
                elif name.startswith("master") and ("rolled back" in msg or "STALL" in msg):
                    r["events"].append((t, "rollback", msg))
                elif name.startswith("master") and "marked dead" in msg:
                    r["events"].append((t, "dead", msg))
                last = t
        if r["runs"] and r["runs"][-1][1] is None:
            r["runs"][-1][1] = last
        roles[name] = r
    return roles


# ---- SVG ----

def esc(s):
    return html.escape(str(s), quote=True)


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1.0
    span = (hi - lo) / n
    mag = 10 ** int(f"{span:e}".split("e")[1])
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= span), default=span)
    first = step * int(lo / step)
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 12))
        t += step
    return ticks


def line_chart(series, title, xlabel, ylabel, css_class):
    """An SVG line chart; series: [(label, color, [(x, y)], dashed)]."""
    w, h, ml, mr, mt, mb = 480, 280, 60, 150, 30, 40
    pts = [p for s in series for p in s[2]]
    if not pts:
        return '<p class="empty">%s: no data</p>' % esc(title)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1e-3
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    sx = lambda x: ml + (x - x0) / (x1 - x0) * (w - ml - mr)
    sy = lambda y: h - mb - (y - y0) / (y1 - y0) * (h - mt - mb)
    out = ['<svg class="chart %s" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">'
           % (css_class, w, h, w, h),
           '<text x="%d" y="18" class="title">%s</text>' % (ml, esc(title)),
           '<rect x="%d" y="%d" width="%d" height="%d" class="frame"/>' % (ml, mt, w - ml - mr, h - mt - mb)]
    for t in nice_ticks(y0, y1):
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/><text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>'
                   % (ml, w - mr, sy(t), sy(t), ml - 4, sy(t) + 4, esc("%g" % t)))
    for t in nice_ticks(x0, x1):
        out.append('<text x="%.1f" y="%d" class="tick" text-anchor="middle">%s</text>' % (sx(t), h - mb + 14, esc("%g" % t)))
    out.append('<text x="%d" y="%d" class="label" text-anchor="middle">%s</text>' % ((ml + w - mr) // 2, h - 6, esc(xlabel)))
    out.append('<text x="14" y="%d" class="label" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>'
               % ((mt + h - mb) // 2, (mt + h - mb) // 2, esc(ylabel)))
    for i, (label, color, data, dashed) in enumerate(series):
        if not data:
            continue
        data = sorted(data)
        path = " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in data)
        out.append('<polyline class="curve" data-series="%s" points="%s" stroke="%s" fill="none" stroke-width="1.8"%s/>'
                   % (esc(label), path, color, ' stroke-dasharray="5,3"' if dashed else ""))
        if len(data) == 1:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (sx(data[0][0]), sy(data[0][1]), color))
        ly = mt + 14 + 16 * i
        out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/><text x="%d" y="%d" class="legend">%s</text>'
                   % (w - mr + 8, w - mr + 28, ly - 4, ly - 4, color, ' stroke-dasharray="5,3"' if dashed else "",
                      w - mr + 32, ly, esc(label)))
    out.append("</svg>")
    return "\n".join(out)


def confusion_svg(cm):
    names, m = cm.get("classes", []), cm.get("matrix", [])
    n = len(m)
    if not n:
        return '<p class="empty">no confusion matrix</p>'
    cell, ml, mt = 38, 110, 110
    w, h = ml + n * cell + 10, mt + n * cell + 10
    peak = max(max(r) for r in m) or 1
    out = ['<svg class="confusion" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">' % (w, h, w, h),
           '<text x="4" y="14" class="label">rows: true class, columns: predicted</text>']
    for j, name in enumerate(names):
        x = ml + j * cell + cell / 2
        out.append('<text x="%.1f" y="%d" class="tick" transform="rotate(-60 %.1f %d)">%s</text>' % (x, mt - 6, x, mt - 6, esc(name)))
    for i, row in enumerate(m):
        y = mt + i * cell
        out.append('<text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>' % (ml - 6, y + cell / 2 + 4, esc(names[i] if i < len(names) else i)))
        for j, v in enumerate(row):
            a = v / peak
            fill = "rgba(31,119,180,%.3f)" % (0.05 + 0.95 * a) if i == j else "rgba(214,39,40,%.3f)" % (0.05 + 0.95 * a)
            out.append('<rect class="cell" x="%d" y="%d" width="%d" height="%d" fill="%s"/><text x="%.1f" y="%.1f" class="count" text-anchor="middle" fill="%s">%d</text>'
                       % (ml + j * cell, y, cell - 1, cell - 1, fill, ml + j * cell + cell / 2, y + cell / 2 + 4,
                          "#fff" if a > 0.5 else "#222", v))
    out.append("</svg>")
    return "\n".join(out)


def per_class_svg(acc, names):
    if not acc:
        return '<p class="empty">no per-class accuracy</p>'
    bw, ml, h = 24, 110, 22 * len(acc) + 20
    w = ml + 300
    out = ['<svg class="per-class" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">' % (w, h, w, h)]
    for i, a in enumerate(acc):
        y = 10 + 22 * i
        name = names[i] if names and i < len(names) else str(i)
        out.append('<text x="%d" y="%d" class="tick" text-anchor="end">%s</text><rect class="bar" x="%d" y="%d" width="%.1f" height="16" fill="#1f77b4"/><text x="%.1f" y="%d" class="tick">%.3f</text>'
                   % (ml - 6, y + 12, esc(name), ml, y, 240 * a, ml + 240 * a + 4, y + 12, a))
    out.append("</svg>")
    return "\n".join(out)


def timeline_svg(tl):
    if not tl:
        return '<p class="empty">no runlogs found (give --runlogs DIR)</p>'
    times = [t for r in tl.values() for run in r["runs"] for t in run if t] + \
            [e[0] for r in tl.values() for e in r["events"] if e[0]]
    if not times:
        return '<p class="empty">the runlogs hold no timed lines</p>'
    t0, t1 = min(times), max(times)
    if t1 <= t0:
        t1 = t0 + 1
    ml, w, row = 80, 760, 24
    h = 40 + row * len(tl)
    sx = lambda t: ml + (t - t0) / (t1 - t0) * (w - ml - 20)
    marks = {"restart": ("#2ca02c", "restart"), "kill": ("#000", "killed"), "error": ("#d62728", "error"),
             "stop": ("#ff7f0e", "stop"), "rollback": ("#9467bd", "rollback"), "dead": ("#8c564b", "marked dead")}
    out = ['<svg class="timeline" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">' % (w, h + 24, w, h + 24)]
    for i, (name, r) in enumerate(sorted(tl.items(), key=lambda kv: (re.sub(r"\d+$", "", kv[0]) != "master", kv[0]))):
        y = 20 + row * i
        out.append('<text x="%d" y="%d" class="tick" text-anchor="end">%s</text>' % (ml - 6, y + 12, esc(name)))
        for a, b in r["runs"]:
            out.append('<rect class="run" x="%.1f" y="%d" width="%.1f" height="14" fill="#aec7e8"/>' % (sx(a), y, max(1.0, sx(b or a) - sx(a))))
        for t, kind, text in r["events"]:
            if t is None:
                continue
            color, label = marks[kind]
            out.append('<circle class="event %s" cx="%.1f" cy="%d" r="4" fill="%s"><title>%s: %s</title></circle>'
                       % (kind, sx(t), y + 7, color, esc(label), esc(text)))
    out.append('<text x="%d" y="%d" class="tick">0 s</text><text x="%d" y="%d" class="tick" text-anchor="end">%.0f s</text>'
               % (ml, h + 4, w - 20, h + 4, t1 - t0))
    lx = ml
    for kind, (color, label) in marks.items():
        out.append('<circle cx="%d" cy="%d" r="4" fill="%s"/><text x="%d" y="%d" class="legend">%s</text>' % (lx, h + 18, color, lx + 8, h + 22, label))
        lx += 90
    out.append("</svg>")
    return "\n".join(out)


# ---- the page ----

CSS = """body{font-family:sans-serif;margin:24px;color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:32px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.title{font-size:14px;font-weight:bold}
.tick,.legend{font-size:11px}.label{font-size:12px}.count{font-size:10px}.frame{fill:none;stroke:#999}
.grid{stroke:#eee}.empty{color:#888}"""

KEYS = ["model", "train.mode", "train.optimizer", "train.learning_rate", "train.batch_size",
        "train.epochs", "train.max_steps"]


def test_points(run, metric, which="test"):
    return [(e["step"], e[metric]) for e in run["history"] if e.get("set", "test") == which and metric in e]


def eval_series(run, metric):
    """The chart series of the evaluations: validation (when the run has a
    validation set) beside test."""
    out = []
    for which, color in (("validation", COLORS[2]), ("test", COLORS[1])):
        pts = test_points(run, metric, which)
        if pts or which == "test":
            out.append((which, color, pts, False))
    return out


def train_points(train):
    """The training scalars without the steps before any worker reported
    (the master writes loss 0 and accuracy 0 there)."""
    empty = {s for s, v in train.get("loss", []) if v == 0.0}
    return {tag: [(s, v) for s, v in pts if s not in empty] for tag, pts in train.items()}


def run_section(run, i):
    r, parts = run["results"], []
    parts.append('<h2 id="run-%d">%s</h2><p>%s</p>' % (i, esc(run["name"]), esc(run["dir"])))
    if r:
        parts.append("<p>last evaluation: global step %s, %s loss %.4f, accuracy %.4f (%s examples)</p>"
                     % (r.get("global_step"), esc(r.get("set", "test")), r.get("loss", 0), r.get("accuracy", 0),
                        r.get("examples")))
    cfg = run["config"]
    if cfg:
        parts.append("<table><tr>%s</tr><tr>%s</tr></table>" % (
            "".join("<th>%s</th>" % esc(k) for k in KEYS if k in cfg),
            "".join("<td>%s</td>" % esc(cfg[k]) for k in KEYS if k in cfg)))
    tr = train_points(run["train"])
    loss = [("train", COLORS[0], tr.get("loss", []), True)] + eval_series(run, "loss")
    acc = [("train", COLORS[0], tr.get("accuracy", []), True)] + eval_series(run, "accuracy")
    parts.append('<div class="row">%s%s</div>' % (line_chart(loss, "loss", "global step", "loss", "loss"),
                                                   line_chart(acc, "accuracy", "global step", "accuracy", "accuracy")))
    names = r.get("class_names") or r.get("confusion_matrix", {}).get("classes")
    parts.append('<div class="row"><div><h3>confusion matrix</h3>%s</div><div><h3>per-class accuracy</h3>%s</div></div>'
                 % (confusion_svg(r.get("confusion_matrix", {})), per_class_svg(r.get("per_class_accuracy", []), names)))
    parts.append("<h3>cluster timeline%s</h3>%s" % (" (%s)" % esc(run["runlogs"]) if run["runlogs"] else "",
                                                    timeline_svg(run["timeline"])))
    return "\n".join(parts)


def comparison(runs):
    acc = [(run["name"], COLORS[i % len(COLORS)], test_points(run, "accuracy"), False) for i, run in enumerate(runs)]
    loss = [(run["name"], COLORS[i % len(COLORS)], test_points(run, "loss"), False) for i, run in enumerate(runs)]
    keys = [k for k in KEYS if len({str(r["config"].get(k)) for r in runs}) > 1] or KEYS[:3]
    rows = []
    for run in sorted(runs, key=lambda r: -max([a for _, a in test_points(r, "accuracy")] or [-1])):
        accs = [a for _, a in test_points(run, "accuracy")]
        rows.append("<tr><td>%s</td>%s<td>%s</td><td>%s</td><td>%s</td></tr>" % (
            esc(run["name"]), "".join("<td>%s</td>" % esc(run["config"].get(k, "")) for k in keys),
            "%.4f" % max(accs) if accs else "-", esc(run["results"].get("global_step", "-")),
            "%.0f" % run["results"]["elapsed_secs"] if "elapsed_secs" in run["results"] else "-"))
    return ('<h2>all runs</h2><div class="row">%s%s</div><table class="results"><tr><th>run</th>%s<th>best test accuracy</th><th>steps</th><th>secs</th></tr>%s</table>'
            % (line_chart(acc, "test accuracy", "global step", "accuracy", "overlay-accuracy"),
               line_chart(loss, "test loss", "global step", "loss", "overlay-loss"),
               "".join("<th>%s</th>" % esc(k) for k in keys), "".join(rows)))


def page(runs):
    body = [comparison(runs)] if len(runs) > 1 else []
    body += [run_section(run, i) for i, run in enumerate(runs)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>pstrain report</title>'
            '<style>%s</style></head><body><h1>pstrain report: %s</h1>\n%s\n</body></html>\n'
            % (CSS, esc(", ".join(r["name"] for r in runs)), "\n".join(body)))


def main(argv):
    ap = argparse.ArgumentParser(prog="pstrain report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    ap.add_argument("--out", help="the HTML file (MODEL_DIR/report.html for one, ./report.html for several)")
    ap.add_argument("--runlogs", help="the runlogs of the cluster (one MODEL_DIR only)")
    a = ap.parse_args(argv)
    for d in a.model_dirs:
        if not os.path.isdir(d):
            print("report: %s is not a folder" % d, file=sys.stderr)
            return 2
        if not os.path.exists(os.path.join(d, "eval_history.jsonl")) and not os.path.exists(os.path.join(d, "eval_results.json")):
            print("report: %s holds no evaluation (eval_history.jsonl, eval_results.json)" % d, file=sys.stderr)
            return 2
    if a.runlogs and len(a.model_dirs) > 1:
        print("report: --runlogs goes with one MODEL_DIR", file=sys.stderr)
        return 2
    runs = [load_run(d, a.runlogs) for d in a.model_dirs]
    out = a.out or (os.path.join(a.model_dirs[0], "report.html") if len(runs) == 1 else "report.html")
    with open(out + ".tmp", "w") as f:
        f.write(page(runs))
    os.replace(out + ".tmp", out)
    print("report: %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

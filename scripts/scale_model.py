#!/usr/bin/env python3
"""A cost model of pstrain's async parameter-server training (docs/scaling.md).

One worker's step takes t_w = max(C, X) + (1 - overlap) * min(C, X), where C
is its compute time and X = 2 * M / B + 2 * RTT + W + U / P its pull and push:
M bytes each way over its own NIC (B bytes/s), two round trips, its own CPU
for them (W per step) and the PS's (U per step in all, spread over P PS).
N workers then want N / t_w steps/s; the cluster gives at most
  - B * P / M       steps/s: each PS's NIC carries M / P each way per step
                    (placement balances the partitions by bytes);
  - P * K' / U      steps/s: the PS's CPU, U CPU-seconds per step in all
                    (measured by scripts/bench_scale.sh), over P PS of K cores
                    each, of which a PS uses K' = 1 / (s + (1 - s) / (K * e))
                    (Amdahl; K' = 1 for K = 1): s the share of its CPU that
                    stays on one thread (the handler outside the split apply,
                    lane 0's accepts), e what a core gives when the work is
                    spread (thread hand-offs and cache misses; both measured,
                    docs/scaling.md);
  - cores / (U + W) steps/s, only where every machine shares one CPU (the
                    emulation): W is the workers' CPU per step.
So the step time is T = max(t_w, N*M/(P*B), N*U/(P*K')) and the efficiency
against linear E = t_w / T (against the compute alone: C / T). In t_w the
PS's share of a worker's step is U/(P*K') too.

  scale_model.py                        # projections: CNN and 10x CNN, 8..256 workers, 1..16 PS
  scale_model.py --compute-ms 1.0       # another GPU step time
  scale_model.py --ps-cores 4            # the tables with 4 cores per PS
  scale_model.py --check ROWS.tsv       # against scripts/bench_scale.sh --out ROWS.tsv
"""
import argparse
import math
import sys

CNN_PARAMS = 1625866  # `pstrain summary --model cnn`
MLP_PARAMS = 118282  # `pstrain summary --model mlp`
MODELS = {"cnn": CNN_PARAMS, "cnn10x": 10 * CNN_PARAMS, "mlp": MLP_PARAMS}


def worker_time(compute_s, xfer_s, overlap):
    """One worker's step: compute and its own transfer, `overlap` of the shorter hidden."""
    return max(compute_s, xfer_s) + (1.0 - overlap) * min(compute_s, xfer_s)


def effective_cores(k, serial, core_eff):
    """What K cores give one PS, as a multiple of one core (Amdahl, each core at core_eff)."""
    if k <= 1:
        return k
    return 1.0 / (serial + (1.0 - serial) / (k * core_eff))


def step_rate(n, nps, model_bytes, gbit, compute_s, ps_cpu_s, overlap, ps_cores, rtt_s,
              worker_cpu_s, shared_cores=0.0):
    """Global steps/s of n async workers against nps PS, which bound holds, and t_w.
    ps_cores: the effective cores of one PS (effective_cores)."""
    bw = gbit * 1e9 / 8.0
    xfer = 2.0 * model_bytes / bw + 2.0 * rtt_s + worker_cpu_s + ps_cpu_s / (nps * ps_cores)
    t_w = worker_time(compute_s, xfer, overlap)
    bounds = {"workers": n / t_w, "ps-nic": bw * nps / model_bytes}
    if ps_cpu_s > 0:
        bounds["ps-cpu"] = nps * ps_cores / ps_cpu_s
    if shared_cores > 0 and ps_cpu_s + worker_cpu_s > 0:
        bounds["host-cpu"] = shared_cores / (ps_cpu_s + worker_cpu_s)
    which = min(bounds, key=bounds.get)
    return bounds[which], which, t_w


def efficiency(n, nps, a, params, k=None):
    """Efficiency against linear for one configuration of the projection
    (k cores per PS; None: --ps-cores)."""
    mbytes = params * a.wire_bytes
    fp32_mb = params * 4.0 / 1e6
    compute_ms = a.compute_ms * (a.big_compute if params > CNN_PARAMS else 1.0)
    cores = effective_cores(a.ps_cores if k is None else k, a.ps_serial, a.ps_core_eff)
    rate, which, t_w = step_rate(n, nps, mbytes, a.gbit_now, compute_ms * 1e-3,
                                 a.ps_ms_per_mb * 1e-3 * fp32_mb, a.overlap, cores,
                                 a.rtt_us * 1e-6, a.worker_ms_per_mb * 1e-3 * fp32_mb)
    return rate * t_w / n, rate * compute_ms * 1e-3 / n, which


def pick(n, a, params, ps_counts, core_counts):
    """The PS count and cores per PS within 1% of the best efficiency with
    the fewest PS cores in all (then the fewest PS)."""
    effs = [(efficiency(n, p, a, params, k)[0], p, k) for p in ps_counts for k in core_counts]
    best = max(e for e, _, _ in effs)
    return min(((p * k, p, k) for e, p, k in effs if e >= best - 0.01))[1:]


def grid(a, model, n, gbit, ps_counts, core_counts):
    """n workers at gbit: efficiency / GPU share for every PS count and cores per PS."""
    params = MODELS[model]
    a.gbit_now = gbit
    print("\n## %s, %d workers, %d Gbit/s: efficiency against linear / share of time the GPUs "
          "compute (the bound that holds), by cores per PS (K) and PS count" % (model, n, gbit))
    print("      K" + "".join("%20s" % ("%d PS" % p) for p in ps_counts))
    for k in core_counts:
        cells = []
        for p in ps_counts:
            e, g, which = efficiency(n, p, a, params, k)
            cells.append("%20s" % ("%.2f/%.2f %s" % (e, g, which)))
        print("%7d %s" % (k, "".join(cells)))
    p, k = pick(n, a, params, ps_counts, core_counts)
    e, g, which = efficiency(n, p, a, params, k)
    print("picked: %d PS of %d cores: %.2f/%.2f (%s)" % (p, k, e, g, which))


def project(a):
    workers = [8, 16, 32, 64, 128, 256]
    ps_counts = [1, 2, 4, 8, 16]
    print("# compute %.2f ms/step (the 10x model: %gx); CPU-ms per MB of model per step: PS %.2f, worker %.2f; "
          "%g cores per PS (serial share %.2f, %.2f of a core each when spread), overlap %.2f, RTT %g us, "
          "%g bytes per parameter on the wire"
          % (a.compute_ms, a.big_compute, a.ps_ms_per_mb, a.worker_ms_per_mb, a.ps_cores, a.ps_serial,
             a.ps_core_eff, a.overlap, a.rtt_us, a.wire_bytes))
    for model in ("cnn", "cnn10x"):
        grid(a, model, 64, 25, ps_counts, a.core_counts)
    for model in ("cnn", "cnn10x"):
        params = MODELS[model]
        for gbit in (10, 25, 100):
            a.gbit_now = gbit
            print("\n## %s (%d parameters, %.1f MB each way per step), %d Gbit/s: efficiency "
                  "against linear / share of time the GPUs compute (the bound that holds)"
                  % (model, params, params * a.wire_bytes / 1e6, gbit))
            print("workers" + "".join("%20s" % ("%d PS" % p) for p in ps_counts)
                  + "   picked (PS x cores, of K in %s)" % ",".join("%g" % k for k in a.core_counts))
            for n in workers:
                cells = []
                for p in ps_counts:
                    e, g, which = efficiency(n, p, a, params)
                    cells.append("%20s" % ("%.2f/%.2f %s" % (e, g, which)))
                p, k = pick(n, a, params, ps_counts, a.core_counts)
                e, g, _ = efficiency(n, p, a, params, k)
                print("%7d %s   %d x %d: %.2f/%.2f" % (n, "".join(cells), p, k, e, g))


def read_rows(path):
    """The rows of scripts/bench_scale.sh --out: model, step_ms, transport, then the table."""
    rows = []
    for line in open(path):
        f = line.split()
        if len(f) < 17 or not f[3].isdigit() or "timed" in f or "no" in f or "DIED:" in f:
            continue
        rows.append({"model": f[0], "step_ms": float(f[1]), "workers": int(f[3]), "ps": int(f[4]),
                     "gbit": float(f[5]), "delay_us": float(f[6]), "gsteps": float(f[7]),
                     "mb_step": float(f[11]), "ps_ms": float(f[12]), "w_ms": float(f[13])})
    return rows


def check(a):
    """Predicted against measured steps/s for every emulated row. The PS and
    worker CPU per step are the medians over the rows of the same model and
    PS count (the model's inputs), not each row's own figures."""
    rows = read_rows(a.check)
    if not rows:
        sys.exit("scale_model: %s holds no measured rows" % a.check)
    errs, light = [], []
    print("model workers ps Gbit/s measured predicted error bound cores_used")
    for r in rows:
        same = [x for x in rows if x["model"] == r["model"] and x["ps"] == r["ps"]]
        ps_ms = sorted(x["ps_ms"] for x in same)[len(same) // 2]
        w_ms = sorted(x["w_ms"] for x in same)[len(same) // 2]
        cores = effective_cores(a.ps_cores, a.ps_serial, a.ps_core_eff)
        rate, which, _ = step_rate(r["workers"], r["ps"], MODELS[r["model"]] * 4.0, r["gbit"],
                                   r["step_ms"] * 1e-3, ps_ms * 1e-3, a.overlap, cores,
                                   2 * r["delay_us"] * 1e-6, w_ms * 1e-3, a.shared_cores)
        err = (rate - r["gsteps"]) / r["gsteps"]
        # The CPU the run's own processes used: on a machine shared with other
        # work, rows that needed much of it got less than --shared-cores.
        used = r["gsteps"] * (r["ps_ms"] + r["w_ms"]) * 1e-3
        errs.append(abs(err))
        if used < a.light_cores:
            light.append(abs(err))
        print("%5s %7d %2d %6g %8.1f %9.1f %+6.1f%% %8s %5.2f" % (
            r["model"], r["workers"], r["ps"], r["gbit"], r["gsteps"], rate, 100 * err, which, used))
    summary("", errs)
    summary(" using under %g cores" % a.light_cores, light)


def summary(what, errs):
    if errs:
        print("# %d rows%s: median |error| %.1f%%, worst %.1f%%"
              % (len(errs), what, 100 * sorted(errs)[len(errs) // 2], 100 * max(errs)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compute-ms", type=float, default=2.0,
                   help="a GPU worker's compute per step (default 2.0: the CNN at batch 256 on an "
                        "H100-class GPU, an assumption; docs/scaling.md says why)")
    p.add_argument("--big-compute", type=float, default=10.0,
                   help="the 10x model's compute per step over the CNN's (default 10: FLOPs grow "
                        "with the parameters, a wider model)")
    p.add_argument("--ps-ms-per-mb", type=float, default=1.1,
                   help="PS CPU-ms per MB of fp32 model per step (pull + push + update), from "
                        "bench_scale.sh's PS_ms/step over the model's MB (default: measured here, docs/scaling.md)")
    p.add_argument("--worker-ms-per-mb", type=float, default=1.3,
                   help="a worker's CPU-ms per MB of fp32 model per step for its pull and push "
                        "(bench_scale.sh's W_ms/step over the model's MB; default: measured here)")
    p.add_argument("--ps-cores", type=float, default=1.0,
                   help="K, the cores of one PS (rpc.stream_threads and train.apply_threads) for the "
                        "full tables and --check (default 1)")
    p.add_argument("--core-counts", default="1,2,4,8",
                   help="the K the 64-worker grid shows and the 'picked' column chooses from")
    p.add_argument("--ps-serial", type=float, default=0.08,
                   help="share of a PS's CPU that stays on one thread whatever K (default 0.08: "
                        "measured here, per-thread CPU of a K=2 PS, docs/scaling.md)")
    p.add_argument("--ps-core-eff", type=float, default=0.92,
                   help="what each core gives when a PS's work is spread over K > 1 (default 0.92: "
                        "the PS's CPU per step at K=1 over that at K=2, measured here)")
    p.add_argument("--overlap", type=float, default=0.0,
                   help="fraction of a worker's transfer hidden behind its compute: 0 serial "
                        "(pstrain's sync and default CNN loop hide some), 1 full overlap")
    p.add_argument("--rtt-us", type=float, default=100.0, help="round trip between two machines")
    p.add_argument("--wire-bytes", type=float, default=4.0,
                   help="bytes per parameter on the wire: 4 fp32, 2 bf16")
    p.add_argument("--check", metavar="ROWS.tsv",
                   help="compare with scripts/bench_scale.sh --out ROWS.tsv instead of projecting")
    p.add_argument("--shared-cores", type=float, default=2.0,
                   help="--check: the CPUs every emulated machine shared (default 2)")
    p.add_argument("--light-cores", type=float, default=0.5,
                   help="--check: also sum up the rows whose processes used fewer cores than this")
    a = p.parse_args()
    if a.worker_ms_per_mb < 0:
        p.error("--worker-ms-per-mb must be >= 0")
    try:
        a.core_counts = [float(k) for k in a.core_counts.split(",")]
    except ValueError:
        p.error("--core-counts must be numbers separated by commas")
    if not a.core_counts or min(a.core_counts) < 1:
        p.error("--core-counts must be >= 1 each")
    if not 0 <= a.ps_serial <= 1:
        p.error("--ps-serial must be in [0, 1]")
    if not 0 < a.ps_core_eff <= 1:
        p.error("--ps-core-eff must be in (0, 1]")
    for name in ("compute_ms", "ps_ms_per_mb", "ps_cores", "wire_bytes"):
        if not getattr(a, name) > 0:
            p.error("--%s must be > 0" % name.replace("_", "-"))
    if not 0 <= a.overlap <= 1:
        p.error("--overlap must be in [0, 1]")
    if a.check:
        check(a)
    else:
        project(a)


if __name__ == "__main__":
    main()

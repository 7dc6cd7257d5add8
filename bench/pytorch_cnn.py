"""The anchor: the same Keras MNIST CNN trained by PyTorch (Debian's
python3-torch) on data already in memory, batch 64, SGD lr 0.01 momentum 0.9.
On the CPU it prints one line per thread count, in pstrain-bench-compute's
format:
    pytorch threads=N images_per_sec=X gflops=Y images_per_cpu_sec=Z
Run it with GLIBC_TUNABLES raising the mmap and trim thresholds and
OPENBLAS_NUM_THREADS=1 (scripts/bench_compute.sh does), PyTorch's best here.
With --device cuda the model and batch live on the GPU and it prints
    pytorch device=cuda batch=B images_per_sec=X gflops=Y
with PyTorch's defaults (TF32 convolutions, cuDNN's heuristics), then a
line with cudnn.benchmark on (cuDNN timing its algorithms, as pstrain
does), marked benchmark=on.
With --infer it times inference instead (eval mode, no autograd, batch
1000 unless --batch says otherwise), as pstrain-bench-compute --infer:
    pytorch infer threads=N batch=B images_per_sec=X images_per_cpu_sec=Z
--about prints one line of what this PyTorch runs on: version, the CPU
capability its kernels were dispatched for, BLAS, oneDNN and its ISA cap."""
import argparse
import statistics
import time

import torch
import torch.nn as nn

TRAIN_MFLOP_PER_IMAGE = 97.25


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(12544, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 10))


def run(threads, batch, steps, reps, device="cpu"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = cnn().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    for _ in range(3 if device == "cpu" else 20):
        step()
    sync()
    rates, cpu_rates = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        sync()
        rates.append(steps * batch / (time.perf_counter() - t0))
        cpu_rates.append(steps * batch / (time.process_time() - c0))
    return statistics.median(rates), statistics.median(cpu_rates)


def run_infer(threads, batch, reps):
    """Median images/s of forward passes on one batch, as `pstrain evaluate`."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = cnn().eval()
    x = torch.rand(batch, 1, 28, 28)
    rates, cpu_rates = [], []
    with torch.no_grad():
        model(x)
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            rates.append(batch / (time.perf_counter() - t0))
            cpu_rates.append(batch / (time.process_time() - c0))
    return statistics.median(rates), statistics.median(cpu_rates)


def about():
    """One line: version, kernels' CPU capability, BLAS and oneDNN."""
    cfg = torch.__config__.show()
    cpu = getattr(torch.backends, "cpu", None)  # 2.x only
    cap = cpu.get_cpu_capability() if cpu else next(
        (ln.split(":")[1].strip() for ln in cfg.splitlines() if "CPU capability" in ln), "?")
    blas = next((w.split("=")[1].rstrip(",") for w in cfg.split() if w.startswith("BLAS_INFO=")),
                "?")
    dnn = next((ln.strip(" -") for ln in cfg.splitlines() if "MKL-DNN" in ln or "oneDNN" in ln),
               "no oneDNN")
    import os
    print("# pytorch %s capability=%s blas=%s mkldnn=%s (%s) ONEDNN_MAX_CPU_ISA=%s" %
          (torch.__version__, cap, blas, torch.backends.mkldnn.is_available(), dnn,
           os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")), flush=True)


def main_cuda(a):
    steps = a.steps if a.steps else 200
    print("# pytorch %s device=cuda %s batch=%d (median of %d x %d steps)" %
          (torch.__version__, torch.cuda.get_device_name(0), a.batch, a.reps, steps), flush=True)
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        ips, _ = run(1, a.batch, steps, a.reps, "cuda")
        print("pytorch device=cuda batch=%d images_per_sec=%.0f gflops=%.1f%s" %
              (a.batch, ips, ips * TRAIN_MFLOP_PER_IMAGE / 1e3,
               " benchmark=on" if bench else ""), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=0, help="default: 40 on the CPU, 200 on a GPU")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--infer", action="store_true")
    p.add_argument("--about", action="store_true")
    a = p.parse_args()
    if a.about:
        about()
        return
    if a.infer:
        batch = a.batch if a.batch != 64 else 1000
        for t in a.threads.split(","):
            ips, cpu_ips = run_infer(int(t), batch, a.reps)
            print("pytorch infer threads=%s batch=%d images_per_sec=%.0f images_per_cpu_sec=%.0f" %
                  (t, batch, ips, cpu_ips), flush=True)
        return
    if a.device == "cuda":
        main_cuda(a)
        return
    a.steps = a.steps if a.steps else 40
    print("# pytorch %s batch=%d (median of %d x %d steps)" % (torch.__version__, a.batch, a.reps,
                                                              a.steps), flush=True)
    for t in a.threads.split(","):
        ips, cpu_ips = run(int(t), a.batch, a.steps, a.reps)
        print("pytorch threads=%s images_per_sec=%.0f gflops=%.1f images_per_cpu_sec=%.0f" %
              (t, ips, ips * TRAIN_MFLOP_PER_IMAGE / 1e3, cpu_ips), flush=True)


if __name__ == "__main__":
    main()

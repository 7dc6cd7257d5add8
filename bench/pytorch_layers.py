"""PyTorch's side of pstrain-bench-compute --layers: the same CNN's layers
timed op by op on one thread at the same batch, in the same line format:
    pytorch layer=NAME op=OP ms=X [gflops=Y]
forward is the layer's module (conv or linear, bias included in PyTorch);
bias_act is the ReLU after it and bias_act_grad its backward; backward_data
and backward_filter are torch.autograd.grad of the layer's output w.r.t.
its input and its weights (with the bias). Times are the thread's CPU time
(with one thread PyTorch computes on the caller's), as pstrain's. Layer names are Keras's, as
pstrain names them. Then the profiler's table of one whole training step
(self CPU time per aten op), which is where PyTorch itself says its time
goes. Run with the environment bench_compute.sh gives PyTorch."""
import argparse
import statistics
import time

import torch
import torch.nn as nn

from pytorch_cnn import cnn

# Keras's names for the Sequential's modules: (index, name, relu index or None)
LAYERS = [(0, "conv2d", 1), (2, "conv2d_1", 3), (4, "max_pooling2d", None),
          (5, "dropout", None), (7, "dense", 8), (9, "dropout_1", None), (10, "dense_1", None)]


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times) * 1e3


def flops(mod, x, y):
    """Multiply-adds x 2 of a conv or linear forward (the same for each backward)."""
    if isinstance(mod, nn.Conv2d):
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels
        return 2.0 * y.numel() * k
    if isinstance(mod, nn.Linear):
        return 2.0 * x.shape[0] * mod.in_features * mod.out_features
    return 0.0


def line(name, op, ms, fl=0.0):
    extra = " gflops=%.1f" % (fl / ms / 1e6) if fl else ""
    print("pytorch layer=%s op=%s ms=%.3f%s" % (name, op, ms, extra), flush=True)


def bench_layer(model, idx, name, relu_idx, x, reps):
    """Times one layer's ops on input x; returns its output (detached) and ms total."""
    mod = model[idx]
    total = 0.0
    xg = x.detach().requires_grad_(idx > 0)
    y = mod(xg)
    fl = flops(mod, xg, y)
    ms = median_ms(lambda: mod(xg), reps)
    line(name, "forward", ms, fl)
    total += ms
    if relu_idx is not None:
        yr = y.detach().requires_grad_(True)
        act = model[relu_idx]
        ms = median_ms(lambda: act(yr), reps)
        line(name, "bias_act", ms)
        out = act(yr)
        g = torch.randn_like(out)
        ms2 = median_ms(lambda: torch.autograd.grad(out, yr, g, retain_graph=True), reps)
        line(name, "bias_act_grad", ms2)
        total += ms + ms2
    dy = torch.randn_like(y)
    if idx > 0:
        ms = median_ms(lambda: torch.autograd.grad(y, xg, dy, retain_graph=True), reps)
        line(name, "backward_data", ms, fl)
        total += ms
    params = list(mod.parameters())
    if params:
        ms = median_ms(lambda: torch.autograd.grad(y, params, dy, retain_graph=True), reps)
        line(name, "backward_filter", ms, fl)
        total += ms
    out = model[relu_idx](y) if relu_idx is not None else y
    return out.detach(), total


def profile_step(model, x, labels, rows):
    """The profiler's self-CPU table of one training step (after two warm-ups)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), labels).backward()
        opt.step()

    step()
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print("# pytorch profiler, one training step, self CPU time per op:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--profile-rows", type=int, default=14)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = cnn()
    model.train()
    print("# pytorch %s per-layer ops, batch %d on one thread, median of %d runs each "
          "(thread CPU time)" %
          (torch.__version__, a.batch, a.reps), flush=True)
    x = torch.rand(a.batch, 1, 28, 28)
    total = 0.0
    for idx, name, relu_idx in LAYERS:
        if name == "dense":
            x = x.flatten(1)
        x, ms = bench_layer(model, idx, name, relu_idx, x, a.reps)
        total += ms
    print("pytorch layer=all op=sum ms=%.3f images_per_sec=%.0f" % (total, a.batch / total * 1e3))
    labels = torch.randint(0, 10, (a.batch,))
    profile_step(model, torch.rand(a.batch, 1, 28, 28), labels, a.profile_rows)


if __name__ == "__main__":
    main()

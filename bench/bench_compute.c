/* Training throughput of one process on data already in memory: forward,
 * backward and the optimizer update, as the standalone worker runs them.
 * On the CPU it prints one line per thread count:
 *   threads=N images_per_sec=X gflops=Y images_per_cpu_sec=Z
 * With --device gpu, two lines: the standalone worker's step (the store on
 * the GPU, the batch copied beside the step) and a cluster worker's
 * gradient (weights up, gradients down, every step):
 *   device=gpu batch=B mode=step images_per_sec=X gflops=Y
 *   device=gpu batch=B mode=gradient images_per_sec=X gflops=Y
 * --infer times `pstrain evaluate`'s path instead (trainer_evaluate on
 * one batch of bytes, batch 1000 unless --batch says otherwise):
 *   infer threads=N batch=B images_per_sec=X images_per_cpu_sec=Z
 * --layers prints each layer's ops on one thread instead (bench_layers.c);
 * --about only the device line (the CPU's kernels). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/data/dataset.h"
#include "common/model/model.h"
#include "common/train/store.h"
#include "common/train/trainer.h"
#include "common/base/util.h"

#include "bench/bench_layers.h"

typedef struct {
    const char *model;
    size_t batch, steps, reps;
    const char *threads;
    const char *data_dir;
    const char *device;
    bool infer, layers, about;
} bench_opts_t;

static int parse_opts(bench_opts_t *o, int argc, char **argv) {
    *o = (bench_opts_t){.model = "cnn",
                        .batch = 0, /* 64, or 1000 with --infer */
                        .steps = 0,
                        .reps = 5,
                        .threads = "1,2",
                        .data_dir = "/usr/share/datasets/fashion-mnist",
                        .device = "cpu"};
    /* Every option takes a value: two arguments a turn (clang's
     * -Wfor-loop-analysis rejects a second increment in the body). */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t x;
        if (!strcmp(a, "--infer") || !strcmp(a, "--layers") || !strcmp(a, "--about")) {
            *(a[2] == 'i' ? &o->infer : a[2] == 'l' ? &o->layers : &o->about) = true;
            i--; /* a flag: no value */
        } else if (!strcmp(a, "--model") && v)
            o->model = v;
        else if (!strcmp(a, "--threads") && v)
            o->threads = v;
        else if (!strcmp(a, "--data") && v)
            o->data_dir = v;
        else if (!strcmp(a, "--device") && v)
            o->device = v;
        else if ((!strcmp(a, "--batch") || !strcmp(a, "--steps") || !strcmp(a, "--reps")) && v &&
                 ps_parse_i64(v, &x) == 0 && x > 0)
            *(a[2] == 'b' ? &o->batch : a[2] == 's' ? &o->steps : &o->reps) = (size_t)x;
        else {
            fprintf(stderr, "usage: pstrain-bench-compute [--model NAME|FILE] [--batch N] "
                            "[--threads 1,2] [--steps N] [--reps N] [--data DIR] "
                            "[--device cpu|gpu|auto] [--infer] [--layers] [--about]\n");
            return -1;
        }
    }
    if (!o->batch)
        o->batch = o->infer ? 1000 : 64;
    return 0;
}

/* A GPU step takes a millisecond or two: more of them make a rep. */
static size_t default_steps(bool gpu) {
    return gpu ? 200 : 40;
}

/* Images of the real data set (training split) when it is there, else
 * uniform noise. */
static void fill_batch(const bench_opts_t *o, size_t in_size, float *x, int32_t *y) {
    dataset_t d;
    char err[PS_ERRLEN];
    if (dataset_load_split(&d, o->data_dir, true, err, sizeof err) == 0 &&
        d.example_size == in_size && d.n >= o->batch) {
        for (size_t i = 0; i < o->batch * in_size; i++)
            x[i] = (float)d.images[i] / 255.0f;
        for (size_t i = 0; i < o->batch; i++)
            y[i] = d.labels[i];
        dataset_free(&d);
        return;
    }
    for (size_t i = 0; i < o->batch * in_size; i++)
        x[i] = rng_uniform(1, i);
    for (size_t i = 0; i < o->batch; i++)
        y[i] = (int32_t)(rng_mix(2, i) % 10);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The trainer's prefetch hook: the bench's one batch again, staged as the
 * standalone worker stages its next one. */
typedef struct {
    trainer_t *t;
    const float *x;
    const int32_t *y;
    size_t n;
} restage_t;

static void restage(void *arg) {
    restage_t *r = arg;
    trainer_stage(r->t, r->x, r->y, r->n);
}

/* One step of the mode measured: the standalone worker's (gradient and
 * update, the store attached) or a cluster worker's (the gradient at
 * weights pulled into host memory, brought back to host memory). */
typedef struct {
    trainer_t *t;
    bool gradient_only;
    float *params, *grads; /* the backend's host memory, as a worker has them */
} bench_step_t;

static void one_step(const bench_step_t *b, const float *x, const int32_t *y, size_t n,
                     uint64_t seed) {
    step_metrics_t sm;
    if (b->gradient_only)
        trainer_gradient(b->t, b->params, x, y, n, seed, b->grads, &sm);
    else
        trainer_step(b->t, x, y, n, seed, &sm);
}

/* Seconds of CPU the process has used: on a machine shared with other
 * jobs, images per CPU-second at one thread say what the step costs where
 * wall time also says how often the job got the core. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Median over reps of the images/s of `steps` training steps; *per_cpu_s
 * the median of images per CPU-second. */
static double run(const model_t *m, const bench_opts_t *o, const backend_t *be, size_t threads,
                  bool gradient_only, const float *x, const int32_t *y, double *per_cpu_s) {
    optim_cfg_t oc;
    optim_defaults(&oc, OPTIM_SGD);
    oc.momentum = 0.9;
    store_t s;
    store_init_full(&s, m, &oc, 42);
    trainer_t *t = trainer_create(m, be, threads, o->batch);
    trainer_attach_store(t, &s);
    restage_t rs = {t, x, y, o->batch};
    trainer_set_prefetch(t, restage, &rs);
    size_t bytes = m->nparams * sizeof(float);
    bench_step_t b = {t, gradient_only, be->host_alloc(bytes), be->host_alloc(bytes)};
    if (!b.params || !b.grads) {
        fprintf(stderr, "pstrain-bench-compute: out of host memory\n");
        exit(2);
    }
    memcpy(b.params, s.w, bytes);
    double *rates = xcalloc(o->reps, sizeof *rates), *cpu_rates = xcalloc(o->reps, sizeof *rates);
    size_t warmup = be->host_memory ? 3 : 20; /* first touches, BLAS buffers, cuDNN plans */
    for (size_t i = 0; i < warmup; i++)
        one_step(&b, x, y, o->batch, i);
    for (size_t r = 0; r < o->reps; r++) {
        double t0 = ps_now(), c0 = cpu_now();
        for (size_t i = 0; i < o->steps; i++)
            one_step(&b, x, y, o->batch, i);
        rates[r] = (double)(o->steps * o->batch) / (ps_now() - t0);
        cpu_rates[r] = (double)(o->steps * o->batch) / (cpu_now() - c0);
    }
    qsort(rates, o->reps, sizeof *rates, cmp_double);
    qsort(cpu_rates, o->reps, sizeof *rates, cmp_double);
    double median = rates[o->reps / 2];
    *per_cpu_s = cpu_rates[o->reps / 2];
    free(rates);
    free(cpu_rates);
    be->host_free(b.params);
    be->host_free(b.grads);
    trainer_free(t);
    store_free(&s);
    return median;
}

/* One batch of bytes for trainer_evaluate: the test split's first images
 * when they fit, else noise. */
static void fill_bytes(const bench_opts_t *o, const model_t *m, dataset_t *d) {
    char err[PS_ERRLEN];
    size_t in_size = m->input[0] * m->input[1] * m->input[2];
    if (dataset_load_split(d, o->data_dir, false, err, sizeof err) == 0 &&
        d->example_size == in_size && d->n >= o->batch) {
        d->n = o->batch;
        return;
    }
    *d = (dataset_t){.n = o->batch,
                     .h = m->input[0],
                     .w = m->input[1],
                     .c = m->input[2],
                     .example_size = in_size,
                     .nclasses = m->nclasses};
    d->images = xmalloc(o->batch * in_size);
    d->labels = xmalloc(o->batch);
    for (size_t i = 0; i < o->batch * in_size; i++)
        d->images[i] = (uint8_t)(rng_mix(3, i) & 0xff);
    for (size_t i = 0; i < o->batch; i++)
        d->labels[i] = (uint8_t)(rng_mix(4, i) % m->nclasses);
}

/* Median images/s of trainer_evaluate over one batch: the path `pstrain
 * evaluate` and the master's checkpoint evaluation run; *per_cpu_s the
 * median of images per CPU-second. */
static double run_infer(const model_t *m, const bench_opts_t *o, const backend_t *be,
                        size_t threads, const dataset_t *d, double *per_cpu_s) {
    float *params = xmalloc(m->nparams * sizeof(float));
    model_init_params(m, 42, params);
    trainer_t *t = trainer_create(m, be, threads, o->batch);
    double *rates = xcalloc(o->reps, sizeof *rates), *cpu_rates = xcalloc(o->reps, sizeof *rates);
    eval_metrics_t e;
    trainer_evaluate(t, params, d, o->batch, &e); /* first touches */
    eval_metrics_free(&e);
    for (size_t r = 0; r < o->reps; r++) {
        double t0 = ps_now(), c0 = cpu_now();
        trainer_evaluate(t, params, d, o->batch, &e);
        rates[r] = (double)d->n / (ps_now() - t0);
        cpu_rates[r] = (double)d->n / (cpu_now() - c0);
        eval_metrics_free(&e);
    }
    qsort(rates, o->reps, sizeof *rates, cmp_double);
    qsort(cpu_rates, o->reps, sizeof *rates, cmp_double);
    double median = rates[o->reps / 2];
    *per_cpu_s = cpu_rates[o->reps / 2];
    free(rates);
    free(cpu_rates);
    trainer_free(t);
    free(params);
    return median;
}

/* Parses one thread count of --threads; 0 when it is not one. */
static size_t parse_threads(const char *tok) {
    int64_t th;
    if (ps_parse_i64(tok, &th) || th < 1 || th > 256) {
        fprintf(stderr, "pstrain-bench-compute: bad thread count \"%s\"\n", tok);
        return 0;
    }
    return (size_t)th;
}

/* --infer: one line per thread count (one thread on a GPU). */
static int run_cpu_infer(const model_t *m, const bench_opts_t *o, const backend_t *be) {
    dataset_t d;
    fill_bytes(o, m, &d);
    char *list = xstrdup(o->threads);
    int rc = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        size_t th = parse_threads(tok);
        if (!th) {
            rc = 2;
            break;
        }
        double cpu_ips, ips = run_infer(m, o, be, th, &d, &cpu_ips);
        printf("infer threads=%zu batch=%zu images_per_sec=%.0f images_per_cpu_sec=%.0f\n", th,
               o->batch, ips, cpu_ips);
        fflush(stdout);
    }
    free(list);
    dataset_free(&d);
    return rc;
}

/* --device gpu (or auto finding one): both modes at the one batch size. */
static void run_gpu(const model_t *m, const bench_opts_t *o, const backend_t *be, const float *x,
                    const int32_t *y, double flops) {
    for (int mode = 0; mode < 2; mode++) {
        double cpu_ips, ips = run(m, o, be, 1, mode == 1, x, y, &cpu_ips);
        printf("device=gpu batch=%zu mode=%s images_per_sec=%.0f gflops=%.1f\n", o->batch,
               mode ? "gradient" : "step", ips, ips * flops / 1e9);
        fflush(stdout);
    }
}

/* The CPU: one line per thread count. */
static int run_cpu(const model_t *m, const bench_opts_t *o, const float *x, const int32_t *y,
                   double flops) {
    char *list = xstrdup(o->threads);
    int rc = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        size_t th = parse_threads(tok);
        if (!th) {
            rc = 2;
            break;
        }
        double cpu_ips, ips = run(m, o, cpu_backend(), th, false, x, y, &cpu_ips);
        printf("threads=%zu images_per_sec=%.0f gflops=%.1f images_per_cpu_sec=%.0f\n", th, ips,
               ips * flops / 1e9, cpu_ips);
        fflush(stdout);
    }
    free(list);
    return rc;
}

int main(int argc, char **argv) {
    bench_opts_t o;
    if (parse_opts(&o, argc, argv))
        return 2;
    cpu_backend_init();
    model_t m;
    char err[PS_ERRLEN];
    backend_choice_t dev;
    if (backend_open(o.device, &dev, err, sizeof err)) {
        fprintf(stderr, "pstrain-bench-compute: %s\n", err);
        return 69; /* EXIT_NODEVICE */
    }
    if (o.about) { /* the device and kernels, for bench_compute.sh's header */
        printf("device=\"%s\"\n", dev.about);
        return 0;
    }
    if (dev.why_cpu[0])
        fprintf(stderr, "pstrain-bench-compute: device=auto: no usable GPU (%s); using the CPU\n",
                dev.why_cpu);
    if (!o.steps)
        o.steps = default_steps(dev.gpu);
    if (model_load(&m, o.model, err, sizeof err)) {
        fprintf(stderr, "pstrain-bench-compute: %s\n", err);
        return 2;
    }
    if (o.layers || o.infer) {
        int lrc =
            o.layers ? bench_layers(&m, dev.be, o.batch, o.reps) : run_cpu_infer(&m, &o, dev.be);
        model_free(&m);
        return lrc;
    }
    size_t in_size = m.input[0] * m.input[1] * m.input[2];
    /* The batch in the backend's host memory, as the loader gives it. */
    float *x = dev.be->host_alloc(o.batch * in_size * sizeof(float));
    int32_t *y = dev.be->host_alloc(o.batch * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "pstrain-bench-compute: out of host memory\n");
        return 2;
    }
    fill_batch(&o, in_size, x, y);
    double flops = model_train_flops(&m);
    printf("# model=%s batch=%zu train_mflop_per_image=%.2f device=\"%s\" steps=%zu reps=%zu "
           "(median)\n",
           o.model, o.batch, flops / 1e6, dev.about, o.steps, o.reps);
    fflush(stdout);
    int rc = 0;
    if (dev.gpu)
        run_gpu(&m, &o, dev.be, x, y, flops);
    else
        rc = run_cpu(&m, &o, x, y, flops);
    dev.be->host_free(x);
    dev.be->host_free(y);
    model_free(&m);
    return rc;
}

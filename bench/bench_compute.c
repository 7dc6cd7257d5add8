/* Training throughput of one process on data already in memory: forward,
 * backward and the optimizer update, as the standalone worker runs them.
 * Prints one line per thread count: threads=N images_per_sec=X gflops=Y. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dataset.h"
#include "common/model.h"
#include "common/store.h"
#include "common/trainer.h"
#include "common/util.h"

typedef struct {
    const char *model;
    size_t batch, steps, reps;
    const char *threads;
    const char *data_dir;
} bench_opts_t;

static int parse_opts(bench_opts_t *o, int argc, char **argv) {
    *o = (bench_opts_t){.model = "cnn",
                        .batch = 64,
                        .steps = 40,
                        .reps = 5,
                        .threads = "1,2",
                        .data_dir = "/usr/share/datasets/fashion-mnist"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t x;
        if (!strcmp(a, "--model") && v)
            o->model = v;
        else if (!strcmp(a, "--threads") && v)
            o->threads = v;
        else if (!strcmp(a, "--data") && v)
            o->data_dir = v;
        else if ((!strcmp(a, "--batch") || !strcmp(a, "--steps") || !strcmp(a, "--reps")) && v &&
                 ps_parse_i64(v, &x) == 0 && x > 0)
            *(a[2] == 'b' ? &o->batch : a[2] == 's' ? &o->steps : &o->reps) = (size_t)x;
        else {
            fprintf(stderr, "usage: pstrain-bench-compute [--model NAME|FILE] [--batch N] "
                            "[--threads 1,2] [--steps N] [--reps N] [--data DIR]\n");
            return -1;
        }
        i++;
    }
    return 0;
}

/* Images of the real data set when it is there, else uniform noise. */
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

/* Median over reps of the images/s of `steps` training steps. */
static double run(const model_t *m, const bench_opts_t *o, size_t threads, const float *x,
                  const int32_t *y) {
    optim_cfg_t oc;
    optim_defaults(&oc, OPTIM_SGD);
    oc.momentum = 0.9;
    store_t s;
    store_init_full(&s, m, &oc, 42);
    trainer_t *t = trainer_create(m, cpu_backend(), threads, o->batch);
    float *grads = xalloc_aligned(m->nparams * sizeof(float));
    step_metrics_t sm;
    double *rates = xcalloc(o->reps, sizeof *rates);
    for (size_t i = 0; i < 3; i++) { /* warm-up: first touches, BLAS buffers */
        trainer_gradient(t, s.w, x, y, o->batch, i, grads, &sm);
        store_apply(&s, grads);
    }
    for (size_t r = 0; r < o->reps; r++) {
        double t0 = ps_now();
        for (size_t i = 0; i < o->steps; i++) {
            trainer_gradient(t, s.w, x, y, o->batch, i, grads, &sm);
            store_apply(&s, grads);
        }
        rates[r] = (double)(o->steps * o->batch) / (ps_now() - t0);
    }
    qsort(rates, o->reps, sizeof *rates, cmp_double);
    double median = rates[o->reps / 2];
    free(rates);
    free(grads);
    trainer_free(t);
    store_free(&s);
    return median;
}

int main(int argc, char **argv) {
    bench_opts_t o;
    if (parse_opts(&o, argc, argv))
        return 2;
    cpu_backend_init();
    model_t m;
    char err[PS_ERRLEN];
    if (model_load(&m, o.model, err, sizeof err)) {
        fprintf(stderr, "pstrain-bench-compute: %s\n", err);
        return 2;
    }
    size_t in_size = m.input[0] * m.input[1] * m.input[2];
    float *x = xalloc_aligned(o.batch * in_size * sizeof(float));
    int32_t *y = xcalloc(o.batch, sizeof *y);
    fill_batch(&o, in_size, x, y);
    double flops = model_train_flops(&m);
    printf("# model=%s batch=%zu train_mflop_per_image=%.2f blas_core=%s steps=%zu reps=%zu "
           "(median)\n",
           o.model, o.batch, flops / 1e6, cpu_backend_blas_core(), o.steps, o.reps);
    fflush(stdout);
    char *list = xstrdup(o.threads);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int64_t th;
        if (ps_parse_i64(tok, &th) || th < 1 || th > 256) {
            fprintf(stderr, "pstrain-bench-compute: bad thread count \"%s\"\n", tok);
            return 2;
        }
        double ips = run(&m, &o, (size_t)th, x, y);
        printf("threads=%lld images_per_sec=%.0f gflops=%.1f\n", (long long)th, ips,
               ips * flops / 1e9);
        fflush(stdout);
    }
    free(list);
    free(x);
    free(y);
    model_free(&m);
    return 0;
}

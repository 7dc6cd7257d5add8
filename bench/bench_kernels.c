/* Times every CPU op on the shapes of the Keras MNIST CNN (one thread's half
 * of a batch of 64): median of several runs, GFLOP/s for the matrix ops.
 * Then whole training steps (forward and backward, op by op) on one thread
 * and on two threads at once, as the trainer runs half a batch of 64 each.
 * Usage: pstrain-bench-kernels [images (32)] [runs (21)] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/backend.h"

typedef struct {
    const backend_t *be;
    size_t runs;
} bench_t;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static float *random_floats(const backend_t *be, size_t n) {
    float *p = be->alloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory (%zu floats)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = rng_uniform(12345, i) - 0.5f;
    return p;
}

/* One op call, bound to its arguments. */
typedef struct {
    const backend_t *be;
    const conv2d_shape_t *conv;
    const pool2d_shape_t *pool;
    float *a, *b, *c, *d;
    void *ws;
    size_t n;
} args_t;

typedef void (*op_fn)(const args_t *);

/* Median seconds of one call, after one untimed warm-up call. */
static double time_op(const bench_t *b, op_fn fn, const args_t *a) {
    double t[101];
    size_t runs = b->runs < 101 ? b->runs : 101;
    fn(a);
    for (size_t i = 0; i < runs; i++) {
        double t0 = now_s();
        fn(a);
        t[i] = now_s() - t0;
    }
    qsort(t, runs, sizeof t[0], cmp_double);
    return t[runs / 2];
}

static void report(const char *name, double secs, double flops) {
    if (flops > 0)
        printf("%-34s %9.1f us %8.1f GFLOP/s\n", name, secs * 1e6, flops / secs * 1e-9);
    else
        printf("%-34s %9.1f us\n", name, secs * 1e6);
}

static void op_conv_fwd(const args_t *a) {
    a->be->conv2d_forward(a->c, a->a, a->b, a->conv, a->ws);
}
static void op_conv_bwd_data(const args_t *a) {
    a->be->conv2d_backward_data(a->a, a->c, a->b, a->conv, a->ws);
}
static void op_conv_bwd_filter(const args_t *a) {
    a->be->conv2d_backward_filter(a->b, a->c, a->a, a->conv, a->ws);
}

/* conv x[n, h, w, c] -> y[n, oh, ow, f], 'same' */
static void bench_conv(const bench_t *b, const char *name, conv2d_shape_t s) {
    const backend_t *be = b->be;
    conv2d_shape_init(&s, true);
    size_t in = s.n * s.h * s.w * s.c, out = s.n * s.oh * s.ow * s.f, k = s.kh * s.kw * s.c;
    args_t a = {
        be,   &s,   NULL, random_floats(be, in), random_floats(be, k * s.f), random_floats(be, out),
        NULL, NULL, 0};
    a.ws = be->alloc(be->conv2d_workspace(&s));
    double flops = 2.0 * (double)out * (double)k;
    char label[64];
    snprintf(label, sizeof label, "%s forward", name);
    report(label, time_op(b, op_conv_fwd, &a), flops);
    snprintf(label, sizeof label, "%s backward_data", name);
    report(label, time_op(b, op_conv_bwd_data, &a), flops);
    snprintf(label, sizeof label, "%s backward_filter", name);
    report(label, time_op(b, op_conv_bwd_filter, &a), flops);
    printf("%-34s %9.2f MiB\n", "  workspace", (double)be->conv2d_workspace(&s) / (1 << 20));
    be->free(a.ws);
    be->free(a.a);
    be->free(a.b);
    be->free(a.c);
}

static void op_pool_fwd(const args_t *a) {
    a->be->maxpool2d_forward(a->b, a->a, a->pool);
}
static void op_pool_bwd(const args_t *a) {
    a->be->maxpool2d_backward(a->c, a->d, a->a, a->b, a->pool);
}

static void bench_pool(const bench_t *b, pool2d_shape_t s) {
    const backend_t *be = b->be;
    pool2d_shape_init(&s, false);
    size_t in = s.n * s.h * s.w * s.c, out = s.n * s.oh * s.ow * s.c;
    args_t a = {be,
                NULL,
                &s,
                random_floats(be, in),
                random_floats(be, out),
                random_floats(be, in),
                random_floats(be, out),
                NULL,
                0};
    report("maxpool2d forward", time_op(b, op_pool_fwd, &a), 0);
    report("maxpool2d backward", time_op(b, op_pool_bwd, &a), 0);
    be->free(a.a);
    be->free(a.b);
    be->free(a.c);
    be->free(a.d);
}

static void op_relu_fwd(const args_t *a) {
    a->be->relu_forward(a->a, a->a, a->n);
}
static void op_relu_bwd(const args_t *a) {
    a->be->relu_backward(a->b, a->b, a->a, a->n);
}
static void op_bias_add(const args_t *a) {
    a->be->bias_add(a->a, a->c, a->n / 64, 64);
}
static void op_bias_grad(const args_t *a) {
    a->be->bias_grad(a->c, a->b, a->n / 64, 64);
}
static void op_dropout_fwd(const args_t *a) {
    a->be->dropout_forward(a->a, a->a, a->n, 0.25f, 7, 0);
}
static void op_dropout_bwd(const args_t *a) {
    a->be->dropout_backward(a->b, a->b, a->n, 0.25f, 7, 0);
}
static void op_axpy(const args_t *a) {
    a->be->axpy(a->a, 0.5f, a->b, a->n);
}

/* Elementwise ops on n floats (in place, as the model runs them). */
static void bench_elementwise(const bench_t *b, const char *shape, size_t n, op_fn fn,
                              const char *name) {
    const backend_t *be = b->be;
    args_t a = {be,   NULL, NULL, random_floats(be, n), random_floats(be, n), random_floats(be, 64),
                NULL, NULL, n};
    char label[64];
    snprintf(label, sizeof label, "%s %s", name, shape);
    report(label, time_op(b, fn, &a), 0);
    be->free(a.a);
    be->free(a.b);
    be->free(a.c);
}

static void op_dense(const args_t *a) {
    a->be->gemm(false, false, a->n, 128, 12544, 1.0f, a->a, a->b, 0.0f, a->c);
}
static void op_dense_dx(const args_t *a) {
    a->be->gemm(false, true, a->n, 12544, 128, 1.0f, a->c, a->b, 0.0f, a->a);
}
static void op_dense_dw(const args_t *a) {
    a->be->gemm(true, false, 12544, 128, a->n, 1.0f, a->a, a->c, 0.0f, a->b);
}

static void bench_dense(const bench_t *b, size_t n) {
    const backend_t *be = b->be;
    args_t a = {be,
                NULL,
                NULL,
                random_floats(be, n * 12544),
                random_floats(be, 12544 * 128),
                random_floats(be, n * 128),
                NULL,
                NULL,
                n};
    double flops = 2.0 * (double)n * 12544 * 128;
    report("dense 12544->128 forward", time_op(b, op_dense, &a), flops);
    report("dense 12544->128 dx", time_op(b, op_dense_dx, &a), flops);
    report("dense 12544->128 dw", time_op(b, op_dense_dw, &a), flops);
    be->free(a.a);
    be->free(a.b);
    be->free(a.c);
}

/* ---- one training step of the CNN, op by op, as a trainer thread runs it ---- */

typedef struct {
    size_t n;
    float *x, *w1, *b1, *a1, *w2, *b2, *a2, *p, *d1, *w3, *b3, *a3, *d3, *w4, *b4, *logits, *probs,
        *loss, *g4, *gd3, *g3, *gd1, *ga2, *ga1, *dw1, *db1, *dw2, *db2, *dw3, *db3, *dw4, *db4;
    int32_t *labels;
    conv2d_shape_t c1, c2;
    pool2d_shape_t pool;
    void *ws;
} step_t;

static void step_init(step_t *t, const backend_t *be, size_t n) {
    memset(t, 0, sizeof *t);
    t->n = n;
    t->c1 = (conv2d_shape_t){
        .n = n, .h = 28, .w = 28, .c = 1, .kh = 3, .kw = 3, .f = 32, .sh = 1, .sw = 1};
    t->c2 = (conv2d_shape_t){
        .n = n, .h = 28, .w = 28, .c = 32, .kh = 3, .kw = 3, .f = 64, .sh = 1, .sw = 1};
    t->pool =
        (pool2d_shape_t){.n = n, .h = 28, .w = 28, .c = 64, .ph = 2, .pw = 2, .sh = 2, .sw = 2};
    conv2d_shape_init(&t->c1, true);
    conv2d_shape_init(&t->c2, true);
    pool2d_shape_init(&t->pool, false);
    size_t big = n * 28 * 28 * 64, mid = n * 28 * 28 * 32, flat = n * 12544;
    struct {
        float **p;
        size_t n;
    } bufs[] = {
        {&t->x, n * 784},       {&t->w1, 288},         {&t->b1, 32},     {&t->a1, mid},
        {&t->w2, 18432},        {&t->b2, 64},          {&t->a2, big},    {&t->p, flat},
        {&t->d1, flat},         {&t->w3, 12544 * 128}, {&t->b3, 128},    {&t->a3, n * 128},
        {&t->d3, n * 128},      {&t->w4, 1280},        {&t->b4, 10},     {&t->logits, n * 10},
        {&t->probs, n * 10},    {&t->loss, n},         {&t->g4, n * 10}, {&t->gd3, n * 128},
        {&t->g3, n * 128},      {&t->gd1, flat},       {&t->ga2, big},   {&t->ga1, mid},
        {&t->dw1, 288},         {&t->db1, 32},         {&t->dw2, 18432}, {&t->db2, 64},
        {&t->dw3, 12544 * 128}, {&t->db3, 128},        {&t->dw4, 1280},  {&t->db4, 10}};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        *bufs[i].p = random_floats(be, bufs[i].n);
    t->labels = be->alloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++)
        t->labels[i] = (int32_t)(i % 10);
    size_t ws1 = be->conv2d_workspace(&t->c1), ws2 = be->conv2d_workspace(&t->c2);
    t->ws = be->alloc(ws1 > ws2 ? ws1 : ws2);
}

static void step_free(step_t *t, const backend_t *be) {
    float **all = &t->x;
    for (float **p = all; p <= &t->db4; p++)
        be->free(*p);
    be->free(t->labels);
    be->free(t->ws);
}

static void step_forward(step_t *t, const backend_t *be) {
    size_t n = t->n, flat = n * 12544;
    be->conv2d_forward(t->a1, t->x, t->w1, &t->c1, t->ws);
    be->bias_add(t->a1, t->b1, n * 784, 32);
    be->relu_forward(t->a1, t->a1, n * 784 * 32);
    be->conv2d_forward(t->a2, t->a1, t->w2, &t->c2, t->ws);
    be->bias_add(t->a2, t->b2, n * 784, 64);
    be->relu_forward(t->a2, t->a2, n * 784 * 64);
    be->maxpool2d_forward(t->p, t->a2, &t->pool);
    be->dropout_forward(t->d1, t->p, flat, 0.25f, 1, 0);
    be->gemm(false, false, n, 128, 12544, 1.0f, t->d1, t->w3, 0.0f, t->a3);
    be->bias_add(t->a3, t->b3, n, 128);
    be->relu_forward(t->a3, t->a3, n * 128);
    be->dropout_forward(t->d3, t->a3, n * 128, 0.5f, 2, 0);
    be->gemm(false, false, n, 10, 128, 1.0f, t->d3, t->w4, 0.0f, t->logits);
    be->bias_add(t->logits, t->b4, n, 10);
    be->softmax_xent_forward(t->probs, t->loss, t->logits, t->labels, n, 10);
}

static void step_backward(step_t *t, const backend_t *be) {
    size_t n = t->n, flat = n * 12544;
    be->softmax_xent_backward(t->g4, t->probs, t->labels, n, 10, 1.0f / (float)n);
    be->gemm(true, false, 128, 10, n, 1.0f, t->d3, t->g4, 0.0f, t->dw4);
    be->bias_grad(t->db4, t->g4, n, 10);
    be->gemm(false, true, n, 128, 10, 1.0f, t->g4, t->w4, 0.0f, t->gd3);
    be->dropout_backward(t->g3, t->gd3, n * 128, 0.5f, 2, 0);
    be->relu_backward(t->g3, t->g3, t->a3, n * 128);
    be->gemm(true, false, 12544, 128, n, 1.0f, t->d1, t->g3, 0.0f, t->dw3);
    be->bias_grad(t->db3, t->g3, n, 128);
    be->gemm(false, true, n, 12544, 128, 1.0f, t->g3, t->w3, 0.0f, t->gd1);
    be->dropout_backward(t->gd1, t->gd1, flat, 0.25f, 1, 0);
    be->maxpool2d_backward(t->ga2, t->gd1, t->a2, t->p, &t->pool);
    be->relu_backward(t->ga2, t->ga2, t->a2, n * 784 * 64);
    be->bias_grad(t->db2, t->ga2, n * 784, 64);
    be->conv2d_backward_filter(t->dw2, t->ga2, t->a1, &t->c2, t->ws);
    be->conv2d_backward_data(t->ga1, t->ga2, t->w2, &t->c2, t->ws);
    be->relu_backward(t->ga1, t->ga1, t->a1, n * 784 * 32);
    be->bias_grad(t->db1, t->ga1, n * 784, 32);
    be->conv2d_backward_filter(t->dw1, t->ga1, t->x, &t->c1, t->ws);
}

typedef struct {
    const backend_t *be;
    step_t step;
    size_t steps;
    pthread_barrier_t *start;
} step_job_t;

static void *step_thread(void *p) {
    step_job_t *j = p;
    pthread_barrier_wait(j->start);
    for (size_t i = 0; i < j->steps; i++) {
        step_forward(&j->step, j->be);
        step_backward(&j->step, j->be);
    }
    return NULL;
}

/* Images per second of whole steps on 'threads' threads, each with n images. */
static void bench_step(const bench_t *b, size_t n, size_t threads) {
    enum { MAX_THREADS = 16 };
    step_job_t jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    pthread_barrier_t start;
    threads = threads < MAX_THREADS ? threads : MAX_THREADS;
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    size_t steps = b->runs;
    for (size_t i = 0; i < threads; i++) {
        jobs[i] = (step_job_t){b->be, {0}, steps, &start};
        step_init(&jobs[i].step, b->be, n);
        step_forward(&jobs[i].step, b->be); /* touch every page once */
        step_backward(&jobs[i].step, b->be);
        pthread_create(&tid[i], NULL, step_thread, &jobs[i]);
    }
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (size_t i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    double secs = now_s() - t0, images = (double)(threads * n * steps);
    printf("training step, %zu thread(s) x %zu images: %7.1f images/s, %6.1f GFLOP/s "
           "(97.25 MFLOP/image)\n",
           threads, n, images / secs, images * 97.25e6 / secs * 1e-9);
    for (size_t i = 0; i < threads; i++)
        step_free(&jobs[i].step, b->be);
    pthread_barrier_destroy(&start);
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 32;
    bench_t b = {cpu_backend(), argc > 2 ? strtoul(argv[2], NULL, 10) : 21};
    if (n == 0 || b.runs == 0) {
        fprintf(stderr, "usage: %s [images] [runs]\n", argv[0]);
        return 2;
    }
    cpu_backend_init();
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("cpu backend, BLAS core %s (OPENBLAS_CORETYPE=%s), %zu images, median of %zu runs\n",
           cpu_backend_blas_core(), coretype ? coretype : "unset", n, b.runs);
    bench_conv(&b, "conv1 3x3 1->32",
               (conv2d_shape_t){
                   .n = n, .h = 28, .w = 28, .c = 1, .kh = 3, .kw = 3, .f = 32, .sh = 1, .sw = 1});
    bench_conv(&b, "conv2 3x3 32->64",
               (conv2d_shape_t){
                   .n = n, .h = 28, .w = 28, .c = 32, .kh = 3, .kw = 3, .f = 64, .sh = 1, .sw = 1});
    bench_pool(&b, (pool2d_shape_t){
                       .n = n, .h = 28, .w = 28, .c = 64, .ph = 2, .pw = 2, .sh = 2, .sw = 2});
    size_t conv2_out = n * 28 * 28 * 64, pooled = n * 14 * 14 * 64;
    bench_elementwise(&b, "[n,28,28,64]", conv2_out, op_bias_add, "bias_add");
    bench_elementwise(&b, "[n,28,28,64]", conv2_out, op_bias_grad, "bias_grad");
    bench_elementwise(&b, "[n,28,28,64]", conv2_out, op_relu_fwd, "relu forward");
    bench_elementwise(&b, "[n,28,28,64]", conv2_out, op_relu_bwd, "relu backward");
    bench_elementwise(&b, "[n,14,14,64]", pooled, op_dropout_fwd, "dropout forward");
    bench_elementwise(&b, "[n,14,14,64]", pooled, op_dropout_bwd, "dropout backward");
    bench_elementwise(&b, "1.6M (all weights)", 1625866, op_axpy, "axpy");
    bench_dense(&b, n);
    bench_step(&b, n, 1);
    bench_step(&b, n, 2);
    return 0;
}

/* Times every CPU op on the shapes of the Keras MNIST CNN (one thread's half
 * of a batch of 64): median of several runs, GFLOP/s for the matrix ops.
 * Usage: pstrain-bench-kernels [images (32)] [runs (21)] */
#include <stdio.h>
#include <stdlib.h>
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

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 32;
    bench_t b = {cpu_backend(), argc > 2 ? strtoul(argv[2], NULL, 10) : 21};
    if (n == 0 || b.runs == 0) {
        fprintf(stderr, "usage: %s [images] [runs]\n", argv[0]);
        return 2;
    }
    cpu_backend_init();
    printf("cpu backend, BLAS core %s, %zu images, median of %zu runs\n", cpu_backend_blas_core(),
           n, b.runs);
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
    return 0;
}

/* The kernels tests' shared pieces (test_kernels*.c): backend buffers freed
 * together at the end of a test, random inputs, central differences, and the
 * choice of product kernel. */
#include "test_kernels_helpers.h"

#include "test.h"

#include <stdlib.h>
#include <string.h>

#define MAX_BUFFERS 64
static void *buffers[MAX_BUFFERS];
static size_t n_buffers;

const backend_t *be(void) {
    static bool ready;
    if (!ready) {
        cpu_backend_init();
        ready = true;
    }
    return cpu_backend();
}

void *buffer(size_t bytes) {
    if (n_buffers == MAX_BUFFERS) {
        fprintf(stderr, "test_kernels: more than %d buffers\n", MAX_BUFFERS);
        abort();
    }
    void *p = be()->alloc(bytes);
    if (!p)
        abort();
    buffers[n_buffers++] = p;
    return p;
}

void release_buffers(void) {
    for (size_t i = 0; i < n_buffers; i++)
        be()->free(buffers[i]);
    n_buffers = 0;
}

float *random_floats(size_t n, uint64_t seed, float lo, float hi) {
    float *p = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * rng_uniform(seed, i);
    return p;
}

float *filled(size_t n, float v) {
    float *p = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

float *to_float(const double *d, size_t n) {
    float *p = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = (float)d[i];
    return p;
}

double *doubles(size_t n) {
    double *p = buffer(n * sizeof(double));
    memset(p, 0, n * sizeof(double));
    return p;
}

double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ---- central differences ---- */

float *numeric_grad(float *param, size_t n, loss_fn loss, void *ctx, float eps) {
    double *g = doubles(n);
    for (size_t i = 0; i < n; i++) {
        float v = param[i], up = v + eps, down = v - eps;
        param[i] = up;
        double lp = loss(ctx);
        param[i] = down;
        double lm = loss(ctx);
        param[i] = v;
        g[i] = (lp - lm) / ((double)up - (double)down);
    }
    return to_float(g, n);
}

void force_openblas(void) {
    setenv("PSTRAIN_CPU_GEMM", "openblas", 1);
}

bool force_avx2(void) {
    setenv("PSTRAIN_CPU_GEMM", "avx2", 1);
    if (strstr(cpu_backend_blas_core(), "+avx2"))
        return true;
    test_skip("no AVX2 + FMA on this CPU (kernel: %s)", cpu_backend_blas_core());
    return false;
}

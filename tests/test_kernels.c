/* Tests of the CPU backend: every op against a naive reference written here
 * (direct loops, double accumulation), and every backward op against central
 * differences of its forward op. */
#include "test.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "test_helpers.h"

/* ---- test memory: backend buffers freed together at the end of a test ---- */

#define MAX_BUFFERS 64
static void *buffers[MAX_BUFFERS];
static size_t n_buffers;

static const backend_t *be(void) {
    static bool ready;
    if (!ready) {
        cpu_backend_init();
        ready = true;
    }
    return cpu_backend();
}

static void *buffer(size_t bytes) {
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

static void release_buffers(void) {
    for (size_t i = 0; i < n_buffers; i++)
        be()->free(buffers[i]);
    n_buffers = 0;
}

/* n floats uniform in [lo, hi), a pure function of the seed */
static float *random_floats(size_t n, uint64_t seed, float lo, float hi) {
    float *p = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * rng_uniform(seed, i);
    return p;
}

static float *filled(size_t n, float v) {
    float *p = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

static float *to_float(const double *d, size_t n) {
    float *p = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = (float)d[i];
    return p;
}

static double *doubles(size_t n) {
    double *p = buffer(n * sizeof(double));
    memset(p, 0, n * sizeof(double));
    return p;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ---- central differences ---- */

/* A scalar loss of the current parameters, e.g. sum(op(x) * r). */
typedef double (*loss_fn)(void *ctx);

/* grad[i] = d loss / d param[i] by central differences of step eps, using
 * the step actually taken after rounding to float. */
static float *numeric_grad(float *param, size_t n, loss_fn loss, void *ctx, float eps) {
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

/* ---- memory, gemm, vectors ---- */

void test_kernels_memory(void) {
    const backend_t *b = be();
    CHECK_STR_CONTAINS(b->name, "cpu");
    CHECK(cpu_backend_blas_core() && cpu_backend_blas_core()[0]);
    size_t sizes[] = {0, 1, 63, 64, 1000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *p = b->alloc(sizes[i]);
        CHECK(p != NULL);
        CHECK_INT_EQ((uintptr_t)p % 64, 0);
        b->free(p);
    }
    float host[100], back[100];
    for (int i = 0; i < 100; i++)
        host[i] = (float)i * 0.5f;
    float *d = buffer(sizeof host);
    b->upload(d, host, sizeof host);
    b->download(back, d, sizeof back);
    CHECK_ARRAY_NEAR("roundtrip", back, host, 100, 0.0);
    b->zero(d, sizeof host);
    for (int i = 0; i < 100; i++)
        CHECK(d[i] == 0.0f);
    release_buffers();
}

/* c[m, n] = alpha * op(a) op(b) + beta * c, in double */
static void ref_gemm(float *c, bool ta, bool tb, size_t m, size_t n, size_t k, float alpha,
                     const float *a, const float *b, float beta) {
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t l = 0; l < k; l++)
                s +=
                    (double)(ta ? a[l * m + i] : a[i * k + l]) * (tb ? b[j * k + l] : b[l * n + j]);
            double old = beta == 0.0f ? 0.0 : (double)beta * c[i * n + j];
            c[i * n + j] = (float)(alpha * s + old);
        }
    }
}

static void check_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, float beta) {
    float *a = random_floats(m * k, 1, -1, 1), *b = random_floats(k * n, 2, -1, 1);
    float *c = random_floats(m * n, 3, -1, 1), *want = buffer(m * n * sizeof(float));
    if (beta == 0.0f)
        for (size_t i = 0; i < m * n; i++)
            c[i] = NAN; /* beta 0 must overwrite, not scale */
    memcpy(want, c, m * n * sizeof(float));
    ref_gemm(want, ta, tb, m, n, k, alpha, a, b, beta);
    be()->gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
    char what[96];
    snprintf(what, sizeof what, "gemm ta=%d tb=%d %zux%zux%zu alpha=%g beta=%g", ta, tb, m, n, k,
             (double)alpha, (double)beta);
    CHECK_ARRAY_NEAR(what, c, want, m * n, 1e-4);
}

/* Sizes around the product kernels' tiles (6 rows by 16-float vectors for
 * AVX-512, by 8-float ones for AVX2; k in blocks of 128), k from 1024 on
 * (a copied into panels), and n that they leave to OpenBLAS (not a
 * multiple of 16, or of 8). */
static void check_gemm_sizes(void) {
    size_t dims[][3] = {{1, 1, 1},      {5, 7, 3},     {33, 17, 65},  {64, 128, 300}, {7, 16, 1},
                        {13, 48, 130},  {8, 80, 257},  {6, 32, 128},  {11, 112, 12},  {32, 128, 9},
                        {2, 64, 1000},  {301, 16, 3},  {1100, 32, 5}, {9, 8, 129},    {7, 24, 33},
                        {19, 40, 2},    {12, 288, 64}, {3, 72, 300},  {13, 32, 1500}, {7, 24, 2100},
                        {20, 128, 1024}};
    float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, 0.25f}};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
        for (int t = 0; t < 4; t++)
            for (size_t s = 0; s < 3; s++) {
                check_gemm(t & 1, t & 2, dims[d][0], dims[d][1], dims[d][2], ab[s][0], ab[s][1]);
                release_buffers();
                if (test_failures)
                    return;
            }
    /* k = 0: c = beta * c; m = 0 touches nothing */
    float c[6] = {1, 2, 3, 4, 5, 6}, want[6] = {2, 4, 6, 8, 10, 12};
    be()->gemm(false, false, 2, 3, 0, 1.0f, NULL, NULL, 2.0f, c);
    CHECK_ARRAY_NEAR("gemm k=0", c, want, 6, 0.0);
    be()->gemm(false, false, 0, 3, 4, 1.0f, NULL, NULL, 0.0f, c);
    CHECK_ARRAY_NEAR("gemm m=0", c, want, 6, 0.0);
}

void test_kernels_gemm(void) {
    check_gemm_sizes();
}

/* The same with OpenBLAS taking every product, as on a CPU without AVX-512. */
static void force_openblas(void) {
    setenv("PSTRAIN_CPU_GEMM", "openblas", 1);
}

void test_kernels_gemm_openblas(void) {
    force_openblas();
    CHECK(strstr(cpu_backend_blas_core(), "avx512") == NULL);
    check_gemm_sizes();
}

/* The AVX2 kernel on a CPU with AVX-512 too; skipped without AVX2 + FMA. */
static bool force_avx2(void) {
    setenv("PSTRAIN_CPU_GEMM", "avx2", 1);
    if (strstr(cpu_backend_blas_core(), "+avx2"))
        return true;
    test_skip("no AVX2 + FMA on this CPU (kernel: %s)", cpu_backend_blas_core());
    return false;
}

void test_kernels_gemm_avx2(void) {
    if (force_avx2())
        check_gemm_sizes();
}

void test_kernels_axpy_scale_u8(void) {
    size_t n = 1001;
    float *x = random_floats(n, 1, -1, 1), *y = random_floats(n, 2, -1, 1);
    float *want = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        want[i] = y[i] + 0.75f * x[i];
    be()->axpy(y, 0.75f, x, n);
    CHECK_ARRAY_NEAR("axpy", y, want, n, 1e-6);
    uint8_t *px = buffer(256);
    for (int i = 0; i < 256; i++)
        px[i] = (uint8_t)(255 - i);
    float *out = filled(256, NAN);
    be()->scale_u8(out, px, 256, 1.0f / 255.0f);
    for (int i = 0; i < 256; i++)
        CHECK_NEAR(out[i], (255.0 - i) / 255.0, 1e-7);
    release_buffers();
}

/* ---- shapes ---- */

/* Output size and leading pad of one axis as Keras/TF compute them. */
static void check_axis(size_t in, size_t k, size_t stride, bool same, size_t out, size_t pad) {
    conv2d_shape_t c = {
        .n = 1, .h = in, .w = 1, .c = 1, .kh = k, .kw = 1, .f = 1, .sh = stride, .sw = 1};
    conv2d_shape_init(&c, same);
    CHECK_INT_EQ(c.oh, out);
    CHECK_INT_EQ(c.pad_top, pad);
    pool2d_shape_t p = {.n = 1, .h = 1, .w = in, .c = 1, .ph = 1, .pw = k, .sh = 1, .sw = stride};
    pool2d_shape_init(&p, same);
    CHECK_INT_EQ(p.ow, out);
    CHECK_INT_EQ(p.pad_left, pad);
}

void test_kernels_shapes(void) {
    /* in, kernel, stride, same -> out, pad_before (the extra pad goes after) */
    size_t cases[][6] = {
        {28, 3, 1, 1, 28, 1}, {28, 3, 1, 0, 26, 0}, {28, 2, 2, 0, 14, 0}, {28, 2, 2, 1, 14, 0},
        {7, 3, 2, 1, 4, 1},   {8, 3, 2, 1, 4, 0},   {7, 3, 2, 0, 3, 0},   {5, 2, 1, 1, 5, 0},
        {5, 4, 3, 1, 2, 1},   {5, 4, 3, 0, 1, 0},   {2, 3, 1, 0, 0, 0},   {1, 5, 1, 1, 1, 2},
        {6, 5, 2, 1, 3, 1},   {9, 1, 3, 1, 3, 0},   {9, 1, 3, 0, 3, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t *t = cases[i];
        check_axis(t[0], t[1], t[2], t[3], t[4], t[5]);
        if (test_failures) {
            fprintf(stderr, "  case in=%zu k=%zu s=%zu same=%zu\n", t[0], t[1], t[2], t[3]);
            return;
        }
    }
}

/* ---- convolution ---- */

/* Base index (n, iy, ix, 0) in x of tap (i, j) of output (oy, ox), or -1
 * where the tap reads padding. */
static long conv_tap(const conv2d_shape_t *s, size_t n, size_t oy, size_t ox, size_t i, size_t j) {
    long iy = (long)(oy * s->sh + i) - (long)s->pad_top;
    long ix = (long)(ox * s->sw + j) - (long)s->pad_left;
    if (iy < 0 || ix < 0 || iy >= (long)s->h || ix >= (long)s->w)
        return -1;
    return (((long)n * (long)s->h + iy) * (long)s->w + ix) * (long)s->c;
}

/* The three conv ops by direct loops; 'mode' picks which one accumulates:
 * 0: y = conv(x, w); 1: dx = adjoint for dy; 2: dw = adjoint for dy. */
static void ref_conv(int mode, double *out, const float *x, const float *w, const float *dy,
                     const conv2d_shape_t *s) {
    for (size_t n = 0; n < s->n; n++)
        for (size_t oy = 0; oy < s->oh; oy++)
            for (size_t ox = 0; ox < s->ow; ox++)
                for (size_t i = 0; i < s->kh; i++)
                    for (size_t j = 0; j < s->kw; j++) {
                        long xb = conv_tap(s, n, oy, ox, i, j);
                        if (xb < 0)
                            continue;
                        size_t yb = ((n * s->oh + oy) * s->ow + ox) * s->f;
                        for (size_t ch = 0; ch < s->c; ch++)
                            for (size_t f = 0; f < s->f; f++) {
                                size_t wi = ((i * s->kw + j) * s->c + ch) * s->f + f;
                                size_t xi = (size_t)xb + ch;
                                if (mode == 0)
                                    out[yb + f] += (double)x[xi] * w[wi];
                                else if (mode == 1)
                                    out[xi] += (double)dy[yb + f] * w[wi];
                                else
                                    out[wi] += (double)dy[yb + f] * x[xi];
                            }
                    }
}

static const conv_case_t conv_cases[] = {
    {3, 7, 5, 3, 3, 3, 4, 1, 1, true},
    {3, 7, 5, 3, 3, 3, 4, 2, 2, true},
    {3, 7, 5, 3, 3, 3, 4, 2, 2, false},
    {3, 7, 5, 3, 2, 3, 4, 1, 1, false},
    {3, 7, 5, 3, 2, 3, 4, 2, 1, true},
    {3, 7, 5, 3, 1, 1, 4, 1, 1, true},
    {3, 7, 5, 3, 1, 1, 4, 2, 2, false},
    {2, 6, 6, 1, 3, 3, 32, 1, 1, true},
    {2, 5, 6, 32, 3, 3, 5, 1, 1, true},
    {2, 5, 6, 17, 3, 2, 3, 1, 2, true},
    {1, 4, 4, 2, 5, 5, 3, 1, 1, true},
    {2, 3, 3, 2, 3, 3, 2, 3, 3, false},
    /* f or K a multiple of 16 (the AVX-512 kernel's products) with row
     * counts that leave partial 6-row tiles and partial 64-column blocks */
    {3, 7, 5, 3, 3, 3, 16, 1, 1, true},
    {2, 9, 7, 16, 3, 3, 48, 2, 2, true},
    {1, 5, 5, 16, 1, 1, 32, 1, 1, true},
    /* kernels larger than the input: some taps never land inside it */
    {2, 2, 3, 3, 5, 5, 4, 1, 1, true},
    {1, 2, 2, 2, 7, 7, 16, 4, 4, true},
    /* rows of 576 floats: an im2col chunk of 256 KiB to 1 MiB holds 113 to
     * 455 of the 576 rows, so the last chunk is partial and chunk
     * boundaries fall inside an image row */
    {4, 12, 12, 64, 3, 3, 3, 1, 1, true},
};
#define N_CONV_CASES (sizeof conv_cases / sizeof conv_cases[0])

static size_t conv_x_size(const conv2d_shape_t *s) {
    return s->n * s->h * s->w * s->c;
}
static size_t conv_y_size(const conv2d_shape_t *s) {
    return s->n * s->oh * s->ow * s->f;
}
static size_t conv_w_size(const conv2d_shape_t *s) {
    return s->kh * s->kw * s->c * s->f;
}

static void *conv_ws(const conv2d_shape_t *s) {
    return buffer(be()->conv2d_workspace(s));
}

/* One of the three ops against ref_conv; outputs start as NaN so that an
 * op which accumulates instead of overwriting fails. */
static void check_conv(int mode, const conv2d_shape_t *s) {
    size_t nx = conv_x_size(s), ny = conv_y_size(s), nw = conv_w_size(s);
    size_t nout = mode == 0 ? ny : mode == 1 ? nx : nw;
    float *x = random_floats(nx, 1, -1, 1), *w = random_floats(nw, 2, -1, 1);
    float *dy = random_floats(ny, 3, -1, 1), *got = filled(nout, NAN);
    double *want = doubles(nout);
    ref_conv(mode, want, x, w, dy, s);
    void *ws = conv_ws(s);
    if (mode == 0)
        be()->conv2d_forward(got, x, w, s, ws);
    else if (mode == 1)
        be()->conv2d_backward_data(got, dy, w, s, ws);
    else
        be()->conv2d_backward_filter(got, dy, x, s, ws);
    const char *names[] = {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"};
    CHECK_ARRAY_NEAR(names[mode], got, to_float(want, nout), nout, 1e-4);
}

static void check_conv_cases(int mode) {
    for (size_t i = 0; i < N_CONV_CASES; i++) {
        conv2d_shape_t s = conv_case_shape(&conv_cases[i]);
        check_conv(mode, &s);
        release_buffers();
        if (test_failures) {
            describe_conv(&s);
            return;
        }
    }
}

void test_kernels_conv2d_forward(void) {
    check_conv_cases(0);
}

void test_kernels_conv2d_backward_data(void) {
    check_conv_cases(1);
}

void test_kernels_conv2d_backward_filter(void) {
    check_conv_cases(2);
}

void test_kernels_conv2d_openblas(void) {
    force_openblas();
    CHECK(strstr(cpu_backend_blas_core(), "avx512") == NULL);
    for (int mode = 0; mode < 3 && !test_failures; mode++)
        check_conv_cases(mode);
}

void test_kernels_conv2d_avx2(void) {
    if (!force_avx2())
        return;
    for (int mode = 0; mode < 3 && !test_failures; mode++)
        check_conv_cases(mode);
}

void test_kernels_conv2d_empty(void) {
    /* 'valid' with a kernel taller than the input: no output rows, so the
     * gradients are all zero */
    conv_case_t t = {2, 2, 5, 3, 3, 3, 16, 1, 1, false};
    conv2d_shape_t s = conv_case_shape(&t);
    CHECK_INT_EQ(s.oh, 0);
    size_t nx = conv_x_size(&s), nw = conv_w_size(&s);
    float *dx = filled(nx, NAN), *dw = filled(nw, NAN), *w = random_floats(nw, 1, -1, 1);
    float *x = random_floats(nx, 2, -1, 1), *zeros = filled(nx > nw ? nx : nw, 0.0f);
    void *ws = conv_ws(&s);
    be()->conv2d_forward(NULL, x, w, &s, ws);
    be()->conv2d_backward_data(dx, NULL, w, &s, ws);
    be()->conv2d_backward_filter(dw, NULL, x, &s, ws);
    CHECK_ARRAY_NEAR("dx", dx, zeros, nx, 0.0);
    CHECK_ARRAY_NEAR("dw", dw, zeros, nw, 0.0);
    release_buffers();
}

void test_kernels_conv2d_workspace(void) {
    /* the Keras MNIST CNN's conv2 at 32 images: a small, batch-independent workspace */
    conv2d_shape_t s = {
        .n = 32, .h = 28, .w = 28, .c = 32, .kh = 3, .kw = 3, .f = 64, .sh = 1, .sw = 1};
    conv2d_shape_init(&s, true);
    size_t ws = be()->conv2d_workspace(&s);
    CHECK(ws > 0 && ws <= ((size_t)4 << 20));
    s.n = 1024;
    CHECK_INT_EQ(be()->conv2d_workspace(&s), ws);
}

typedef struct {
    const conv2d_shape_t *s;
    float *x, *w, *y, *r;
    void *ws;
} conv_ctx_t;

/* sum(conv(x, w) * r) */
static double conv_loss(void *p) {
    conv_ctx_t *c = p;
    be()->conv2d_forward(c->y, c->x, c->w, c->s, c->ws);
    return dot(c->y, c->r, conv_y_size(c->s));
}

static void check_conv_gradients(const conv2d_shape_t *s) {
    size_t nx = conv_x_size(s), nw = conv_w_size(s);
    conv_ctx_t c = {s,
                    random_floats(nx, 1, -1, 1),
                    random_floats(nw, 2, -1, 1),
                    buffer(conv_y_size(s) * sizeof(float)),
                    random_floats(conv_y_size(s), 3, -1, 1),
                    conv_ws(s)};
    float *dx = buffer(nx * sizeof(float)), *dw = buffer(nw * sizeof(float));
    be()->conv2d_backward_data(dx, c.r, c.w, s, c.ws);
    be()->conv2d_backward_filter(dw, c.r, c.x, s, c.ws);
    /* the loss is linear in x and in w, so a large step has no truncation error */
    CHECK_ARRAY_NEAR("conv dx vs finite differences", dx,
                     numeric_grad(c.x, nx, conv_loss, &c, 0.05f), nx, 1e-3);
    CHECK_ARRAY_NEAR("conv dw vs finite differences", dw,
                     numeric_grad(c.w, nw, conv_loss, &c, 0.05f), nw, 1e-3);
}

void test_kernels_conv2d_gradcheck(void) {
    size_t picks[] = {1, 2, 4, 9, 11};
    for (size_t i = 0; i < sizeof picks / sizeof picks[0]; i++) {
        conv2d_shape_t s = conv_case_shape(&conv_cases[picks[i]]);
        check_conv_gradients(&s);
        release_buffers();
        if (test_failures) {
            describe_conv(&s);
            return;
        }
    }
}

/* ---- max pooling ---- */

/* Base index (n, iy, ix, 0) of cell (i, j) of output window (oy, ox), or -1. */
static long pool_cell(const pool2d_shape_t *s, size_t n, size_t oy, size_t ox, size_t i, size_t j) {
    long iy = (long)(oy * s->sh + i) - (long)s->pad_top;
    long ix = (long)(ox * s->sw + j) - (long)s->pad_left;
    if (iy < 0 || ix < 0 || iy >= (long)s->h || ix >= (long)s->w)
        return -1;
    return (((long)n * (long)s->h + iy) * (long)s->w + ix) * (long)s->c;
}

/* y = window max; dx (if dy) = each dy at the first cell holding the max */
static void ref_pool(float *y, double *dx, const float *x, const float *dy,
                     const pool2d_shape_t *s) {
    for (size_t n = 0; n < s->n; n++)
        for (size_t oy = 0; oy < s->oh; oy++)
            for (size_t ox = 0; ox < s->ow; ox++)
                for (size_t ch = 0; ch < s->c; ch++) {
                    size_t yi = ((n * s->oh + oy) * s->ow + ox) * s->c + ch;
                    float m = -INFINITY;
                    long at = -1;
                    for (size_t i = 0; i < s->ph; i++)
                        for (size_t j = 0; j < s->pw; j++) {
                            long b = pool_cell(s, n, oy, ox, i, j);
                            if (b >= 0 && (at < 0 || x[b + (long)ch] > m)) {
                                m = x[b + (long)ch];
                                at = b + (long)ch;
                            }
                        }
                    y[yi] = m;
                    if (dy && at >= 0)
                        dx[at] += dy[yi];
                }
}

static const pool_case_t pool_cases[] = {
    {2, 8, 6, 3, 2, 2, false}, {2, 7, 5, 3, 2, 2, false},  {2, 7, 5, 3, 2, 2, true},
    {2, 7, 5, 3, 3, 1, true},  {2, 7, 5, 3, 3, 2, true},   {2, 7, 5, 3, 3, 2, false},
    {2, 6, 5, 3, 2, 1, false}, {1, 4, 6, 70, 2, 2, false}, {1, 5, 5, 70, 3, 2, true},
    {1, 3, 3, 2, 3, 3, true},  {2, 5, 6, 3, 2, 1, true},   {1, 2, 2, 3, 3, 1, true},
    {1, 1, 1, 3, 2, 2, true},
};
#define N_POOL_CASES (sizeof pool_cases / sizeof pool_cases[0])

/* x with values from only 3 levels, so that most windows hold ties and the
 * first-max rule decides where the gradient goes; negative values too, so
 * that a padding cell read as 0 would win and show. */
static float *tied_floats(size_t n, uint64_t seed) {
    float *x = random_floats(n, seed, 0, 3);
    for (size_t i = 0; i < n; i++)
        x[i] = floorf(x[i]) - 3.0f;
    return x;
}

static void check_pool(const pool2d_shape_t *s) {
    size_t nx = s->n * s->h * s->w * s->c, ny = s->n * s->oh * s->ow * s->c;
    float *x = tied_floats(nx, 1), *dy = random_floats(ny, 2, -1, 1);
    float *want_y = buffer(ny * sizeof(float)), *y = filled(ny, NAN), *dx = filled(nx, NAN);
    double *want_dx = doubles(nx);
    ref_pool(want_y, want_dx, x, dy, s);
    be()->maxpool2d_forward(y, x, s);
    CHECK_ARRAY_NEAR("maxpool2d_forward", y, want_y, ny, 0.0);
    be()->maxpool2d_backward(dx, dy, x, y, s);
    CHECK_ARRAY_NEAR("maxpool2d_backward", dx, to_float(want_dx, nx), nx, 1e-6);
}

void test_kernels_maxpool2d(void) {
    for (size_t i = 0; i < N_POOL_CASES; i++) {
        pool2d_shape_t s = pool_case_shape(&pool_cases[i]);
        check_pool(&s);
        release_buffers();
        if (test_failures) {
            describe_pool(&s);
            return;
        }
    }
}

typedef struct {
    const pool2d_shape_t *s;
    float *x, *y, *r;
} pool_ctx_t;

static double pool_loss(void *p) {
    pool_ctx_t *c = p;
    be()->maxpool2d_forward(c->y, c->x, c->s);
    return dot(c->y, c->r, c->s->n * c->s->oh * c->s->ow * c->s->c);
}

void test_kernels_maxpool2d_gradcheck(void) {
    for (size_t k = 0; k < N_POOL_CASES; k++) {
        pool2d_shape_t s = pool_case_shape(&pool_cases[k]);
        size_t nx = s.n * s.h * s.w * s.c, ny = s.n * s.oh * s.ow * s.c;
        /* distinct values 0.01 apart, so a step of 0.002 never changes a max */
        pool_ctx_t c = {&s, buffer(nx * sizeof(float)), buffer(ny * sizeof(float)),
                        random_floats(ny, 2, -1, 1)};
        for (size_t i = 0; i < nx; i++)
            c.x[i] = 0.01f * (float)((i * 7919) % nx) - 1.0f;
        float *dx = buffer(nx * sizeof(float));
        pool_loss(&c);
        be()->maxpool2d_backward(dx, c.r, c.x, c.y, &s);
        CHECK_ARRAY_NEAR("maxpool dx vs finite differences", dx,
                         numeric_grad(c.x, nx, pool_loss, &c, 0.002f), nx, 1e-3);
        release_buffers();
        if (test_failures) {
            describe_pool(&s);
            return;
        }
    }
}

/* ---- bias, relu ---- */

void test_kernels_bias(void) {
    /* more columns than one 256-wide tile and rows that end mid-block */
    size_t rows = 301, cols = 300;
    float *y = random_floats(rows * cols, 1, -1, 1), *b = random_floats(cols, 2, -1, 1);
    float *want = buffer(rows * cols * sizeof(float));
    double *sums = doubles(cols);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++) {
            want[r * cols + j] = y[r * cols + j] + b[j];
            sums[j] += y[r * cols + j];
        }
    float *db = filled(cols, NAN);
    be()->bias_grad(db, y, rows, cols);
    CHECK_ARRAY_NEAR("bias_grad", db, to_float(sums, cols), cols, 1e-5);
    be()->bias_add(y, b, rows, cols);
    CHECK_ARRAY_NEAR("bias_add", y, want, rows * cols, 1e-6);
    /* a conv layer's bias: 25,088 rows summed in float stay close to double */
    rows = 25088;
    float *g = random_floats(rows * 64, 3, -1, 1);
    double *gs = doubles(64);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < 64; j++)
            gs[j] += g[r * 64 + j];
    be()->bias_grad(db, g, rows, 64);
    for (size_t j = 0; j < 64; j++)
        CHECK_NEAR(db[j], gs[j], 1e-4);
    release_buffers();
}

typedef struct {
    float *y, *b, *out, *r;
    size_t rows, cols;
} bias_ctx_t;

static double bias_loss(void *p) {
    bias_ctx_t *c = p;
    memcpy(c->out, c->y, c->rows * c->cols * sizeof(float));
    be()->bias_add(c->out, c->b, c->rows, c->cols);
    return dot(c->out, c->r, c->rows * c->cols);
}

void test_kernels_bias_gradcheck(void) {
    size_t rows = 37, cols = 19;
    bias_ctx_t c = {random_floats(rows * cols, 1, -1, 1),
                    random_floats(cols, 2, -1, 1),
                    buffer(rows * cols * sizeof(float)),
                    random_floats(rows * cols, 3, -1, 1),
                    rows,
                    cols};
    float *db = buffer(cols * sizeof(float));
    be()->bias_grad(db, c.r, rows, cols);
    CHECK_ARRAY_NEAR("db vs finite differences", db, numeric_grad(c.b, cols, bias_loss, &c, 0.05f),
                     cols, 1e-3);
    release_buffers();
}

void test_kernels_relu(void) {
    size_t n = 1003;
    float *x = random_floats(n, 1, -1, 1), *dy = random_floats(n, 2, -1, 1);
    float *y = filled(n, NAN), *dx = filled(n, NAN), *want = buffer(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        want[i] = x[i] > 0 ? x[i] : 0;
    be()->relu_forward(y, x, n);
    CHECK_ARRAY_NEAR("relu_forward", y, want, n, 0.0);
    for (size_t i = 0; i < n; i++)
        want[i] = y[i] > 0 ? dy[i] : 0;
    be()->relu_backward(dx, dy, y, n);
    CHECK_ARRAY_NEAR("relu_backward", dx, want, n, 0.0);
    be()->relu_backward(dy, dy, y, n); /* in place */
    CHECK_ARRAY_NEAR("relu_backward in place", dy, want, n, 0.0);
    be()->relu_forward(x, x, n);
    CHECK_ARRAY_NEAR("relu_forward in place", x, y, n, 0.0);
    release_buffers();
}

typedef struct {
    float *x, *y, *r;
    size_t n;
} relu_ctx_t;

static double relu_loss(void *p) {
    relu_ctx_t *c = p;
    be()->relu_forward(c->y, c->x, c->n);
    return dot(c->y, c->r, c->n);
}

void test_kernels_relu_gradcheck(void) {
    size_t n = 200;
    relu_ctx_t c = {random_floats(n, 1, -1, 1), buffer(n * sizeof(float)),
                    random_floats(n, 2, -1, 1), n};
    for (size_t i = 0; i < n; i++) /* keep clear of the kink at 0 */
        c.x[i] += c.x[i] > 0 ? 0.1f : -0.1f;
    float *dx = buffer(n * sizeof(float));
    relu_loss(&c);
    be()->relu_backward(dx, c.r, c.y, n);
    CHECK_ARRAY_NEAR("relu dx vs finite differences", dx,
                     numeric_grad(c.x, n, relu_loss, &c, 0.01f), n, 1e-3);
    release_buffers();
}

/* ---- softmax cross-entropy ---- */

static void ref_softmax_xent(double *probs, double *loss, const float *logits,
                             const int32_t *labels, size_t rows, size_t classes) {
    for (size_t r = 0; r < rows; r++) {
        const float *l = logits + r * classes;
        double max = l[0], sum = 0;
        for (size_t j = 1; j < classes; j++)
            max = l[j] > max ? l[j] : max;
        for (size_t j = 0; j < classes; j++)
            sum += exp(l[j] - max);
        for (size_t j = 0; j < classes; j++)
            probs[r * classes + j] = exp(l[j] - max) / sum;
        loss[r] = log(sum) - (l[labels[r]] - max);
    }
}

void test_kernels_softmax_xent(void) {
    size_t rows = 9, classes = 10;
    float *logits = random_floats(rows * classes, 1, -5, 5);
    int32_t *labels = buffer(rows * sizeof(int32_t));
    for (size_t r = 0; r < rows; r++)
        labels[r] = (int32_t)((r * 7) % classes);
    /* huge logits: exp would overflow without subtracting the max */
    for (size_t j = 0; j < classes; j++) {
        logits[j] = 1000.0f + (float)j;
        logits[classes + j] = -1000.0f - (float)j;
    }
    double *want_p = doubles(rows * classes), *want_l = doubles(rows);
    ref_softmax_xent(want_p, want_l, logits, labels, rows, classes);
    float *probs = filled(rows * classes, NAN), *loss = filled(rows, NAN);
    be()->softmax_xent_forward(probs, loss, logits, labels, rows, classes);
    CHECK_ARRAY_NEAR("softmax probs", probs, to_float(want_p, rows * classes), rows * classes,
                     1e-5);
    CHECK_ARRAY_NEAR("xent loss", loss, to_float(want_l, rows), rows, 1e-5);
    CHECK_NEAR(loss[0], 9.45862974, 1e-5); /* log(sum_j e^(j-9)) for label 0 */
    float *d = filled(rows * classes, NAN), *want_d = buffer(rows * classes * sizeof(float));
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < classes; j++)
            want_d[r * classes + j] =
                (float)(0.25 * (want_p[r * classes + j] - ((int32_t)j == labels[r])));
    be()->softmax_xent_backward(d, probs, labels, rows, classes, 0.25f);
    CHECK_ARRAY_NEAR("softmax_xent_backward", d, want_d, rows * classes, 1e-5);
    labels[0] = (int32_t)classes; /* out of range: a NaN loss, no stray write */
    be()->softmax_xent_forward(probs, loss, logits, labels, 1, classes);
    CHECK(isnan(loss[0]));
    release_buffers();
}

typedef struct {
    float *logits, *probs, *loss;
    int32_t *labels;
    size_t rows, classes;
} xent_ctx_t;

static double xent_loss(void *p) {
    xent_ctx_t *c = p;
    be()->softmax_xent_forward(c->probs, c->loss, c->logits, c->labels, c->rows, c->classes);
    double s = 0;
    for (size_t r = 0; r < c->rows; r++)
        s += c->loss[r];
    return s;
}

void test_kernels_softmax_xent_gradcheck(void) {
    size_t rows = 5, classes = 7;
    xent_ctx_t c = {random_floats(rows * classes, 1, -3, 3),
                    buffer(rows * classes * sizeof(float)),
                    buffer(rows * sizeof(float)),
                    buffer(rows * sizeof(int32_t)),
                    rows,
                    classes};
    for (size_t r = 0; r < rows; r++)
        c.labels[r] = (int32_t)(r % classes);
    float *d = buffer(rows * classes * sizeof(float));
    xent_loss(&c);
    be()->softmax_xent_backward(d, c.probs, c.labels, rows, classes, 1.0f);
    CHECK_ARRAY_NEAR("dlogits vs finite differences", d,
                     numeric_grad(c.logits, rows * classes, xent_loss, &c, 0.01f), rows * classes,
                     1e-3);
    release_buffers();
}

/* ---- binary cross-entropy and squared error (one output per row) ---- */

/* The textbook forms, in double: p = 1 / (1 + e^-z), -y log p - (1-y) log(1-p). */
static void ref_bce(double *probs, double *loss, const float *z, const int32_t *y, size_t rows) {
    for (size_t r = 0; r < rows; r++) {
        probs[r] = 1.0 / (1.0 + exp(-(double)z[r]));
        loss[r] = y[r] ? -log(probs[r]) : -log1p(-probs[r]);
    }
}

void test_kernels_sigmoid_bce(void) {
    size_t rows = 12;
    float *z = random_floats(rows, 3, -6, 6);
    int32_t *y = buffer(rows * sizeof(int32_t));
    for (size_t r = 0; r < rows; r++)
        y[r] = (int32_t)(r % 2);
    double *want_p = doubles(rows), *want_l = doubles(rows);
    ref_bce(want_p, want_l, z, y, rows);
    float *probs = filled(rows, NAN), *loss = filled(rows, NAN);
    be()->sigmoid_bce_forward(probs, loss, z, y, rows);
    CHECK_ARRAY_NEAR("sigmoid probs", probs, to_float(want_p, rows), rows, 1e-6);
    CHECK_ARRAY_NEAR("bce loss", loss, to_float(want_l, rows), rows, 1e-5);
    float *d = filled(rows, NAN), *want_d = buffer(rows * sizeof(float));
    for (size_t r = 0; r < rows; r++)
        want_d[r] = (float)(0.5 * (want_p[r] - y[r]));
    be()->sigmoid_bce_backward(d, probs, y, rows, 0.5f);
    CHECK_ARRAY_NEAR("sigmoid_bce_backward", d, want_d, rows, 1e-6);
    /* large logits: the textbook form overflows or gives log(0), the logit form is exact */
    float big[4] = {100.0f, -100.0f, 100.0f, -100.0f};
    int32_t yb[4] = {1, 0, 0, 1};
    be()->sigmoid_bce_forward(probs, loss, big, yb, 4);
    CHECK_NEAR(loss[0], 0.0, 1e-6);
    CHECK_NEAR(loss[1], 0.0, 1e-6);
    CHECK_NEAR(loss[2], 100.0, 1e-4);
    CHECK_NEAR(loss[3], 100.0, 1e-4);
    CHECK_NEAR(probs[0], 1.0, 1e-7);
    CHECK_NEAR(probs[1], 0.0, 1e-7);
    yb[0] = 2; /* not 0 or 1: a NaN loss */
    be()->sigmoid_bce_forward(probs, loss, big, yb, 1);
    CHECK(isnan(loss[0]));
    release_buffers();
}

typedef struct {
    float *z, *out, *loss;
    int32_t *labels;
    size_t rows;
    bool mse;
} loss1_ctx_t;

static double loss1_sum(void *p) {
    loss1_ctx_t *c = p;
    if (c->mse)
        be()->mse_forward(c->out, c->loss, c->z, c->labels, c->rows);
    else
        be()->sigmoid_bce_forward(c->out, c->loss, c->z, c->labels, c->rows);
    double s = 0;
    for (size_t r = 0; r < c->rows; r++)
        s += c->loss[r];
    return s;
}

static void loss1_gradcheck(bool mse) {
    size_t rows = 8;
    loss1_ctx_t c = {random_floats(rows, 5, -3, 3),
                     buffer(rows * sizeof(float)),
                     buffer(rows * sizeof(float)),
                     buffer(rows * sizeof(int32_t)),
                     rows,
                     mse};
    for (size_t r = 0; r < rows; r++)
        c.labels[r] = mse ? (int32_t)r - 3 : (int32_t)(r % 2);
    float *d = buffer(rows * sizeof(float));
    loss1_sum(&c);
    if (mse)
        be()->mse_backward(d, c.out, c.labels, rows, 1.0f);
    else
        be()->sigmoid_bce_backward(d, c.out, c.labels, rows, 1.0f);
    CHECK_ARRAY_NEAR(mse ? "mse dx vs finite differences" : "bce dz vs finite differences", d,
                     numeric_grad(c.z, rows, loss1_sum, &c, 0.01f), rows, 1e-3);
    release_buffers();
}

void test_kernels_sigmoid_bce_gradcheck(void) {
    loss1_gradcheck(false);
}

void test_kernels_mse(void) {
    size_t rows = 6;
    float x[6] = {0.5f, -1.0f, 2.0f, 3.0f, 0.0f, -4.5f};
    int32_t y[6] = {1, -1, 0, 3, 2, -4};
    float want_l[6], want_d[6], *out = filled(rows, NAN), *loss = filled(rows, NAN),
                                *d = filled(rows, NAN);
    for (size_t r = 0; r < rows; r++) {
        double e = (double)x[r] - y[r];
        want_l[r] = (float)(e * e);
        want_d[r] = (float)(0.25 * 2.0 * e);
    }
    be()->mse_forward(out, loss, x, y, rows);
    CHECK_ARRAY_NEAR("mse output is the input", out, x, rows, 0.0);
    CHECK_ARRAY_NEAR("mse loss", loss, want_l, rows, 1e-6);
    CHECK_NEAR(loss[2], 4.0, 1e-6);
    be()->mse_backward(d, out, y, rows, 0.25f);
    CHECK_ARRAY_NEAR("mse_backward", d, want_d, rows, 1e-6);
    release_buffers();
}

void test_kernels_mse_gradcheck(void) {
    loss1_gradcheck(true);
}

/* ---- dropout ---- */

void test_kernels_dropout(void) {
    size_t n = 100000;
    float rate = 0.25f, scale = 1.0f / (1.0f - rate);
    uint64_t key = rng_key(7, "dropout", 3);
    float *x = random_floats(n, 1, 0.5f, 1.5f), *y = filled(n, NAN), *y2 = filled(n, NAN);
    be()->dropout_forward(y, x, n, rate, key, 0);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        bool keep = rng_uniform(key, i) >= rate; /* the contract's rule, bit for bit */
        CHECK(y[i] == (keep ? x[i] * scale : 0.0f));
        kept += keep;
    }
    CHECK_NEAR((double)kept / (double)n, 1.0 - rate, 0.01);
    be()->dropout_forward(y2, x, n, rate, key, 0); /* deterministic */
    CHECK_ARRAY_NEAR("dropout again", y2, y, n, 0.0);
    /* backward masks dy with the same mask */
    float *dy = random_floats(n, 2, -1, 1), *dx = filled(n, NAN);
    be()->dropout_backward(dx, dy, n, rate, key, 0);
    for (size_t i = 0; i < n; i++)
        CHECK(dx[i] == (y[i] != 0.0f ? dy[i] * scale : 0.0f));
    /* an offset shifts the mask: two halves with offsets 0 and n/2 = the whole */
    float *halves = filled(n, NAN);
    be()->dropout_forward(halves, x, n / 2, rate, key, 0);
    be()->dropout_forward(halves + n / 2, x + n / 2, n - n / 2, rate, key, n / 2);
    CHECK_ARRAY_NEAR("dropout halves", halves, y, n, 0.0);
    /* another key gives another mask; rate 0 is the identity; in place works */
    be()->dropout_forward(y2, x, n, rate, key + 1, 0);
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        same += (y2[i] == 0.0f) == (y[i] == 0.0f);
    CHECK(same < n - n / 10);
    be()->dropout_forward(y2, x, n, 0.0f, key, 0);
    CHECK_ARRAY_NEAR("dropout rate 0", y2, x, n, 0.0);
    be()->dropout_forward(x, x, n, rate, key, 0);
    CHECK_ARRAY_NEAR("dropout in place", x, y, n, 0.0);
    release_buffers();
}

void test_kernels_dropout_rates(void) {
    /* the integer threshold must agree with the float rule at awkward rates */
    float rates[] = {0.5f, 0.1f, 0.3333333f, 0.9f, 1e-7f, 0.99999994f, 1.0f};
    size_t n = 20000;
    float *x = filled(n, 1.0f), *y = filled(n, NAN);
    for (size_t k = 0; k < sizeof rates / sizeof rates[0]; k++) {
        be()->dropout_forward(y, x, n, rates[k], 99, 12345);
        for (size_t i = 0; i < n; i++) {
            bool keep = rng_uniform(99, 12345 + i) >= rates[k];
            if ((y[i] != 0.0f) != keep) {
                fprintf(stderr, "  rate %.9g element %zu\n", (double)rates[k], i);
                CHECK(false);
            }
        }
    }
    release_buffers();
}

void test_kernels_dropout_threshold(void) {
    /* rates exactly at, just below and just above an element's draw: kept,
     * kept, dropped, as rng_uniform(key, i) >= rate says */
    float *x = filled(1, 1.0f), *y = filled(1, NAN);
    for (uint64_t i = 0; i < 50; i++) {
        float u = rng_uniform(5, i);
        float rates[] = {u, nextafterf(u, -1.0f), nextafterf(u, 2.0f)};
        for (int k = 0; k < 3; k++) {
            be()->dropout_forward(y, x, 1, rates[k], 5, i);
            if ((y[0] != 0.0f) != (k < 2)) {
                fprintf(stderr, "  draw %.9g rate %.9g\n", (double)u, (double)rates[k]);
                CHECK(false);
            }
        }
    }
    release_buffers();
}

typedef struct {
    float *x, *y, *r;
    size_t n;
} dropout_ctx_t;

static double dropout_loss(void *p) {
    dropout_ctx_t *c = p;
    be()->dropout_forward(c->y, c->x, c->n, 0.5f, 42, 1000);
    return dot(c->y, c->r, c->n);
}

void test_kernels_dropout_gradcheck(void) {
    size_t n = 300;
    dropout_ctx_t c = {random_floats(n, 1, -1, 1), buffer(n * sizeof(float)),
                       random_floats(n, 2, -1, 1), n};
    float *dx = buffer(n * sizeof(float));
    be()->dropout_backward(dx, c.r, n, 0.5f, 42, 1000);
    CHECK_ARRAY_NEAR("dropout dx vs finite differences", dx,
                     numeric_grad(c.x, n, dropout_loss, &c, 0.05f), n, 1e-3);
    release_buffers();
}

/* ---- threads ---- */

/* Two threads run the conv ops on their own data at once, as the trainer
 * does with half a batch each; each must get what it gets alone. */
typedef struct {
    conv2d_shape_t s;
    float *x, *w, *y, *dx, *dw;
    void *ws;
} conv_job_t;

static void run_conv_job(conv_job_t *j) {
    for (int rep = 0; rep < 3; rep++) {
        be()->conv2d_forward(j->y, j->x, j->w, &j->s, j->ws);
        be()->conv2d_backward_data(j->dx, j->y, j->w, &j->s, j->ws);
        be()->conv2d_backward_filter(j->dw, j->y, j->x, &j->s, j->ws);
    }
}

static void *conv_job_thread(void *p) {
    run_conv_job(p);
    return NULL;
}

static void conv_job_init(conv_job_t *j, uint64_t seed) {
    conv_case_t t = {4, 14, 14, 16, 3, 3, 24, 1, 1, true};
    j->s = conv_case_shape(&t);
    j->x = random_floats(conv_x_size(&j->s), seed, -1, 1);
    j->w = random_floats(conv_w_size(&j->s), seed + 1, -1, 1);
    j->y = buffer(conv_y_size(&j->s) * sizeof(float));
    j->dx = buffer(conv_x_size(&j->s) * sizeof(float));
    j->dw = buffer(conv_w_size(&j->s) * sizeof(float));
    j->ws = conv_ws(&j->s);
}

void test_kernels_threads(void) {
    conv_job_t alone[2], together[2];
    for (int i = 0; i < 2; i++) {
        conv_job_init(&alone[i], 10 * (uint64_t)i);
        conv_job_init(&together[i], 10 * (uint64_t)i);
        run_conv_job(&alone[i]);
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_INT_EQ(pthread_create(&th[i], NULL, conv_job_thread, &together[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK_ARRAY_NEAR("y", together[i].y, alone[i].y, conv_y_size(&alone[i].s), 0.0);
        CHECK_ARRAY_NEAR("dx", together[i].dx, alone[i].dx, conv_x_size(&alone[i].s), 0.0);
        CHECK_ARRAY_NEAR("dw", together[i].dw, alone[i].dw, conv_w_size(&alone[i].s), 0.0);
    }
    release_buffers();
}

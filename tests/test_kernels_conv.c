/* Tests of the CPU backend's convolution and max pooling: each op against a
 * naive reference written here (direct loops, double accumulation), with every
 * product kernel, each backward op against central differences, and the ops
 * run on two threads at once. */
#include "test.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "test_helpers.h"
#include "test_kernels_helpers.h"

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
    /* 3x3, stride 1, channels in multiples of 16 from 32 on: Winograd's
     * F(2x2, 3x3) forward and backward-data; odd sizes leave partial 2x2
     * tiles, 'valid' reads no padding forward and two rows of it backward,
     * and the CNN's conv2 at one image spans several chunks of tiles */
    {2, 7, 9, 32, 3, 3, 48, 1, 1, true},
    {3, 6, 5, 32, 3, 3, 32, 1, 1, false},
    {2, 5, 3, 48, 3, 3, 32, 1, 1, true},
    {1, 2, 1, 32, 3, 3, 32, 1, 1, true},
    {1, 28, 28, 32, 3, 3, 64, 1, 1, true},
    /* 210 tiles of 42 per image: chunks of 96 end inside images */
    {5, 13, 12, 32, 3, 3, 32, 1, 1, true},
    {1, 3, 3, 32, 3, 3, 32, 1, 1, false},
    /* 16 channels: im2col */
    {2, 5, 3, 16, 3, 3, 16, 1, 1, true},
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
    size_t picks[] = {1, 2, 4, 9, 11, 21}; /* 21: Winograd */
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

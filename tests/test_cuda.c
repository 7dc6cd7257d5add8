/* Tests of a device backend against the CPU backend: every op of the CUDA
 * plugin on the same inputs as the CPU op (which tests/test_kernels.c checks
 * against references), a gradient check through a whole CNN, and the
 * trainer's device path (weights and gradients moved layer by layer, batches
 * staged, the store and optimizer on the device).
 *
 * The cuda_* tests need a GPU and skip, saying why, where none is usable.
 * The device_* tests run the same checks on an emulated device: the CPU's
 * ops behind memory that is not the host's (host_memory false, fresh
 * buffers full of NaN), so that CI runs the trainer's device path and this
 * file's own logic without a GPU.
 *
 * On a GPU machine: scripts/test_cuda.sh (ctest -R 'cuda_|device_'). */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/model/model.h"
#include "common/train/store.h"
#include "common/train/trainer.h"
#include "common/base/util.h"
#include "kernels/backend.h"
#include "test_helpers.h"

/* ---- backends ---- */

static const backend_t *cpu(void) {
    cpu_backend_init();
    return cpu_backend();
}

static char gpu_why[PSTRAIN_BACKEND_WHY];

/* The GPU with convolutions in the given math ("fp32" for comparisons
 * within float rounding, "tf32" as training runs), or NULL with gpu_why. */
static const backend_t *open_gpu(const char *math) {
    setenv("PSTRAIN_CUDA_MATH", math, 1);
    backend_choice_t c;
    if (backend_open("gpu", &c, gpu_why, sizeof gpu_why))
        return NULL;
    printf("GPU: %s\n", c.about);
    return c.be;
}

#define NEED_GPU(var, math)                                                                        \
    const backend_t *var = open_gpu(math);                                                         \
    if (!var) {                                                                                    \
        test_skip("no usable GPU: %s", gpu_why);                                                   \
        return;                                                                                    \
    }

/* Fresh device memory reads as NaN: a value the code under test forgot to
 * copy or compute shows. */
static void *emu_alloc(size_t bytes) {
    size_t rounded = ((bytes ? bytes : 64) + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded);
    if (p)
        memset(p, 0xff, rounded);
    return p;
}

static const backend_t *emulated(void) {
    static backend_t emu;
    emu = *cpu();
    emu.name = "emulated";
    emu.host_memory = false;
    emu.alloc = emu_alloc;
    return &emu;
}

/* ---- buffers: host and device, freed together at the end of a check ---- */

#define MAX_BUFS 96
static struct {
    const backend_t *be; /* NULL: host memory from malloc */
    void *p;
} bufs[MAX_BUFS];
static size_t nbufs;

static void *track(const backend_t *be, void *p) {
    if (!p || nbufs == MAX_BUFS) {
        fprintf(stderr, "test_cuda: allocation failed or more than %d buffers\n", MAX_BUFS);
        abort();
    }
    bufs[nbufs].be = be;
    bufs[nbufs++].p = p;
    return p;
}

static void release(void) {
    for (size_t i = 0; i < nbufs; i++) {
        if (bufs[i].be)
            bufs[i].be->free(bufs[i].p);
        else
            free(bufs[i].p);
    }
    nbufs = 0;
}

static float *host(size_t n) {
    return track(NULL, xmalloc((n ? n : 1) * sizeof(float)));
}

/* n floats uniform in [lo, hi) from the seed */
static float *randoms(size_t n, uint64_t seed, float lo, float hi) {
    float *p = host(n);
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * rng_uniform(seed, i);
    return p;
}

static float *fill(size_t n, float v) {
    float *p = host(n);
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

/* A device copy of n host floats (or bytes, for the _bytes form). */
static void *dev_bytes(const backend_t *be, const void *src, size_t bytes) {
    void *d = track(be, be->alloc(bytes));
    be->upload(d, src, bytes);
    return d;
}

static float *dev(const backend_t *be, const float *src, size_t n) {
    return dev_bytes(be, src, n * sizeof(float));
}

/* A host copy of n device floats. */
static float *back(const backend_t *be, const float *d, size_t n) {
    float *h = host(n);
    be->download(h, d, n * sizeof(float));
    return h;
}

/* A device workspace for a conv shape. */
static void *conv_ws(const backend_t *be, const conv2d_shape_t *s) {
    return track(be, be->alloc(be->conv2d_workspace(s)));
}

/* ---- memory, copies, events ---- */

static void check_memory(const backend_t *be) {
    float h[1000], got[1000];
    for (int i = 0; i < 1000; i++)
        h[i] = (float)i * 0.25f - 7.0f;
    float *d = dev(be, h, 1000);
    CHECK_ARRAY_NEAR("upload/download", back(be, d, 1000), h, 1000, 0.0);
    be->zero(d, 500 * sizeof(float));
    float *z = back(be, d, 1000);
    for (int i = 0; i < 500; i++)
        CHECK(z[i] == 0.0f);
    CHECK(z[500] == h[500]);
    /* async copies through page-locked host memory, ordered by events */
    float *pin = be->host_alloc(1000 * sizeof(float)), *pout = be->host_alloc(1000 * sizeof(float));
    backend_event_t *up = be->event_create(), *down = be->event_create();
    CHECK(pin && pout && up && down);
    memcpy(pin, h, sizeof h);
    be->upload_async(d, pin, sizeof h, up);
    be->wait_event(up);
    be->axpy(d, 2.0f, d, 1000); /* d = 3 h, queued after the upload */
    be->download_async(pout, d, sizeof h, down);
    be->sync_event(down);
    for (int i = 0; i < 1000; i++)
        got[i] = h[i] * 3.0f;
    CHECK_ARRAY_NEAR("async copies", pout, got, 1000, 1e-6);
    be->host_free(pin);
    be->host_free(pout);
    be->event_free(up);
    be->event_free(down);
    release();
}

/* ---- products and vectors ---- */

static void check_gemm(const backend_t *be, bool ta, bool tb, size_t m, size_t n, size_t k,
                       float alpha, float beta) {
    float *a = randoms(m * k, 1, -1, 1), *b = randoms(k * n, 2, -1, 1);
    float *c = beta == 0.0f ? fill(m * n, NAN) : randoms(m * n, 3, -1, 1);
    float *want = host(m * n);
    memcpy(want, c, m * n * sizeof(float));
    cpu()->gemm(ta, tb, m, n, k, alpha, a, b, beta, want);
    float *dc = dev(be, c, m * n);
    be->gemm(ta, tb, m, n, k, alpha, dev(be, a, m * k), dev(be, b, k * n), beta, dc);
    char what[96];
    snprintf(what, sizeof what, "gemm ta=%d tb=%d %zux%zux%zu alpha=%g beta=%g", ta, tb, m, n, k,
             (double)alpha, (double)beta);
    CHECK_ARRAY_NEAR(what, back(be, dc, m * n), want, m * n, 1e-4);
}

static void check_gemms(const backend_t *be) {
    /* the dense layers of the CNN (batch 16), odd sizes, k = 0 */
    size_t dims[][3] = {{16, 128, 12544}, {12544, 128, 16}, {16, 12544, 128}, {16, 10, 128},
                        {7, 5, 3},        {1, 1, 1},        {33, 17, 65},     {4, 6, 0}};
    float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, 0.25f}};
    for (size_t d = 0; d < PS_ARRAY_LEN(dims) && !test_failures; d++)
        for (int t = 0; t < 4 && !test_failures; t++)
            for (size_t s = 0; s < PS_ARRAY_LEN(ab) && !test_failures; s++) {
                check_gemm(be, t & 1, t & 2, dims[d][0], dims[d][1], dims[d][2], ab[s][0],
                           ab[s][1]);
                release();
            }
}

static void check_vectors(const backend_t *be) {
    size_t n = 100003;
    float *x = randoms(n, 1, -1, 1), *y = randoms(n, 2, -1, 1), *want = host(n);
    memcpy(want, y, n * sizeof(float));
    cpu()->axpy(want, -0.75f, x, n);
    float *dy = dev(be, y, n);
    be->axpy(dy, -0.75f, dev(be, x, n), n);
    CHECK_ARRAY_NEAR("axpy", back(be, dy, n), want, n, 1e-6);
    uint8_t px[256];
    for (int i = 0; i < 256; i++)
        px[i] = (uint8_t)(255 - i);
    float *pw = host(256), *dout = dev(be, fill(256, NAN), 256);
    cpu()->scale_u8(pw, px, 256, 1.0f / 255.0f);
    be->scale_u8(dout, dev_bytes(be, px, 256), 256, 1.0f / 255.0f);
    CHECK_ARRAY_NEAR("scale_u8", back(be, dout, 256), pw, 256, 0.0);
    release();
}

/* ---- convolution ---- */

/* Symmetric and asymmetric 'same' padding (the odd row at the bottom, the
 * odd column at the right), 'valid' with strides, 1x1, kernels larger than
 * the input, and the Keras MNIST CNN's two layers. */
static const conv_case_t conv_cases[] = {
    {3, 7, 5, 3, 3, 3, 4, 1, 1, true},    {3, 7, 5, 3, 3, 3, 4, 2, 2, true},
    {3, 8, 6, 3, 3, 3, 4, 2, 2, true},    {3, 7, 5, 3, 2, 2, 4, 1, 1, true},
    {3, 7, 5, 3, 2, 3, 4, 2, 1, true},    {2, 6, 6, 5, 4, 4, 3, 3, 3, true},
    {3, 7, 5, 3, 3, 3, 4, 2, 2, false},   {3, 7, 5, 3, 2, 3, 4, 1, 1, false},
    {3, 7, 5, 3, 1, 1, 4, 1, 1, true},    {3, 7, 5, 3, 1, 1, 4, 2, 2, false},
    {2, 2, 3, 3, 5, 5, 4, 1, 1, true},    {1, 2, 2, 2, 7, 7, 16, 4, 4, true},
    {4, 28, 28, 1, 3, 3, 32, 1, 1, true}, {4, 28, 28, 32, 3, 3, 64, 1, 1, true},
};

/* Case t at batch n. */
static conv2d_shape_t shape_of(const conv_case_t *t, size_t n) {
    conv_case_t c = *t;
    c.n = n;
    return conv_case_shape(&c);
}

/* The three ops of shape s (its workspace queried at shape q, as a
 * trainer queries at its largest batch) against the CPU's. */
static void check_conv(const backend_t *be, const conv2d_shape_t *s, const conv2d_shape_t *q,
                       double tol) {
    size_t nx = s->n * s->h * s->w * s->c, ny = s->n * s->oh * s->ow * s->f;
    size_t nw = s->kh * s->kw * s->c * s->f;
    float *x = randoms(nx, 1, -1, 1), *w = randoms(nw, 2, -1, 1), *dy = randoms(ny, 3, -1, 1);
    float *y = host(ny), *dx = host(nx), *dw = host(nw);
    void *cws = track(NULL, xalloc_aligned(cpu()->conv2d_workspace(s)));
    cpu()->conv2d_forward(y, x, w, s, cws);
    cpu()->conv2d_backward_data(dx, dy, w, s, cws);
    cpu()->conv2d_backward_filter(dw, dy, x, s, cws);
    void *ws = conv_ws(be, q);
    float *gx = dev(be, x, nx), *gw = dev(be, w, nw), *gdy = dev(be, dy, ny);
    float *gy = dev(be, fill(ny, NAN), ny), *gdx = dev(be, fill(nx, NAN), nx);
    float *gdw = dev(be, fill(nw, NAN), nw);
    be->conv2d_forward(gy, gx, gw, s, ws);
    be->conv2d_backward_data(gdx, gdy, gw, s, ws);
    be->conv2d_backward_filter(gdw, gdy, gx, s, ws);
    CHECK_ARRAY_NEAR("conv2d_forward", back(be, gy, ny), y, ny, tol);
    CHECK_ARRAY_NEAR("conv2d_backward_data", back(be, gdx, nx), dx, nx, tol);
    CHECK_ARRAY_NEAR("conv2d_backward_filter", back(be, gdw, nw), dw, nw, tol);
}

static void check_convs(const backend_t *be, double tol) {
    for (size_t i = 0; i < PS_ARRAY_LEN(conv_cases) && !test_failures; i++) {
        conv2d_shape_t s = shape_of(&conv_cases[i], conv_cases[i].n);
        check_conv(be, &s, &s, tol);
        release();
        if (test_failures)
            describe_conv(&s);
    }
}

/* Workspace queried at a batch of 9, ops run at 9, 4 and 1 (an epoch's
 * last batch, evaluation), and an empty 'valid' output. */
static void check_conv_batches(const backend_t *be) {
    size_t picks[] = {1, 3, 13};
    size_t batches[] = {9, 4, 1};
    for (size_t i = 0; i < PS_ARRAY_LEN(picks) && !test_failures; i++) {
        conv2d_shape_t q = shape_of(&conv_cases[picks[i]], 9);
        for (size_t b = 0; b < PS_ARRAY_LEN(batches) && !test_failures; b++) {
            conv2d_shape_t s = shape_of(&conv_cases[picks[i]], batches[b]);
            check_conv(be, &s, &q, 1e-4);
            release();
            if (test_failures)
                describe_conv(&s);
        }
    }
    conv_case_t t = {2, 2, 5, 3, 3, 3, 16, 1, 1, false};
    conv2d_shape_t s = shape_of(&t, 2);
    CHECK_INT_EQ(s.oh, 0);
    size_t nx = 2 * 2 * 5 * 3, nw = 3 * 3 * 3 * 16;
    void *ws = conv_ws(be, &s);
    float *gdx = dev(be, fill(nx, NAN), nx), *gdw = dev(be, fill(nw, NAN), nw);
    be->conv2d_forward(NULL, dev(be, fill(nx, 1), nx), dev(be, fill(nw, 1), nw), &s, ws);
    be->conv2d_backward_data(gdx, NULL, dev(be, fill(nw, 1), nw), &s, ws);
    be->conv2d_backward_filter(gdw, NULL, dev(be, fill(nx, 1), nx), &s, ws);
    CHECK_ARRAY_NEAR("empty dx", back(be, gdx, nx), fill(nx, 0), nx, 0.0);
    CHECK_ARRAY_NEAR("empty dw", back(be, gdw, nw), fill(nw, 0), nw, 0.0);
    release();
}

/* ---- pooling, bias, relu, softmax, dropout ---- */

static const pool_case_t pool_cases[] = {
    {2, 8, 6, 3, 2, 2, false}, {2, 7, 5, 3, 2, 2, false}, {2, 7, 5, 3, 2, 2, true},
    {2, 7, 5, 3, 3, 1, true},  {2, 7, 5, 3, 3, 2, true},  {1, 5, 5, 70, 3, 2, true},
    {2, 6, 5, 3, 2, 1, false}, {1, 2, 2, 3, 3, 1, true},  {4, 28, 28, 64, 2, 2, false},
};

/* Values from three levels, so most windows hold ties: the gradient must go
 * to the first maximum, as on the CPU; and negatives, so that padding read
 * as 0 would win. */
static void check_pool(const backend_t *be, const pool_case_t *t) {
    pool2d_shape_t s = pool_case_shape(t);
    size_t nx = s.n * s.h * s.w * s.c, ny = s.n * s.oh * s.ow * s.c;
    float *x = randoms(nx, 1, 0, 3), *dy = randoms(ny, 2, -1, 1);
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)(int)x[i] - 3.0f;
    float *y = host(ny), *dx = host(nx);
    cpu()->maxpool2d_forward(y, x, &s);
    cpu()->maxpool2d_backward(dx, dy, x, y, &s);
    float *gx = dev(be, x, nx), *gy = dev(be, fill(ny, NAN), ny), *gdx = dev(be, fill(nx, NAN), nx);
    be->maxpool2d_forward(gy, gx, &s);
    be->maxpool2d_backward(gdx, dev(be, dy, ny), gx, gy, &s);
    CHECK_ARRAY_NEAR("maxpool2d_forward", back(be, gy, ny), y, ny, 0.0);
    CHECK_ARRAY_NEAR("maxpool2d_backward", back(be, gdx, nx), dx, nx, 1e-6);
}

static void check_pools(const backend_t *be) {
    for (size_t i = 0; i < PS_ARRAY_LEN(pool_cases) && !test_failures; i++) {
        check_pool(be, &pool_cases[i]);
        release();
        if (test_failures)
            fprintf(stderr, "  pool case %zu\n", i);
    }
}

static void check_bias_relu(const backend_t *be) {
    size_t shapes[][2] = {{301, 300}, {64 * 28 * 28, 64}, {5, 70000}, {0, 8}};
    for (size_t k = 0; k < PS_ARRAY_LEN(shapes) && !test_failures; k++) {
        size_t rows = shapes[k][0], cols = shapes[k][1], n = rows * cols;
        float *y = randoms(n, 1, -1, 1), *b = randoms(cols, 2, -1, 1), *db = host(cols);
        cpu()->bias_grad(db, y, rows, cols);
        float *gy = dev(be, y, n), *gdb = dev(be, fill(cols, NAN), cols);
        be->bias_grad(gdb, gy, rows, cols);
        CHECK_ARRAY_NEAR("bias_grad", back(be, gdb, cols), db, cols, 1e-4);
        cpu()->bias_add(y, b, rows, cols);
        be->bias_add(gy, dev(be, b, cols), rows, cols);
        CHECK_ARRAY_NEAR("bias_add", back(be, gy, n), y, n, 1e-6);
        float *r = host(n), *dr = host(n), *dy = randoms(n, 3, -1, 1);
        cpu()->relu_forward(r, y, n);
        cpu()->relu_backward(dr, dy, r, n);
        float *gr = dev(be, fill(n, NAN), n), *gdy = dev(be, dy, n);
        be->relu_forward(gr, gy, n);
        be->relu_forward(gy, gy, n); /* in place */
        be->relu_backward(gdy, gdy, gr, n);
        CHECK_ARRAY_NEAR("relu_forward", back(be, gr, n), r, n, 0.0);
        CHECK_ARRAY_NEAR("relu_forward in place", back(be, gy, n), r, n, 0.0);
        CHECK_ARRAY_NEAR("relu_backward in place", back(be, gdy, n), dr, n, 0.0);
        release();
    }
}

static void check_softmax(const backend_t *be) {
    size_t sizes[][2] = {{9, 10}, {300, 10}, {7, 100}};
    for (size_t k = 0; k < PS_ARRAY_LEN(sizes) && !test_failures; k++) {
        size_t rows = sizes[k][0], classes = sizes[k][1], n = rows * classes;
        float *l = randoms(n, 1, -5, 5);
        for (size_t j = 0; j < classes; j++) /* logits that overflow exp without the max */
            l[j] = 1000.0f + (float)j;
        int32_t *lab = track(NULL, xmalloc(rows * sizeof(int32_t)));
        for (size_t r = 0; r < rows; r++)
            lab[r] = (int32_t)((r * 7) % classes);
        lab[rows - 1] = (int32_t)classes; /* out of range: NaN loss, no stray write */
        float *p = host(n), *loss = host(rows), *d = host(n);
        cpu()->softmax_xent_forward(p, loss, l, lab, rows, classes);
        cpu()->softmax_xent_backward(d, p, lab, rows, classes, 0.25f);
        int32_t *glab = dev_bytes(be, lab, rows * sizeof(int32_t));
        float *gp = dev(be, fill(n, NAN), n), *gl = dev(be, fill(rows, NAN), rows);
        float *gd = dev(be, fill(n, NAN), n);
        be->softmax_xent_forward(gp, gl, dev(be, l, n), glab, rows, classes);
        be->softmax_xent_backward(gd, gp, glab, rows, classes, 0.25f);
        float *hl = back(be, gl, rows);
        CHECK(isnan(hl[rows - 1]));
        CHECK_ARRAY_NEAR("softmax probs", back(be, gp, n), p, n, 1e-5);
        CHECK_ARRAY_NEAR("xent loss", hl, loss, rows - 1, 1e-5);
        CHECK_ARRAY_NEAR("softmax_xent_backward", back(be, gd, n), d, n, 1e-5);
        release();
    }
}

/* Masks bit for bit: awkward rates, offsets, in place, and backward. */
static void check_dropout(const backend_t *be) {
    float rates[] = {0.25f, 0.5f, 0.1f, 0.3333333f, 0.9f, 1e-7f, 0.99999994f, 1.0f, 0.0f};
    size_t n = 200001;
    uint64_t offsets[] = {0, 12345, (uint64_t)1 << 40};
    float *x = randoms(n, 1, -1.5f, 1.5f), *want = host(n);
    float *gx = dev(be, x, n), *gy = dev(be, fill(n, NAN), n);
    for (size_t r = 0; r < PS_ARRAY_LEN(rates) && !test_failures; r++)
        for (size_t o = 0; o < PS_ARRAY_LEN(offsets) && !test_failures; o++) {
            uint64_t key = rng_key(7, "dropout", r);
            cpu()->dropout_forward(want, x, n, rates[r], key, offsets[o]);
            be->dropout_forward(gy, gx, n, rates[r], key, offsets[o]);
            CHECK_ARRAY_NEAR("dropout_forward", back(be, gy, n), want, n, 0.0);
            cpu()->dropout_backward(want, x, n, rates[r], key, offsets[o]);
            be->dropout_backward(gy, gx, n, rates[r], key, offsets[o]);
            CHECK_ARRAY_NEAR("dropout_backward", back(be, gy, n), want, n, 0.0);
            if (test_failures)
                fprintf(stderr, "  rate %.9g offset %llu\n", (double)rates[r],
                        (unsigned long long)offsets[o]);
        }
    cpu()->dropout_forward(want, x, n, 0.5f, 3, 9);
    be->dropout_forward(gx, gx, n, 0.5f, 3, 9);
    CHECK_ARRAY_NEAR("dropout in place", back(be, gx, n), want, n, 0.0);
    release();
}

/* Each update rule, three steps, against the CPU's. */
static void check_updates(const backend_t *be) {
    size_t n = 10007;
    for (int rule = UPDATE_SGD; rule <= UPDATE_ADAGRAD && !test_failures; rule++) {
        update_step_t k = {.rule = (update_rule_t)rule,
                           .lr = 0.01f,
                           .mom = 0.9f,
                           .alpha = 0.003f,
                           .b1 = 0.9f,
                           .one_minus_b1 = 0.1f,
                           .b2 = 0.999f,
                           .one_minus_b2 = 0.001f,
                           .rho = 0.9f,
                           .one_minus_rho = 0.1f,
                           .eps = 1e-7f};
        float *w = randoms(n, 1, -1, 1), *s0 = randoms(n, 2, 0, 1), *s1 = randoms(n, 3, 0, 1);
        float *gw = dev(be, w, n), *gs0 = dev(be, s0, n), *gs1 = dev(be, s1, n);
        for (uint64_t step = 0; step < 3; step++) {
            float *g = randoms(n, 10 + step, -1, 1);
            cpu()->apply_update(&k, w, s0, s1, g, n);
            be->apply_update(&k, gw, gs0, gs1, dev(be, g, n), n);
        }
        CHECK_ARRAY_NEAR("weights", back(be, gw, n), w, n, 1e-5);
        CHECK_ARRAY_NEAR("slot 0", back(be, gs0, n), s0, n, 1e-5);
        CHECK_ARRAY_NEAR("slot 1", back(be, gs1, n), s1, n, 1e-5);
        if (test_failures)
            fprintf(stderr, "  update rule %d\n", rule);
        release();
    }
}

/* ---- whole models ---- */

/* A small CNN with every layer kind, asymmetric 'same' padding (kernel 2)
 * and a strided conv. */
static const char *small_cnn =
    "{\"input\": [9, 8, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, "
    "\"kernel_size\": 3, \"padding\": \"same\", \"activation\": \"relu\"}, {\"type\": "
    "\"conv2d\", \"filters\": 5, \"kernel_size\": 2, \"padding\": \"same\", \"activation\": "
    "\"relu\"}, {\"type\": \"conv2d\", \"filters\": 6, \"kernel_size\": 3, \"strides\": 2, "
    "\"padding\": \"same\"}, {\"type\": \"max_pool2d\", \"pool_size\": 2, \"padding\": "
    "\"same\"}, {\"type\": \"dropout\", \"rate\": 0.25}, {\"type\": \"flatten\"}, {\"type\": "
    "\"dense\", \"units\": 7, \"activation\": \"relu\"}, {\"type\": \"dropout\", \"rate\": 0.5}, "
    "{\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}]}";

typedef struct {
    model_t m;
    size_t n, in_size;
    float *x, *params;
    int32_t *y;
} fixture_t;

/* A model, a batch of n and weights (biases moved off zero). */
static int fixture(fixture_t *f, const char *spec, size_t n, uint64_t seed) {
    char err[PS_ERRLEN];
    int rc = spec[0] == '{' ? model_parse(&f->m, spec, err, sizeof err)
                            : model_load(&f->m, spec, err, sizeof err);
    if (rc) {
        test_fail(__FILE__, __LINE__, "model: %s", err);
        return -1;
    }
    f->n = n;
    f->in_size = f->m.input[0] * f->m.input[1] * f->m.input[2];
    f->x = randoms(n * f->in_size, seed, 0, 1);
    f->y = track(NULL, xmalloc(n * sizeof(int32_t)));
    for (size_t i = 0; i < n; i++)
        f->y[i] = (int32_t)(rng_mix(seed + 1, i) % f->m.nclasses);
    f->params = host(f->m.nparams);
    model_init_params(&f->m, seed + 2, f->params);
    for (size_t i = 0; i < f->m.nparams; i++)
        f->params[i] += 0.05f * (rng_uniform(seed + 3, i) - 0.5f);
    return 0;
}

/* model_backward on backend be against central differences of the loss on
 * be, for a sample of every variable's elements; one element of the device
 * weights changes at a time. */
static void check_gradcheck(const backend_t *be) {
    fixture_t f;
    if (fixture(&f, small_cnn, 4, 30))
        return;
    model_exec_t *e = model_exec_create(&f.m, be, f.n);
    be->upload(model_exec_input(e), f.x, f.n * f.in_size * sizeof(float));
    be->upload(model_exec_labels(e), f.y, f.n * sizeof(int32_t));
    float *gp = dev(be, f.params, f.m.nparams), *gg = dev(be, fill(f.m.nparams, NAN), f.m.nparams);
    fixed_batch_loss(e, gp, f.n);
    model_backward(e, gp, f.n, 1.0f, gg);
    float *grads = back(be, gg, f.m.nparams);
    size_t bad = 0, checked = 0;
    for (size_t v = 0; v < f.m.nvars; v++) {
        const var_t *var = &f.m.vars[v];
        size_t stride = var->size > 24 ? var->size / 24 : 1;
        for (size_t j = 0; j < var->size; j += stride, checked++) {
            size_t i = var->offset + j;
            float saved = f.params[i], h = 1e-3f, up = saved + h, down = saved - h;
            be->upload(gp + i, &up, sizeof up);
            double lu = fixed_batch_loss(e, gp, f.n);
            be->upload(gp + i, &down, sizeof down);
            double ld = fixed_batch_loss(e, gp, f.n);
            be->upload(gp + i, &saved, sizeof saved);
            double numeric = (lu - ld) / ((double)up - (double)down), analytic = grads[i];
            double scale = fmax(1e-2, fmax(fabs(numeric), fabs(analytic)));
            if (fabs(numeric - analytic) > 5e-2 * scale && bad++ < 5)
                fprintf(stderr, "  %s[%zu]: backward %.6g, finite difference %.6g\n", var->name, j,
                        analytic, numeric);
        }
    }
    /* A ReLU or max-pool kink inside the step can spoil a rare sample. */
    if (bad > checked / 50)
        test_fail(__FILE__, __LINE__, "%zu of %zu gradients differ from finite differences", bad,
                  checked);
    model_exec_free(e);
    model_free(&f.m);
    release();
}

/* At most one element in a thousand outside tol: with ReLU and max pooling
 * a value within rounding of a kink may go the other way on another backend. */
static void check_mostly_near(const char *what, const float *got, const float *want, size_t n,
                              double tol) {
    size_t bad = test_compare(what, got, want, n, tol);
    if (bad > n / 1000)
        test_fail(__FILE__, __LINE__, "%s: %zu of %zu elements differ", what, bad, n);
}

/* The whole Keras MNIST CNN: the device trainer's gradient and metrics
 * against the CPU trainer's, dropout on. */
static void check_cnn_gradient(const backend_t *be, const char *model, size_t n, double tol) {
    fixture_t f;
    if (fixture(&f, model, n, 40))
        return;
    float *want = host(f.m.nparams), *got = host(f.m.nparams);
    step_metrics_t sc, sg;
    trainer_t *tc = trainer_create(&f.m, cpu(), 1, n), *tg = trainer_create(&f.m, be, 1, n);
    trainer_gradient(tc, f.params, f.x, f.y, n, 11, want, &sc);
    trainer_gradient(tg, f.params, f.x, f.y, n, 11, got, &sg);
    CHECK_NEAR(sg.loss, sc.loss, tol);
    CHECK_NEAR(sg.accuracy, sc.accuracy, 1e-9);
    check_mostly_near("gradient", got, want, f.m.nparams, tol);
    trainer_free(tc);
    trainer_free(tg);
    model_free(&f.m);
    release();
}

/* ---- the trainer's device path ---- */

typedef struct {
    trainer_t *t;
    const float *x;
    const int32_t *y;
    size_t n;
    int calls;
} stage_probe_t;

static void stage_next(void *arg) {
    stage_probe_t *p = arg;
    p->calls++;
    trainer_stage(p->t, p->x, p->y, p->n);
}

typedef struct {
    int waits, readies;
    const float *grads;
    float *head;
    size_t begin, end;
} overlap_probe_t;

static void probe_wait(void *arg) {
    ((overlap_probe_t *)arg)->waits++;
}

static void probe_ready(void *arg) {
    overlap_probe_t *p = arg;
    p->readies++;
    memcpy(p->head, p->grads + p->begin, (p->end - p->begin) * sizeof(float));
}

/* Two steps, the second batch staged during the first, then the same with
 * the head moved by overlap hooks: every gradient equals the CPU's. */
static void check_trainer_gradient(const backend_t *be) {
    fixture_t f, g;
    if (fixture(&f, small_cnn, 6, 50) || fixture(&g, small_cnn, 6, 60))
        return;
    size_t np = f.m.nparams;
    float *want_f = host(np), *want_g = host(np);
    /* the weights and gradients in the backend's host memory, as a worker has them */
    float *params = be->host_alloc(np * sizeof(float)), *got = be->host_alloc(np * sizeof(float));
    CHECK(params && got);
    memcpy(params, f.params, np * sizeof(float));
    step_metrics_t sm, want_sm;
    trainer_t *tc = trainer_create(&f.m, cpu(), 1, f.n), *t = trainer_create(&f.m, be, 2, f.n);
    CHECK_INT_EQ(trainer_threads(t), 1);
    trainer_gradient(tc, params, f.x, f.y, f.n, 3, want_f, &want_sm);
    trainer_gradient(tc, params, g.x, g.y, g.n, 4, want_g, &sm);
    stage_probe_t sp = {t, g.x, g.y, g.n, 0};
    trainer_set_prefetch(t, stage_next, &sp);
    trainer_gradient(t, params, f.x, f.y, f.n, 3, got, &sm);
    CHECK_NEAR(sm.loss, want_sm.loss, 1e-4);
    check_mostly_near("step 1", got, want_f, np, 1e-3);
    trainer_set_prefetch(t, NULL, NULL);
    trainer_gradient(t, params, g.x, g.y, g.n, 4, got, &sm); /* the staged batch */
    CHECK_INT_EQ(sp.calls, 1);
    check_mostly_near("step 2, staged", got, want_g, np, 1e-3);
    /* overlap: the head is the first dense layer (index 6) */
    overlap_probe_t op = {.grads = got, .head = host(np), .end = np};
    op.begin = f.m.vars[f.m.layers[6].kernel_var].offset;
    trainer_overlap_t o = {.head = 6,
                           .head_begin = op.begin,
                           .wait_head_params = probe_wait,
                           .head_grads_ready = probe_ready,
                           .arg = &op};
    trainer_set_overlap(t, &o);
    memset(got, 0, np * sizeof(float));
    trainer_gradient(t, params, f.x, f.y, f.n, 3, got, &sm);
    trainer_set_overlap(t, NULL);
    CHECK_INT_EQ(op.waits, 1);
    CHECK_INT_EQ(op.readies, 1);
    check_mostly_near("overlap", got, want_f, np, 1e-3);
    check_mostly_near("head at hand-over", op.head, want_f + op.begin, np - op.begin, 1e-3);
    trainer_free(tc);
    trainer_free(t);
    be->host_free(got);
    be->host_free(params);
    model_free(&f.m);
    model_free(&g.m);
    release();
}

/* Five steps with the store on the device against five on the CPU, then
 * evaluation of the device's weights. */
static void check_trainer_step(const backend_t *be, const char *model, double tol) {
    fixture_t f;
    if (fixture(&f, model, 8, 70))
        return;
    optim_cfg_t oc;
    optim_defaults(&oc, OPTIM_ADAM);
    store_t sc, sg;
    store_init_full(&sc, &f.m, &oc, 5);
    store_init_full(&sg, &f.m, &oc, 5);
    trainer_t *tc = trainer_create(&f.m, cpu(), 1, f.n), *tg = trainer_create(&f.m, be, 1, f.n);
    trainer_attach_store(tc, &sc);
    trainer_attach_store(tg, &sg);
    step_metrics_t mc, mg;
    for (uint64_t i = 0; i < 5; i++) {
        trainer_step(tc, f.x, f.y, f.n, i, &mc);
        trainer_step(tg, f.x, f.y, f.n, i, &mg);
        CHECK_NEAR(mg.loss, mc.loss, tol);
    }
    CHECK_INT_EQ(sg.iterations, 5);
    dataset_t d = {.n = 20, .h = f.m.input[0], .w = f.m.input[1], .c = f.m.input[2]};
    d.example_size = f.in_size;
    d.nclasses = f.m.nclasses;
    d.images = track(NULL, xmalloc(d.n * d.example_size));
    d.labels = track(NULL, xmalloc(d.n));
    for (size_t i = 0; i < d.n * d.example_size; i++)
        d.images[i] = (uint8_t)(rng_mix(9, i) & 0xff);
    for (size_t i = 0; i < d.n; i++)
        d.labels[i] = (uint8_t)(i % f.m.nclasses);
    eval_metrics_t ec, eg;
    trainer_evaluate(tc, sc.w, &d, 8, &ec);
    trainer_evaluate(tg, sg.w, &d, 8, &eg); /* the device's weights, not synced */
    CHECK_NEAR(eg.loss, ec.loss, tol);
    trainer_sync_store(tg);
    check_mostly_near("weights", sg.w, sc.w, f.m.nparams, tol);
    check_mostly_near("adam m", sg.slots[0], sc.slots[0], f.m.nparams, tol);
    eval_metrics_free(&ec);
    eval_metrics_free(&eg);
    trainer_free(tc);
    trainer_free(tg);
    store_free(&sc);
    store_free(&sg);
    model_free(&f.m);
    release();
}

/* ---- backend_open, with and without a GPU ---- */

void test_device_open_cpu_auto(void) {
    backend_choice_t c;
    char err[PS_ERRLEN];
    CHECK_INT_EQ(backend_open("cpu", &c, err, sizeof err), 0);
    CHECK(c.be == cpu_backend() && !c.gpu && !c.why_cpu[0]);
    CHECK_INT_EQ(backend_open("tpu", &c, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "\"tpu\" is not one of cpu|gpu|auto");
    CHECK_INT_EQ(backend_open("auto", &c, err, sizeof err), 0);
    CHECK(c.be != NULL);
    if (c.gpu) {
        CHECK_STR_CONTAINS(c.be->name, "cuda");
        return;
    }
    /* no GPU: auto says why, and gpu fails with the same reason */
    CHECK(c.be == cpu_backend() && c.why_cpu[0]);
    char why[PSTRAIN_BACKEND_WHY];
    snprintf(why, sizeof why, "%s", c.why_cpu);
    CHECK_INT_EQ(backend_open("gpu", &c, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "device=gpu: ");
    CHECK_STR_CONTAINS(err, why);
}

void test_device_open_missing_plugin(void) {
    setenv("PSTRAIN_CUDA_PLUGIN", "/nonexistent/libpstrain_cuda.so", 1);
    backend_choice_t c;
    char err[PS_ERRLEN];
    CHECK_INT_EQ(backend_open("auto", &c, err, sizeof err), 0);
    CHECK(c.be == cpu_backend());
    CHECK_STR_CONTAINS(c.why_cpu, "cannot load the CUDA plugin");
    CHECK_STR_CONTAINS(c.why_cpu, "/nonexistent/libpstrain_cuda.so");
    CHECK_INT_EQ(backend_open("gpu", &c, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "/nonexistent/libpstrain_cuda.so");
}

/* ---- the emulated device: the checks above, and the trainer, on CI ---- */

void test_device_emulated_ops(void) {
    const backend_t *be = emulated();
    check_memory(be);
    check_gemms(be);
    check_vectors(be);
    check_convs(be, 1e-5);
    check_conv_batches(be);
    check_pools(be);
    check_bias_relu(be);
    check_softmax(be);
    check_dropout(be);
    check_updates(be);
}

void test_device_emulated_trainer(void) {
    const backend_t *be = emulated();
    check_gradcheck(be);
    check_cnn_gradient(be, small_cnn, 5, 1e-5);
    check_trainer_gradient(be);
    check_trainer_step(be, small_cnn, 1e-5);
}

/* ---- the GPU ---- */

void test_cuda_memory(void) {
    NEED_GPU(be, "fp32");
    check_memory(be);
}

void test_cuda_gemm(void) {
    NEED_GPU(be, "fp32");
    check_gemms(be);
}

void test_cuda_vectors(void) {
    NEED_GPU(be, "fp32");
    check_vectors(be);
}

void test_cuda_conv2d(void) {
    NEED_GPU(be, "fp32");
    check_convs(be, 1e-4);
}

void test_cuda_conv2d_batch_sizes(void) {
    NEED_GPU(be, "fp32");
    check_conv_batches(be);
}

/* TF32 tensor cores (the default): 10-bit mantissas, a looser tolerance. */
void test_cuda_conv2d_tf32(void) {
    NEED_GPU(be, "tf32");
    check_convs(be, 2e-2);
}

void test_cuda_maxpool2d(void) {
    NEED_GPU(be, "fp32");
    check_pools(be);
}

void test_cuda_bias_relu(void) {
    NEED_GPU(be, "fp32");
    check_bias_relu(be);
}

void test_cuda_softmax_xent(void) {
    NEED_GPU(be, "fp32");
    check_softmax(be);
}

void test_cuda_dropout(void) {
    NEED_GPU(be, "fp32");
    check_dropout(be);
}

void test_cuda_apply_update(void) {
    NEED_GPU(be, "fp32");
    check_updates(be);
}

void test_cuda_cnn_gradcheck(void) {
    NEED_GPU(be, "fp32");
    check_gradcheck(be);
}

void test_cuda_cnn_gradient(void) {
    NEED_GPU(be, "fp32");
    check_cnn_gradient(be, "cnn", 16, 1e-3);
    check_cnn_gradient(be, small_cnn, 7, 1e-3);
}

void test_cuda_trainer(void) {
    NEED_GPU(be, "fp32");
    check_trainer_gradient(be);
}

void test_cuda_trainer_step(void) {
    NEED_GPU(be, "fp32");
    check_trainer_step(be, small_cnn, 1e-3);
    check_trainer_step(be, "cnn", 1e-3);
}

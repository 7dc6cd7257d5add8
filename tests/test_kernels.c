/* Tests of the CPU backend's products and elementwise ops: every op against
 * a naive reference written here (direct loops, double accumulation), and
 * every backward op against central differences of its forward op. The
 * convolution and pooling ops are tested in test_kernels_conv.c. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "test_kernels_helpers.h"

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

void test_kernels_gemm_openblas(void) {
    force_openblas();
    CHECK(strstr(cpu_backend_blas_core(), "avx512") == NULL);
    check_gemm_sizes();
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

/* Bias and relu fused, forward and backward: the same floats as bias_add
 * then relu_forward, and as relu_backward then bias_grad (bit for bit), and
 * both near the naive sums in double. */
void test_kernels_bias_relu_fused(void) {
    /* more columns than one 256-wide block, rows that end mid-block, and
     * zeros in y (relu's kink) */
    size_t rows = 301, cols = 300, n = rows * cols;
    float *z = random_floats(n, 1, -1, 1), *b = random_floats(cols, 2, -1, 1);
    float *dy = random_floats(n, 3, -1, 1);
    for (size_t i = 0; i < n; i += 7)
        z[i] = -b[i % cols];
    float *y = buffer(n * sizeof(float)), *want_y = buffer(n * sizeof(float));
    memcpy(y, z, n * sizeof(float));
    memcpy(want_y, z, n * sizeof(float));
    be()->bias_relu(y, b, rows, cols);
    be()->bias_add(want_y, b, rows, cols);
    be()->relu_forward(want_y, want_y, n);
    CHECK_ARRAY_NEAR("bias_relu vs bias_add + relu_forward", y, want_y, n, 0.0);
    for (size_t i = 0; i < n; i++)
        CHECK_NEAR(y[i], fmax((double)z[i] + b[i % cols], 0.0), 1e-6);
    float *g = buffer(n * sizeof(float)), *want_g = buffer(n * sizeof(float));
    float *db = filled(cols, NAN), *want_db = filled(cols, NAN);
    memcpy(g, dy, n * sizeof(float));
    memcpy(want_g, dy, n * sizeof(float));
    be()->relu_bias_grad(db, g, y, rows, cols);
    be()->relu_backward(want_g, want_g, y, n);
    be()->bias_grad(want_db, want_g, rows, cols);
    CHECK_ARRAY_NEAR("relu_bias_grad dy vs relu_backward", g, want_g, n, 0.0);
    CHECK_ARRAY_NEAR("relu_bias_grad db vs bias_grad", db, want_db, cols, 0.0);
    double *sums = doubles(cols);
    for (size_t i = 0; i < n; i++)
        sums[i % cols] += y[i] > 0 ? dy[i] : 0.0;
    CHECK_ARRAY_NEAR("relu_bias_grad db vs double sums", db, to_float(sums, cols), cols, 1e-5);
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

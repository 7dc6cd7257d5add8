/* Tests of the CPU ops of the Keras layers beyond the builtin models
 * (kernels/cpu/ops_extra.c): each against a reference written here in
 * double (the activations from their textbook formulas, average pooling by
 * walking the padded window and skipping padded cells), and each backward
 * against central differences of its forward. */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "common/base/util.h"
#include "test_helpers.h"

static const backend_t *be(void) {
    cpu_backend_init();
    return cpu_backend();
}

static double ref_act(double x, act_fn_t f) {
    switch (f) {
    case ACT_FN_SIGMOID:
        return 1.0 / (1.0 + exp(-x));
    case ACT_FN_TANH:
        return tanh(x);
    case ACT_FN_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case ACT_FN_SILU:
        return x / (1.0 + exp(-x));
    }
    return x;
}

static const char *act_names[] = {"sigmoid", "tanh", "gelu", "silu"};

/* Forward against the formulas over [-6, 6]; backward against central
 * differences of the reference. */
void test_ops_extra_activations(void) {
    size_t n = 1001;
    float *x = test_floats(n, 1, -6.0f, 6.0f), *y = xmalloc(n * sizeof(float));
    float *want = xmalloc(n * sizeof(float)), *dy = test_floats(n, 2, -1.0f, 1.0f);
    float *dx = xmalloc(n * sizeof(float)), *num = xmalloc(n * sizeof(float));
    for (int f = ACT_FN_SIGMOID; f <= ACT_FN_SILU; f++) {
        for (size_t i = 0; i < n; i++) {
            want[i] = (float)ref_act(x[i], (act_fn_t)f);
            double h = 1e-4;
            num[i] =
                (float)(dy[i] * (ref_act(x[i] + h, (act_fn_t)f) - ref_act(x[i] - h, (act_fn_t)f)) /
                        (2 * h));
        }
        be()->act_forward(y, x, n, (act_fn_t)f);
        fprintf(stderr, "  %s\n", act_names[f]);
        CHECK_ARRAY_NEAR("act_forward", y, want, n, 1e-5);
        be()->act_backward(dx, dy, x, y, n, (act_fn_t)f);
        CHECK_ARRAY_NEAR("act_backward vs finite differences", dx, num, n, 1e-4);
        /* In place, as the model runs it. */
        memcpy(dx, dy, n * sizeof(float));
        be()->act_backward(dx, dx, x, y, n, (act_fn_t)f);
        CHECK_ARRAY_NEAR("act_backward in place", dx, num, n, 1e-4);
    }
    free(x);
    free(y);
    free(want);
    free(dy);
    free(dx);
    free(num);
}

typedef struct {
    size_t h, w, c, ph, pw, sh, sw;
    bool same;
} avg_case_t;

static const avg_case_t avg_cases[] = {
    {6, 6, 3, 2, 2, 2, 2, false}, /* tiles exactly */
    {7, 5, 2, 3, 3, 2, 2, false}, /* overlapping, rows left over */
    {7, 6, 2, 3, 2, 2, 1, true},  /* 'same': edge windows have fewer cells */
    {5, 5, 4, 5, 5, 5, 5, false}, /* global average pooling */
    {4, 6, 1, 2, 3, 3, 2, true},  /* stride over the window */
};

static pool2d_shape_t avg_shape(const avg_case_t *k, size_t n) {
    pool2d_shape_t s = {.n = n, .h = k->h, .w = k->w, .c = k->c, .ph = k->ph, .pw = k->pw};
    s.sh = k->sh;
    s.sw = k->sw;
    pool2d_shape_init(&s, k->same);
    return s;
}

/* The mean of the window's cells inside the image, by walking the padded
 * window cell by cell. */
static void ref_avgpool(float *y, const float *x, const pool2d_shape_t *s) {
    for (size_t n = 0; n < s->n; n++)
        for (size_t oy = 0; oy < s->oh; oy++)
            for (size_t ox = 0; ox < s->ow; ox++)
                for (size_t c = 0; c < s->c; c++) {
                    double sum = 0.0;
                    size_t cells = 0;
                    for (size_t i = 0; i < s->ph; i++)
                        for (size_t j = 0; j < s->pw; j++) {
                            long r = (long)(oy * s->sh + i) - (long)s->pad_top;
                            long q = (long)(ox * s->sw + j) - (long)s->pad_left;
                            if (r < 0 || q < 0 || r >= (long)s->h || q >= (long)s->w)
                                continue;
                            sum += x[((n * s->h + (size_t)r) * s->w + (size_t)q) * s->c + c];
                            cells++;
                        }
                    y[((n * s->oh + oy) * s->ow + ox) * s->c + c] = (float)(sum / (double)cells);
                }
}

static double weighted(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

void test_ops_extra_avgpool2d(void) {
    for (size_t k = 0; k < sizeof avg_cases / sizeof avg_cases[0]; k++) {
        pool2d_shape_t s = avg_shape(&avg_cases[k], 2);
        size_t nx = s.n * s.h * s.w * s.c, ny = s.n * s.oh * s.ow * s.c;
        float *x = test_floats(nx, 3 + k, -1, 1), *y = xmalloc(ny * sizeof(float));
        float *want = xmalloc(ny * sizeof(float)), *r = test_floats(ny, 9 + k, -1, 1);
        float *dx = xmalloc(nx * sizeof(float)), *num = xmalloc(nx * sizeof(float));
        be()->avgpool2d_forward(y, x, &s);
        ref_avgpool(want, x, &s);
        fprintf(stderr, "  case %zu: %zux%zu pool %zux%zu stride %zux%zu %s -> %zux%zu\n", k, s.h,
                s.w, s.ph, s.pw, s.sh, s.sw, avg_cases[k].same ? "same" : "valid", s.oh, s.ow);
        CHECK_ARRAY_NEAR("avgpool2d_forward", y, want, ny, 1e-5);
        /* The loss sum(y * r) is linear in x: differences are exact to rounding. */
        be()->avgpool2d_backward(dx, r, &s);
        for (size_t i = 0; i < nx; i++) {
            float v = x[i];
            x[i] = v + 0.01f;
            ref_avgpool(y, x, &s);
            double up = weighted(y, r, ny);
            x[i] = v - 0.01f;
            ref_avgpool(y, x, &s);
            double down = weighted(y, r, ny);
            x[i] = v;
            num[i] = (float)((up - down) / 0.02);
        }
        CHECK_ARRAY_NEAR("avgpool2d_backward vs finite differences", dx, num, nx, 1e-3);
        free(x);
        free(y);
        free(want);
        free(r);
        free(dx);
        free(num);
    }
}

void test_ops_extra_scale_shift(void) {
    size_t n = 100;
    float *x = test_floats(n, 4, 0, 255), *y = xmalloc(n * sizeof(float));
    float *want = xmalloc(n * sizeof(float));
    be()->scale_shift(y, x, n, 1.0f / 127.5f, -1.0f);
    for (size_t i = 0; i < n; i++)
        want[i] = (float)((double)x[i] / 127.5 - 1.0);
    CHECK_ARRAY_NEAR("scale_shift", y, want, n, 1e-6);
    be()->scale_shift(x, x, n, 2.0f, 0.0f); /* in place */
    for (size_t i = 0; i < n; i++)
        CHECK_NEAR(x[i], 2.0 * (y[i] + 1.0) * 127.5, 1e-3);
    free(x);
    free(y);
    free(want);
}

void test_ops_extra_mul_copy_cols(void) {
    size_t rows = 7, n = 60;
    float *a = test_floats(n, 5, -2, 2), *b = test_floats(n, 6, -2, 2),
          *y = xmalloc(n * sizeof(float));
    be()->mul(y, a, b, n);
    for (size_t i = 0; i < n; i++)
        CHECK_NEAR(y[i], (double)a[i] * b[i], 1e-6);
    be()->mul(a, a, b, n); /* in place */
    CHECK_ARRAY_NEAR("mul in place", a, y, n, 0.0);
    /* Concatenate [7, 3] and [7, 5] along the columns, and split back. */
    float *x0 = test_floats(rows * 3, 7, -1, 1), *x1 = test_floats(rows * 5, 8, -1, 1);
    float *cat = xmalloc(rows * 8 * sizeof(float)), *back = xmalloc(rows * 5 * sizeof(float));
    be()->copy_cols(cat, 8, 0, x0, 3, 0, rows, 3);
    be()->copy_cols(cat, 8, 3, x1, 5, 0, rows, 5);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < 8; j++)
            CHECK(cat[r * 8 + j] == (j < 3 ? x0[r * 3 + j] : x1[r * 5 + j - 3]));
    be()->copy_cols(back, 5, 0, cat, 8, 3, rows, 5);
    CHECK_ARRAY_NEAR("copy_cols back", back, x1, rows * 5, 0.0);
    free(a);
    free(b);
    free(y);
    free(x0);
    free(x1);
    free(cat);
    free(back);
}

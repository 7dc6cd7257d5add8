/* CPU ops of the Keras layers beyond the builtin models: activations,
 * average pooling, and the scale-and-shift of Rescaling. */
#include "kernels/cpu/ops_extra.h"

#include <math.h>
#include <string.h>

/* 1 / sqrt(2) and 1 / sqrt(2 pi), for gelu. */
#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

static float sigmoidf(float x) {
    return 1.0f / (1.0f + expf(-x));
}

static float act_value(float x, act_fn_t f) {
    switch (f) {
    case ACT_FN_SIGMOID:
        return sigmoidf(x);
    case ACT_FN_TANH:
        return tanhf(x);
    case ACT_FN_GELU:
        return 0.5f * x * (1.0f + erff(x * INV_SQRT2));
    case ACT_FN_SILU:
        return x * sigmoidf(x);
    }
    return x;
}

/* f'(x), given y = f(x). */
static float act_slope(float x, float y, act_fn_t f) {
    switch (f) {
    case ACT_FN_SIGMOID:
        return y * (1.0f - y);
    case ACT_FN_TANH:
        return 1.0f - y * y;
    case ACT_FN_GELU:
        return 0.5f * (1.0f + erff(x * INV_SQRT2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    case ACT_FN_SILU: {
        float s = sigmoidf(x);
        return s * (1.0f + x * (1.0f - s));
    }
    }
    return 1.0f;
}

/* y[n] = f(x[n]) */
void cpu_act_forward(float *y, const float *x, size_t n, act_fn_t f) {
    for (size_t i = 0; i < n; i++)
        y[i] = act_value(x[i], f);
}

/* dx[n] = dy[n] * f'(x[n]) */
void cpu_act_backward(float *dx, const float *dy, const float *x, const float *y, size_t n,
                      act_fn_t f) {
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * act_slope(x[i], y[i], f);
}

/* The in-image rows [*lo, *hi) of output row o of a window of k taps. */
static void window_rows(size_t o, size_t stride, size_t pad, size_t k, size_t in, size_t *lo,
                        size_t *hi) {
    ptrdiff_t start = (ptrdiff_t)(o * stride) - (ptrdiff_t)pad;
    ptrdiff_t end = start + (ptrdiff_t)k;
    *lo = start < 0 ? 0 : (size_t)start;
    *hi = end > (ptrdiff_t)in ? in : (size_t)end;
}

/* y[n, oh, ow, c] = mean of the in-image cells of each window of x[n, h, w, c] */
void cpu_avgpool2d_forward(float *y, const float *x, const pool2d_shape_t *s) {
    size_t c = s->c;
    for (size_t n = 0; n < s->n; n++) {
        const float *img = x + n * s->h * s->w * c;
        for (size_t oy = 0; oy < s->oh; oy++) {
            size_t y0, y1;
            window_rows(oy, s->sh, s->pad_top, s->ph, s->h, &y0, &y1);
            for (size_t ox = 0; ox < s->ow; ox++, y += c) {
                size_t x0, x1;
                window_rows(ox, s->sw, s->pad_left, s->pw, s->w, &x0, &x1);
                memset(y, 0, c * sizeof *y);
                for (size_t i = y0; i < y1; i++)
                    for (size_t j = x0; j < x1; j++)
                        for (size_t k = 0; k < c; k++)
                            y[k] += img[(i * s->w + j) * c + k];
                float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
                for (size_t k = 0; k < c; k++)
                    y[k] *= inv;
            }
        }
    }
}

/* dx[n, h, w, c] (overwritten) from dy[n, oh, ow, c] */
void cpu_avgpool2d_backward(float *dx, const float *dy, const pool2d_shape_t *s) {
    size_t c = s->c;
    memset(dx, 0, s->n * s->h * s->w * c * sizeof *dx);
    for (size_t n = 0; n < s->n; n++) {
        float *img = dx + n * s->h * s->w * c;
        for (size_t oy = 0; oy < s->oh; oy++) {
            size_t y0, y1;
            window_rows(oy, s->sh, s->pad_top, s->ph, s->h, &y0, &y1);
            for (size_t ox = 0; ox < s->ow; ox++, dy += c) {
                size_t x0, x1;
                window_rows(ox, s->sw, s->pad_left, s->pw, s->w, &x0, &x1);
                float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
                for (size_t i = y0; i < y1; i++)
                    for (size_t j = x0; j < x1; j++)
                        for (size_t k = 0; k < c; k++)
                            img[(i * s->w + j) * c + k] += dy[k] * inv;
            }
        }
    }
}

/* y[n] = x[n] * scale + offset */
void cpu_scale_shift(float *y, const float *x, size_t n, float scale, float offset) {
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] * scale + offset;
}

/* y[n] = a[n] * b[n] */
void cpu_mul(float *y, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}

/* A block of columns from each row of src to each row of dst. */
void cpu_copy_cols(float *dst, size_t dst_cols, size_t dst_off, const float *src, size_t src_cols,
                   size_t src_off, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++)
        memcpy(dst + r * dst_cols + dst_off, src + r * src_cols + src_off, cols * sizeof(float));
}

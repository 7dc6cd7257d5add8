/* CPU depthwise convolution (Keras's DepthwiseConv2D), single-threaded like
 * the rest of the CPU backend. Each output channel ci * mult + q reads one
 * input channel ci, so no GEMM is needed: for every output cell and every
 * kernel tap inside the image, one row operation over the f = c * mult
 * channels (contiguous in NHWC and in the [kh, kw, c, mult] kernel), which
 * the compiler vectorises when mult is 1. */
#include "kernels/cpu/ops_depthwise.h"

#include "kernels/cpu/cpu_hot.h"

#include <string.h>

/* One tap's work on a row of f channels: y the output (or its gradient)
 * row, x the input (or its gradient) row of c channels, w the kernel (or
 * its gradient) row of f. */
typedef void (*tap_fn)(float *restrict y, float *restrict x, float *restrict w, size_t c,
                       size_t mult);

/* The taps [*k0, *k1) of a window of k whose input row o * stride + tap - pad
 * is inside [0, in). */
static void tap_range(size_t o, size_t stride, size_t pad, size_t k, size_t in, size_t *k0,
                      size_t *k1) {
    size_t start = o * stride;
    *k0 = start < pad ? pad - start : 0;
    *k1 = start + k <= pad ? 0 : start + k - pad > in ? in + pad - start : k;
    if (*k1 < *k0)
        *k1 = *k0;
}

/* Calls fn for every output cell and every kernel tap that reads inside the image. */
static void for_each_tap(const conv2d_shape_t *s, float *y, float *x, float *w, tap_fn fn) {
    size_t mult = s->f / s->c;
    for (size_t n = 0; n < s->n; n++)
        for (size_t oy = 0; oy < s->oh; oy++) {
            size_t ky0, ky1;
            tap_range(oy, s->sh, s->pad_top, s->kh, s->h, &ky0, &ky1);
            for (size_t ox = 0; ox < s->ow; ox++) {
                size_t kx0, kx1;
                tap_range(ox, s->sw, s->pad_left, s->kw, s->w, &kx0, &kx1);
                float *yr = y + ((n * s->oh + oy) * s->ow + ox) * s->f;
                for (size_t ky = ky0; ky < ky1; ky++) {
                    size_t iy = oy * s->sh + ky - s->pad_top;
                    for (size_t kx = kx0; kx < kx1; kx++) {
                        size_t ix = ox * s->sw + kx - s->pad_left;
                        fn(yr, x + ((n * s->h + iy) * s->w + ix) * s->c,
                           w + (ky * s->kw + kx) * s->f, s->c, mult);
                    }
                }
            }
        }
}

/* y[ci * mult + q] += x[ci] * w[ci * mult + q] */
CPU_HOT static void forward_tap(float *restrict y, float *restrict x, float *restrict w, size_t c,
                                size_t mult) {
    if (mult == 1) {
        for (size_t j = 0; j < c; j++)
            y[j] += x[j] * w[j];
        return;
    }
    for (size_t ci = 0; ci < c; ci++)
        for (size_t q = 0; q < mult; q++)
            y[ci * mult + q] += x[ci] * w[ci * mult + q];
}

/* dx[ci] += sum over q of dy[ci * mult + q] * w[ci * mult + q] */
CPU_HOT static void data_tap(float *restrict dy, float *restrict dx, float *restrict w, size_t c,
                             size_t mult) {
    if (mult == 1) {
        for (size_t j = 0; j < c; j++)
            dx[j] += dy[j] * w[j];
        return;
    }
    for (size_t ci = 0; ci < c; ci++)
        for (size_t q = 0; q < mult; q++)
            dx[ci] += dy[ci * mult + q] * w[ci * mult + q];
}

/* dw[ci * mult + q] += dy[ci * mult + q] * x[ci] */
CPU_HOT static void filter_tap(float *restrict dy, float *restrict x, float *restrict dw, size_t c,
                               size_t mult) {
    if (mult == 1) {
        for (size_t j = 0; j < c; j++)
            dw[j] += dy[j] * x[j];
        return;
    }
    for (size_t ci = 0; ci < c; ci++)
        for (size_t q = 0; q < mult; q++)
            dw[ci * mult + q] += dy[ci * mult + q] * x[ci];
}

/* y[n, oh, ow, c * mult] = sum over taps of x[n, iy, ix, ci] * w[ky, kx, ci, q] */
void cpu_depthwise_conv2d_forward(float *y, const float *x, const float *w,
                                  const conv2d_shape_t *s) {
    memset(y, 0, s->n * s->oh * s->ow * s->f * sizeof *y);
    for_each_tap(s, y, (float *)x, (float *)w, forward_tap);
}

/* dx[n, h, w, c] (overwritten) = sum over the taps that read it of dy * w */
void cpu_depthwise_conv2d_backward_data(float *dx, const float *dy, const float *w,
                                        const conv2d_shape_t *s) {
    memset(dx, 0, s->n * s->h * s->w * s->c * sizeof *dx);
    for_each_tap(s, (float *)dy, dx, (float *)w, data_tap);
}

/* dw[kh, kw, c, mult] (overwritten) = sum over the batch and the output of dy * x */
void cpu_depthwise_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                          const conv2d_shape_t *s) {
    memset(dw, 0, s->kh * s->kw * s->f * sizeof *dw);
    for_each_tap(s, (float *)dy, (float *)x, dw, filter_tap);
}

/* CPU depthwise convolution (Keras's DepthwiseConv2D): plain loops over
 * the output, single-threaded like the rest of the CPU backend. Each output
 * channel ci * mult + q reads one input channel ci, so a kernel tap is a
 * multiply-add per output element and no GEMM is needed. */
#include "kernels/cpu/ops_depthwise.h"

#include <string.h>

/* The input row or column of tap k of output position o, or -1 in the padding. */
static ptrdiff_t tap(size_t o, size_t stride, size_t pad, size_t k, size_t in) {
    ptrdiff_t p = (ptrdiff_t)(o * stride + k) - (ptrdiff_t)pad;
    return p >= 0 && p < (ptrdiff_t)in ? p : -1;
}

/* Calls one of the three loops below for every (output cell, in-image tap). */
#define FOR_EACH_TAP(s, body)                                                                      \
    do {                                                                                           \
        size_t mult_ = (s)->f / (s)->c;                                                            \
        for (size_t n = 0; n < (s)->n; n++)                                                        \
            for (size_t oy = 0; oy < (s)->oh; oy++)                                                \
                for (size_t ox = 0; ox < (s)->ow; ox++)                                            \
                    for (size_t ky = 0; ky < (s)->kh; ky++) {                                      \
                        ptrdiff_t iy = tap(oy, (s)->sh, (s)->pad_top, ky, (s)->h);                 \
                        if (iy < 0)                                                                \
                            continue;                                                              \
                        for (size_t kx = 0; kx < (s)->kw; kx++) {                                  \
                            ptrdiff_t ix = tap(ox, (s)->sw, (s)->pad_left, kx, (s)->w);            \
                            if (ix < 0)                                                            \
                                continue;                                                          \
                            size_t xo =                                                            \
                                ((n * (s)->h + (size_t)iy) * (s)->w + (size_t)ix) * (s)->c;        \
                            size_t yo = ((n * (s)->oh + oy) * (s)->ow + ox) * (s)->f;              \
                            size_t wo = (ky * (s)->kw + kx) * (s)->f;                              \
                            for (size_t ci = 0; ci < (s)->c; ci++)                                 \
                                for (size_t q = 0; q < mult_; q++) {                               \
                                    size_t j = ci * mult_ + q;                                     \
                                    body;                                                          \
                                }                                                                  \
                        }                                                                          \
                    }                                                                              \
    } while (0)

/* y[n, oh, ow, c * mult] = sum over taps of x[n, iy, ix, ci] * w[ky, kx, ci, q] */
void cpu_depthwise_conv2d_forward(float *y, const float *x, const float *w,
                                  const conv2d_shape_t *s) {
    memset(y, 0, s->n * s->oh * s->ow * s->f * sizeof *y);
    FOR_EACH_TAP(s, y[yo + j] += x[xo + ci] * w[wo + j]);
}

/* dx[n, h, w, c] (overwritten) = sum over the taps that read it of dy * w */
void cpu_depthwise_conv2d_backward_data(float *dx, const float *dy, const float *w,
                                        const conv2d_shape_t *s) {
    memset(dx, 0, s->n * s->h * s->w * s->c * sizeof *dx);
    FOR_EACH_TAP(s, dx[xo + ci] += dy[yo + j] * w[wo + j]);
}

/* dw[kh, kw, c, mult] (overwritten) = sum over the batch and the output of dy * x */
void cpu_depthwise_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                          const conv2d_shape_t *s) {
    memset(dw, 0, s->kh * s->kw * s->f * sizeof *dw);
    FOR_EACH_TAP(s, dw[wo + j] += dy[yo + j] * x[xo + ci]);
}

/* The CPU backend: matrix products in an AVX-512 or AVX2 kernel of its own
 * where the CPU has one and the shape suits it, else OpenBLAS (cpu_gemm.c);
 * plain C loops for the rest. Every op is single-threaded and touches nothing but its
 * arguments (the only static state is set once by cpu_backend_init), so the
 * caller may run several at once on different threads; OpenBLAS is pinned to
 * one thread so it never competes with them. */
#include "kernels/backend.h"
#include "kernels/cpu/cpu_gemm.h"
#include "kernels/cpu/cpu_optim.h"
#include "kernels/cpu/cpu_hot.h"
#include "kernels/cpu/ops_depthwise.h"
#include "kernels/cpu/ops_bn.h"
#include "kernels/cpu/ops_extra.h"
#include "kernels/cpu/ops_embed.h"
#include "kernels/cpu/ops_extra.h"
#include "kernels/cpu/cpu_winograd.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bytes of im2col matrix handled per product. With the AVX-512 kernel,
 * pstrain-bench-kernels measured chunks of 128 KiB to 512 KiB as equally
 * fast on the Keras MNIST CNN's convolutions (within 3%), 1-2 MiB slower as
 * the chunk crowds a 1 MiB L2; with OpenBLAS 256 KiB to 2 MiB were equal.
 * The workspace stays this small whatever the batch. */
#ifndef CPU_CONV_CHUNK_BYTES
#define CPU_CONV_CHUNK_BYTES ((size_t)256 << 10)
#endif

static size_t min_size(size_t a, size_t b) {
    return a < b ? a : b;
}

/* ---- memory ---- */

static void *cpu_alloc(size_t bytes) {
    /* aligned_alloc wants a multiple of the alignment; a zero-byte request
     * still gets a block so that NULL always means failure. */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes)
        return NULL;
    return aligned_alloc(64, rounded ? rounded : 64);
}

static void cpu_free(void *p) {
    free(p);
}

static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes)
        memcpy(dst, src, bytes);
}

static void cpu_zero(void *p, size_t bytes) {
    if (bytes)
        memset(p, 0, bytes);
}

/* ---- convolution: im2col into the workspace, then one gemm per chunk ---- */

static size_t conv_k(const conv2d_shape_t *s) {
    return s->kh * s->kw * s->c;
}

static size_t conv_rows(const conv2d_shape_t *s) {
    return s->n * s->oh * s->ow;
}

/* A 1x1 kernel with stride 1 and no padding: x itself is the im2col matrix. */
static bool conv_is_pointwise(const conv2d_shape_t *s) {
    return s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->pad_top == 0 &&
           s->pad_left == 0 && s->oh == s->h && s->ow == s->w;
}

static size_t conv_chunk_rows(const conv2d_shape_t *s) {
    size_t row_bytes = conv_k(s) * sizeof(float);
    size_t chunk = row_bytes ? CPU_CONV_CHUNK_BYTES / row_bytes : 1;
    return chunk ? chunk : 1;
}

static size_t round_up_64(size_t bytes) {
    return (bytes + 63) & ~(size_t)63;
}

/* The workspace holds an im2col chunk, then the kernel transposed [f, K]
 * for backward_data. */
static size_t conv_col_bytes(const conv2d_shape_t *s) {
    if (conv_is_pointwise(s))
        return 0;
    return round_up_64(min_size(conv_chunk_rows(s), conv_rows(s)) * conv_k(s) * sizeof(float));
}

static size_t cpu_conv2d_workspace(const conv2d_shape_t *s) {
    size_t im2col = conv_col_bytes(s) + round_up_64(conv_k(s) * s->f * sizeof(float));
    size_t wg = winograd_fits(s) ? winograd_workspace(s) : 0;
    return im2col > wg ? im2col : wg;
}

/* The outputs [lo, hi) of [a, b) along one axis whose tap t reads inside
 * the input: pad <= o * stride + t < in + pad. */
typedef struct {
    size_t lo, hi;
} range_t;

static range_t tap_outputs(size_t t, size_t stride, size_t pad, size_t in, size_t a, size_t b) {
    size_t first = t >= pad ? 0 : (pad - t + stride - 1) / stride;
    size_t end = t >= in + pad ? 0 : (in + pad - t + stride - 1) / stride;
    range_t r = {first > a ? min_size(first, b) : a, end < b ? end : b};
    if (r.hi < r.lo)
        r.hi = r.lo;
    return r;
}

/* The strided row loops below are special-cased for c = 1 (the input
 * layer) and for c a multiple of 16, where a fixed 16-float inner block
 * compiles to whole vector registers with no loop tail. */
#define ROW_BLOCK 16

/* dst[t * ds + j] = src[t * ss + j] for t < count, j < c */
static inline void copy_rows(float *restrict dst, size_t ds, const float *restrict src, size_t ss,
                             size_t count, size_t c) {
    if (c == 1) {
        for (size_t t = 0; t < count; t++)
            dst[t * ds] = src[t * ss];
    } else if (c % ROW_BLOCK == 0) {
        for (size_t t = 0; t < count; t++)
            for (size_t j = 0; j < c; j += ROW_BLOCK)
                for (size_t b = 0; b < ROW_BLOCK; b++)
                    dst[t * ds + j + b] = src[t * ss + j + b];
    } else {
        for (size_t t = 0; t < count; t++)
            for (size_t j = 0; j < c; j++)
                dst[t * ds + j] = src[t * ss + j];
    }
}

/* dst[t * ds + j] += src[t * ss + j] for t < count, j < c */
static inline void add_rows(float *restrict dst, size_t ds, const float *restrict src, size_t ss,
                            size_t count, size_t c) {
    if (c == 1) {
        for (size_t t = 0; t < count; t++)
            dst[t * ds] += src[t * ss];
    } else if (c % ROW_BLOCK == 0) {
        for (size_t t = 0; t < count; t++)
            for (size_t j = 0; j < c; j += ROW_BLOCK)
                for (size_t b = 0; b < ROW_BLOCK; b++)
                    dst[t * ds + j + b] += src[t * ss + j + b];
    } else {
        for (size_t t = 0; t < count; t++)
            for (size_t j = 0; j < c; j++)
                dst[t * ds + j] += src[t * ss + j];
    }
}

/* dst[t * ds + j] = 0 for t < count, j < c */
static inline void zero_rows(float *dst, size_t ds, size_t count, size_t c) {
    if (c == 1) {
        for (size_t t = 0; t < count; t++)
            dst[t * ds] = 0.0f;
    } else {
        for (size_t t = 0; t < count; t++)
            memset(dst + t * ds, 0, c * sizeof(float));
    }
}

/* Rows [r0, r1) of the im2col matrix are runs of output pixels, each run
 * inside one output row (n, oy) and covering its columns [ox, end). */
typedef struct {
    size_t n, oy, ox, end;
} run_t;

static run_t first_run(const conv2d_shape_t *s, size_t r0, size_t r1) {
    size_t per_image = s->oh * s->ow;
    run_t run = {r0 / per_image, r0 % per_image / s->ow, r0 % s->ow, 0};
    run.end = min_size(s->ow, run.ox + (r1 - r0));
    return run;
}

/* Advances past a run that ended at row r; false after the last one. */
static bool next_run(run_t *run, const conv2d_shape_t *s, size_t r, size_t r1) {
    if (r >= r1)
        return false;
    run->ox = 0;
    run->end = min_size(s->ow, r1 - r);
    if (++run->oy == s->oh) {
        run->oy = 0;
        run->n++;
    }
    return true;
}

/* col[end - ox, K] = the windows of output pixels (oy, [ox, end)) of one
 * image img[h, w, c], columns in (kh, kw, c) order; padding reads as 0.
 * Walking tap by tap makes each inner loop a strided copy of c floats per
 * pixel, which stays cheap even for c = 1. */
CPU_HOT static void im2col_run(float *col, const float *img, const conv2d_shape_t *s,
                               const run_t *run) {
    size_t k = conv_k(s), c = s->c;
    for (size_t i = 0; i < s->kh; i++) {
        size_t iy = run->oy * s->sh + i;
        bool row_in = iy >= s->pad_top && iy - s->pad_top < s->h;
        for (size_t j = 0; j < s->kw; j++) {
            float *dst = col + (i * s->kw + j) * c;
            range_t v = tap_outputs(j, s->sw, s->pad_left, s->w, run->ox, run->end);
            if (!row_in)
                v.lo = v.hi = run->end;
            zero_rows(dst, k, v.lo - run->ox, c);
            if (v.hi > v.lo) {
                const float *src =
                    img + ((iy - s->pad_top) * s->w + v.lo * s->sw + j - s->pad_left) * c;
                copy_rows(dst + (v.lo - run->ox) * k, k, src, s->sw * c, v.hi - v.lo, c);
            }
            zero_rows(dst + (v.hi - run->ox) * k, k, run->end - v.hi, c);
        }
    }
}

/* The adjoint of im2col_run: img[h, w, c] += each window of col back at the
 * pixels it was read from; padding taps are dropped. */
CPU_HOT static void col2im_run(float *img, const float *col, const conv2d_shape_t *s,
                               const run_t *run) {
    size_t k = conv_k(s), c = s->c;
    for (size_t i = 0; i < s->kh; i++) {
        size_t iy = run->oy * s->sh + i;
        if (iy < s->pad_top || iy - s->pad_top >= s->h)
            continue;
        for (size_t j = 0; j < s->kw; j++) {
            range_t v = tap_outputs(j, s->sw, s->pad_left, s->w, run->ox, run->end);
            if (v.hi == v.lo)
                continue;
            float *dst = img + ((iy - s->pad_top) * s->w + v.lo * s->sw + j - s->pad_left) * c;
            const float *src = col + (v.lo - run->ox) * k + (i * s->kw + j) * c;
            add_rows(dst, s->sw * c, src, k, v.hi - v.lo, c);
        }
    }
}

/* col[r1 - r0, K] = rows [r0, r1) of the im2col matrix of x[n, h, w, c]:
 * row r is output pixel r in NHWC order, its columns the window in
 * (kh, kw, c) order so that the kernel [kh, kw, c, f] is a [K, f] matrix. */
static void im2col(float *col, const float *x, const conv2d_shape_t *s, size_t r0, size_t r1) {
    size_t img_size = s->h * s->w * s->c, r = r0;
    run_t run = first_run(s, r0, r1);
    do {
        im2col_run(col + (r - r0) * conv_k(s), x + run.n * img_size, s, &run);
        r += run.end - run.ox;
    } while (next_run(&run, s, r, r1));
}

/* dx[n, h, w, c] += col2im(col[r1 - r0, K]) for rows [r0, r1) */
static void col2im_add(float *dx, const float *col, const conv2d_shape_t *s, size_t r0, size_t r1) {
    size_t img_size = s->h * s->w * s->c, r = r0;
    run_t run = first_run(s, r0, r1);
    do {
        col2im_run(dx + run.n * img_size, col + (r - r0) * conv_k(s), s, &run);
        r += run.end - run.ox;
    } while (next_run(&run, s, r, r1));
}

/* y[n, oh, ow, f] = col(x)[rows, K] x w[K, f], chunk by chunk */
static void cpu_conv2d_forward(float *y, const float *x, const float *w, const conv2d_shape_t *s,
                               void *ws) {
    size_t rows = conv_rows(s), k = conv_k(s), step = conv_chunk_rows(s);
    bool pointwise = conv_is_pointwise(s);
    if (winograd_fits(s)) {
        winograd_forward(y, x, w, s, ws);
        return;
    }
    for (size_t r0 = 0; r0 < rows; r0 += step) {
        size_t r1 = min_size(rows, r0 + step);
        const float *a = x + r0 * s->c;
        if (!pointwise) {
            im2col(ws, x, s, r0, r1);
            a = ws;
        }
        cpu_gemm(false, false, r1 - r0, s->f, k, 1.0f, a, w, 0.0f, y + r0 * s->f);
    }
}

/* dst[cols, rows] = src[rows, cols] transposed */
CPU_HOT static void transpose(float *restrict dst, const float *restrict src, size_t rows,
                              size_t cols) {
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            dst[j * rows + i] = src[i * cols + j];
}

/* out[rows, K] = dy[rows, f] x w[K, f]^T, from wt = w transposed when the
 * product kernel takes it (it reads b stored [k, n] only) */
static void dy_times_wt(float *out, const float *dy, size_t rows, const float *w, const float *wt,
                        const conv2d_shape_t *s) {
    size_t k = conv_k(s);
    if (wt)
        cpu_gemm(false, false, rows, k, s->f, 1.0f, dy, wt, 0.0f, out);
    else
        cpu_gemm(false, true, rows, k, s->f, 1.0f, dy, w, 0.0f, out);
}

/* dx[n, h, w, c] = col2im(dy[rows, f] x w[K, f]^T), chunk by chunk */
static void cpu_conv2d_backward_data(float *dx, const float *dy, const float *w,
                                     const conv2d_shape_t *s, void *ws) {
    size_t rows = conv_rows(s), k = conv_k(s), step = conv_chunk_rows(s);
    float *col = ws, *wt = NULL;
    if (winograd_fits(s)) {
        winograd_backward_data(dx, dy, w, s, ws);
        return;
    }
    if (cpu_gemm_fast(k)) {
        wt = (float *)((char *)ws + conv_col_bytes(s));
        transpose(wt, w, k, s->f);
    }
    if (conv_is_pointwise(s)) {
        dy_times_wt(dx, dy, rows, w, wt, s);
        return;
    }
    cpu_zero(dx, s->n * s->h * s->w * s->c * sizeof(float));
    for (size_t r0 = 0; r0 < rows; r0 += step) {
        size_t r1 = min_size(rows, r0 + step);
        dy_times_wt(col, dy + r0 * s->f, r1 - r0, w, wt, s);
        col2im_add(dx, col, s, r0, r1);
    }
}

/* dw[K, f] = sum over chunks of col(x)[rows, K]^T x dy[rows, f] */
static void cpu_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                       const conv2d_shape_t *s, void *ws) {
    size_t rows = conv_rows(s), k = conv_k(s), step = conv_chunk_rows(s);
    bool pointwise = conv_is_pointwise(s);
    if (rows == 0)
        cpu_zero(dw, k * s->f * sizeof(float));
    for (size_t r0 = 0; r0 < rows; r0 += step) {
        size_t r1 = min_size(rows, r0 + step);
        const float *a = x + r0 * s->c;
        if (!pointwise) {
            im2col(ws, x, s, r0, r1);
            a = ws;
        }
        cpu_gemm(true, false, k, s->f, r1 - r0, 1.0f, a, dy + r0 * s->f, r0 ? 1.0f : 0.0f, dw);
    }
}

/* ---- max pooling ---- */

/* Which taps of a window along one axis fall inside the input: output
 * position o reads input start + t for taps t in [lo, hi). */
typedef struct {
    ptrdiff_t start;
    size_t lo, hi;
} span_t;

static span_t window_span(size_t o, size_t stride, size_t pad, size_t k, size_t in) {
    ptrdiff_t start = (ptrdiff_t)(o * stride) - (ptrdiff_t)pad;
    ptrdiff_t lo = start < 0 ? -start : 0, hi = (ptrdiff_t)in - start;
    lo = lo < (ptrdiff_t)k ? lo : (ptrdiff_t)k;
    hi = hi < (ptrdiff_t)k ? hi : (ptrdiff_t)k;
    span_t sp = {start, (size_t)lo, (size_t)(hi > lo ? hi : lo)};
    return sp;
}

/* The input index that tap t of the span reads (t in [lo, hi)). */
static size_t span_tap(span_t sp, size_t t) {
    return (size_t)(sp.start + (ptrdiff_t)t);
}

/* out[nc] = elementwise max of in and out */
static inline void max_into(float *restrict out, const float *restrict in, size_t nc) {
    for (size_t j = 0; j < nc; j++)
        out[j] = in[j] > out[j] ? in[j] : out[j];
}

/* y[n, oh, ow, c] = max over the in-image cells of each window of
 * x[n, h, w, c]; 'same' padding never leaves a window without one. */
CPU_HOT static void cpu_maxpool2d_forward(float *restrict y, const float *restrict x,
                                          const pool2d_shape_t *s) {
    size_t c = s->c, img_size = s->h * s->w * c;
    for (size_t n = 0; n < s->n; n++) {
        const float *img = x + n * img_size;
        for (size_t oy = 0; oy < s->oh; oy++) {
            span_t sy = window_span(oy, s->sh, s->pad_top, s->ph, s->h);
            for (size_t ox = 0; ox < s->ow; ox++, y += c) {
                span_t sx = window_span(ox, s->sw, s->pad_left, s->pw, s->w);
                for (size_t j = 0; j < c; j++)
                    y[j] = -INFINITY;
                for (size_t i = sy.lo; i < sy.hi; i++)
                    for (size_t j = sx.lo; j < sx.hi; j++)
                        max_into(y, img + (span_tap(sy, i) * s->w + span_tap(sx, j)) * c, c);
            }
        }
    }
}

/* The pooling backward walks channels in blocks: g holds what of dy is still
 * to be routed, so the first cell equal to the max takes it and later ties
 * get nothing. */
#define POOL_BLOCK 64

/* Routes g[nc] into dxc for the channels where xc equals the max yc:
 * dxc = (or +=) g there, and g becomes 0 there. */
static inline void route_cell(float *restrict dxc, float *restrict g, const float *restrict xc,
                              const float *restrict yc, size_t nc, bool overwrite) {
    for (size_t j = 0; j < nc; j++) {
        bool hit = xc[j] == yc[j];
        float take = hit ? g[j] : 0.0f;
        dxc[j] = overwrite ? take : dxc[j] + take;
        g[j] = hit ? 0.0f : g[j];
    }
}

/* Every cell in exactly one window: dx can be written without zeroing it. */
static bool pool_tiles_exactly(const pool2d_shape_t *s) {
    return s->ph == s->sh && s->pw == s->sw && s->pad_top == 0 && s->pad_left == 0 &&
           s->oh * s->sh == s->h && s->ow * s->sw == s->w;
}

/* Routes dy of output pixel (n, oy, ox), channels [c0, c0 + nc), into dx. */
static inline void route_window(float *dx, const float *dy, const float *x, const float *y,
                                const pool2d_shape_t *s, size_t oy, size_t ox, size_t c0, size_t nc,
                                bool overwrite) {
    float g[POOL_BLOCK];
    size_t c = s->c;
    span_t sy = window_span(oy, s->sh, s->pad_top, s->ph, s->h);
    span_t sx = window_span(ox, s->sw, s->pad_left, s->pw, s->w);
    size_t out = (oy * s->ow + ox) * c + c0;
    memcpy(g, dy + out, nc * sizeof(float));
    for (size_t i = sy.lo; i < sy.hi; i++) {
        for (size_t j = sx.lo; j < sx.hi; j++) {
            size_t cell = (span_tap(sy, i) * s->w + span_tap(sx, j)) * c + c0;
            route_cell(dx + cell, g, x + cell, y + out, nc, overwrite);
        }
    }
}

/* dx[n, h, w, c] (overwritten) from dy[n, oh, ow, c], x and the forward's y */
CPU_HOT static void cpu_maxpool2d_backward(float *dx, const float *dy, const float *x,
                                           const float *y, const pool2d_shape_t *s) {
    size_t in_size = s->h * s->w * s->c, out_size = s->oh * s->ow * s->c;
    bool overwrite = pool_tiles_exactly(s);
    if (!overwrite)
        memset(dx, 0, s->n * in_size * sizeof(float));
    for (size_t n = 0; n < s->n; n++) {
        float *dxn = dx + n * in_size;
        const float *xn = x + n * in_size, *dyn = dy + n * out_size, *yn = y + n * out_size;
        for (size_t oy = 0; oy < s->oh; oy++) {
            for (size_t ox = 0; ox < s->ow; ox++) {
                for (size_t c0 = 0; c0 < s->c; c0 += POOL_BLOCK) {
                    size_t nc = min_size(POOL_BLOCK, s->c - c0);
                    if (overwrite)
                        route_window(dxn, dyn, xn, yn, s, oy, ox, c0, nc, true);
                    else
                        route_window(dxn, dyn, xn, yn, s, oy, ox, c0, nc, false);
                }
            }
        }
    }
}

/* ---- bias, relu ---- */

/* y[rows, cols] += b[cols] on every row */
CPU_HOT static void cpu_bias_add(float *y, const float *b, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++, y += cols)
        for (size_t j = 0; j < cols; j++)
            y[j] += b[j];
}

/* Columns and rows summed per block: the partial sums of a block stay in
 * registers or L1, and summing in two levels keeps the float error small
 * for the 25,000 rows of a conv layer's bias. */
#define BIAS_COLS 256
#define BIAS_ROWS 64

/* db[cols] = column sums of dy[rows, cols] */
CPU_HOT static void cpu_bias_grad(float *db, const float *dy, size_t rows, size_t cols) {
    for (size_t c0 = 0; c0 < cols; c0 += BIAS_COLS) {
        size_t nc = min_size(BIAS_COLS, cols - c0);
        float total[BIAS_COLS] = {0}, part[BIAS_COLS];
        for (size_t r0 = 0; r0 < rows; r0 += BIAS_ROWS) {
            memset(part, 0, sizeof part);
            for (size_t r = r0; r < min_size(rows, r0 + BIAS_ROWS); r++)
                for (size_t j = 0; j < nc; j++)
                    part[j] += dy[r * cols + c0 + j];
            for (size_t j = 0; j < nc; j++)
                total[j] += part[j];
        }
        memcpy(db + c0, total, nc * sizeof(float));
    }
}

/* y[rows, cols] = max(y + b[cols], 0): bias_add then relu_forward in one
 * pass over y, the same floats. */
CPU_HOT static void cpu_bias_relu(float *y, const float *b, size_t rows, size_t cols) {
    for (size_t r = 0; r < rows; r++, y += cols)
        for (size_t j = 0; j < cols; j++) {
            float v = y[j] + b[j];
            y[j] = v > 0.0f ? v : 0.0f;
        }
}

/* dy[rows, cols] = dy where y > 0, else 0, and db[cols] its column sums:
 * relu_backward then bias_grad in one pass over dy, the same sums in the
 * same order. */
CPU_HOT static void cpu_relu_bias_grad(float *db, float *dy, const float *y, size_t rows,
                                       size_t cols) {
    for (size_t c0 = 0; c0 < cols; c0 += BIAS_COLS) {
        size_t nc = min_size(BIAS_COLS, cols - c0);
        float total[BIAS_COLS] = {0}, part[BIAS_COLS];
        for (size_t r0 = 0; r0 < rows; r0 += BIAS_ROWS) {
            memset(part, 0, sizeof part);
            for (size_t r = r0; r < min_size(rows, r0 + BIAS_ROWS); r++) {
                float *d = dy + r * cols + c0;
                const float *o = y + r * cols + c0;
                for (size_t j = 0; j < nc; j++) {
                    float g = o[j] > 0.0f ? d[j] : 0.0f;
                    d[j] = g;
                    part[j] += g;
                }
            }
            for (size_t j = 0; j < nc; j++)
                total[j] += part[j];
        }
        memcpy(db + c0, total, nc * sizeof(float));
    }
}

/* y[n] = max(x, 0), in place allowed */
CPU_HOT static void cpu_relu_forward(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx[n] = dy where y > 0, else 0; in place allowed */
CPU_HOT static void cpu_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* ---- softmax cross-entropy ---- */

/* probs[rows, classes], loss[rows] from logits[rows, classes]; a label out of
 * [0, classes) gives a NaN loss rather than a read out of bounds. */
static void cpu_softmax_xent_forward(float *probs, float *loss, const float *logits,
                                     const int32_t *labels, size_t rows, size_t classes) {
    for (size_t r = 0; r < rows; r++) {
        const float *l = logits + r * classes;
        float *p = probs + r * classes;
        float max = -INFINITY, sum = 0.0f;
        for (size_t j = 0; j < classes; j++)
            max = l[j] > max ? l[j] : max;
        for (size_t j = 0; j < classes; j++) {
            p[j] = expf(l[j] - max);
            sum += p[j];
        }
        for (size_t j = 0; j < classes; j++)
            p[j] /= sum;
        int32_t label = labels[r];
        bool valid = label >= 0 && (size_t)label < classes;
        /* -log(p[label]) = log(sum) - (l[label] - max), exact for large logits */
        loss[r] = valid ? logf(sum) - (l[label] - max) : NAN;
    }
}

/* dlogits[rows, classes] = scale * (probs - onehot(labels)) */
static void cpu_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels,
                                      size_t rows, size_t classes, float scale) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t j = 0; j < classes; j++)
            dlogits[r * classes + j] = scale * probs[r * classes + j];
        int32_t label = labels[r];
        if (label >= 0 && (size_t)label < classes)
            dlogits[r * classes + (size_t)label] -= scale;
    }
}

/* ---- binary cross-entropy and squared error, one output per row ---- */

static void cpu_sigmoid_bce_forward(float *probs, float *loss, const float *logits,
                                    const int32_t *labels, size_t rows) {
    for (size_t r = 0; r < rows; r++) {
        float z = logits[r], a = fabsf(z);
        /* sigmoid without overflow: e = exp(-|z|) is in (0, 1] */
        float e = expf(-a);
        probs[r] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        bool valid = labels[r] == 0 || labels[r] == 1;
        /* -y log p - (1 - y) log(1 - p) = max(z, 0) - z y + log(1 + exp(-|z|)) */
        loss[r] = valid ? fmaxf(z, 0.0f) - z * (float)labels[r] + log1pf(e) : NAN;
    }
}

static void cpu_sigmoid_bce_backward(float *dlogits, const float *probs, const int32_t *labels,
                                     size_t rows, float scale) {
    for (size_t r = 0; r < rows; r++)
        dlogits[r] = scale * (probs[r] - (float)labels[r]);
}

static void cpu_mse_forward(float *y, float *loss, const float *x, const int32_t *labels,
                            size_t rows) {
    for (size_t r = 0; r < rows; r++) {
        float d = x[r] - (float)labels[r];
        y[r] = x[r];
        loss[r] = d * d;
    }
}

static void cpu_mse_backward(float *dx, const float *y, const int32_t *labels, size_t rows,
                             float scale) {
    for (size_t r = 0; r < rows; r++)
        dx[r] = scale * 2.0f * (y[r] - (float)labels[r]);
}

/* ---- dropout ---- */

/* rng_mix of kernels/rng.c, repeated here so that the mask loop inlines and
 * vectorises; kernels_dropout_matches_rng checks the two agree bit for bit. */
static inline uint64_t dropout_mix(uint64_t key, uint64_t counter) {
    uint64_t z = key + (counter + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* y[i] = x[i] / (1 - rate) where rng_uniform(key, offset + i) >= rate, else
 * 0; forward and backward are the same masking. In place allowed. */
CPU_HOT static void cpu_dropout(float *y, const float *x, size_t n, float rate, uint64_t key,
                                uint64_t offset) {
    uint64_t threshold = rng_threshold(rate);
    float scale = rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;
    for (size_t i = 0; i < n; i++) {
        bool keep = dropout_mix(key, offset + i) >> 40 >= threshold;
        y[i] = keep ? x[i] * scale : 0.0f;
    }
}

/* ---- vectors ---- */

/* y[n] += a * x[n] */
CPU_HOT static void cpu_axpy(float *y, float a, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

/* y[n] = x[n] * scale for bytes x */
CPU_HOT static void cpu_scale_u8(float *y, const uint8_t *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        y[i] = (float)x[i] * scale;
}

/* ---- copies beside the computation: none on the CPU ---- */

/* Events do nothing here, but callers take NULL for failure. */
static backend_event_t *cpu_event_create(void) {
    static char one;
    return (backend_event_t *)&one;
}

static void cpu_event_free(backend_event_t *e) {
    (void)e;
}

static void cpu_copy_now(void *dst, const void *src, size_t bytes, backend_event_t *e) {
    (void)e;
    cpu_copy(dst, src, bytes);
}

static void cpu_event_nothing(backend_event_t *e) {
    (void)e;
}

static const backend_t cpu_table = {
    .name = "cpu",
    .host_memory = true,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .gemm = cpu_gemm,
    .conv2d_workspace = cpu_conv2d_workspace,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_backward_data = cpu_conv2d_backward_data,
    .conv2d_backward_filter = cpu_conv2d_backward_filter,
    .maxpool2d_forward = cpu_maxpool2d_forward,
    .maxpool2d_backward = cpu_maxpool2d_backward,
    .bias_add = cpu_bias_add,
    .bias_grad = cpu_bias_grad,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .softmax_xent_forward = cpu_softmax_xent_forward,
    .softmax_xent_backward = cpu_softmax_xent_backward,
    .sigmoid_bce_forward = cpu_sigmoid_bce_forward,
    .sigmoid_bce_backward = cpu_sigmoid_bce_backward,
    .mse_forward = cpu_mse_forward,
    .mse_backward = cpu_mse_backward,
    .dropout_forward = cpu_dropout,
    .dropout_backward = cpu_dropout,
    .axpy = cpu_axpy,
    .scale_u8 = cpu_scale_u8,
    .apply_update = cpu_apply_update,
    .host_alloc = cpu_alloc,
    .host_free = cpu_free,
    .event_create = cpu_event_create,
    .event_free = cpu_event_free,
    .upload_async = cpu_copy_now,
    .download_async = cpu_copy_now,
    .wait_event = cpu_event_nothing,
    .sync_event = cpu_event_nothing,
    .act_forward = cpu_act_forward,
    .act_backward = cpu_act_backward,
    .avgpool2d_forward = cpu_avgpool2d_forward,
    .avgpool2d_backward = cpu_avgpool2d_backward,
    .scale_shift = cpu_scale_shift,
    .mul = cpu_mul,
    .copy_cols = cpu_copy_cols,
    .embed_forward = cpu_embed_forward,
    .embed_backward = cpu_embed_backward,
    .depthwise_conv2d_forward = cpu_depthwise_conv2d_forward,
    .depthwise_conv2d_backward_data = cpu_depthwise_conv2d_backward_data,
    .depthwise_conv2d_backward_filter = cpu_depthwise_conv2d_backward_filter,
    .bias_relu = cpu_bias_relu,
    .relu_bias_grad = cpu_relu_bias_grad,
    .bn_stats = cpu_bn_stats,
    .bn_forward = cpu_bn_forward,
    .bn_backward_sums = cpu_bn_backward_sums,
    .bn_backward_data = cpu_bn_backward_data,
};

const backend_t *cpu_backend(void) {
    return &cpu_table;
}

void cpu_backend_init(void) {
    cpu_gemm_init();
}

/* OpenBLAS's kernel, e.g. "SkylakeX", with "+avx512" or "+avx2" when
 * pstrain's own kernel takes the products it suits. */
const char *cpu_backend_blas_core(void) {
    return cpu_gemm_name();
}

/* CUDA kernels of the Keras layers beyond the builtin models: activations,
 * average pooling (padding not counted, as TensorFlow) and Rescaling's
 * scale-and-shift. The same formulas as kernels/cpu/ops_extra.c, which
 * tests/test_cuda.c compares them with. The backward of average pooling is
 * computed per input cell (a gather over the windows that cover it), so no
 * atomics are needed and the result does not depend on the launch. */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/ops_extra.h"

#include "kernels/cuda/cuda_launch.cuh"

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

__device__ static float sigmoid_dev(float x) {
    return 1.0f / (1.0f + expf(-x));
}

__device__ static float act_value_dev(float x, act_fn_t f) {
    switch (f) {
    case ACT_FN_SIGMOID:
        return sigmoid_dev(x);
    case ACT_FN_TANH:
        return tanhf(x);
    case ACT_FN_GELU:
        return 0.5f * x * (1.0f + erff(x * INV_SQRT2));
    case ACT_FN_SILU:
        return x * sigmoid_dev(x);
    }
    return x;
}

__device__ static float act_slope_dev(float x, float y, act_fn_t f) {
    switch (f) {
    case ACT_FN_SIGMOID:
        return y * (1.0f - y);
    case ACT_FN_TANH:
        return 1.0f - y * y;
    case ACT_FN_GELU:
        return 0.5f * (1.0f + erff(x * INV_SQRT2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    case ACT_FN_SILU: {
        float s = sigmoid_dev(x);
        return s * (1.0f + x * (1.0f - s));
    }
    }
    return 1.0f;
}

__global__ void act_forward_kernel(float *y, const float *x, size_t n, act_fn_t f) {
    GRID_STRIDE(i, n) {
        y[i] = act_value_dev(x[i], f);
    }
}

__global__ void act_backward_kernel(float *dx, const float *dy, const float *x, const float *y,
                                    size_t n, act_fn_t f) {
    GRID_STRIDE(i, n) {
        dx[i] = dy[i] * act_slope_dev(x[i], y[i], f);
    }
}

extern "C" void cuk_act_forward(float *y, const float *x, size_t n, act_fn_t f) {
    LAUNCH(act_forward_kernel, n, y, x, n, f);
}

extern "C" void cuk_act_backward(float *dx, const float *dy, const float *x, const float *y,
                                 size_t n, act_fn_t f) {
    LAUNCH(act_backward_kernel, n, dx, dy, x, y, n, f);
}

/* The in-image cells [lo, hi) of output row o's window. */
__device__ static void window_dev(size_t o, size_t stride, size_t pad, size_t k, size_t in,
                                  size_t *lo, size_t *hi) {
    long long start = (long long)(o * stride) - (long long)pad, end = start + (long long)k;
    *lo = start < 0 ? 0 : (size_t)start;
    *hi = end > (long long)in ? in : (size_t)end;
}

/* One thread per output element (n, oy, ox, c). */
__global__ void avgpool_forward_kernel(float *y, const float *x, pool2d_shape_t s) {
    GRID_STRIDE(i, s.n * s.oh * s.ow * s.c) {
        size_t c = i % s.c, ox = i / s.c % s.ow, oy = i / (s.c * s.ow) % s.oh;
        size_t n = i / (s.c * s.ow * s.oh), y0, y1, x0, x1;
        window_dev(oy, s.sh, s.pad_top, s.ph, s.h, &y0, &y1);
        window_dev(ox, s.sw, s.pad_left, s.pw, s.w, &x0, &x1);
        const float *img = x + n * s.h * s.w * s.c;
        float sum = 0.0f;
        for (size_t a = y0; a < y1; a++)
            for (size_t b = x0; b < x1; b++)
                sum += img[(a * s.w + b) * s.c + c];
        y[i] = sum / (float)((y1 - y0) * (x1 - x0));
    }
}

/* The outputs [lo, hi) whose windows along one axis cover input position p. */
__device__ static void covering_dev(size_t p, size_t stride, size_t pad, size_t k, size_t out,
                                    size_t *lo, size_t *hi) {
    long long q = (long long)p + (long long)pad; /* position in the padded input */
    long long first = q - (long long)k + 1;
    first = first < 0 ? 0 : (first + (long long)stride - 1) / (long long)stride;
    long long last = q / (long long)stride + 1;
    *lo = (size_t)first;
    *hi = last > (long long)out ? out : (size_t)last;
}

/* One thread per input element (n, iy, ix, c): the sum of the dy of every
 * window that covers it, each divided by its window's cell count. */
__global__ void avgpool_backward_kernel(float *dx, const float *dy, pool2d_shape_t s) {
    GRID_STRIDE(i, s.n * s.h * s.w * s.c) {
        size_t c = i % s.c, ix = i / s.c % s.w, iy = i / (s.c * s.w) % s.h;
        size_t n = i / (s.c * s.w * s.h), oy0, oy1, ox0, ox1;
        covering_dev(iy, s.sh, s.pad_top, s.ph, s.oh, &oy0, &oy1);
        covering_dev(ix, s.sw, s.pad_left, s.pw, s.ow, &ox0, &ox1);
        const float *g = dy + n * s.oh * s.ow * s.c;
        float sum = 0.0f;
        for (size_t oy = oy0; oy < oy1; oy++) {
            size_t y0, y1;
            window_dev(oy, s.sh, s.pad_top, s.ph, s.h, &y0, &y1);
            for (size_t ox = ox0; ox < ox1; ox++) {
                size_t x0, x1;
                window_dev(ox, s.sw, s.pad_left, s.pw, s.w, &x0, &x1);
                sum += g[(oy * s.ow + ox) * s.c + c] / (float)((y1 - y0) * (x1 - x0));
            }
        }
        dx[i] = sum;
    }
}

extern "C" void cuk_avgpool2d_forward(float *y, const float *x, const pool2d_shape_t *s) {
    LAUNCH(avgpool_forward_kernel, s->n * s->oh * s->ow * s->c, y, x, *s);
}

extern "C" void cuk_avgpool2d_backward(float *dx, const float *dy, const pool2d_shape_t *s) {
    LAUNCH(avgpool_backward_kernel, s->n * s->h * s->w * s->c, dx, dy, *s);
}

__global__ void scale_shift_kernel(float *y, const float *x, size_t n, float scale, float offset) {
    GRID_STRIDE(i, n) {
        y[i] = x[i] * scale + offset;
    }
}

extern "C" void cuk_scale_shift(float *y, const float *x, size_t n, float scale, float offset) {
    LAUNCH(scale_shift_kernel, n, y, x, n, scale, offset);
}

__global__ void mul_kernel(float *y, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n) {
        y[i] = a[i] * b[i];
    }
}

extern "C" void cuk_mul(float *y, const float *a, const float *b, size_t n) {
    LAUNCH(mul_kernel, n, y, a, b, n);
}

/* One thread per copied element (r, j). */
__global__ void copy_cols_kernel(float *dst, size_t dst_cols, size_t dst_off, const float *src,
                                 size_t src_cols, size_t src_off, size_t rows, size_t cols) {
    GRID_STRIDE(i, rows * cols) {
        size_t r = i / cols, j = i % cols;
        dst[r * dst_cols + dst_off + j] = src[r * src_cols + src_off + j];
    }
}

extern "C" void cuk_copy_cols(float *dst, size_t dst_cols, size_t dst_off, const float *src,
                              size_t src_cols, size_t src_off, size_t rows, size_t cols) {
    LAUNCH(copy_cols_kernel, rows * cols, dst, dst_cols, dst_off, src, src_cols, src_off, rows,
           cols);
}

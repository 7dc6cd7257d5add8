/* CUDA kernels of the depthwise convolution (Keras's DepthwiseConv2D), the
 * same sums as kernels/cpu/ops_depthwise.c, each computed as a gather so
 * that no atomics are needed and the result does not depend on the launch:
 * the forward one thread per output element, the data gradient one thread
 * per input element (the outputs whose windows cover it), the filter
 * gradient one block per kernel element (a sum over the batch and the
 * output, reduced in shared memory in a fixed order). */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/ops_more.h"

#include "kernels/cuda/cuda_launch.cuh"

/* One thread per output element (n, oy, ox, j), j = ci * mult + q. */
__global__ void depthwise_forward_kernel(float *y, const float *x, const float *w,
                                         conv2d_shape_t s) {
    size_t mult = s.f / s.c;
    GRID_STRIDE(i, s.n * s.oh * s.ow * s.f) {
        size_t j = i % s.f, ox = i / s.f % s.ow, oy = i / (s.f * s.ow) % s.oh;
        size_t n = i / (s.f * s.ow * s.oh), ci = j / mult;
        float sum = 0.0f;
        for (size_t ky = 0; ky < s.kh; ky++) {
            long long iy = (long long)(oy * s.sh + ky) - (long long)s.pad_top;
            if (iy < 0 || iy >= (long long)s.h)
                continue;
            for (size_t kx = 0; kx < s.kw; kx++) {
                long long ix = (long long)(ox * s.sw + kx) - (long long)s.pad_left;
                if (ix < 0 || ix >= (long long)s.w)
                    continue;
                sum += x[((n * s.h + (size_t)iy) * s.w + (size_t)ix) * s.c + ci] *
                       w[(ky * s.kw + kx) * s.f + j];
            }
        }
        y[i] = sum;
    }
}

/* One thread per input element (n, iy, ix, ci): the taps (ky, kx) whose
 * output position (iy + pad - ky) / stride is whole and in the output. */
__global__ void depthwise_backward_data_kernel(float *dx, const float *dy, const float *w,
                                               conv2d_shape_t s) {
    size_t mult = s.f / s.c;
    GRID_STRIDE(i, s.n * s.h * s.w * s.c) {
        size_t ci = i % s.c, ix = i / s.c % s.w, iy = i / (s.c * s.w) % s.h;
        size_t n = i / (s.c * s.w * s.h);
        float sum = 0.0f;
        for (size_t ky = 0; ky < s.kh; ky++) {
            long long py = (long long)(iy + s.pad_top) - (long long)ky;
            if (py < 0 || py % (long long)s.sh != 0 || py / (long long)s.sh >= (long long)s.oh)
                continue;
            size_t oy = (size_t)(py / (long long)s.sh);
            for (size_t kx = 0; kx < s.kw; kx++) {
                long long px = (long long)(ix + s.pad_left) - (long long)kx;
                if (px < 0 || px % (long long)s.sw != 0 || px / (long long)s.sw >= (long long)s.ow)
                    continue;
                size_t ox = (size_t)(px / (long long)s.sw);
                const float *g = dy + ((n * s.oh + oy) * s.ow + ox) * s.f + ci * mult;
                const float *k = w + (ky * s.kw + kx) * s.f + ci * mult;
                for (size_t q = 0; q < mult; q++)
                    sum += g[q] * k[q];
            }
        }
        dx[i] = sum;
    }
}

/* One block per kernel element (ky, kx, j): its threads split the batch's
 * output cells and sum their products in shared memory (a fixed tree, so
 * the result does not depend on the launch). */
__global__ void depthwise_backward_filter_kernel(float *dw, const float *dy, const float *x,
                                                 conv2d_shape_t s) {
    __shared__ float part[THREADS];
    size_t mult = s.f / s.c, cells = s.n * s.oh * s.ow;
    for (size_t i = blockIdx.x; i < s.kh * s.kw * s.f; i += gridDim.x) {
        size_t j = i % s.f, kx = i / s.f % s.kw, ky = i / (s.f * s.kw), ci = j / mult;
        float sum = 0.0f;
        for (size_t p = threadIdx.x; p < cells; p += blockDim.x) {
            size_t ox = p % s.ow, oy = p / s.ow % s.oh, n = p / (s.ow * s.oh);
            long long iy = (long long)(oy * s.sh + ky) - (long long)s.pad_top;
            long long ix = (long long)(ox * s.sw + kx) - (long long)s.pad_left;
            if (iy < 0 || iy >= (long long)s.h || ix < 0 || ix >= (long long)s.w)
                continue;
            sum += dy[p * s.f + j] * x[((n * s.h + (size_t)iy) * s.w + (size_t)ix) * s.c + ci];
        }
        part[threadIdx.x] = sum;
        __syncthreads();
        for (unsigned half = THREADS / 2; half > 0; half /= 2) {
            if (threadIdx.x < half)
                part[threadIdx.x] += part[threadIdx.x + half];
            __syncthreads();
        }
        if (threadIdx.x == 0)
            dw[i] = part[0];
        __syncthreads();
    }
}

extern "C" void cuk_depthwise_conv2d_forward(float *y, const float *x, const float *w,
                                             const conv2d_shape_t *s) {
    LAUNCH(depthwise_forward_kernel, s->n * s->oh * s->ow * s->f, y, x, w, *s);
}

extern "C" void cuk_depthwise_conv2d_backward_data(float *dx, const float *dy, const float *w,
                                                   const conv2d_shape_t *s) {
    LAUNCH(depthwise_backward_data_kernel, s->n * s->h * s->w * s->c, dx, dy, w, *s);
}

extern "C" void cuk_depthwise_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                                     const conv2d_shape_t *s) {
    size_t blocks = s->kh * s->kw * s->f;
    if (blocks == 0)
        return;
    blocks = blocks < 65535 ? blocks : 65535;
    depthwise_backward_filter_kernel<<<(unsigned)blocks, THREADS, 0, cuda.compute>>>(dw, dy, x, *s);
    CUDA_CHECK(cudaGetLastError());
}

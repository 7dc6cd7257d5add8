/* CUDA kernels of BatchNormalization, the formulas of kernels/cpu/ops_bn.c
 * (which tests/test_cuda_bn.c compares them with). The per-channel sums run
 * one block per BN_CHANNELS channels: its threads read BN_CHANNELS adjacent
 * channels of a row at once (coalesced), BN_LANES rows apart, add in double
 * and combine their lanes in shared memory, so the result does not depend on
 * atomics' order. The elementwise ops walk x in a grid-stride loop. */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/ops_bn.h"

#include "kernels/cuda/cuda_launch.cuh"

#define BN_CHANNELS 32
#define BN_LANES 32

/* Blocks of BN_CHANNELS x BN_LANES threads covering c channels. */
static dim3 bn_grid(size_t c) {
    return dim3((unsigned)((c + BN_CHANNELS - 1) / BN_CHANNELS));
}

/* Lane ty's partial sums of channel j into shared memory, then lane 0 adds
 * the lanes in order; returns the total (valid in lane 0). */
__device__ static double lanes_total(double (*part)[BN_CHANNELS], double v) {
    part[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    double total = 0.0;
    if (threadIdx.y == 0)
        for (int k = 0; k < BN_LANES; k++)
            total += part[k][threadIdx.x];
    return total;
}

__global__ void bn_stats_kernel(float *out, const float *x, const float *mean, size_t rows,
                                size_t c) {
    __shared__ double part[BN_LANES][BN_CHANNELS];
    size_t j = blockIdx.x * (size_t)BN_CHANNELS + threadIdx.x;
    double acc = 0.0;
    if (j < c) {
        double m = mean ? (double)mean[j] : 0.0;
        for (size_t r = threadIdx.y; r < rows; r += BN_LANES) {
            double d = (double)x[r * c + j] - m;
            acc += mean ? d * d : d;
        }
    }
    double total = lanes_total(part, acc);
    if (threadIdx.y == 0 && j < c)
        out[j] = (float)total;
}

__global__ void bn_sums_kernel(float *sums, const float *dy, const float *x, const float *mean,
                               const float *var, float eps, size_t rows, size_t c) {
    __shared__ double part[BN_LANES][BN_CHANNELS];
    size_t j = blockIdx.x * (size_t)BN_CHANNELS + threadIdx.x;
    double sxh = 0.0, sdy = 0.0;
    if (j < c) {
        float inv = 1.0f / sqrtf(var[j] + eps), m = mean[j];
        for (size_t r = threadIdx.y; r < rows; r += BN_LANES) {
            float g = dy[r * c + j];
            sxh += (double)(g * ((x[r * c + j] - m) * inv));
            sdy += (double)g;
        }
    }
    double t1 = lanes_total(part, sxh);
    __syncthreads(); /* every lane has read part before it is reused */
    double t2 = lanes_total(part, sdy);
    if (threadIdx.y == 0 && j < c) {
        sums[j] = (float)t1;
        sums[c + j] = (float)t2;
    }
}

extern "C" void cuk_bn_stats(float *out, const float *x, const float *mean, size_t rows, size_t c) {
    if (c == 0)
        return;
    bn_stats_kernel<<<bn_grid(c), dim3(BN_CHANNELS, BN_LANES), 0, cuda.compute>>>(out, x, mean,
                                                                                  rows, c);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuk_bn_backward_sums(float *sums, const float *dy, const float *x,
                                     const float *mean, const float *var, float eps, size_t rows,
                                     size_t c) {
    if (c == 0)
        return;
    bn_sums_kernel<<<bn_grid(c), dim3(BN_CHANNELS, BN_LANES), 0, cuda.compute>>>(sums, dy, x, mean,
                                                                                 var, eps, rows, c);
    CUDA_CHECK(cudaGetLastError());
}

/* y = x * a + b with a = gamma / sqrt(var + eps), b = beta - mean * a (the
 * CPU's form). */
__global__ void bn_forward_kernel(float *y, const float *x, const float *mean, const float *var,
                                  const float *gamma, const float *beta, float eps, size_t n,
                                  size_t c) {
    GRID_STRIDE(i, n) {
        size_t j = i % c;
        float inv = 1.0f / sqrtf(var[j] + eps);
        float a = gamma ? inv * gamma[j] : inv;
        float b = (beta ? beta[j] : 0.0f) - mean[j] * a;
        y[i] = x[i] * a + b;
    }
}

__global__ void bn_data_kernel(float *dx, const float *dy, const float *x, const float *mean,
                               const float *var, const float *gamma, const float *sums, float eps,
                               float per, size_t n, size_t c) {
    GRID_STRIDE(i, n) {
        size_t j = i % c;
        float inv = 1.0f / sqrtf(var[j] + eps);
        float a = gamma ? gamma[j] * inv : inv;
        float xhat = (x[i] - mean[j]) * inv;
        dx[i] = a * (dy[i] - sums[c + j] * per - xhat * (sums[j] * per));
    }
}

extern "C" void cuk_bn_forward(float *y, const float *x, const float *mean, const float *var,
                               const float *gamma, const float *beta, float eps, size_t rows,
                               size_t c) {
    LAUNCH(bn_forward_kernel, rows * c, y, x, mean, var, gamma, beta, eps, rows * c, c);
}

extern "C" void cuk_bn_backward_data(float *dx, const float *dy, const float *x, const float *mean,
                                     const float *var, const float *gamma, const float *sums,
                                     float eps, size_t count, size_t rows, size_t c) {
    LAUNCH(bn_data_kernel, rows * c, dx, dy, x, mean, var, gamma, sums, eps, 1.0f / (float)count,
           rows * c, c);
}

/* CPU ops of BatchNormalization. The channels are taken in blocks of
 * BN_BLOCK so that the per-channel constants and double accumulators live
 * on the stack (ops never allocate) and each pass reads the rows in order. */
#include "kernels/cpu/ops_bn.h"

#include <math.h>

#define BN_BLOCK 64

/* Channels [j0, j0 + *nb) of c: the block that starts at j0. */
static size_t block_len(size_t j0, size_t c) {
    return c - j0 < BN_BLOCK ? c - j0 : BN_BLOCK;
}

/* out[j] = sum_r x[r, j], or sum_r (x[r, j] - mean[j])^2 */
void cpu_bn_stats(float *out, const float *x, const float *mean, size_t rows, size_t c) {
    for (size_t j0 = 0; j0 < c; j0 += BN_BLOCK) {
        size_t nb = block_len(j0, c);
        double acc[BN_BLOCK] = {0};
        float m[BN_BLOCK] = {0};
        for (size_t j = 0; j < nb && mean; j++)
            m[j] = mean[j0 + j];
        for (size_t r = 0; r < rows; r++) {
            const float *row = x + r * c + j0;
            if (mean)
                for (size_t j = 0; j < nb; j++) {
                    double d = (double)row[j] - (double)m[j];
                    acc[j] += d * d;
                }
            else
                for (size_t j = 0; j < nb; j++)
                    acc[j] += (double)row[j];
        }
        for (size_t j = 0; j < nb; j++)
            out[j0 + j] = (float)acc[j];
    }
}

/* The normalization of channels [j0, j0 + nb) as y = x * a + b (a = gamma /
 * sqrt(var + eps), b = beta - mean * a), the form TensorFlow's
 * batch_normalization computes. */
static void affine(float *a, float *b, const float *mean, const float *var, const float *gamma,
                   const float *beta, float eps, size_t j0, size_t nb) {
    for (size_t j = 0; j < nb; j++) {
        float inv = 1.0f / sqrtf(var[j0 + j] + eps);
        a[j] = gamma ? inv * gamma[j0 + j] : inv;
        b[j] = (beta ? beta[j0 + j] : 0.0f) - mean[j0 + j] * a[j];
    }
}

/* y[rows, c] = (x - mean) / sqrt(var + eps) * gamma + beta */
void cpu_bn_forward(float *y, const float *x, const float *mean, const float *var,
                    const float *gamma, const float *beta, float eps, size_t rows, size_t c) {
    for (size_t j0 = 0; j0 < c; j0 += BN_BLOCK) {
        size_t nb = block_len(j0, c);
        float a[BN_BLOCK], b[BN_BLOCK];
        affine(a, b, mean, var, gamma, beta, eps, j0, nb);
        for (size_t r = 0; r < rows; r++) {
            const float *in = x + r * c + j0;
            float *out = y + r * c + j0;
            for (size_t j = 0; j < nb; j++)
                out[j] = in[j] * a[j] + b[j];
        }
    }
}

/* sums[j] = sum_r dy * xhat, sums[c + j] = sum_r dy */
void cpu_bn_backward_sums(float *sums, const float *dy, const float *x, const float *mean,
                          const float *var, float eps, size_t rows, size_t c) {
    for (size_t j0 = 0; j0 < c; j0 += BN_BLOCK) {
        size_t nb = block_len(j0, c);
        double sxh[BN_BLOCK] = {0}, sdy[BN_BLOCK] = {0};
        float inv[BN_BLOCK];
        for (size_t j = 0; j < nb; j++)
            inv[j] = 1.0f / sqrtf(var[j0 + j] + eps);
        for (size_t r = 0; r < rows; r++) {
            const float *g = dy + r * c + j0, *in = x + r * c + j0;
            for (size_t j = 0; j < nb; j++) {
                float xhat = (in[j] - mean[j0 + j]) * inv[j];
                sxh[j] += (double)(g[j] * xhat);
                sdy[j] += (double)g[j];
            }
        }
        for (size_t j = 0; j < nb; j++) {
            sums[j0 + j] = (float)sxh[j];
            sums[c + j0 + j] = (float)sdy[j];
        }
    }
}

/* dx = gamma * inv * (dy - sum_dy / count - xhat * sum_dy_xhat / count) */
void cpu_bn_backward_data(float *dx, const float *dy, const float *x, const float *mean,
                          const float *var, const float *gamma, const float *sums, float eps,
                          size_t count, size_t rows, size_t c) {
    float per = 1.0f / (float)count;
    for (size_t j0 = 0; j0 < c; j0 += BN_BLOCK) {
        size_t nb = block_len(j0, c);
        float inv[BN_BLOCK], a[BN_BLOCK], mdy[BN_BLOCK], mxh[BN_BLOCK];
        for (size_t j = 0; j < nb; j++) {
            inv[j] = 1.0f / sqrtf(var[j0 + j] + eps);
            a[j] = gamma ? gamma[j0 + j] * inv[j] : inv[j];
            mxh[j] = sums[j0 + j] * per;
            mdy[j] = sums[c + j0 + j] * per;
        }
        for (size_t r = 0; r < rows; r++) {
            const float *g = dy + r * c + j0, *in = x + r * c + j0;
            float *out = dx + r * c + j0;
            for (size_t j = 0; j < nb; j++) {
                float xhat = (in[j] - mean[j0 + j]) * inv[j];
                out[j] = a[j] * (g[j] - mdy[j] - xhat * mxh[j]);
            }
        }
    }
}

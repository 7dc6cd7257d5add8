/* Launchers of the CUDA kernels of BatchNormalization (kernels/cuda/ops_bn.cu);
 * each is the backend op of the same name, with kernels/cpu/ops_bn.c as its
 * reference. */
#ifndef PSTRAIN_CUDA_OPS_BN_H
#define PSTRAIN_CUDA_OPS_BN_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

void cuk_bn_stats(float *out, const float *x, const float *mean, size_t rows, size_t c);
void cuk_bn_forward(float *y, const float *x, const float *mean, const float *var,
                    const float *gamma, const float *beta, float eps, size_t rows, size_t c);
void cuk_bn_backward_sums(float *sums, const float *dy, const float *x, const float *mean,
                          const float *var, float eps, size_t rows, size_t c);
void cuk_bn_backward_data(float *dx, const float *dy, const float *x, const float *mean,
                          const float *var, const float *gamma, const float *sums, float eps,
                          size_t count, size_t rows, size_t c);

#ifdef __cplusplus
}
#endif

#endif

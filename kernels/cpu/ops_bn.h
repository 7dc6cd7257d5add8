/* The CPU ops of BatchNormalization (see the bn_* entries of backend_t):
 * plain loops over the rows with the channels innermost, single-threaded
 * like the rest of the CPU backend; the references the CUDA kernels are
 * tested against. */
#ifndef PSTRAIN_CPU_OPS_BN_H
#define PSTRAIN_CPU_OPS_BN_H

#include "kernels/backend.h"

void cpu_bn_stats(float *out, const float *x, const float *mean, size_t rows, size_t c);
void cpu_bn_forward(float *y, const float *x, const float *mean, const float *var,
                    const float *gamma, const float *beta, float eps, size_t rows, size_t c);
void cpu_bn_backward_sums(float *sums, const float *dy, const float *x, const float *mean,
                          const float *var, float eps, size_t rows, size_t c);
void cpu_bn_backward_data(float *dx, const float *dy, const float *x, const float *mean,
                          const float *var, const float *gamma, const float *sums, float eps,
                          size_t count, size_t rows, size_t c);

#endif

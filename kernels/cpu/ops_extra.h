/* The CPU ops of the Keras layers beyond the builtin models (see the last
 * entries of backend_t); plain loops, single-threaded like the rest of the
 * CPU backend. They are the references the CUDA counterparts are tested
 * against. */
#ifndef PSTRAIN_CPU_OPS_EXTRA_H
#define PSTRAIN_CPU_OPS_EXTRA_H

#include "kernels/backend.h"

void cpu_act_forward(float *y, const float *x, size_t n, act_fn_t f);
void cpu_act_backward(float *dx, const float *dy, const float *x, const float *y, size_t n,
                      act_fn_t f);
void cpu_avgpool2d_forward(float *y, const float *x, const pool2d_shape_t *s);
void cpu_avgpool2d_backward(float *dx, const float *dy, const pool2d_shape_t *s);
void cpu_scale_shift(float *y, const float *x, size_t n, float scale, float offset);
void cpu_mul(float *y, const float *a, const float *b, size_t n);
void cpu_copy_cols(float *dst, size_t dst_cols, size_t dst_off, const float *src, size_t src_cols,
                   size_t src_off, size_t rows, size_t cols);

#endif

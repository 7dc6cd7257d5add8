/* Launchers of the CUDA kernels of the Keras layers beyond the builtin
 * models (kernels/cuda/ops_extra.cu); each is the backend op of the same
 * name, with kernels/cpu/ops_extra.c as its reference. */
#ifndef PSTRAIN_CUDA_OPS_EXTRA_H
#define PSTRAIN_CUDA_OPS_EXTRA_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

void cuk_act_forward(float *y, const float *x, size_t n, act_fn_t f);
void cuk_act_backward(float *dx, const float *dy, const float *x, const float *y, size_t n,
                      act_fn_t f);
void cuk_avgpool2d_forward(float *y, const float *x, const pool2d_shape_t *s);
void cuk_avgpool2d_backward(float *dx, const float *dy, const pool2d_shape_t *s);
void cuk_scale_shift(float *y, const float *x, size_t n, float scale, float offset);
void cuk_mul(float *y, const float *a, const float *b, size_t n);
void cuk_copy_cols(float *dst, size_t dst_cols, size_t dst_off, const float *src, size_t src_cols,
                   size_t src_off, size_t rows, size_t cols);

#ifdef __cplusplus
}
#endif

#endif

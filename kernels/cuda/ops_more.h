/* Launchers of the CUDA kernels of binary cross-entropy and squared error
 * (kernels/cuda/ops_loss.cu) and of the depthwise convolution
 * (kernels/cuda/ops_depthwise.cu); each is the backend op of the same name,
 * with kernels/cpu/cpu_backend.c and kernels/cpu/ops_depthwise.c as its
 * reference. */
#ifndef PSTRAIN_CUDA_OPS_MORE_H
#define PSTRAIN_CUDA_OPS_MORE_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

void cuk_sigmoid_bce_forward(float *probs, float *loss, const float *logits, const int32_t *labels,
                             size_t rows);
void cuk_sigmoid_bce_backward(float *dlogits, const float *probs, const int32_t *labels,
                              size_t rows, float scale);
void cuk_mse_forward(float *y, float *loss, const float *x, const int32_t *labels, size_t rows);
void cuk_mse_backward(float *dx, const float *y, const int32_t *labels, size_t rows, float scale);

void cuk_depthwise_conv2d_forward(float *y, const float *x, const float *w,
                                  const conv2d_shape_t *s);
void cuk_depthwise_conv2d_backward_data(float *dx, const float *dy, const float *w,
                                        const conv2d_shape_t *s);
void cuk_depthwise_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                          const conv2d_shape_t *s);

#ifdef __cplusplus
}
#endif

#endif

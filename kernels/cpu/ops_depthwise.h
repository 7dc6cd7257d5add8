/* The CPU ops of Keras's DepthwiseConv2D (see the depthwise entries of
 * backend_t); the references the CUDA counterparts are tested against. */
#ifndef PSTRAIN_CPU_OPS_DEPTHWISE_H
#define PSTRAIN_CPU_OPS_DEPTHWISE_H

#include "kernels/backend.h"

void cpu_depthwise_conv2d_forward(float *y, const float *x, const float *w,
                                  const conv2d_shape_t *s);
void cpu_depthwise_conv2d_backward_data(float *dx, const float *dy, const float *w,
                                        const conv2d_shape_t *s);
void cpu_depthwise_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                          const conv2d_shape_t *s);

#endif

/* 3x3 convolutions with stride 1 by Winograd's F(2x2, 3x3): each 2x2 block of
 * output pixels from a 4x4 block of input, in 16 products of a [tiles, cin]
 * matrix by a [cin, cout] one instead of 9 of twice the rows, 2.25 times
 * fewer multiplications. The CPU backend runs its conv forward and
 * backward-data through it where winograd_fits says so. */
#ifndef PSTRAIN_CPU_WINOGRAD_H
#define PSTRAIN_CPU_WINOGRAD_H

#include <stdbool.h>
#include <stddef.h>

#include "kernels/backend.h"

/* Whether forward and backward-data of s go through Winograd: a 3x3 kernel,
 * stride 1, and channel counts on both sides multiples of 16, at least 32. */
bool winograd_fits(const conv2d_shape_t *s);

/* Workspace bytes winograd_forward and winograd_backward_data need for s. */
size_t winograd_workspace(const conv2d_shape_t *s);

/* y[n, oh, ow, f] = conv(x[n, h, w, c], w[3, 3, c, f]), as conv2d_forward. */
void winograd_forward(float *y, const float *x, const float *w, const conv2d_shape_t *s, void *ws);

/* dx[n, h, w, c] = the gradient w.r.t. x given dy[n, oh, ow, f], as
 * conv2d_backward_data (overwrites dx). */
void winograd_backward_data(float *dx, const float *dy, const float *w, const conv2d_shape_t *s,
                            void *ws);

#endif

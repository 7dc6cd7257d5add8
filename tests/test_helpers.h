/* Helpers that several test files share: the shapes of convolution and
 * pooling test cases, and a model's loss on a fixed batch. */
#ifndef PSTRAIN_TEST_HELPERS_H
#define PSTRAIN_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/model/model.h"
#include "kernels/backend.h"

typedef struct {
    size_t n, h, w, c, kh, kw, f, sh, sw;
    bool same;
} conv_case_t;

typedef struct {
    size_t n, h, w, c, p, stride;
    bool same;
} pool_case_t;

/* The geometry of a case (its output size and padding as Keras has them). */
conv2d_shape_t conv_case_shape(const conv_case_t *t);
pool2d_shape_t pool_case_shape(const pool_case_t *t);
/* One line on stderr naming the shape, after a failure. */
void describe_conv(const conv2d_shape_t *s);
void describe_pool(const pool2d_shape_t *s);

/* The summed loss of the n examples in the exec's input, in training mode
 * with a fixed dropout seed, at params (backend memory). */
double fixed_batch_loss(model_exec_t *e, const float *params, size_t n);

#endif

/* Helpers that several test files share (tests/test_helpers.h). */
#include "test_helpers.h"

#include <stdio.h>

conv2d_shape_t conv_case_shape(const conv_case_t *t) {
    conv2d_shape_t s = {.n = t->n,
                        .h = t->h,
                        .w = t->w,
                        .c = t->c,
                        .kh = t->kh,
                        .kw = t->kw,
                        .f = t->f,
                        .sh = t->sh,
                        .sw = t->sw};
    conv2d_shape_init(&s, t->same);
    return s;
}

pool2d_shape_t pool_case_shape(const pool_case_t *t) {
    pool2d_shape_t s = {.n = t->n,
                        .h = t->h,
                        .w = t->w,
                        .c = t->c,
                        .ph = t->p,
                        .pw = t->p,
                        .sh = t->stride,
                        .sw = t->stride};
    pool2d_shape_init(&s, t->same);
    return s;
}

void describe_conv(const conv2d_shape_t *s) {
    fprintf(stderr, "  conv n=%zu h=%zu w=%zu c=%zu k=%zux%zu f=%zu stride=%zux%zu pad=%zu,%zu\n",
            s->n, s->h, s->w, s->c, s->kh, s->kw, s->f, s->sh, s->sw, s->pad_top, s->pad_left);
}

void describe_pool(const pool2d_shape_t *s) {
    fprintf(stderr, "  pool n=%zu h=%zu w=%zu c=%zu pool=%zux%zu stride=%zux%zu pad=%zu,%zu\n",
            s->n, s->h, s->w, s->c, s->ph, s->pw, s->sh, s->sw, s->pad_top, s->pad_left);
}

double fixed_batch_loss(model_exec_t *e, const float *params, size_t n) {
    double loss;
    size_t correct;
    model_forward(e, params, n, true, 7, 0);
    model_loss(e, n, &loss, &correct, NULL);
    return loss;
}

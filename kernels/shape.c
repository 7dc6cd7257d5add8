#include "backend.h"

/* Keras/TF output size and padding for one spatial axis. */
static void axis_geometry(size_t in, size_t k, size_t stride, bool same, size_t *out,
                          size_t *pad_before) {
    if (same) {
        *out = (in + stride - 1) / stride;
        size_t need = (*out - 1) * stride + k;
        size_t total = need > in ? need - in : 0;
        *pad_before = total / 2;
    } else {
        *out = in >= k ? (in - k) / stride + 1 : 0;
        *pad_before = 0;
    }
}

void conv2d_shape_init(conv2d_shape_t *s, bool same) {
    axis_geometry(s->h, s->kh, s->sh, same, &s->oh, &s->pad_top);
    axis_geometry(s->w, s->kw, s->sw, same, &s->ow, &s->pad_left);
}

void pool2d_shape_init(pool2d_shape_t *s, bool same) {
    axis_geometry(s->h, s->ph, s->sh, same, &s->oh, &s->pad_top);
    axis_geometry(s->w, s->pw, s->sw, same, &s->ow, &s->pad_left);
}

/* Updates of BatchNormalization's moving statistics (see moving.h). */
#include "common/train/moving.h"

void moving_update(const backend_t *be, float *w, const float *stat, size_t n, double momentum) {
    /* Keras multiplies by float32(momentum) and float32(1.0 - momentum). */
    be->scale_shift(w, w, n, (float)momentum, 0.0f);
    be->axpy(w, (float)(1.0 - momentum), stat, n);
}

/* The optimizer on elements [b, e) of the slabs. */
static void apply_run(const backend_t *be, const update_step_t *k, float *w, float *slot0,
                      float *slot1, const float *g, size_t b, size_t e) {
    if (e > b)
        be->apply_update(k, w + b, slot0 ? slot0 + b : NULL, slot1 ? slot1 + b : NULL, g + b,
                         e - b);
}

void moving_apply_range(const model_t *m, const backend_t *be, const update_step_t *k, float *w,
                        float *slot0, float *slot1, const float *g, size_t begin, size_t end) {
    size_t run = begin; /* start of the trainable run not applied yet */
    for (size_t i = 0; i < m->nvars; i++) {
        const var_t *v = &m->vars[i];
        size_t b = v->offset > begin ? v->offset : begin;
        size_t e = v->offset + v->size < end ? v->offset + v->size : end;
        if (!v->moving || e <= b)
            continue;
        apply_run(be, k, w, slot0, slot1, g, run, b);
        moving_update(be, w + b, g + b, e - b, v->momentum);
        run = e;
    }
    apply_run(be, k, w, slot0, slot1, g, run, end);
}

void moving_apply_model(const model_t *m, const backend_t *be, const update_step_t *k, float *w,
                        float *slot0, float *slot1, const float *g) {
    moving_apply_range(m, be, k, w, slot0, slot1, g, 0, m->nparams);
}

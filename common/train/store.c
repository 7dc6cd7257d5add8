#include "common/train/store.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/train/moving.h"

size_t store_row_size(const var_t *v) {
    return v->shape[0] ? v->size / v->shape[0] : 0;
}

void store_init(store_t *s, const model_t *m, const store_part_t *parts, size_t nparts,
                const optim_cfg_t *opt, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->model = m;
    s->opt = *opt;
    s->nparts = nparts;
    s->parts = xcalloc(nparts, sizeof *s->parts);
    for (size_t i = 0; i < nparts; i++) {
        store_part_t *p = &s->parts[i];
        *p = parts[i];
        p->size = p->rows * store_row_size(&m->vars[p->var]);
        p->offset = s->size;
        s->size += p->size;
    }
    s->w = xalloc_aligned(s->size * sizeof(float));
    for (size_t i = 0; i < nparts; i++) {
        const store_part_t *p = &s->parts[i];
        const var_t *v = &m->vars[p->var];
        size_t begin = p->row_begin * store_row_size(v);
        model_init_var(v, seed, begin, begin + p->size, s->w + p->offset);
    }
    for (size_t k = 0; k < optim_nslots(opt); k++) {
        s->slots[k] = xalloc_aligned(s->size * sizeof(float));
        float init = optim_slot_init(opt, k);
        for (size_t j = 0; j < s->size; j++)
            s->slots[k][j] = init;
    }
}

void store_init_full(store_t *s, const model_t *m, const optim_cfg_t *opt, uint64_t seed) {
    store_part_t *parts = xcalloc(m->nvars, sizeof *parts);
    for (size_t i = 0; i < m->nvars; i++) {
        parts[i].var = (int)i;
        parts[i].rows = m->vars[i].shape[0];
    }
    store_init(s, m, parts, m->nvars, opt, seed);
    free(parts);
}

void store_apply(store_t *s, const float *grad) {
    store_apply_range(s, grad, 0, s->size);
    store_count_update(s);
}

void store_apply_range(store_t *s, const float *grad, size_t begin, size_t end) {
    update_step_t k;
    optim_update_step(&s->opt, s->iterations, &k);
    moving_apply_range(s->model, cpu_backend(), &k, s->w, s->slots[0], s->slots[1], grad, begin,
                       end);
}

void store_count_update(store_t *s) {
    s->iterations++;
}

void store_free(store_t *s) {
    free(s->parts);
    free(s->w);
    for (size_t k = 0; k < OPTIM_MAX_SLOTS; k++)
        free(s->slots[k]);
    memset(s, 0, sizeof *s);
}

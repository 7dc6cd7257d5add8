#include "common/train/optim_sparse.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/train/optim.h"

/* The store's element where row `row` of variable var starts, or -1. */
static long row_at(const store_t *s, int var, uint64_t row) {
    for (size_t i = 0; i < s->nparts; i++) {
        const store_part_t *p = &s->parts[i];
        if (p->var == var && row >= p->row_begin && row < p->row_begin + p->rows)
            return (long)(p->offset + (row - p->row_begin) * store_row_size(&s->model->vars[var]));
    }
    return -1;
}

int store_apply_rows(store_t *s, int var, const uint64_t *rows, size_t n, const float *g,
                     double scale) {
    update_step_t k;
    optim_update_step_scaled(&s->opt, s->iterations, scale, &k);
    size_t row = store_row_size(&s->model->vars[var]), nslots = optim_nslots(&s->opt);
    for (size_t i = 0; i < n; i++) {
        long at = row_at(s, var, rows[i]);
        if (at < 0)
            return -1;
        cpu_backend()->apply_update(&k, s->w + at, nslots > 0 ? s->slots[0] + at : NULL,
                                    nslots > 1 ? s->slots[1] + at : NULL, g + i * row, row);
    }
    return 0;
}

int store_apply_row(store_t *s, int var, uint64_t row, const float *g, double scale) {
    return store_apply_rows(s, var, &row, 1, g, scale);
}

/* The dense update of partition i. */
static void apply_part(store_t *s, size_t i, const float *grad) {
    const store_part_t *p = &s->parts[i];
    float *slots[OPTIM_MAX_SLOTS] = {0};
    for (size_t k = 0; k < optim_nslots(&s->opt); k++)
        slots[k] = s->slots[k] + p->offset;
    optim_apply(&s->opt, s->iterations, s->w + p->offset, slots, grad + p->offset, p->size);
}

/* The touched rows of sparse variable v, each updated from its place in grad. */
static void apply_table(store_t *s, int v, const float *grad, const float *x, size_t n) {
    const model_t *m = s->model;
    const var_t *var = &m->vars[v];
    size_t row = store_row_size(var);
    uint64_t *rows = xmalloc(var->shape[0] * sizeof *rows);
    uint8_t *mark = xcalloc(var->shape[0], 1);
    size_t count = model_sparse_rows(m, (size_t)v, x, n, rows, mark);
    float *g = xmalloc((count ? count : 1) * row * sizeof *g);
    for (size_t k = 0; k < count; k++)
        memcpy(g + k * row, grad + var->offset + rows[k] * row, row * sizeof *g);
    store_apply_rows(s, v, rows, count, g, 1.0);
    free(g);
    free(rows);
    free(mark);
}

void store_apply_sparse(store_t *s, const float *grad, const float *x, size_t n) {
    const model_t *m = s->model;
    for (size_t i = 0; i < s->nparts; i++)
        if (!m->vars[s->parts[i].var].sparse)
            apply_part(s, i, grad);
    for (size_t v = 0; v < m->nvars; v++)
        if (m->vars[v].sparse)
            apply_table(s, (int)v, grad, x, n);
    s->iterations++;
}

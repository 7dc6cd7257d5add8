#include "topk.h"

#include "common/base/util.h"

size_t ps_topk_check(const uint32_t *idx, size_t n, size_t size) {
    for (size_t j = 0; j < n; j++)
        if (idx[j] >= size || (j > 0 && idx[j] <= idx[j - 1]))
            return j + 1;
    return 0;
}

int ps_topk_dense(const store_t *st) {
    return optim_nslots(&st->opt) > 0;
}

void ps_topk_add(float *dense, const uint32_t *idx, const float *g, size_t n) {
    for (size_t j = 0; j < n; j++)
        dense[idx[j]] += g[j];
}

/* Elements gathered, updated and put back a block at a time. */
#define GATHER_BLOCK 1024

void ps_topk_apply_touched(store_t *st, size_t part, double scale, const uint32_t *idx,
                           const float *g, size_t n) {
    float w[GATHER_BLOCK];
    float *base = st->w + st->parts[part].offset;
    optim_cfg_t plain = st->opt; /* SGD: its momentum, if any, is the worker's */
    plain.momentum = 0.0;
    for (size_t i = 0; i < n; i += GATHER_BLOCK) {
        size_t m = PS_MIN(n - i, (size_t)GATHER_BLOCK);
        for (size_t j = 0; j < m; j++)
            w[j] = base[idx[i + j]];
        optim_apply_scaled(&plain, st->iterations, scale, w, NULL, g + i, m);
        for (size_t j = 0; j < m; j++)
            base[idx[i + j]] = w[j];
    }
}

void ps_topk_apply_dense(store_t *st, size_t part, double scale, float *dense, const uint32_t *idx,
                         size_t n) {
    const store_part_t *p = &st->parts[part];
    float *slots[OPTIM_MAX_SLOTS] = {0};
    for (size_t k = 0; k < optim_nslots(&st->opt); k++)
        slots[k] = st->slots[k] + p->offset;
    optim_apply_scaled(&st->opt, st->iterations, scale, st->w + p->offset, slots, dense, p->size);
    for (size_t j = 0; j < n; j++)
        dense[idx[j]] = 0.0f;
}

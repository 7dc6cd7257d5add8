/* The parameter store: a set of partitions (a variable, or a range of rows of
 * one along axis 0) held in one slab of weights plus one slab per optimizer
 * slot, initialised deterministically and updated by the optimizer. The
 * parameter server serves one; a standalone worker links one in that holds
 * the whole model. */
#ifndef PSTRAIN_STORE_H
#define PSTRAIN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/model/model.h"
#include "common/train/optim.h"

typedef struct {
    int var;          /* index into the model's variables */
    size_t row_begin; /* first row (axis 0) of the variable held */
    size_t rows;      /* rows held */
    size_t offset;    /* elements from the start of the store's slabs */
    size_t size;      /* elements */
} store_part_t;

typedef struct {
    const model_t *model;
    optim_cfg_t opt;
    size_t nparts;
    store_part_t *parts;
    size_t size;                   /* elements in each slab */
    float *w;                      /* weights */
    float *slots[OPTIM_MAX_SLOTS]; /* optimizer slots, optim_nslots(&opt) of them */
    uint64_t iterations;           /* updates applied */
} store_t;

/* Elements in one row (axis 0) of a variable. */
size_t store_row_size(const var_t *v);

/* A store holding the given partitions, laid out in the order given,
 * initialised from (seed, variable name, element index). */
void store_init(store_t *s, const model_t *m, const store_part_t *parts, size_t nparts,
                const optim_cfg_t *opt, uint64_t seed);
/* A store holding every variable whole, in the model's slab layout (so that
 * s->w is the model's parameter slab). */
void store_init_full(store_t *s, const model_t *m, const optim_cfg_t *opt, uint64_t seed);
/* One update of a whole store (store_init_full's) with a gradient slab of
 * s->size: the optimizer, and the moving average of the moving statistics
 * (common/train/moving.h). */
void store_apply(store_t *s, const float *grad);
/* store_apply in parts: the update of elements [begin, end) alone (grad is
 * still the whole slab), at the store's current iteration, so that threads
 * may each update a disjoint range; then store_count_update once, when every
 * range is done. The result is store_apply's, bit for bit. */
void store_apply_range(store_t *s, const float *grad, size_t begin, size_t end);
void store_count_update(store_t *s);
void store_free(store_t *s);

#endif

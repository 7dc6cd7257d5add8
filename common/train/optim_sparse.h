/* The sparse update of an embedding table (TensorFlow's sparse apply): the
 * optimizer runs on the rows a batch touched and nothing else, so the
 * weights and the optimizer slots (momentum, Adam's moments, ...) of every
 * other row stay exactly as they are. The rules are optim.c's, row by row,
 * at the store's iteration count. */
#ifndef PSTRAIN_OPTIM_SPARSE_H
#define PSTRAIN_OPTIM_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "common/train/store.h"

/* One update of row `row` of variable var (which the store must hold) with
 * its gradient g (one row of values), the step size times scale. -1 when
 * the store holds no such row. Does not count an iteration. */
int store_apply_row(store_t *s, int var, uint64_t row, const float *g, double scale);

/* A standalone worker's update (store_apply's) for a store holding the
 * whole model in the slab layout (store_init_full), whose sparse tables are
 * updated only in the rows the n examples x read: the dense variables take
 * grad as store_apply does, the tables their touched rows. Counts one
 * iteration. */
void store_apply_sparse(store_t *s, const float *grad, const float *x, size_t n);

#endif

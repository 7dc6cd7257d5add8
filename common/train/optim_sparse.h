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

/* One update of rows[0 .. n) of variable var with their gradients g[n,
 * row size], the step size times scale (the constants computed once). -1,
 * after updating the rows before it, at a row the store does not hold.
 * Does not count an iteration. */
int store_apply_rows(store_t *s, int var, const uint64_t *rows, size_t n, const float *g,
                     double scale);
/* store_apply_rows of one row. */
int store_apply_row(store_t *s, int var, uint64_t row, const float *g, double scale);

/* A standalone worker's update (store_apply's) for a store holding the
 * whole model in the slab layout (store_init_full), whose sparse tables are
 * updated only in the rows the n examples x read: the dense variables take
 * grad as store_apply does, the tables their touched rows. Counts one
 * iteration. */
void store_apply_sparse(store_t *s, const float *grad, const float *x, size_t n);

#endif

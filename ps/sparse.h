/* Rows of a variable pulled and pushed one by one (an embedding table's rows
 * that a batch touches): a PullRequest's RowSelects answered with Tensors
 * that list their row_ids, and pushed Tensors with row_ids applied to those
 * rows only (store_apply_row: the slots of the other rows stay as they
 * are). The ids of one select or tensor must be ascending without repeats,
 * each a row this PS holds. Async (and ssp) pushes only: a sync PS sums
 * whole partitions. Called by ps/shard.c, under its rules. */
#ifndef PSTRAIN_PS_SPARSE_H
#define PSTRAIN_PS_SPARSE_H

#include <stddef.h>

#include "ps/shard.h"

/* Frees s->sparse (the buffers of the last row pull). */
void ps_sparse_free(ps_shard_t *s);

/* Adds to resp (whose first n_dense tensors are taken from s->tensor_ptrs)
 * a Tensor for each of req's RowSelects, its rows gathered from the store:
 * valid until the next call. An unknown variable or a row this PS does not
 * hold is an error that changes nothing. */
int ps_sparse_pull(ps_shard_t *s, const Pstrain__PullRequest *req, size_t n_dense,
                   Pstrain__PullResponse *resp, char *err, size_t errlen);

/* Checks a pushed tensor with row ids: a known variable, float32, ids
 * ascending, held by this PS, and as many rows of data. */
int ps_sparse_check(const ps_shard_t *s, const ps_grad_t *t, char *err, size_t errlen);

/* Applies a checked tensor with row ids, row by row, the step size times scale. */
void ps_sparse_apply(ps_shard_t *s, const ps_grad_t *t, double scale);

#endif

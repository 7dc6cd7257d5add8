/* psclient's rows of the sparse tables (embedding tables on the model's
 * input, var_t.sparse): which rows of each table a batch reads, split by the
 * PS that holds them, as the RowSelects of a pull, the Tensors of a push,
 * and the check of what a PS answers. Used by psclient.c only. */
#ifndef PSTRAIN_PSCLIENT_ROWS_H
#define PSTRAIN_PSCLIENT_ROWS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/model/model.h"
#include "common/model/placement.h"
#include "common/peers/pull_read.h"
#include "pstrain.pb-c.h"

typedef struct psclient_rows psclient_rows_t;

/* NULL when the model has no sparse table. m and p must outlive it. */
psclient_rows_t *psclient_rows_create(const model_t *m, const placement_t *p);
void psclient_rows_free(psclient_rows_t *r);

/* The rows the n examples x[n, input size] read; returns the count over all tables. */
size_t psclient_rows_set(psclient_rows_t *r, const float *x, size_t n);

/* PS ps's non-empty RowSelects for a pull: *out points at that many (owned by r). */
size_t psclient_rows_selects(psclient_rows_t *r, size_t ps, Pstrain__RowSelect ***out);
/* A pulled tensor with row ids from PS ps: checks that it answers one of
 * the selects sent it, row for row, and copies its rows into params (a
 * model slab). -1 with err otherwise. */
int psclient_rows_take(psclient_rows_t *r, size_t ps, const pull_tensor_t *t, float *params,
                       char *err, size_t errlen);
/* Appends to out PS ps's push tensors: each table's rows of grads (a model
 * slab), gathered. Returns how many (at most the model's variables). */
size_t psclient_rows_push(psclient_rows_t *r, size_t ps, const float *grads, Pstrain__Tensor **out);

#endif

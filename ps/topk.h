/* Sparse pushes at the parameter server (rpc.push_topk): a tensor whose
 * data holds the values of some elements of a partition only, named by
 * their indices. It means exactly the dense gradient that is zero
 * everywhere else, and is applied as that:
 *   - SGD without momentum: only the elements named change (w -= lr * g
 *     leaves the others where a zero would), so only they are touched;
 *   - SGD with momentum, async and ssp, with rpc.push_topk_momentum (off
 *     by default): the worker applied the momentum before it chose the values
 *     (momentum correction, common/peers/codec.h), so the PS applies them as
 *     plain SGD steps on the elements named, its momentum slot untouched;
 *   - otherwise an optimizer with slots (SGD momentum, Adam, RMSprop, Adagrad): the
 *     dense rule runs on the whole partition with zeros elsewhere, so
 *     momentum keeps moving the other elements, Adam's moments decay
 *     there, as for any dense gradient with zeros in it (the wire carries
 *     fewer bytes; the PS does a dense push's work);
 *   - sync mode: the values are added into the step's sum at their indices.
 * The worker keeps what it did not send as its residual (error feedback),
 * so every part of the gradient arrives, some of it later. */
#ifndef PSTRAIN_PS_TOPK_H
#define PSTRAIN_PS_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "common/train/store.h"

/* 0 when the n indices are strictly ascending and under size; otherwise
 * the position of the first bad one plus 1. */
size_t ps_topk_check(const uint32_t *idx, size_t n, size_t size);
/* Whether a sparse update of this store needs the dense pass (its optimizer
 * has slots). */
int ps_topk_dense(const store_t *st);
/* dense[idx[j]] += g[j] for j < n. */
void ps_topk_add(float *dense, const uint32_t *idx, const float *g, size_t n);
/* Plain SGD (momentum 0 whatever the store's): the update of the n elements
 * of partition `part` at idx, by gradient values g, the step size times
 * scale. */
void ps_topk_apply_touched(store_t *st, size_t part, double scale, const uint32_t *idx,
                           const float *g, size_t n);
/* An optimizer with slots: applies dense (the partition's gradient, zero
 * but at the n indices idx, where ps_topk_add put the values) to the
 * whole partition, then zeroes it again at idx. */
void ps_topk_apply_dense(store_t *st, size_t part, double scale, float *dense, const uint32_t *idx,
                         size_t n);

#endif

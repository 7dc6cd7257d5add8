/* BatchNormalization's moving statistics on the parameter store. They are
 * variables like the others (placed on the PS, pulled, checkpointed,
 * restored into any number of PS, exported), but no optimizer moves them
 * and they have no slots: what a push (or a gradient slab) carries in their
 * place is the batch's statistic (model_backward), and an update is Keras's
 * moving average
 *
 *   moving = momentum * moving + (1 - momentum) * batch_statistic
 *
 * with the layer's momentum, whatever the learning rate, its schedule, the
 * staleness of the push or the scaling of sync mode (where the statistics of
 * the replicas are averaged like gradients first). */
#ifndef PSTRAIN_MOVING_H
#define PSTRAIN_MOVING_H

#include <stddef.h>

#include "common/model/model.h"
#include "kernels/backend.h"

/* The moving average on n values of a moving statistic w (backend memory of
 * be) with the batch's statistic stat. */
void moving_update(const backend_t *be, float *w, const float *stat, size_t n, double momentum);

/* One update of a whole model's slab (the model's layout, backend memory):
 * the optimizer step k on the runs of trainable variables (with their slots,
 * NULL where the rule has fewer), the moving average on the moving
 * statistics, g holding their batch statistics. */
void moving_apply_model(const model_t *m, const backend_t *be, const update_step_t *k, float *w,
                        float *slot0, float *slot1, const float *g);

/* The same on elements [begin, end) of the slabs alone (a compute thread's
 * stripe): moving_apply_model over disjoint ranges covering the slab is one
 * moving_apply_model. */
void moving_apply_range(const model_t *m, const backend_t *be, const update_step_t *k, float *w,
                        float *slot0, float *slot1, const float *g, size_t begin, size_t end);

#endif

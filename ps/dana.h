/* train.async_momentum=dana: momentum that stays correct under asynchrony
 * (DANA-Zero, Hakimi et al., 2019, "Taming Momentum in a Distributed
 * Asynchronous Environment").
 *
 * One momentum shared by every worker turns each stale gradient into a
 * push of the momentum the others built up since: with N workers, about N
 * updates of it land between a worker's pull and its push, and the
 * gradient was computed far from where it is applied. DANA keeps one
 * velocity per worker i and hands the workers the weights as they will be
 * once every worker's next update has landed, so that a gradient is
 * computed close to where it will be applied. In Keras's form of SGD
 * momentum (common/train/optim.c), a push of gradient g by worker i does
 *   v_i   = mu * v_i - lr_t * scale * g       (worker i's velocity)
 *   w    += v_i                               (the weights: checkpoints, exports)
 *   V    += v_i(new) - v_i(old)               (V = sum_j v_j, the store's slot "momentum")
 *   ahead = w + mu * V                        (what a worker's pull gets)
 * in one pass; `scale` is the staleness rule's (train.staleness_lr). A
 * checkpoint holds w and V; a restore (and a reset, a warm start) gives each
 * worker V / nworkers, so the look-ahead carries on where it was. Memory: a
 * velocity per worker, nworkers times the shard's weights, refused past
 * PS_DANA_MAX_BYTES. SGD with momentum only (without nesterov: the
 * look-ahead is DANA's Nesterov step), async and ssp only. */
#ifndef PSTRAIN_PS_DANA_H
#define PSTRAIN_PS_DANA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/train/optim.h"
#include "common/train/store.h"

/* The most bytes the workers' velocities of one PS may take: 4 GiB. */
#define PS_DANA_MAX_BYTES (4ull << 30)

typedef struct ps_dana {
    size_t nworkers, size;
    float *v;     /* [nworkers * size]: worker i's velocity at v + i * size */
    float *ahead; /* [size]: w + mu * V */
} ps_dana_t;

/* What DANA needs of the cluster: -1 with one line naming the setting that
 * rules it out, for a PS holding `size` weights for `nworkers` workers. */
int ps_dana_check(const optim_cfg_t *o, bool sync, bool staleness_momentum, bool topk_momentum,
                  bool sparse_rows, size_t nworkers, size_t size, char *err, size_t errlen);

/* Zero velocities for nworkers workers and a look-ahead of st's weights. */
void ps_dana_init(ps_dana_t *d, const store_t *st, size_t nworkers);
void ps_dana_free(ps_dana_t *d);

/* A push of worker `worker` (< nworkers): the rule above on values [first,
 * first + n) of partition `part` with gradient g, the step size times
 * scale. A moving statistic (common/train/moving.h) moves as without DANA,
 * its look-ahead the same. */
void ps_dana_apply(ps_dana_t *d, store_t *st, uint32_t worker, size_t part, double scale,
                   size_t first, const float *g, size_t n);

/* After st's weights or slots changed as a whole (restore, reset, warm
 * start): each worker's velocity V / nworkers, the look-ahead recomputed. */
void ps_dana_resync(ps_dana_t *d, const store_t *st);

#endif

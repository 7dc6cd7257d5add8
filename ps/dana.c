#include "dana.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/train/moving.h"

int ps_dana_check(const optim_cfg_t *o, bool sync, bool staleness_momentum, bool topk_momentum,
                  bool sparse_rows, size_t nworkers, size_t size, char *err, size_t errlen) {
    if (sync)
        return ps_errf(err, errlen,
                       "train.async_momentum=dana is for train.mode async and ssp, not sync");
    if (o->kind != OPTIM_SGD || o->momentum <= 0)
        return ps_errf(err, errlen,
                       "train.async_momentum=dana needs train.optimizer sgd with train.momentum "
                       "> 0 (it keeps SGD's momentum per worker)");
    if (o->nesterov)
        return ps_errf(err, errlen,
                       "train.async_momentum=dana takes train.nesterov=false (its look-ahead is "
                       "the Nesterov step)");
    if (staleness_momentum)
        return ps_errf(err, errlen,
                       "train.async_momentum=dana keeps the momentum as configured: it cannot "
                       "take train.staleness_lr=momentum, which lowers it (use off or inverse)");
    if (topk_momentum)
        return ps_errf(err, errlen,
                       "train.async_momentum=dana keeps the momentum on the PS: it cannot take "
                       "rpc.push_topk_momentum, which applies it on the workers");
    if (sparse_rows)
        return ps_errf(err, errlen,
                       "train.async_momentum=dana takes whole partitions: set "
                       "train.sparse_embeddings=false for this model's embedding tables");
    double bytes = (double)nworkers * (double)size * sizeof(float);
    if (bytes > (double)PS_DANA_MAX_BYTES)
        return ps_errf(err, errlen,
                       "train.async_momentum=dana: %zu workers' velocities of this PS's %zu "
                       "weights take %.1f GiB, over the limit of %.0f GiB (use more PS or "
                       "train.async_momentum=off)",
                       nworkers, size, bytes / (1 << 30), (double)PS_DANA_MAX_BYTES / (1 << 30));
    return 0;
}

void ps_dana_init(ps_dana_t *d, const store_t *st, size_t nworkers) {
    d->nworkers = nworkers ? nworkers : 1;
    d->size = st->size;
    size_t n = d->nworkers * d->size;
    d->v = xalloc_aligned((n ? n : 1) * sizeof(float));
    d->ahead = xalloc_aligned((d->size ? d->size : 1) * sizeof(float));
    ps_dana_resync(d, st);
}

void ps_dana_free(ps_dana_t *d) {
    free(d->v);
    free(d->ahead);
    memset(d, 0, sizeof *d);
}

/* Values a block of the update loop takes: a fixed count, which GCC at -O2
 * vectorizes (its cheap cost model leaves a loop of unknown count scalar),
 * as kernels/cpu/cpu_optim.c does. */
#define DANA_BLOCK 16

static inline void dana_at(float *restrict v, float *restrict sum, float *restrict w,
                           float *restrict ahead, const float *restrict g, size_t j, float lr,
                           float mu) {
    float old = v[j], now = mu * old - lr * g[j];
    v[j] = now;
    sum[j] += now - old;
    w[j] += now;
    ahead[j] = w[j] + mu * sum[j];
}

/* The rule on n values; out of line, so that GCC keeps the restrict
 * pointers it vectorizes on. */
__attribute__((noinline)) static void dana_run(float *restrict v, float *restrict sum,
                                               float *restrict w, float *restrict ahead,
                                               const float *restrict g, size_t n, float lr,
                                               float mu) {
    size_t j = 0;
    for (; j + DANA_BLOCK <= n; j += DANA_BLOCK)
        for (size_t k = j; k < j + DANA_BLOCK; k++)
            dana_at(v, sum, w, ahead, g, k, lr, mu);
    for (; j < n; j++)
        dana_at(v, sum, w, ahead, g, j, lr, mu);
}

void ps_dana_apply(ps_dana_t *d, store_t *st, uint32_t worker, size_t part, double scale,
                   size_t first, const float *g, size_t n) {
    size_t at = st->parts[part].offset + first;
    float *w = st->w + at, *ahead = d->ahead + at;
    const var_t *var = &st->model->vars[st->parts[part].var];
    if (var->moving) {
        moving_update(cpu_backend(), w, g, n, var->momentum);
        memcpy(ahead, w, n * sizeof(float));
        return;
    }
    float lr = (float)(optim_lr(&st->opt, st->iterations) * scale);
    dana_run(d->v + (size_t)worker * d->size + at, st->slots[0] + at, w, ahead, g, n, lr,
             (float)st->opt.momentum);
}

void ps_dana_resync(ps_dana_t *d, const store_t *st) {
    const float *sum = st->slots[0];
    float share = 1.0f / (float)d->nworkers, mu = (float)st->opt.momentum;
    for (size_t i = 0; i < d->nworkers; i++) {
        float *v = d->v + i * d->size;
        for (size_t j = 0; j < d->size; j++)
            v[j] = sum ? sum[j] * share : 0.0f;
    }
    for (size_t j = 0; j < d->size; j++)
        d->ahead[j] = st->w[j] + (sum ? mu * sum[j] : 0.0f);
}

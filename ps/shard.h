/* One parameter server's shard: the partitions placement gives it, their
 * optimizer slots, and the rules of Pull and Push in async and sync mode.
 * Transport-free (the daemon's RPC handlers call it), single-threaded: the
 * caller serialises calls, all but ps_shard_step, which any thread may call
 * (the daemon's main loop reports the step in its heartbeats). */
#ifndef PSTRAIN_PS_SHARD_H
#define PSTRAIN_PS_SHARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/train/checkpoint.h"
#include "common/model/model.h"
#include "common/train/optim.h"
#include "common/model/placement.h"
#include "common/train/store.h"
#include "ps/dana.h"
#include "ps/push.h"
#include "ps/staleness.h"
#include "pstrain.pb-c.h"

/* Floats a gradient run passes through on its way to the optimizer when it
 * does not lie 4-byte aligned: 16 KiB, which stays in the L1 cache. */
#define PS_SHARD_BOUNCE 4096
/* A dense tensor of at least this many values (256 KiB of floats) has its
 * finite check and optimizer apply split over the shard's apply threads
 * (ps/shard_pool.h); smaller ones cost less than the hand-off. */
#define PS_SHARD_SPLIT_MIN 65536
/* The most apply threads a shard starts. */
#define PS_SHARD_MAX_THREADS 64

/* How an async (or ssp) push's step size follows its staleness: the updates
 * applied between the pull its gradient was computed at (the push's step)
 * and its arrival. */
typedef enum {
    PS_STALENESS_LR_OFF = 0,  /* every push at the full learning rate */
    PS_STALENESS_LR_INVERSE,  /* lr / staleness (optim_staleness_scale) */
    PS_STALENESS_LR_MOMENTUM, /* momentum and lr by the mean staleness (ps/staleness.h) */
    PS_STALENESS_LR_AUTO,     /* options only: off with dana, else inverse */
} ps_staleness_lr_t;

typedef struct {
    const model_t *model;
    int index;
    placement_t placement;
    store_t store;
    /* store.iterations as other threads see it: written (by the thread that
     * changes the store) after every change of the step, read by any. */
    _Atomic uint64_t step;
    bool sync;
    size_t replicas;      /* sync: pushes averaged per step */
    size_t max_workers;   /* worker indexes accepted: [0, max_workers) */
    float *accum;         /* sync: sum of this step's gradients */
    size_t accum_count;   /* pushes summed into accum */
    uint8_t *contributed; /* [max_workers]: pushed for the current step */
    /* [max_workers]: the incarnation and number of each worker's last push
     * handled, so a retried push is not applied twice. */
    uint64_t *last_incarnation, *last_seq;
    float *bounce; /* [PS_SHARD_BOUNCE]: aligned copies of unaligned gradients */
    /* Threads splitting a large dense tensor's check and apply (NULL:
     * serial), and a bounce buffer for each (bounces[0] is bounce). */
    struct ps_pool *pool;
    float **bounces;
    /* [2 * store.size] bytes: a push's 16-bit payloads, copied out of
     * the request at their partitions' offsets while they are checked. */
    uint8_t *wire16;
    /* The weights as lent to the answers of pulls (ps_shard_weights), until
     * they next change. */
    rpc_blob_t *wblob;
    struct ps_lend *lend;
    uint64_t pushes;          /* accepted pushes (applied or summed) */
    uint64_t stale_dropped;   /* sync: pushes for a step that is not the current one */
    uint64_t duplicates;      /* sync: a second push of a worker for the same step */
    uint64_t replayed;        /* retries of pushes handled already: answered, not applied */
    uint64_t seed;            /* of the initial weights */
    Pstrain__Tensor *tensors; /* one per partition, pointing into the store (for Pull) */
    Pstrain__Tensor **tensor_ptrs;
    /* The learning-rate rules (ps_shard_opts_t) and what they saw. */
    ps_staleness_lr_t staleness_lr; /* async, ssp: the step size by staleness */
    bool lr_linear;                 /* sync: the linear scaling rule (optim_linear_scale) */
    uint64_t warmup_steps;          /* sync, lr_linear: steps of its warm-up */
    uint64_t staleness_sum;         /* async: staleness of the full pushes applied, summed */
    uint64_t staleness_max;         /* async: the largest */
    struct ps_sparse *sparse;       /* rows pulled and pushed one by one (ps/sparse.c) */
    ps_stale_mean_t stale_mean;     /* staleness_lr momentum: of the full pushes */
    bool sparse_sgd;                /* sparse values as plain SGD steps (ps/sparse.h) */
    /* train.async_momentum=dana (ps/dana.h): a velocity per worker, and the
     * look-ahead weights that workers' pulls get; NULL when off. */
    ps_dana_t *dana;
    Pstrain__Tensor *ahead_tensors; /* dana: one per partition, pointing into dana->ahead */
} ps_shard_t;

typedef struct {
    int index, nps;
    bool sync;
    size_t replicas;    /* sync: 0 means max_workers */
    size_t max_workers; /* the cluster's worker slots */
    uint64_t seed;
    optim_cfg_t optim;
    ps_staleness_lr_t staleness_lr; /* async and ssp */
    bool lr_linear;                 /* sync: lr times the pushes averaged, after a warm-up */
    uint64_t warmup_steps;          /* of lr_linear */
    /* async, SGD with momentum, rpc.push_topk_momentum: the workers apply
     * the momentum to sparse pushes, the PS applies them as plain SGD */
    bool sparse_sgd;
    /* Threads (counting the caller's) that split a dense tensor of
     * PS_SHARD_SPLIT_MIN values or more; <= 1: serial. Bit for bit the
     * serial result: the optimizers are element-wise. */
    int apply_threads;
    /* async and ssp, SGD with momentum: a velocity per worker and pulls of
     * the look-ahead weights (ps/dana.h) */
    bool dana;
    /* train.async_momentum auto: dana where ps_shard_dana_check allows it
     * and the cluster has 2 workers or more, else one momentum */
    bool dana_auto;
    /* dana: workers pull and push embedding tables by rows, which DANA
     * does not take (ps_dana_check) */
    bool sparse_rows;
} ps_shard_opts_t;

int ps_shard_init(ps_shard_t *s, const model_t *m, const ps_shard_opts_t *o, char *err,
                  size_t errlen);
void ps_shard_free(ps_shard_t *s);

/* The step of this shard: updates applied. Any thread. */
uint64_t ps_shard_step(const ps_shard_t *s);

/* Applies (async) or sums (sync) a push. Everything is checked first: each
 * tensor must name one partition this PS holds, exactly (name, row_begin,
 * rows), once, with rows * row size finite values (float32, or bfloat16
 * or fp16 where the tensor's dtype says so), or, for a sparse tensor, one
 * finite value per index, the indices strictly ascending within the
 * partition (applied as ps/sparse.h says); in sync mode a push must carry every
 * partition. A bad push returns -1 with a message and changes nothing. In
 * sync mode a push for another step than the current one is dropped and
 * counted (*stale = true), and a worker's second push for a step is
 * ignored. An async push marked partial is applied without counting a step
 * (the rest of the step follows); sync mode refuses it.
 * An async push's staleness is the shard's step minus the push's step (0
 * when the push carries none, as an untagged push of an older worker: it
 * counts as fresh); with staleness_lr inverse its update takes
 * lr / staleness; with momentum, the momentum and rate of
 * ps_staleness_momentum for the mean staleness so far. A sync step with lr_linear takes
 * optim_linear_scale(pushes averaged, step, warmup_steps) times the rate. */
int ps_shard_push(ps_shard_t *s, const Pstrain__PushRequest *req, bool *stale, char *err,
                  size_t errlen);
/* The same for a push decoded in place (ps_push_decode). */
int ps_shard_push_view(ps_shard_t *s, const ps_push_t *req, bool *stale, char *err, size_t errlen);

/* Fills resp with the partitions named (all when names is empty), pointing
 * into the store: valid until the next push. Unknown names are an error.
 * With dana, a worker's pull (caller role "worker") gets the look-ahead
 * weights (ps_shard_pull_ahead), which are not lent: its answer copies
 * them. Every other caller (the master's evaluation and checkpoints, tools)
 * gets the weights themselves. */
int ps_shard_pull(ps_shard_t *s, const Pstrain__PullRequest *req, Pstrain__PullResponse *resp,
                  char *err, size_t errlen);

/* 0 when dana can run with these options on a shard of `size` weights;
 * else -1 and the one line that says why (ps_dana_check). */
int ps_shard_dana_check(const ps_shard_opts_t *o, size_t size, char *err, size_t errlen);

/* Whether ps_shard_pull answers req with dana's look-ahead weights. */
bool ps_shard_pull_ahead(const ps_shard_t *s, const Pstrain__PullRequest *req);

/* The weights (store.w, all of them) as a blob that answers to pulls send
 * without a copy. Valid until the weights next change: a change takes them
 * back, in place when no send holds them any more (the common case: a pull's
 * answer is on the wire long before the next push arrives) and otherwise on
 * a copy, leaving the old ones to the sends, which free them at the end. */
rpc_blob_t *ps_shard_weights(ps_shard_t *s);

/* Back to the initial weights and fresh slots, step 0. */
void ps_shard_reset(ps_shard_t *s);
/* Writes this shard (weights, slots, update count) as PS `index` of `nps`
 * into checkpoint directory dir, for global step `step`. */
int ps_shard_save(const ps_shard_t *s, const char *dir, int nps, uint64_t step, char *path,
                  size_t pathlen, char *err, size_t errlen);
/* Replaces weights, slots and the step with a checkpoint's (any number of
 * PS wrote it); a sync step in progress is dropped. The checkpoint is
 * verified first (ckpt_restore_store): CKPT_ECORRUPT when it is damaged, -1
 * on another error; either way the shard is unchanged. *unchecked (may be
 * NULL) tells a checkpoint written before checksums. */
int ps_shard_restore(ps_shard_t *s, const char *path, bool *unchecked, char *err, size_t errlen);
/* Initialises the variables that `pattern` names from an export or a
 * checkpoint's weights (slots and step stay as they are). */
int ps_shard_warm_start(ps_shard_t *s, const char *path, const char *pattern, char *err,
                        size_t errlen);
/* Sync: changes the number of pushes averaged per step (the master's count of
 * live workers); applies the step at once if enough have arrived. */
void ps_shard_set_replicas(ps_shard_t *s, size_t replicas);

#endif

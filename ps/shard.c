#include "shard.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/peers/codec.h"
#include "common/peers/fields.h"
#include "common/train/moving.h"
#include "ps/shard_pool.h"
#include "ps/sparse.h"
#include "ps/topk.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensor payloads are little-endian float32: a big-endian build must swap bytes"
#endif

int ps_shard_dana_check(const ps_shard_opts_t *o, size_t size, char *err, size_t errlen) {
    return ps_dana_check(&o->optim, o->sync, o->staleness_lr == PS_STALENESS_LR_MOMENTUM,
                         o->sparse_sgd, o->sparse_rows, o->max_workers ? o->max_workers : 1, size,
                         err, errlen);
}

/* train.async_momentum=dana: the workers' velocities and the look-ahead
 * weights, with partitions of their own for workers' pulls. */
static int init_dana(ps_shard_t *s, const ps_shard_opts_t *o, char *err, size_t errlen) {
    char why[PS_ERRLEN];
    if (ps_shard_dana_check(o, s->store.size, why, sizeof why)) {
        if (o->dana_auto)
            return 0; /* one momentum */
        ps_errf(err, errlen, "%s", why);
        ps_shard_free(s);
        return -1;
    }
    if (o->dana_auto && s->max_workers < 2)
        return 0; /* one worker: nothing is stale */
    s->dana = xcalloc(1, sizeof *s->dana);
    ps_dana_init(s->dana, &s->store, s->max_workers);
    size_t n = s->store.nparts;
    s->ahead_tensors = xcalloc(n ? n : 1, sizeof *s->ahead_tensors);
    for (size_t i = 0; i < n; i++) {
        s->ahead_tensors[i] = s->tensors[i];
        s->ahead_tensors[i].data.data = (uint8_t *)(s->dana->ahead + s->store.parts[i].offset);
    }
    return 0;
}

int ps_shard_init(ps_shard_t *s, const model_t *m, const ps_shard_opts_t *o, char *err,
                  size_t errlen) {
    memset(s, 0, sizeof *s);
    if (o->index < 0 || o->index >= o->nps)
        return ps_errf(err, errlen, "ps index %d is outside [0, %d)", o->index, o->nps);
    if (placement_compute(&s->placement, m, o->nps, NULL, err, errlen))
        return -1;
    s->model = m;
    s->seed = o->seed;
    s->index = o->index;
    s->sync = o->sync;
    s->max_workers = o->max_workers ? o->max_workers : 1;
    s->replicas = o->replicas ? o->replicas : s->max_workers;
    s->staleness_lr = o->staleness_lr;
    s->lr_linear = o->lr_linear;
    s->warmup_steps = o->warmup_steps;
    s->sparse_sgd = o->sparse_sgd && !o->sync;
    const size_t *idx;
    size_t n = placement_ps_parts(&s->placement, o->index, &idx);
    store_part_t *parts = xcalloc(n ? n : 1, sizeof *parts);
    for (size_t i = 0; i < n; i++) {
        const placement_part_t *p = &s->placement.parts[idx[i]];
        parts[i] = (store_part_t){.var = p->var, .row_begin = p->row_begin, .rows = p->rows};
    }
    store_init(&s->store, m, parts, n, &o->optim, o->seed);
    free(parts);
    s->accum = xcalloc(s->store.size ? s->store.size : 1, sizeof(float));
    s->contributed = xcalloc(s->max_workers, 1);
    s->last_incarnation = xcalloc(s->max_workers, sizeof *s->last_incarnation);
    s->last_seq = xcalloc(s->max_workers, sizeof *s->last_seq);
    s->bounce = xalloc_aligned(PS_SHARD_BOUNCE * sizeof(float));
    s->pool = ps_pool_new(PS_MIN(o->apply_threads, PS_SHARD_MAX_THREADS));
    s->bounces = xcalloc((size_t)ps_pool_threads(s->pool), sizeof *s->bounces);
    s->bounces[0] = s->bounce;
    for (int i = 1; i < ps_pool_threads(s->pool); i++)
        s->bounces[i] = xalloc_aligned(PS_SHARD_BOUNCE * sizeof(float));
    s->wire16 = xmalloc(s->store.size ? 2 * s->store.size : 2);
    s->tensors = xcalloc(n ? n : 1, sizeof *s->tensors);
    s->tensor_ptrs = xcalloc(n ? n : 1, sizeof *s->tensor_ptrs);
    for (size_t i = 0; i < n; i++) {
        const store_part_t *p = &s->store.parts[i];
        Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
        s->tensors[i] = init;
        s->tensors[i].name = (char *)m->vars[p->var].name;
        s->tensors[i].row_begin = p->row_begin;
        s->tensors[i].rows = p->rows;
        s->tensors[i].data.data = (uint8_t *)(s->store.w + p->offset);
        s->tensors[i].data.len = p->size * sizeof(float);
    }
    if ((o->dana || o->dana_auto) && init_dana(s, o, err, errlen))
        return -1;
    if (s->staleness_lr == PS_STALENESS_LR_AUTO)
        s->staleness_lr = s->dana ? PS_STALENESS_LR_OFF : PS_STALENESS_LR_INVERSE;
    return 0;
}

/* ---- Lending the weights to pull answers ---------------------------------------- */

enum { LEND_SENDING, LEND_DONE, LEND_ABANDONED };

/* Who frees a lent weights buffer: the shard, if the sends are done when it
 * wants the weights back, else the last send. */
struct ps_lend {
    float *w;
    atomic_int state;
};

/* The blob's release, on any thread: every send is done with the weights. */
static void lend_done(void *arg) {
    struct ps_lend *l = arg;
    if (atomic_exchange(&l->state, LEND_DONE) == LEND_ABANDONED) {
        free(l->w);
        free(l);
    }
}

rpc_blob_t *ps_shard_weights(ps_shard_t *s) {
    if (!s->wblob) {
        s->lend = xmalloc(sizeof *s->lend);
        s->lend->w = s->store.w;
        atomic_init(&s->lend->state, LEND_SENDING);
        s->wblob = rpc_blob_wrap(s->store.w, s->store.size * sizeof(float), lend_done, s->lend);
    }
    return s->wblob;
}

/* Ends the lending of the weights; true when sends still hold them, which
 * then own store.w: the caller must neither write it nor free it. */
static bool take_back_weights(ps_shard_t *s) {
    if (!s->wblob)
        return false;
    struct ps_lend *l = s->lend;
    rpc_blob_unref(s->wblob); /* may run lend_done at once */
    s->wblob = NULL;
    s->lend = NULL;
    if (atomic_exchange(&l->state, LEND_ABANDONED) == LEND_DONE) {
        free(l);
        return false;
    }
    return true;
}

static void point_tensors(ps_shard_t *s) {
    for (size_t i = 0; i < s->store.nparts; i++)
        s->tensors[i].data.data = (uint8_t *)(s->store.w + s->store.parts[i].offset);
}

/* Called before the weights change: they are changed in place, or on a copy
 * when sends still hold them. The copy is taken before the old weights are
 * abandoned: once they are, the last send frees them, possibly while the
 * copy would still be reading them. */
static void own_weights(ps_shard_t *s) {
    if (!s->wblob)
        return;
    struct ps_lend *l = s->lend;
    rpc_blob_unref(s->wblob); /* runs lend_done here when no send holds them */
    s->wblob = NULL;
    s->lend = NULL;
    if (atomic_load(&l->state) == LEND_DONE) {
        free(l);
        return;
    }
    /* Sends still hold them; until they are abandoned, none frees them. */
    size_t bytes = s->store.size * sizeof(float);
    float *w = xalloc_aligned(bytes ? bytes : sizeof(float)), *old = s->store.w;
    memcpy(w, old, bytes);
    s->store.w = w;
    point_tensors(s);
    if (atomic_exchange(&l->state, LEND_ABANDONED) == LEND_DONE) {
        free(old); /* the sends finished during the copy */
        free(l);
    }
}

void ps_shard_free(ps_shard_t *s) {
    if (take_back_weights(s))
        s->store.w = NULL;
    free(s->tensors);
    free(s->tensor_ptrs);
    free(s->contributed);
    free(s->last_incarnation);
    free(s->last_seq);
    for (int i = 1; i < ps_pool_threads(s->pool); i++)
        free(s->bounces[i]);
    free(s->bounces);
    ps_pool_free(s->pool);
    free(s->bounce);
    free(s->wire16);
    free(s->accum);
    if (s->dana)
        ps_dana_free(s->dana);
    free(s->dana);
    free(s->ahead_tensors);
    ps_sparse_free(s);
    store_free(&s->store);
    placement_free(&s->placement);
    memset(s, 0, sizeof *s);
}

uint64_t ps_shard_step(const ps_shard_t *s) {
    return atomic_load_explicit(&s->step, memory_order_acquire);
}

/* The owner thread tells the others the step (ps_shard_step) after changing it. */
static void publish_step(ps_shard_t *s) {
    atomic_store_explicit(&s->step, s->store.iterations, memory_order_release);
}

/* The partition of this shard that a tensor names exactly, or -1. */
static long find_part(const ps_shard_t *s, const ps_grad_t *t) {
    for (size_t i = 0; i < s->store.nparts; i++) {
        const store_part_t *p = &s->store.parts[i];
        if (p->row_begin == t->row_begin && p->rows == t->rows &&
            strcmp(s->model->vars[p->var].name, t->name) == 0)
            return (long)i;
    }
    return -1;
}

/* A sparse tensor's indices: strictly ascending, within its partition. */
static int sparse_bad(const ps_shard_t *s, const ps_grad_t *t, long p, char *err, size_t errlen) {
    size_t size = s->store.parts[p].size, bad = t->n_indices > size ? t->n_indices + 1 : 0;
    if (!bad)
        bad = ps_topk_check(t->indices, t->n_indices, size);
    if (!bad)
        return 0;
    return ps_errf(err, errlen,
                   "push: %s rows [%llu, +%llu) has %zu indices for %zu values, index %zu of "
                   "them out of order or out of range",
                   t->name, (unsigned long long)t->row_begin, (unsigned long long)t->rows,
                   t->n_indices, size, bad - 1);
}

/* Checks every tensor of a push; fills part_of[i] with the partition of
 * tensor i. */
static int validate_push(const ps_shard_t *s, const ps_push_t *req, long *part_of, char *err,
                         size_t errlen) {
    uint8_t *seen = xcalloc(s->store.nparts ? s->store.nparts : 1, 1);
    int rc = -1;
    for (size_t i = 0; i < req->n_grads; i++) {
        const ps_grad_t *t = &req->grads[i];
        if (t->n_row_ids && t->n_indices) {
            ps_errf(err, errlen, "push: %s carries both row ids and indices (one or the other)",
                    t->name);
            goto out;
        }
        if (t->n_row_ids && s->dana) {
            ps_errf(err, errlen,
                    "push: %s by rows: train.async_momentum=dana takes whole partitions", t->name);
            goto out;
        }
        if (t->n_row_ids) { /* rows one by one: ps/sparse.c */
            part_of[i] = -1;
            if (ps_sparse_check(s, t, err, errlen))
                goto out;
            continue;
        }
        long p = find_part(s, t);
        if (p < 0) {
            ps_errf(err, errlen, "push: ps %d holds no partition %s rows [%llu, +%llu)", s->index,
                    t->name, (unsigned long long)t->row_begin, (unsigned long long)t->rows);
            goto out;
        }
        if (seen[p]++) {
            ps_errf(err, errlen, "push: partition %s rows [%llu, +%llu) given twice", t->name,
                    (unsigned long long)t->row_begin, (unsigned long long)t->rows);
            goto out;
        }
        size_t bytes = codec_value_bytes(t->dtype);
        if (bytes == 0) {
            ps_errf(err, errlen, "push: %s rows [%llu, +%llu) has unknown dtype %llu", t->name,
                    (unsigned long long)t->row_begin, (unsigned long long)t->rows,
                    (unsigned long long)t->dtype);
            goto out;
        }
        if (t->n_indices && s->model->vars[s->store.parts[p].var].moving) {
            ps_errf(err, errlen,
                    "push: %s is a moving statistic: its batch statistic comes whole, not as "
                    "indices",
                    t->name);
            goto out;
        }
        if (t->n_indices && sparse_bad(s, t, p, err, errlen))
            goto out;
        size_t want = (t->n_indices ? t->n_indices : s->store.parts[p].size) * bytes;
        if (t->data.len != want) {
            ps_errf(err, errlen, "push: %s rows [%llu, +%llu) has %zu bytes, want %zu", t->name,
                    (unsigned long long)t->row_begin, (unsigned long long)t->rows, t->data.len,
                    want);
            goto out;
        }
        part_of[i] = p;
    }
    if (s->sync && req->n_grads != s->store.nparts) {
        ps_errf(err, errlen, "push: sync mode needs every partition of ps %d (%zu), got %zu",
                s->index, s->store.nparts, req->n_grads);
        goto out;
    }
    rc = 0;
out:
    free(seen);
    return rc;
}

/* A float is NaN or Inf exactly when its exponent bits are all ones; adding
 * one to the exponent field then carries into the sign bit. Reading the bits
 * through memcpy takes payloads at any alignment. GCC 12 at -O2 vectorizes
 * the fixed inner loop over independent lanes (not a reduction into one
 * variable): 4-5x faster than one float per step. */
#define FINITE_BLOCK 16

static inline uint32_t exponent_carry(const uint8_t *x, size_t i) {
    uint32_t u;
    memcpy(&u, x + 4 * i, sizeof u);
    return (u & 0x7f800000u) + 0x00800000u;
}

/* wire_floats_fn: -1 when any of the n values is NaN or Inf. */
static int finite_run(void *ctx, size_t first, const uint8_t *x, size_t n) {
    uint32_t lanes[FINITE_BLOCK] = {0}, acc = 0;
    size_t i = 0;
    for (; i + FINITE_BLOCK <= n; i += FINITE_BLOCK)
        for (size_t k = 0; k < FINITE_BLOCK; k++)
            lanes[k] |= exponent_carry(x, i + k);
    for (; i < n; i++)
        acc |= exponent_carry(x, i);
    for (size_t k = 0; k < FINITE_BLOCK; k++)
        acc |= lanes[k];
    return acc >> 31 ? -1 : 0;
}

/* Where a 16-bit tensor of partition p is copied to (check_values). */
static uint8_t *wire16_of(const ps_shard_t *s, long p) {
    return s->wire16 + 2 * s->store.parts[p].offset;
}

/* A walk of a tensor's values limited to [begin, end): wire_floats with
 * clip_run hands fn only the values of the range. */
typedef struct {
    wire_floats_fn fn;
    void *ctx;
    size_t begin, end;
} clip_t;

/* wire_floats_fn: the part of the run inside the range; 1 (not an error:
 * see clip_floats) once the walk is past it. */
static int clip_run(void *ctx, size_t first, const uint8_t *x, size_t n) {
    const clip_t *c = ctx;
    if (first >= c->end)
        return 1;
    size_t lo = PS_MAX(first, c->begin), hi = PS_MIN(first + n, c->end);
    return lo < hi ? c->fn(c->ctx, lo, x + 4 * (lo - first), hi - lo) : 0;
}

/* wire_floats on values [begin, end) of the range only. */
static int clip_floats(const wire_bytes_t *b, size_t begin, size_t end, wire_floats_fn fn,
                       void *ctx) {
    clip_t c = {fn, ctx, begin, end};
    int rc = wire_floats(b, clip_run, &c);
    return rc == 1 ? 0 : rc;
}

/* One tensor's finite check, split over the apply threads. */
typedef struct {
    const ps_grad_t *t;
    const uint8_t *x16; /* a 16-bit tensor's aligned copy; NULL: float32 on the wire */
    int bad[PS_SHARD_MAX_THREADS];
} finite_job_t;

static void finite_range(void *ctx, size_t begin, size_t end, int slot) {
    finite_job_t *j = ctx;
    j->bad[slot] = j->x16 ? codec_check_finite16(j->t->dtype, j->x16 + 2 * begin, end - begin)
                          : clip_floats(&j->t->data, begin, end, finite_run, NULL);
}

/* The apply threads for a tensor of n values: none (NULL, serial) under
 * PS_SHARD_SPLIT_MIN. */
static ps_pool_t *pool_for(const ps_shard_t *s, size_t n) {
    return n >= PS_SHARD_SPLIT_MIN ? s->pool : NULL;
}

/* Whether any value of the tensor (its 16-bit copy x16, or float32 on
 * the wire) is NaN or Inf; a large one checked on the apply threads. */
static bool tensor_bad(ps_shard_t *s, const ps_grad_t *t, const uint8_t *x16) {
    size_t n = t->data.len / (x16 ? 2 : 4);
    finite_job_t j = {.t = t, .x16 = x16};
    ps_pool_run(pool_for(s, n), n, PS_SHARD_SPLIT_MIN / 2, finite_range, &j);
    int bad = 0;
    for (int i = 0; i < ps_pool_threads(s->pool); i++)
        bad |= j.bad[i];
    return bad != 0;
}

/* A 16-bit tensor (bfloat16, fp16) is copied out (it is half the bytes,
 * and then lies aligned and in one piece) and checked there. */
static int check_values(ps_shard_t *s, const ps_push_t *req, const long *part_of, char *err,
                        size_t errlen) {
    for (size_t i = 0; i < req->n_grads; i++) {
        const ps_grad_t *t = &req->grads[i];
        bool is16 = codec_is16(t->dtype);
        if (is16)
            wire_copy(&t->data, wire16_of(s, part_of[i]));
        if (tensor_bad(s, t, is16 ? wire16_of(s, part_of[i]) : NULL))
            return ps_errf(err, errlen, "push: %s rows [%llu, +%llu) holds NaN or Inf", t->name,
                           (unsigned long long)t->row_begin, (unsigned long long)t->rows);
    }
    return 0;
}

/* The optimizer on values [first, first + n) of partition `part`, its step
 * size times `scale`. */
static void apply_range(store_t *st, size_t part, double scale, size_t first, const float *g,
                        size_t n) {
    size_t at = st->parts[part].offset + first;
    const var_t *v = &st->model->vars[st->parts[part].var];
    if (v->moving) { /* g is the batch's statistic; no scale applies (common/train/moving.h) */
        moving_update(cpu_backend(), st->w + at, g, n, v->momentum);
        return;
    }
    float *slots[OPTIM_MAX_SLOTS] = {0};
    for (size_t k = 0; k < optim_nslots(&st->opt); k++)
        slots[k] = st->slots[k] + at;
    optim_apply_scaled(&st->opt, st->iterations, scale, st->w + at, slots, g, n);
}

/* What a push does with one partition's gradient, run by run. */
typedef struct {
    ps_shard_t *s;
    size_t part;
    bool sum;            /* sync: add into accum; async: apply */
    double scale;        /* async: of the step size */
    uint32_t worker;     /* who pushed (dana's velocity) */
    const uint32_t *idx; /* a sparse tensor: the element of each value; NULL: dense */
    float *dense;        /* sparse, async, slots: the partition's gradient (ps/sparse.h) */
    float *bounce;       /* [PS_SHARD_BOUNCE]: of the thread that runs it */
} grad_sink_t;

static void sink_floats(const grad_sink_t *k, size_t first, const float *g, size_t n) {
    if (k->idx) {
        if (k->sum || k->dense)
            ps_topk_add(k->sum ? k->s->accum + k->s->store.parts[k->part].offset : k->dense,
                        k->idx + first, g, n);
        else
            ps_topk_apply_touched(&k->s->store, k->part, k->scale, k->idx + first, g, n);
        return;
    }
    if (!k->sum && k->s->dana) {
        ps_dana_apply(k->s->dana, &k->s->store, k->worker, k->part, k->scale, first, g, n);
        return;
    }
    if (!k->sum) {
        apply_range(&k->s->store, k->part, k->scale, first, g, n);
        return;
    }
    float *acc = k->s->accum + k->s->store.parts[k->part].offset + first;
    for (size_t j = 0; j < n; j++)
        acc[j] += g[j];
}

/* wire_floats_fn: hands a run to the sink as aligned floats, through the
 * bounce buffer when the run does not lie aligned. */
static int sink_run(void *ctx, size_t first, const uint8_t *x, size_t n) {
    const grad_sink_t *k = ctx;
    if ((uintptr_t)x % _Alignof(float) == 0) {
        sink_floats(k, first, (const float *)(const void *)x, n);
        return 0;
    }
    for (size_t done = 0; done < n; done += PS_SHARD_BOUNCE) {
        size_t m = PS_MIN(n - done, (size_t)PS_SHARD_BOUNCE);
        memcpy(k->bounce, x + 4 * done, m * sizeof(float));
        sink_floats(k, first + done, k->bounce, m);
    }
    return 0;
}

/* Hands values [begin, end) of a 16-bit tensor, copied out by
 * check_values, to the sink as floats, a bounce buffer at a time. */
static void sink_16(const grad_sink_t *k, uint64_t dtype, const uint8_t *x, size_t begin,
                    size_t end) {
    for (size_t done = begin; done < end; done += PS_SHARD_BOUNCE) {
        size_t m = PS_MIN(end - done, (size_t)PS_SHARD_BOUNCE);
        codec_decode(dtype, k->bounce, x + 2 * done, m);
        sink_floats(k, done, k->bounce, m);
    }
}

/* One dense tensor's gradient, split over the apply threads. */
typedef struct {
    const grad_sink_t *k;
    const ps_grad_t *t;
    const uint8_t *x16; /* a 16-bit tensor's aligned copy; NULL: float32 on the wire */
} sink_job_t;

static void sink_range(void *ctx, size_t begin, size_t end, int slot) {
    const sink_job_t *j = ctx;
    grad_sink_t k = *j->k;
    k.bounce = k.s->bounces[slot];
    if (j->x16)
        sink_16(&k, j->t->dtype, j->x16, begin, end);
    else
        clip_floats(&j->t->data, begin, end, sink_run, &k);
}

/* A dense tensor's gradient to the sink: a large one on the apply threads. */
static void sink_dense(ps_shard_t *s, const grad_sink_t *k, const ps_grad_t *t,
                       const uint8_t *x16) {
    size_t n = t->data.len / (x16 ? 2 : 4);
    sink_job_t j = {k, t, x16};
    ps_pool_run(pool_for(s, n), n, PS_SHARD_SPLIT_MIN / 2, sink_range, &j);
}

/* dana, a sparse push: the partition's dense gradient (zero but at the n
 * indices) applied whole, then zeroed again at the indices. */
static void dana_apply_dense(ps_shard_t *s, const grad_sink_t *k, size_t n) {
    ps_dana_apply(s->dana, &s->store, k->worker, k->part, k->scale, 0, k->dense,
                  s->store.parts[k->part].size);
    for (size_t j = 0; j < n; j++)
        k->dense[k->idx[j]] = 0.0f;
}

static void take_grads(ps_shard_t *s, const ps_push_t *req, const long *part_of, bool sum,
                       double scale) {
    for (size_t i = 0; i < req->n_grads; i++) {
        if (part_of[i] < 0) { /* rows one by one: ps/sparse.c */
            ps_sparse_apply(s, &req->grads[i], scale);
            continue;
        }
        const ps_grad_t *t = &req->grads[i];
        size_t part = (size_t)part_of[i];
        grad_sink_t k = {.s = s,
                         .part = part,
                         .sum = sum,
                         .scale = scale,
                         .worker = req->caller_index,
                         .idx = t->indices,
                         .bounce = s->bounce};
        const uint8_t *x16 = codec_is16(t->dtype) ? wire16_of(s, part) : NULL;
        /* async mode leaves accum unused: zeros, the dense gradient's room */
        if (k.idx && !sum && !s->sparse_sgd && (ps_topk_dense(&s->store) || s->dana))
            k.dense = s->accum + s->store.parts[part].offset;
        if (!k.idx)
            sink_dense(s, &k, t, x16);
        else if (x16)
            sink_16(&k, t->dtype, x16, 0, t->data.len / 2);
        else
            wire_floats(&t->data, sink_run, &k);
        if (k.dense && s->dana)
            dana_apply_dense(s, &k, t->n_indices);
        else if (k.dense)
            ps_topk_apply_dense(&s->store, part, scale, k.dense, k.idx, t->n_indices);
    }
}

/* Sync: one partition's averaged gradient applied, split over the apply threads. */
typedef struct {
    ps_shard_t *s;
    size_t part;
    double scale;
} accum_job_t;

static void accum_range(void *ctx, size_t begin, size_t end, int slot) {
    const accum_job_t *j = ctx;
    store_t *st = &j->s->store;
    apply_range(st, j->part, j->scale, begin, j->s->accum + st->parts[j->part].offset + begin,
                end - begin);
}

/* Sync: averages the summed gradients into one update and starts the next step. */
static void apply_accumulated(ps_shard_t *s) {
    float scale = 1.0f / (float)s->accum_count;
    for (size_t i = 0; i < s->store.size; i++)
        s->accum[i] *= scale;
    double lr_scale = s->lr_linear ? optim_linear_scale((double)s->accum_count, s->store.iterations,
                                                        s->warmup_steps)
                                   : 1.0;
    own_weights(s);
    for (size_t p = 0; p < s->store.nparts; p++) {
        accum_job_t j = {s, p, lr_scale};
        ps_pool_run(pool_for(s, s->store.parts[p].size), s->store.parts[p].size,
                    PS_SHARD_SPLIT_MIN / 2, accum_range, &j);
    }
    s->store.iterations++;
    publish_step(s);
    memset(s->accum, 0, s->store.size * sizeof(float));
    memset(s->contributed, 0, s->max_workers);
    s->accum_count = 0;
}

/* Async: the step-size multiplier of a push, by its staleness, and the
 * momentum to apply it with; a full push counts into the staleness figures. */
static double async_scale(ps_shard_t *s, const ps_push_t *req, double *momentum) {
    uint64_t now = s->store.iterations;
    uint64_t staleness = req->step && req->step < now ? now - req->step : 0;
    if (!req->partial) {
        s->staleness_sum += staleness;
        s->staleness_max = PS_MAX(s->staleness_max, staleness);
    }
    *momentum = s->store.opt.momentum;
    if (s->staleness_lr == PS_STALENESS_LR_MOMENTUM) {
        if (!req->partial)
            ps_stale_mean_add(&s->stale_mean, staleness);
        double scale;
        ps_staleness_momentum(s->store.opt.momentum, s->stale_mean.mean, momentum, &scale);
        return scale;
    }
    return s->staleness_lr == PS_STALENESS_LR_INVERSE ? optim_staleness_scale(staleness) : 1.0;
}

int ps_shard_push_view(ps_shard_t *s, const ps_push_t *req, bool *stale, char *err, size_t errlen) {
    *stale = false;
    if (!req->has_caller)
        return ps_errf(err, errlen, "push: no caller");
    if (req->caller_index >= s->max_workers)
        return ps_errf(err, errlen, "push: worker index %u is outside the cluster's %zu",
                       req->caller_index, s->max_workers);
    long *part_of = xcalloc(req->n_grads ? req->n_grads : 1, sizeof *part_of);
    int rc = -1;
    if (validate_push(s, req, part_of, err, errlen) || check_values(s, req, part_of, err, errlen))
        goto out;
    if (s->sync && req->partial) {
        ps_errf(err, errlen, "push: a partial push is for async mode; this PS is sync");
        goto out;
    }
    rc = 0;
    uint32_t w = req->caller_index;
    if (req->seq && s->last_incarnation[w] == req->caller_incarnation &&
        req->seq <= s->last_seq[w]) {
        s->replayed++; /* a retry: the answer to it was lost, the push was not */
        goto out;
    }
    if (req->seq) {
        s->last_incarnation[w] = req->caller_incarnation;
        s->last_seq[w] = req->seq;
    }
    if (!s->sync) {
        own_weights(s);
        double mu = s->store.opt.momentum, push_mu;
        double scale = async_scale(s, req, &push_mu);
        s->store.opt.momentum = push_mu; /* this push's (staleness_lr momentum) */
        take_grads(s, req, part_of, false, scale);
        s->store.opt.momentum = mu;
        if (!req->partial) {
            s->store.iterations++;
            publish_step(s);
            s->pushes++;
        }
        goto out;
    }
    if (req->step != s->store.iterations) {
        *stale = true;
        s->stale_dropped++;
        goto out;
    }
    if (s->contributed[req->caller_index]) {
        s->duplicates++;
        goto out;
    }
    take_grads(s, req, part_of, true, 1.0);
    s->contributed[req->caller_index] = 1;
    s->accum_count++;
    s->pushes++;
    if (s->accum_count >= s->replicas)
        apply_accumulated(s);
out:
    free(part_of);
    return rc;
}

int ps_shard_push(ps_shard_t *s, const Pstrain__PushRequest *req, bool *stale, char *err,
                  size_t errlen) {
    ps_push_t p;
    ps_push_init(&p);
    ps_push_from_pb(&p, req);
    int rc = ps_shard_push_view(s, &p, stale, err, errlen);
    ps_push_free(&p);
    return rc;
}

bool ps_shard_pull_ahead(const ps_shard_t *s, const Pstrain__PullRequest *req) {
    return s->dana && req->caller && req->caller->role && !strcmp(req->caller->role, "worker");
}

int ps_shard_pull(ps_shard_t *s, const Pstrain__PullRequest *req, Pstrain__PullResponse *resp,
                  char *err, size_t errlen) {
    Pstrain__Tensor *tensors = ps_shard_pull_ahead(s, req) ? s->ahead_tensors : s->tensors;
    size_t n = 0;
    for (size_t p = 0; p < s->store.nparts; p++) {
        bool wanted = req->n_names == 0 && req->n_rows == 0;
        for (size_t k = 0; k < req->n_names && !wanted; k++)
            wanted = strcmp(req->names[k], s->tensors[p].name) == 0;
        if (wanted)
            s->tensor_ptrs[n++] = &tensors[p];
    }
    for (size_t k = 0; k < req->n_names; k++) {
        if (model_find_var(s->model, req->names[k]) < 0)
            return ps_errf(err, errlen, "pull: unknown variable \"%s\"", req->names[k]);
    }
    resp->step = s->store.iterations;
    resp->n_tensors = n;
    resp->tensors = s->tensor_ptrs;
    return req->n_rows ? ps_sparse_pull(s, req, n, resp, err, errlen) : 0;
}

void ps_shard_set_replicas(ps_shard_t *s, size_t replicas) {
    s->replicas = replicas ? replicas : 1;
    if (s->sync && s->accum_count > 0 && s->accum_count >= s->replicas)
        apply_accumulated(s);
}

int ps_shard_save(const ps_shard_t *s, const char *dir, int nps, uint64_t step, char *path,
                  size_t pathlen, char *err, size_t errlen) {
    if (ps_mkdirs(dir, err, errlen))
        return -1;
    ckpt_shard_path(path, pathlen, dir, s->index, nps);
    return ckpt_save_store(&s->store, path, step, err, errlen);
}

static void drop_step_in_progress(ps_shard_t *s) {
    if (!s->sync)
        return;
    memset(s->accum, 0, s->store.size * sizeof(float));
    memset(s->contributed, 0, s->max_workers);
    s->accum_count = 0;
}

static void swap_store(ps_shard_t *s, store_t *fresh) {
    if (take_back_weights(s))
        s->store.w = NULL; /* the sends free it */
    store_t old = s->store;
    s->store = *fresh;
    store_free(&old);
    point_tensors(s);
    drop_step_in_progress(s);
    publish_step(s);
    if (s->dana)
        ps_dana_resync(s->dana, &s->store);
}

void ps_shard_reset(ps_shard_t *s) {
    store_t fresh;
    store_init(&fresh, s->model, s->store.parts, s->store.nparts, &s->store.opt, s->seed);
    swap_store(s, &fresh);
}

/* Restores into a fresh store and swaps it in only when all of it was read. */
int ps_shard_restore(ps_shard_t *s, const char *path, bool *unchecked, char *err, size_t errlen) {
    ckpt_restore_opts_t o = {.pattern = NULL, .slots = true, .unchecked = unchecked};
    store_t fresh;
    store_init(&fresh, s->model, s->store.parts, s->store.nparts, &s->store.opt, 0);
    int rc = ckpt_restore_store(&fresh, path, &o, NULL, err, errlen);
    if (rc) {
        store_free(&fresh);
        return rc;
    }
    swap_store(s, &fresh);
    return 0;
}

int ps_shard_warm_start(ps_shard_t *s, const char *path, const char *pattern, char *err,
                        size_t errlen) {
    ckpt_restore_opts_t o = {.pattern = pattern && pattern[0] ? pattern : NULL, .slots = false};
    own_weights(s);
    int rc = ckpt_restore_store(&s->store, path, &o, NULL, err, errlen);
    if (s->dana)
        ps_dana_resync(s->dana, &s->store);
    return rc;
}

#include "shard.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensor payloads are little-endian float32: a big-endian build must swap bytes"
#endif

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
    size_t max_part = 1;
    for (size_t p = 0; p < s->store.nparts; p++)
        max_part = PS_MAX(max_part, s->store.parts[p].size);
    s->scratch = xalloc_aligned(max_part * sizeof(float));
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
    return 0;
}

void ps_shard_free(ps_shard_t *s) {
    free(s->tensors);
    free(s->tensor_ptrs);
    free(s->contributed);
    free(s->scratch);
    free(s->accum);
    store_free(&s->store);
    placement_free(&s->placement);
    memset(s, 0, sizeof *s);
}

uint64_t ps_shard_step(const ps_shard_t *s) {
    return s->store.iterations;
}

/* The partition of this shard that a tensor names exactly, or -1. */
static long find_part(const ps_shard_t *s, const Pstrain__Tensor *t) {
    for (size_t i = 0; i < s->store.nparts; i++) {
        const store_part_t *p = &s->store.parts[i];
        if (p->row_begin == t->row_begin && p->rows == t->rows &&
            strcmp(s->model->vars[p->var].name, t->name) == 0)
            return (long)i;
    }
    return -1;
}

static bool all_finite(const float *x, size_t n) {
    float acc = 0.0f;
    /* x * 0 is 0 for finite x and NaN for NaN or Inf: one branch-free pass. */
    for (size_t i = 0; i < n; i++)
        acc += x[i] * 0.0f;
    return acc == 0.0f;
}

/* Checks every tensor of a push; fills part_of[i] with the partition of
 * tensor i. */
static int validate_push(const ps_shard_t *s, const Pstrain__PushRequest *req, long *part_of,
                         char *err, size_t errlen) {
    uint8_t *seen = xcalloc(s->store.nparts ? s->store.nparts : 1, 1);
    int rc = -1;
    for (size_t i = 0; i < req->n_grads; i++) {
        const Pstrain__Tensor *t = req->grads[i];
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
        size_t want = s->store.parts[p].size * sizeof(float);
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

/* Gradient values, aligned: protobuf-c's bytes may sit at any address. */
static const float *grad_values(const Pstrain__Tensor *t, float *scratch) {
    if (((uintptr_t)t->data.data % sizeof(float)) == 0)
        return (const float *)t->data.data;
    memcpy(scratch, t->data.data, t->data.len);
    return scratch;
}

static void apply_part(store_t *st, size_t part, const float *g) {
    const store_part_t *p = &st->parts[part];
    float *slots[OPTIM_MAX_SLOTS] = {0};
    for (size_t k = 0; k < optim_nslots(&st->opt); k++)
        slots[k] = st->slots[k] + p->offset;
    optim_apply(&st->opt, st->iterations, st->w + p->offset, slots, g, p->size);
}

/* Sync: averages the summed gradients into one update and starts the next step. */
static void apply_accumulated(ps_shard_t *s) {
    float scale = 1.0f / (float)s->accum_count;
    for (size_t i = 0; i < s->store.size; i++)
        s->accum[i] *= scale;
    for (size_t p = 0; p < s->store.nparts; p++)
        apply_part(&s->store, p, s->accum + s->store.parts[p].offset);
    s->store.iterations++;
    memset(s->accum, 0, s->store.size * sizeof(float));
    memset(s->contributed, 0, s->max_workers);
    s->accum_count = 0;
}

static int check_values(const Pstrain__PushRequest *req, float *scratch, char *err, size_t errlen) {
    for (size_t i = 0; i < req->n_grads; i++) {
        const Pstrain__Tensor *t = req->grads[i];
        if (!all_finite(grad_values(t, scratch), t->data.len / sizeof(float)))
            return ps_errf(err, errlen, "push: %s rows [%llu, +%llu) holds NaN or Inf", t->name,
                           (unsigned long long)t->row_begin, (unsigned long long)t->rows);
    }
    return 0;
}

int ps_shard_push(ps_shard_t *s, const Pstrain__PushRequest *req, bool *stale, char *err,
                  size_t errlen) {
    *stale = false;
    if (!req->caller)
        return ps_errf(err, errlen, "push: no caller");
    if (req->caller->index >= s->max_workers)
        return ps_errf(err, errlen, "push: worker index %u is outside the cluster's %zu",
                       req->caller->index, s->max_workers);
    long *part_of = xcalloc(req->n_grads ? req->n_grads : 1, sizeof *part_of);
    float *scratch = s->scratch;
    int rc = -1;
    if (validate_push(s, req, part_of, err, errlen) || check_values(req, scratch, err, errlen))
        goto out;
    rc = 0;
    if (!s->sync) {
        for (size_t i = 0; i < req->n_grads; i++)
            apply_part(&s->store, (size_t)part_of[i], grad_values(req->grads[i], scratch));
        if (!req->partial) {
            s->store.iterations++;
            s->pushes++;
        }
        goto out;
    }
    if (req->partial) {
        rc = ps_errf(err, errlen, "push: a partial push is for async mode; this PS is sync");
        goto out;
    }
    if (req->step != s->store.iterations) {
        *stale = true;
        s->stale_dropped++;
        goto out;
    }
    if (s->contributed[req->caller->index]) {
        s->duplicates++;
        goto out;
    }
    for (size_t i = 0; i < req->n_grads; i++) {
        const store_part_t *p = &s->store.parts[part_of[i]];
        const float *g = grad_values(req->grads[i], scratch);
        float *acc = s->accum + p->offset;
        for (size_t j = 0; j < p->size; j++)
            acc[j] += g[j];
    }
    s->contributed[req->caller->index] = 1;
    s->accum_count++;
    s->pushes++;
    if (s->accum_count >= s->replicas)
        apply_accumulated(s);
out:
    free(part_of);
    return rc;
}

int ps_shard_pull(ps_shard_t *s, const Pstrain__PullRequest *req, Pstrain__PullResponse *resp,
                  char *err, size_t errlen) {
    size_t n = 0;
    for (size_t p = 0; p < s->store.nparts; p++) {
        bool wanted = req->n_names == 0;
        for (size_t k = 0; k < req->n_names && !wanted; k++)
            wanted = strcmp(req->names[k], s->tensors[p].name) == 0;
        if (wanted)
            s->tensor_ptrs[n++] = &s->tensors[p];
    }
    for (size_t k = 0; k < req->n_names; k++) {
        if (model_find_var(s->model, req->names[k]) < 0)
            return ps_errf(err, errlen, "pull: unknown variable \"%s\"", req->names[k]);
    }
    resp->step = s->store.iterations;
    resp->n_tensors = n;
    resp->tensors = s->tensor_ptrs;
    return 0;
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
    store_t old = s->store;
    s->store = *fresh;
    store_free(&old);
    for (size_t i = 0; i < s->store.nparts; i++)
        s->tensors[i].data.data = (uint8_t *)(s->store.w + s->store.parts[i].offset);
    drop_step_in_progress(s);
}

void ps_shard_reset(ps_shard_t *s) {
    store_t fresh;
    store_init(&fresh, s->model, s->store.parts, s->store.nparts, &s->store.opt, s->seed);
    swap_store(s, &fresh);
}

/* Restores into a fresh store and swaps it in only when all of it was read. */
int ps_shard_restore(ps_shard_t *s, const char *path, char *err, size_t errlen) {
    ckpt_restore_opts_t o = {.pattern = NULL, .slots = true};
    store_t fresh;
    store_init(&fresh, s->model, s->store.parts, s->store.nparts, &s->store.opt, 0);
    if (ckpt_restore_store(&fresh, path, &o, NULL, err, errlen)) {
        store_free(&fresh);
        return -1;
    }
    swap_store(s, &fresh);
    return 0;
}

int ps_shard_warm_start(ps_shard_t *s, const char *path, const char *pattern, char *err,
                        size_t errlen) {
    ckpt_restore_opts_t o = {.pattern = pattern && pattern[0] ? pattern : NULL, .slots = false};
    return ckpt_restore_store(&s->store, path, &o, NULL, err, errlen);
}

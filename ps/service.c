#include "service.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/log.h"
#include "common/rpc/msg.h"
#include "common/base/util.h"

/* Invalid requests, which any peer can send: their warnings are limited. */
static log_limit_t invalid_limit;
/* Weights clamped in fp16 answers (rpc.wire_dtype fp16). */
static log_limit_t clamp_limit;

static void reply_invalid(ps_service_t *s, rpc_call_t *call, const char *msg) {
    s->bad_requests++;
    log_warn_limited(&invalid_limit, "%s: %s", rpc_call_method(call), msg);
    rpc_call_reply(call, RPC_INVALID_ARGUMENT, msg, NULL, 0);
}

/* The answer is sent from the weights where they lie: only the framing
 * around each tensor is copied. */
static void answer_pull(ps_service_t *s, rpc_call_t *call, const Pstrain__PullRequest *req) {
    Pstrain__PullResponse resp = PSTRAIN__PULL_RESPONSE__INIT;
    char err[PS_ERRLEN];
    if (ps_shard_pull(&s->shard, req, &resp, err, sizeof err)) {
        reply_invalid(s, call, err);
        return;
    }
    resp.lineage = s->lineage;
    if (req->wire_dtype == PSTRAIN__WIRE_DTYPE__BFLOAT16 ||
        req->wire_dtype == PSTRAIN__WIRE_DTYPE__FLOAT16) {
        uint64_t clamped = s->pull.fp16_clamped;
        rpc_blob_t *conv = ps_pull_encode_16(&s->pull, &resp, req->wire_dtype);
        rpc_call_reply_pieces(call, s->pull.piece, s->pull.npiece);
        rpc_blob_unref(conv);
        if (s->pull.fp16_clamped > clamped)
            log_warn_limited(&clamp_limit,
                             "pull: %llu weights beyond fp16's range sent as +-65504 "
                             "(rpc.wire_dtype fp16; %llu so far)",
                             (unsigned long long)(s->pull.fp16_clamped - clamped),
                             (unsigned long long)s->pull.fp16_clamped);
        return;
    }
    /* dana's look-ahead weights change with every push: copied, not lent */
    rpc_blob_t *lent = ps_shard_pull_ahead(&s->shard, req) ? NULL : ps_shard_weights(&s->shard);
    ps_pull_encode(&s->pull, &resp, lent);
    rpc_call_reply_pieces(call, s->pull.piece, s->pull.npiece);
}

/* Answers a pull that waited, with every partition, in the encoding it
 * asked for; an ssp pull as its worker's (dana's look-ahead weights). */
static void answer_wait(ps_service_t *s, const ps_wait_t *w) {
    Pstrain__PullRequest all = PSTRAIN__PULL_REQUEST__INIT;
    Pstrain__Caller worker = PSTRAIN__CALLER__INIT;
    worker.role = "worker";
    worker.index = w->worker;
    all.caller = w->ssp ? &worker : NULL;
    all.wire_dtype = w->dtype;
    answer_pull(s, w->call, &all);
}

/* Whether a waiting pull may be answered now. A held ssp pull is a sign of
 * life of its worker: it is waiting, not dead. */
static bool wait_over(const ps_service_t *s, const ps_wait_t *w, uint64_t step, double now) {
    if (!w->ssp)
        return w->min_step <= step;
    ps_ssp_seen(s->ssp, w->worker, now);
    return ps_ssp_may_pull(s->ssp, w->worker, now);
}

/* Answers the waiting pulls whose step has come (or, in ssp mode, whose
 * worker is no longer too far ahead). */
static void wake_waits(ps_service_t *s) {
    uint64_t step = ps_shard_step(&s->shard);
    double now = ps_now();
    size_t kept = 0;
    for (size_t i = 0; i < s->nwaits; i++) {
        if (wait_over(s, &s->waits[i], step, now))
            answer_wait(s, &s->waits[i]);
        else
            s->waits[kept++] = s->waits[i];
    }
    s->nwaits = kept;
}

static void add_wait(ps_service_t *s, ps_wait_t w) {
    if (s->nwaits == s->capwaits) {
        s->capwaits = s->capwaits ? 2 * s->capwaits : 8;
        s->waits = xrealloc(s->waits, s->capwaits * sizeof *s->waits);
    }
    s->waits[s->nwaits++] = w;
}

/* ssp mode: a worker's full pull waits while it is too far ahead. */
static bool ssp_holds(ps_service_t *s, const Pstrain__PullRequest *req) {
    if (!s->ssp || !req->caller || !req->caller->role || strcmp(req->caller->role, "worker"))
        return false;
    double now = ps_now();
    ps_ssp_seen(s->ssp, req->caller->index, now);
    return !ps_ssp_may_pull(s->ssp, req->caller->index, now);
}

static void handle_pull(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    ps_service_t *s = ctx;
    Pstrain__PullRequest *req = pstrain__pull_request__unpack(&s->arena.base, len, data);
    if (!req) {
        reply_invalid(s, call, "pull: malformed PullRequest");
        return;
    }
    /* A caller from another lineage pulled before a restore moved the step
     * back: it must not wait for a step that may never come. */
    bool same_lineage = req->lineage == 0 || req->lineage == s->lineage ||
                        (s->adopted_from && req->lineage == s->adopted_from);
    /* A worker's pull of the whole model: every partition, or (embedding
     * rows, ps/sparse.c) the rows of its batch beside the other variables,
     * which a wait then answers with every partition. */
    bool whole = req->n_names == 0 || req->n_rows > 0;
    bool waits = whole && !s->shutdown && same_lineage;
    if (waits && req->min_step > ps_shard_step(&s->shard)) {
        add_wait(s, (ps_wait_t){.call = call,
                                .min_step = req->min_step,
                                .since = ps_now(),
                                .dtype = req->wire_dtype});
    } else if (waits && ssp_holds(s, req)) {
        s->ssp_held++;
        add_wait(s, (ps_wait_t){.call = call,
                                .ssp = true,
                                .worker = req->caller->index,
                                .since = ps_now(),
                                .dtype = req->wire_dtype});
    } else {
        answer_pull(s, call, req);
    }
    pstrain__pull_request__free_unpacked(req, &s->arena.base);
    msg_arena_reset(&s->arena);
}

/* Pushes are read in place: the gradients go from the buffers gRPC received
 * them in straight to the optimizer. */
static void handle_push(void *ctx, rpc_call_t *call, const rpc_msg_t *m) {
    ps_service_t *s = ctx;
    if (ps_push_decode(&s->push, m)) {
        reply_invalid(s, call, "push: malformed PushRequest");
        return;
    }
    char err[PS_ERRLEN];
    bool stale = false;
    uint64_t replayed = s->shard.replayed;
    if (ps_shard_push_view(&s->shard, &s->push, &stale, err, sizeof err)) {
        reply_invalid(s, call, err);
    } else {
        /* A retry of a push handled already does not move the clock again. */
        if (s->ssp && s->push.has_caller && !s->push.partial && s->shard.replayed == replayed)
            ps_ssp_pushed(s->ssp, s->push.caller_index, s->push.caller_incarnation, ps_now());
        Pstrain__PushResponse resp = PSTRAIN__PUSH_RESPONSE__INIT;
        resp.step = ps_shard_step(&s->shard);
        resp.stale = stale;
        msg_reply(call, &s->pack, &resp.base);
        wake_waits(s);
    }
}

/* A Save names the global step: ps 0's update count when the master polled
 * it. Another PS's count may trail ps 0's by the pushes in flight and by
 * those a worker lost when it died between two PS, so a step a little ahead
 * of this PS's own is normal; one far ahead (2^64 - 1, or a rogue client's)
 * would make a checkpoint no manifest can name and no prune removes. */
#define PS_SAVE_AHEAD 10000

static int save_step_bad(const ps_service_t *s, uint64_t step, char *err, size_t errlen) {
    uint64_t own = ps_shard_step(&s->shard);
    if (step > CKPT_MAX_STEP)
        return ps_errf(err, errlen,
                       "save: step %llu is over the limit of a checkpoint's step (%llu)",
                       (unsigned long long)step, (unsigned long long)CKPT_MAX_STEP);
    if (step > own + PS_SAVE_AHEAD)
        return ps_errf(err, errlen,
                       "save: step %llu is beyond this PS's step %llu (at most %d ahead)",
                       (unsigned long long)step, (unsigned long long)own, PS_SAVE_AHEAD);
    return 0;
}

static void handle_save(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    ps_service_t *s = ctx;
    Pstrain__SaveRequest *req = pstrain__save_request__unpack(NULL, len, data);
    if (!req) {
        reply_invalid(s, call, "save: malformed SaveRequest");
        return;
    }
    char dir[PATH_MAX], path[PATH_MAX], err[PS_ERRLEN];
    if (save_step_bad(s, req->step, err, sizeof err)) {
        reply_invalid(s, call, err);
        pstrain__save_request__free_unpacked(req, NULL);
        return;
    }
    ckpt_dir(dir, sizeof dir, s->model_dir, req->step);
    double t0 = ps_now();
    if (ps_shard_save(&s->shard, dir, s->nps, req->step, path, sizeof path, err, sizeof err)) {
        /* The disk, not the request: the master may try again later. */
        log_error("checkpoint %llu: %s", (unsigned long long)req->step, err);
        rpc_call_reply(call, RPC_INTERNAL, err, NULL, 0);
    } else {
        log_info("saved %s (step %llu, %.0f ms)", path, (unsigned long long)req->step,
                 1e3 * (ps_now() - t0));
        Pstrain__SaveResponse resp = PSTRAIN__SAVE_RESPONSE__INIT;
        resp.path = path;
        resp.bytes = s->shard.store.size * sizeof(float) * (1 + optim_nslots(&s->shard.store.opt));
        resp.iterations = ps_shard_step(&s->shard);
        msg_reply(call, &s->pack, &resp.base);
    }
    pstrain__save_request__free_unpacked(req, NULL);
}

static void handle_restore(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    ps_service_t *s = ctx;
    Pstrain__RestoreRequest *req = pstrain__restore_request__unpack(NULL, len, data);
    if (!req) {
        reply_invalid(s, call, "restore: malformed RestoreRequest");
        return;
    }
    char dir[PATH_MAX], err[PS_ERRLEN];
    ckpt_dir(dir, sizeof dir, s->model_dir, req->step);
    int rc = req->adopt     ? 0
             : req->initial ? s->reset(s->reset_arg, err, sizeof err)
                            : ps_shard_restore(&s->shard, dir, NULL, err, sizeof err);
    if (rc) {
        log_error("restore: %s", err);
        rpc_call_reply(call, RPC_FAILED_PRECONDITION, err, NULL, 0);
    } else {
        /* An adoption keeps the weights and the step: a pull of the
         * lineage before it may still wait for its step (else a sync
         * worker would get the step it has pushed again, and push it again,
         * stale). A restore moves the step: pulls of older lineages do not
         * wait, and waiting ones are answered with the restored weights. */
        s->adopted_from = req->adopt ? s->lineage : 0;
        s->lineage = req->lineage;
        if (req->adopt) {
            log_info("lineage %llu (the cluster's)", (unsigned long long)s->lineage);
        } else {
            s->origin_step = ps_shard_step(&s->shard);
            log_info("restored %s: step %llu, lineage %llu",
                     req->initial ? "the initial weights" : dir,
                     (unsigned long long)ps_shard_step(&s->shard), (unsigned long long)s->lineage);
        }
        Pstrain__RestoreResponse resp = PSTRAIN__RESTORE_RESPONSE__INIT;
        resp.step = ps_shard_step(&s->shard);
        msg_reply(call, &s->pack, &resp.base);
        /* Sync pulls waiting for a step past the restored one get the
         * restored weights now; their workers go on from there. */
        if (!req->adopt)
            ps_service_release_waits(s);
    }
    pstrain__restore_request__free_unpacked(req, NULL);
}

static void handle_stats(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    ps_service_t *s = ctx;
    Pstrain__StatsRequest *req = pstrain__stats_request__unpack(NULL, len, data);
    if (!req) {
        reply_invalid(s, call, "stats: malformed StatsRequest");
        return;
    }
    pstrain__stats_request__free_unpacked(req, NULL);
    Pstrain__StatsResponse resp = PSTRAIN__STATS_RESPONSE__INIT;
    resp.step = ps_shard_step(&s->shard);
    resp.pushes = s->shard.pushes;
    resp.stale_dropped = s->shard.stale_dropped;
    resp.partitions = s->shard.store.nparts;
    resp.bytes = s->shard.store.size * sizeof(float);
    resp.incarnation = s->incarnation;
    resp.aggregating = (uint32_t)(s->shard.sync ? s->shard.replicas : 0);
    resp.lineage = s->lineage;
    resp.origin_step = s->origin_step;
    msg_reply(call, &s->pack, &resp.base);
}

static void handle_shutdown(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    ps_service_t *s = ctx;
    Pstrain__ShutdownRequest *req = pstrain__shutdown_request__unpack(NULL, len, data);
    if (!req) {
        reply_invalid(s, call, "shutdown: malformed ShutdownRequest");
        return;
    }
    log_info("shutdown requested: %s", req->reason[0] ? req->reason : "(no reason given)");
    pstrain__shutdown_request__free_unpacked(req, NULL);
    Pstrain__ShutdownResponse resp = PSTRAIN__SHUTDOWN_RESPONSE__INIT;
    msg_reply(call, &s->pack, &resp.base);
    atomic_store(&s->shutdown, true);
    ps_service_release_waits(s);
}

void ps_service_init(ps_service_t *s, uint64_t incarnation) {
    s->incarnation = incarnation;
    s->lineage = incarnation;
    s->waits = NULL;
    s->nwaits = s->capwaits = 0;
    memset(&s->pack, 0, sizeof s->pack);
    msg_arena_init(&s->arena);
    ps_push_init(&s->push);
    ps_pull_init(&s->pull);
    atomic_store(&s->shutdown, false);
    s->bad_requests = 0;
}

void ps_service_free(ps_service_t *s) {
    ps_shard_free(&s->shard);
    if (s->ssp) {
        ps_ssp_free(s->ssp);
        free(s->ssp);
    }
    free(s->waits);
    rpc_buf_free(&s->pack);
    msg_arena_free(&s->arena);
    ps_push_free(&s->push);
    ps_pull_free(&s->pull);
}

const rpc_method_t ps_service_methods[] = {
    {"/pstrain.ParameterServer/Pull", handle_pull},
    {"/pstrain.ParameterServer/Save", handle_save},
    {"/pstrain.ParameterServer/Restore", handle_restore},
    {"/pstrain.ParameterServer/Stats", handle_stats},
    {"/pstrain.ParameterServer/Shutdown", handle_shutdown},
};
const size_t ps_service_nmethods = PS_ARRAY_LEN(ps_service_methods);

const rpc_msg_method_t ps_service_msg_methods[] = {
    {"/pstrain.ParameterServer/Push", handle_push},
};
const size_t ps_service_n_msg_methods = PS_ARRAY_LEN(ps_service_msg_methods);

/* Pulls that waited past the cap are answered DEADLINE_EXCEEDED: a caller
 * that sent no deadline (or a far one) and a step that never comes must not
 * hold the call for ever. */
static void expire_waits(ps_service_t *s) {
    double now = ps_now();
    size_t kept = 0;
    for (size_t i = 0; i < s->nwaits; i++) {
        ps_wait_t *w = &s->waits[i];
        if (now - w->since < s->max_wait_s) {
            s->waits[kept++] = *w;
            continue;
        }
        char msg[160];
        snprintf(msg, sizeof msg, "pull: step %llu not reached within %.0f s (rpc.deadline_secs)",
                 (unsigned long long)w->min_step, s->max_wait_s);
        rpc_call_reply(w->call, RPC_DEADLINE_EXCEEDED, msg, NULL, 0);
    }
    s->nwaits = kept;
}

void ps_service_on_tick(void *ctx) {
    ps_service_t *s = ctx;
    if (s->max_wait_s > 0)
        expire_waits(s);
    if (s->ssp && s->nwaits)
        wake_waits(s);
    if (!s->shard.sync)
        return;
    uint32_t live = atomic_load(&s->live_workers);
    size_t want = s->configured_replicas;
    if (live > 0 && live < want)
        want = live;
    if (want == s->shard.replicas)
        return;
    log_info("sync: averaging %zu pushes per step (was %zu; %u workers alive)", want,
             s->shard.replicas, live);
    uint64_t before = ps_shard_step(&s->shard);
    ps_shard_set_replicas(&s->shard, want);
    if (ps_shard_step(&s->shard) != before)
        wake_waits(s);
}

void ps_service_on_cancel(void *ctx, rpc_call_t *call) {
    ps_service_t *s = ctx;
    for (size_t i = 0; i < s->nwaits; i++) {
        if (s->waits[i].call != call)
            continue;
        s->waits[i] = s->waits[--s->nwaits];
        break;
    }
    rpc_call_reply(call, RPC_CANCELLED, "cancelled", NULL, 0);
}

void ps_service_release_waits(ps_service_t *s) {
    for (size_t i = 0; i < s->nwaits; i++)
        answer_wait(s, &s->waits[i]);
    s->nwaits = 0;
}

/* The parameter server's RPC service: Pull, Push, Save, Restore, Stats and
 * Shutdown on top
 * of its shard, with sync-mode pulls that wait (long-poll) for their step
 * and ssp-mode pulls that wait for the slowest worker. */
#ifndef PSTRAIN_PS_SERVICE_H
#define PSTRAIN_PS_SERVICE_H

#include <stdatomic.h>
#include <stdbool.h>

#include "common/rpc/msg.h"
#include "common/rpc/rpc.h"
#include "ps/pull.h"
#include "ps/shard.h"
#include "ps/ssp.h"

typedef struct {
    rpc_call_t *call;
    uint64_t min_step;
    double since;             /* ps_now() when it began to wait */
    bool ssp;                 /* held by the staleness bound, not for a step */
    uint32_t worker;          /* ssp: the worker that pulls */
    Pstrain__WireDtype dtype; /* what the caller reads (PullRequest.wire_dtype) */
} ps_wait_t;

typedef struct {
    ps_shard_t shard;
    uint64_t incarnation;
    ps_wait_t *waits; /* sync pulls waiting for their step */
    size_t nwaits, capwaits;
    rpc_buf_t pack;        /* reused for every small response */
    msg_arena_t arena;     /* requests unpack into it */
    ps_push_t push;        /* pushes decode into it */
    ps_pull_t pull;        /* answers to pulls encode into it */
    atomic_bool shutdown;  /* the master said training is over */
    uint64_t bad_requests; /* answered INVALID_ARGUMENT */
    const char *model_dir; /* where Save writes and Restore reads checkpoints */
    int nps;               /* PS in the cluster (names the checkpoint files) */
    uint64_t lineage;      /* see StatsResponse.lineage */
    uint64_t adopted_from; /* the lineage before an adoption (same model); 0: none */
    uint64_t origin_step;  /* the checkpoint step it started from or was restored to */
    /* Back to the weights a run starts with (Restore with initial set). */
    int (*reset)(void *arg, char *err, size_t errlen);
    void *reset_arg;
    /* Sync: pushes to average per step as the master counts live workers;
     * 0 = as configured. Set by any thread, applied on the server's tick. */
    _Atomic uint32_t live_workers;
    size_t configured_replicas;
    /* Seconds a pull may wait for its step, whatever deadline its caller
     * sent (none: for ever); then it is answered DEADLINE_EXCEEDED on the
     * server's tick. 0 = no cap. */
    double max_wait_s;
    /* train.mode ssp: the workers' clocks (ps/ssp.h); NULL in other modes.
     * The service owns it once set. */
    ps_ssp_t *ssp;
    uint64_t ssp_held; /* pulls held by the staleness bound */
} ps_service_t;

/* A service over an initialised shard (ps_shard_init) that it then owns. */
void ps_service_init(ps_service_t *s, uint64_t incarnation);
void ps_service_free(ps_service_t *s);

/* The method tables for rpc_server_start (methods and msg_methods); ctx is
 * the ps_service_t. */
extern const rpc_method_t ps_service_methods[];
extern const size_t ps_service_nmethods;
extern const rpc_msg_method_t ps_service_msg_methods[];
extern const size_t ps_service_n_msg_methods;
/* on_tick for the server: applies the master's count of live workers, and
 * answers pulls the staleness bound held for a worker that has since died. */
void ps_service_on_tick(void *ctx);
/* on_cancel for the server: releases a waiting pull whose client left. */
void ps_service_on_cancel(void *ctx, rpc_call_t *call);
/* Answers every waiting pull (with the current weights): shutting down. */
void ps_service_release_waits(ps_service_t *s);

#endif

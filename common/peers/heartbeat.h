/* A role's link to the master: a thread that registers, then beats every
 * cluster.heartbeat_secs with the role's progress, and learns from the
 * answers whether training is done. An unreachable master is retried quietly
 * (a warning the first time): training never waits for it. */
#ifndef PSTRAIN_HEARTBEAT_H
#define PSTRAIN_HEARTBEAT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/rpc/rpc.h"

typedef struct heartbeat heartbeat_t;

typedef struct {
    const char *role; /* "ps" or "worker" */
    int index;
    uint64_t incarnation;
    const char *address; /* this role's own address (a worker's is informative) */
    double interval_s;
    double deadline_s;
    rpc_channel_t *master;
} heartbeat_opts_t;

/* Progress the beats carry; the owner updates it at will. */
typedef struct {
    _Atomic uint64_t step;
    _Atomic uint64_t examples;
    _Atomic double loss, accuracy;
} heartbeat_progress_t;

heartbeat_t *heartbeat_start(const heartbeat_opts_t *o, heartbeat_progress_t *progress);
/* True once the master has said training is over. */
bool heartbeat_done(const heartbeat_t *h);
/* The master's global step in its last answer (0 before one). */
uint64_t heartbeat_global_step(const heartbeat_t *h);
/* Live workers in the master's last answer (0 before one). */
uint32_t heartbeat_live_workers(const heartbeat_t *h);
/* Stops the thread (at most one beat's deadline later) and frees it. */
void heartbeat_stop(heartbeat_t *h);

#endif

/* Backoff between attempts, shared by every retry loop (rpc_call_retry here,
 * psclient's fan-out above): sleeps that grow from policy.initial_s by
 * policy.multiplier up to policy.max_s, each scaled by a random factor in
 * [1 - jitter, 1 + jitter] so that many clients do not retry in step; a
 * sleep that ends early when the policy's stop flag is raised, so that a
 * signal is never kept waiting; and the policy's limits on attempts and
 * time. rpc_retry_t and rpc_call_retry are declared in rpc.h. */
#ifndef PSTRAIN_RPC_RETRY_H
#define PSTRAIN_RPC_RETRY_H

#include <stdbool.h>

#include "common/rpc/rpc.h"

/* One retry loop's state; the caller owns it, no allocation. */
typedef struct {
    rpc_retry_t policy;
    double start; /* ps_now() at init */
    double wait;  /* the next sleep before jitter */
    int attempts; /* attempts counted so far */
} rpc_backoff_t;

/* Starts a loop under policy (NULL: rpc_retry_default()). */
void rpc_backoff_init(rpc_backoff_t *b, const rpc_retry_t *policy);
/* Counts one attempt made. */
void rpc_backoff_attempt(rpc_backoff_t *b);
/* The next sleep, jittered, and grows the one after it (capped at max_s). */
double rpc_backoff_next(rpc_backoff_t *b);
/* True when another attempt after sleeping sleep_s would break the policy's
 * limit on attempts or on total time. */
bool rpc_backoff_exhausted(const rpc_backoff_t *b, double sleep_s);
/* True once the policy's stop flag is raised. */
bool rpc_backoff_stopped(const rpc_backoff_t *b);
/* Sleeps seconds, waking within 50 ms of the stop flag being raised;
 * returns rpc_backoff_stopped afterwards. */
bool rpc_backoff_sleep(const rpc_backoff_t *b, double seconds);
/* Seconds since init. */
double rpc_backoff_elapsed(const rpc_backoff_t *b);

#endif

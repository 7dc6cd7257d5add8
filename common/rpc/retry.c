/* Backoff between attempts, and rpc_call_retry built on it. */
#include "common/rpc/retry.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/util.h"

rpc_retry_t rpc_retry_default(void) {
    rpc_retry_t p;
    memset(&p, 0, sizeof p);
    p.initial_s = 0.05;
    p.max_s = 2.0;
    p.multiplier = 2.0;
    p.jitter = 0.2;
    p.max_attempts = 10;
    return p;
}

/* Uniform in [0, 1), per thread; only spreads retries apart, so any seed does. */
static double uniform01(void) {
    static _Thread_local uint64_t state;
    if (state == 0)
        state = ((uint64_t)getpid() << 32) ^ (uint64_t)(ps_now() * 1e9) ^ (uintptr_t)&state;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) / 9007199254740992.0;
}

void rpc_backoff_init(rpc_backoff_t *b, const rpc_retry_t *policy) {
    b->policy = policy ? *policy : rpc_retry_default();
    b->start = ps_now();
    b->wait = b->policy.initial_s;
    b->attempts = 0;
}

void rpc_backoff_attempt(rpc_backoff_t *b) {
    b->attempts++;
}

double rpc_backoff_next(rpc_backoff_t *b) {
    double sleep_s = b->wait * (1.0 + b->policy.jitter * (2.0 * uniform01() - 1.0));
    b->wait = PS_MIN(b->wait * b->policy.multiplier, b->policy.max_s);
    return sleep_s;
}

bool rpc_backoff_exhausted(const rpc_backoff_t *b, double sleep_s) {
    const rpc_retry_t *p = &b->policy;
    bool out_of_attempts = p->max_attempts > 0 && b->attempts >= p->max_attempts;
    bool out_of_time = p->max_total_s > 0 && rpc_backoff_elapsed(b) + sleep_s > p->max_total_s;
    return out_of_attempts || out_of_time;
}

bool rpc_backoff_stopped(const rpc_backoff_t *b) {
    return b->policy.stop && *b->policy.stop;
}

/* Short naps rather than one sleep: a signal handler only raises the flag,
 * and the nap it lands in is all it waits. */
bool rpc_backoff_sleep(const rpc_backoff_t *b, double seconds) {
    double until = ps_now() + seconds;
    for (double left = seconds; left > 0 && !rpc_backoff_stopped(b); left = until - ps_now()) {
        double step = PS_MIN(left, 0.05);
        struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
        nanosleep(&ts, NULL);
    }
    return rpc_backoff_stopped(b);
}

double rpc_backoff_elapsed(const rpc_backoff_t *b) {
    return ps_now() - b->start;
}

/* The deadline of the next attempt: deadline_s, cut to what is left of the
 * policy's time so that no attempt outlives it; *clipped says it was cut. */
static double attempt_deadline(const rpc_backoff_t *b, double deadline_s, bool *clipped) {
    *clipped = false;
    if (b->policy.max_total_s <= 0)
        return deadline_s;
    double left = PS_MAX(b->policy.max_total_s - rpc_backoff_elapsed(b), 1e-3);
    *clipped = deadline_s <= 0 || left < deadline_s;
    return *clipped ? left : deadline_s;
}

/* Tries until the call ends other than UNAVAILABLE or the policy gives up;
 * last holds the error that stands. */
static int call_until_done(rpc_backoff_t *b, rpc_channel_t *ch, const char *method, const void *req,
                           size_t len, double deadline_s, rpc_buf_t *resp, char *last,
                           size_t lastlen) {
    for (;;) {
        rpc_backoff_attempt(b);
        bool clipped;
        double dl = attempt_deadline(b, deadline_s, &clipped);
        char prev[PS_ERRLEN];
        snprintf(prev, sizeof prev, "%s", last);
        int code = rpc_call(ch, method, req, len, dl, resp, last, lastlen);
        if (code == RPC_DEADLINE_EXCEEDED && clipped && b->attempts > 1) {
            /* The policy's time ran out while this attempt was still
             * connecting: what stands is the earlier attempts' answer. */
            snprintf(last, lastlen, "%s", prev);
            return RPC_UNAVAILABLE;
        }
        if (code != RPC_UNAVAILABLE)
            return code;
        double sleep_s = rpc_backoff_next(b);
        if (rpc_backoff_exhausted(b, sleep_s) || rpc_backoff_stopped(b))
            return code;
        if (b->policy.on_retry)
            b->policy.on_retry(b->policy.arg, b->attempts, sleep_s, last);
        if (rpc_backoff_sleep(b, sleep_s))
            return code;
    }
}

int rpc_call_retry(rpc_channel_t *ch, const char *method, const void *req, size_t len,
                   double deadline_s, const rpc_retry_t *policy, rpc_buf_t *resp, char *err,
                   size_t errlen) {
    rpc_backoff_t b;
    rpc_backoff_init(&b, policy);
    char last[PS_ERRLEN] = "";
    int code = call_until_done(&b, ch, method, req, len, deadline_s, resp, last, sizeof last);
    if (code == RPC_OK)
        return code;
    if (code == RPC_UNAVAILABLE)
        ps_errf(err, errlen, "%s (gave up after %d attempt%s in %.2f s%s)", last, b.attempts,
                b.attempts == 1 ? "" : "s", rpc_backoff_elapsed(&b),
                rpc_backoff_stopped(&b) ? ", stopping" : "");
    else
        ps_errf(err, errlen, "%s", last);
    return code;
}

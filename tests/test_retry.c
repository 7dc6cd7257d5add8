/* The backoff every retry loop uses (common/rpc/retry.c): its sleeps grow
 * to the cap, its jitter stays in bounds, it runs out of attempts and time
 * as the policy says, and its sleep ends when the stop flag is raised. */
#include "test.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "common/rpc/retry.h"

static rpc_retry_t policy(double jitter) {
    rpc_retry_t p = rpc_retry_default();
    p.initial_s = 0.1;
    p.multiplier = 3.0;
    p.max_s = 0.5;
    p.jitter = jitter;
    p.max_attempts = 0;
    return p;
}

void test_rpc_backoff_grows_to_cap(void) {
    rpc_retry_t p = policy(0.0);
    rpc_backoff_t b;
    rpc_backoff_init(&b, &p);
    const double want[] = {0.1, 0.3, 0.5, 0.5, 0.5};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_NEAR(rpc_backoff_next(&b), want[i], 1e-12);
    /* NULL: the default policy, 50 ms first. */
    rpc_backoff_init(&b, NULL);
    CHECK_INT_EQ(b.policy.max_attempts, 10);
    CHECK(rpc_backoff_next(&b) >= 0.05 * 0.8 && rpc_backoff_next(&b) <= 0.1 * 1.2);
}

/* Every jittered sleep lies in [1 - jitter, 1 + jitter] times its step, and
 * the jitter does vary them. */
void test_rpc_backoff_jitter_bounds(void) {
    rpc_retry_t p = policy(0.25);
    p.max_s = p.initial_s; /* every step the same, so each sleep is comparable */
    rpc_backoff_t b;
    rpc_backoff_init(&b, &p);
    double lo = 1e9, hi = 0;
    for (int i = 0; i < 1000; i++) {
        double s = rpc_backoff_next(&b);
        lo = s < lo ? s : lo;
        hi = s > hi ? s : hi;
    }
    CHECK(lo >= 0.1 * 0.75);
    CHECK(hi <= 0.1 * 1.25);
    CHECK(hi - lo > 0.01);
}

void test_rpc_backoff_limits(void) {
    rpc_retry_t p = policy(0.0);
    p.max_attempts = 3;
    rpc_backoff_t b;
    rpc_backoff_init(&b, &p);
    for (int i = 0; i < 2; i++) {
        rpc_backoff_attempt(&b);
        CHECK(!rpc_backoff_exhausted(&b, 0.0));
    }
    rpc_backoff_attempt(&b);
    CHECK(rpc_backoff_exhausted(&b, 0.0));
    /* Time: a sleep that would end past max_total_s is one too many. */
    p.max_attempts = 0;
    p.max_total_s = 100.0;
    rpc_backoff_init(&b, &p);
    rpc_backoff_attempt(&b);
    CHECK(!rpc_backoff_exhausted(&b, 1.0));
    CHECK(rpc_backoff_exhausted(&b, 200.0));
    /* No limits: never exhausted. */
    p.max_total_s = 0;
    rpc_backoff_init(&b, &p);
    for (int i = 0; i < 100; i++)
        rpc_backoff_attempt(&b);
    CHECK(!rpc_backoff_exhausted(&b, 1e6));
}

static volatile sig_atomic_t raised;

static void on_usr1(int sig) {
    raised = 1;
}

/* The flag is raised the way a daemon's is: by a signal handler on the
 * sleeping thread (a plain write from another thread would be a data race,
 * which the TSan build reports). */
static void *raise_flag(void *arg) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    pthread_kill(*(pthread_t *)arg, SIGUSR1);
    return NULL;
}

/* A sleep of an hour returns once the flag is raised (were it not cut
 * short, the test would hit its timeout), and says it was stopped. */
void test_rpc_backoff_sleep_stops(void) {
    rpc_retry_t p = policy(0.0);
    p.stop = &raised;
    rpc_backoff_t b;
    rpc_backoff_init(&b, &p);
    CHECK(!rpc_backoff_stopped(&b));
    CHECK(!rpc_backoff_sleep(&b, 0.001));
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    CHECK(sigaction(SIGUSR1, &sa, &old) == 0);
    pthread_t t, self = pthread_self();
    CHECK(pthread_create(&t, NULL, raise_flag, &self) == 0);
    bool stopped = rpc_backoff_sleep(&b, 3600.0);
    pthread_join(t, NULL);
    sigaction(SIGUSR1, &old, NULL);
    CHECK(stopped);
    CHECK(rpc_backoff_stopped(&b));
}

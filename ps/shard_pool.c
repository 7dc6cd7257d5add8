#include "ps/shard_pool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

/* Ranges start at multiples of this many values (64 bytes of floats: a
 * cache line each side of a boundary belongs to one thread). */
#define POOL_ALIGN 16

struct ps_pool {
    int threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t gen; /* runs handed out; a thread runs each once */
    int pending;  /* ranges of the current run not yet done */
    int stop;
    /* The current run. */
    ps_pool_fn fn;
    void *ctx;
    size_t n, step;
    int ranges;
};

typedef struct {
    ps_pool_t *p;
    int slot;
} pool_arg_t;

/* Range `slot` of the current run, if it has one. */
static void run_range(ps_pool_t *p, int slot) {
    size_t begin = (size_t)slot * p->step;
    size_t end = PS_MIN(p->n, begin + p->step);
    if (slot < p->ranges && begin < end)
        p->fn(p->ctx, begin, end, slot);
}

static void *pool_main(void *arg) {
    pool_arg_t a = *(pool_arg_t *)arg;
    free(arg);
    ps_pool_t *p = a.p;
    uint64_t seen = 0;
    char name[16]; /* for top -H and per-thread CPU figures */
    snprintf(name, sizeof name, "ps-apply%d", a.slot);
    pthread_setname_np(pthread_self(), name);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->stop)
            pthread_cond_wait(&p->go, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        pthread_mutex_unlock(&p->mu);
        run_range(p, a.slot);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

ps_pool_t *ps_pool_new(int threads) {
    if (threads <= 1)
        return NULL;
    ps_pool_t *p = xcalloc(1, sizeof *p);
    p->threads = threads;
    p->tids = xcalloc((size_t)threads, sizeof *p->tids);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < threads; i++) {
        pool_arg_t *a = xmalloc(sizeof *a);
        *a = (pool_arg_t){p, i};
        int rc = pthread_create(&p->tids[i], NULL, pool_main, a);
        if (rc != 0) {
            fprintf(stderr, "ps: cannot start an apply thread: %s\n", strerror(rc));
            abort();
        }
    }
    return p;
}

void ps_pool_free(ps_pool_t *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads; i++)
        pthread_join(p->tids[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    free(p->tids);
    free(p);
}

int ps_pool_threads(const ps_pool_t *p) {
    return p ? p->threads : 1;
}

void ps_pool_run(ps_pool_t *p, size_t n, size_t grain, ps_pool_fn fn, void *ctx) {
    size_t ranges = grain ? n / PS_MAX(grain, (size_t)1) : n;
    ranges = PS_MIN(ranges, (size_t)ps_pool_threads(p));
    if (ranges <= 1) {
        if (n)
            fn(ctx, 0, n, 0);
        return;
    }
    size_t step = (n + ranges - 1) / ranges;
    step = (step + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->step = step;
    p->ranges = (int)ranges;
    p->pending = p->threads - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    run_range(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* A small pool of threads that a shard owns to split one large dense
 * tensor's work (finite check, optimizer apply) into ranges: the caller
 * runs the first range itself and waits for the others. Element-wise work
 * only, so the split result is the serial one bit for bit. One caller at a
 * time (the shard is single-threaded). */
#ifndef PSTRAIN_PS_SHARD_POOL_H
#define PSTRAIN_PS_SHARD_POOL_H

#include <stddef.h>

typedef struct ps_pool ps_pool_t;

/* Runs on values [begin, end) of the work; slot is the range's thread,
 * 0 (the caller) to threads - 1: an index for per-thread scratch. */
typedef void (*ps_pool_fn)(void *ctx, size_t begin, size_t end, int slot);

/* A pool of `threads` threads counting the caller (threads - 1 started);
 * NULL when threads <= 1 (ps_pool_run then runs serially). Aborts when a
 * thread cannot start, as an allocation failure does. */
ps_pool_t *ps_pool_new(int threads);
void ps_pool_free(ps_pool_t *p);
/* The threads counting the caller: 1 for NULL. */
int ps_pool_threads(const ps_pool_t *p);

/* Calls fn on ranges covering [0, n), at most one per thread, none
 * smaller than `grain` values but the last, each starting at a multiple
 * of 16; returns when all have run. */
void ps_pool_run(ps_pool_t *p, size_t n, size_t grain, ps_pool_fn fn, void *ctx);

#endif

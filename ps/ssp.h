/* Bounded staleness (train.mode=ssp, the Stale Synchronous Parallel model):
 * a worker may run at most `staleness` steps ahead of the slowest live
 * worker. Each PS keeps every worker's clock (its full pushes) and holds a
 * pull of a worker that is too far ahead until the slowest catches up.
 * A worker counts as live once it has pushed and until nothing was heard of
 * it (a push, a pull, a pull still held) for `dead_after` seconds
 * (cluster.dead_after_secs, the master's rule for a missed heartbeat), so a
 * dead worker holds the others back only that long.
 * A worker that comes back (a new incarnation) joins at the slowest live
 * worker's clock. Single-threaded, like the shard: the server serialises
 * calls. Times are ps_now()'s clock, passed in so that tests can set them. */
#ifndef PSTRAIN_PS_SSP_H
#define PSTRAIN_PS_SSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t nworkers;
    uint64_t staleness;
    double dead_after;
    uint64_t *clock;       /* [nworkers] full pushes, counted from the join */
    uint64_t *incarnation; /* [nworkers] of the last push; 0 = never pushed */
    double *last_seen;     /* [nworkers] its last push or pull */
} ps_ssp_t;

void ps_ssp_init(ps_ssp_t *p, size_t nworkers, uint64_t staleness, double dead_after);
void ps_ssp_free(ps_ssp_t *p);

/* Worker w (< nworkers) of incarnation inc made a full push at `now`. */
void ps_ssp_pushed(ps_ssp_t *p, size_t w, uint64_t inc, double now);

/* A sign of life of worker w at `now` other than a push: a pull arrived or
 * is still held. */
void ps_ssp_seen(ps_ssp_t *p, size_t w, double now);

/* Whether worker w may pull at `now`: it has not pushed yet, or its clock is
 * at most staleness past the smallest clock of the live workers. */
bool ps_ssp_may_pull(const ps_ssp_t *p, size_t w, double now);

#endif

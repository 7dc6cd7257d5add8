#include "ps/ssp.h"

#include <stdlib.h>

#include "common/base/util.h"

void ps_ssp_init(ps_ssp_t *p, size_t nworkers, uint64_t staleness, double dead_after) {
    p->nworkers = nworkers;
    p->staleness = staleness;
    p->dead_after = dead_after;
    p->clock = xcalloc(nworkers ? nworkers : 1, sizeof *p->clock);
    p->incarnation = xcalloc(nworkers ? nworkers : 1, sizeof *p->incarnation);
    p->last_seen = xcalloc(nworkers ? nworkers : 1, sizeof *p->last_seen);
}

void ps_ssp_free(ps_ssp_t *p) {
    free(p->clock);
    free(p->incarnation);
    free(p->last_seen);
}

static bool live(const ps_ssp_t *p, size_t w, double now) {
    return p->incarnation[w] != 0 && now - p->last_seen[w] < p->dead_after;
}

/* The smallest clock of the live workers but `except`; UINT64_MAX if none. */
static uint64_t slowest(const ps_ssp_t *p, size_t except, double now) {
    uint64_t min = UINT64_MAX;
    for (size_t i = 0; i < p->nworkers; i++)
        if (i != except && live(p, i, now) && p->clock[i] < min)
            min = p->clock[i];
    return min;
}

void ps_ssp_pushed(ps_ssp_t *p, size_t w, uint64_t inc, double now) {
    if (w >= p->nworkers)
        return;
    if (p->incarnation[w] != inc) {
        /* A worker that (re)joins starts level with the slowest live one, so
         * that it neither holds the others back nor runs ahead of them. */
        uint64_t min = slowest(p, w, now);
        p->clock[w] = min == UINT64_MAX ? 0 : min;
        p->incarnation[w] = inc;
    }
    p->clock[w]++;
    p->last_seen[w] = now;
}

void ps_ssp_seen(ps_ssp_t *p, size_t w, double now) {
    if (w < p->nworkers)
        p->last_seen[w] = now;
}

bool ps_ssp_may_pull(const ps_ssp_t *p, size_t w, double now) {
    if (w >= p->nworkers || p->incarnation[w] == 0)
        return true;
    uint64_t min = slowest(p, w, now);
    return min == UINT64_MAX || p->clock[w] <= min + p->staleness;
}

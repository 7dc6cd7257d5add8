/* Keeping the model consistent when a PS restarts, and acting on stalls.
 * Each PS reports a lineage: a new one whenever it starts (restoring the
 * latest checkpoint by itself), the master's when the master restores it.
 * When the PS disagree (one restarted, or they started on their own), the
 * master rolls every PS back to the latest checkpoint (or to the initial
 * weights before the first) under one new lineage, so they hold one model
 * again. When the global step does not move for cluster.stall_secs it logs
 * that loudly and does the same. */
#ifndef PSTRAIN_MASTER_RECOVERY_H
#define PSTRAIN_MASTER_RECOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/daemon/config.h"
#include "common/peers/psclient.h"

typedef struct {
    psclient_t *ps;
    const config_t *cfg;
    psclient_stats_t *stats; /* one per PS */
    double last_check;
    double last_progress; /* ps_now() when the global step last rose */
    uint64_t last_step;
    uint64_t rollbacks;
    bool adopted; /* the PS have shared one lineage since the master first saw them */
} recovery_t;

void recovery_init(recovery_t *rv, psclient_t *ps, const config_t *cfg);
void recovery_free(recovery_t *rv);
/* Called by the master's loop with ps 0's step (-1: unreachable). */
void recovery_tick(recovery_t *rv, int64_t step);
/* Restores every PS from the latest checkpoint under a new lineage; 0 when
 * all did. */
int recovery_rollback(recovery_t *rv, const char *why);

#endif

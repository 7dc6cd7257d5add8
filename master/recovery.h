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

#include "common/base/util.h"
#include "common/daemon/config.h"
#include "common/peers/psclient.h"
#include "master/checkpointer.h"

typedef struct {
    psclient_t *ps;
    const config_t *cfg;
    psclient_stats_t *stats; /* one per PS */
    double last_check;
    double last_progress; /* ps_now() when the global step last rose */
    uint64_t last_step;
    uint64_t rollbacks;
    bool adopted;         /* the PS have shared one lineage since the master first saw them */
    checkpointer_t *ckpt; /* may be NULL: follows the checkpoint a rollback restores */
    unsigned refusals;    /* rollbacks a PS refused (FAILED_PRECONDITION) in a row */
    bool fatal;           /* no checkpoint verifies, or the PS keep refusing: give up */
    char fatal_err[PS_ERRLEN + 128];
} recovery_t;

/* What the PS's lineages call for. */
typedef enum {
    RECOVERY_NONE,    /* they agree (or a PS did not answer: wait for it) */
    RECOVERY_ADOPT,   /* first sight, each its own lineage from one starting point */
    RECOVERY_ROLLBACK /* they hold different histories: roll every PS back */
} recovery_action_t;

/* The decision on n PS's stats (n >= 1), given whether they have shared
 * one lineage since the master first saw them; *odd is the first PS whose
 * lineage differs from ps 0's, or -1. A plain function: no RPC. */
recovery_action_t recovery_decide(const psclient_stats_t *stats, size_t n, bool adopted, long *odd);
/* Whether the global step has stood still for cluster.stall_secs at now,
 * after recovery_tick noted the steps (0 turns the check off). */
bool recovery_stalled(const recovery_t *rv, double now);
/* Notes ps 0's step at now: progress when it moved. */
void recovery_note_step(recovery_t *rv, int64_t step, double now);

void recovery_init(recovery_t *rv, psclient_t *ps, const config_t *cfg);
void recovery_free(recovery_t *rv);
/* Called by the master's loop with ps 0's step (-1: unreachable). */
void recovery_tick(recovery_t *rv, int64_t step);
/* Restores every PS from the newest checkpoint that verifies (dropping newer
 * damaged ones from the manifest) under a new lineage; 0 when all did. When
 * no checkpoint verifies, or a PS refused the restore 10 times in a row,
 * sets fatal and fatal_err: the master gives up. */
int recovery_rollback(recovery_t *rv, const char *why);

#endif

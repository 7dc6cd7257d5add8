#include "recovery.h"

#include <stdlib.h>
#include <string.h>

#include "common/train/checkpoint.h"
#include "master/checkpointer.h"
#include "common/base/log.h"
#include "common/base/util.h"

/* How often the master compares the PS's lineages. */
#define RECOVERY_CHECK_S 0.25

void recovery_init(recovery_t *rv, psclient_t *ps, const config_t *cfg) {
    memset(rv, 0, sizeof *rv);
    rv->ps = ps;
    rv->cfg = cfg;
    rv->stats = xcalloc(psclient_nps(ps), sizeof *rv->stats);
    rv->last_progress = ps_now();
}

void recovery_free(recovery_t *rv) {
    free(rv->stats);
}

/* The checkpoint a rollback restores: the newest that verifies (0 and
 * *step), none yet (1), or none that verifies (CKPT_ECORRUPT: fatal). */
static int rollback_target(recovery_t *rv, uint64_t *step, char *err, size_t errlen) {
    int rc = checkpointer_newest_good(rv->cfg, step, err, errlen);
    if (rc == CKPT_ECORRUPT) {
        rv->fatal = true;
        snprintf(rv->fatal_err, sizeof rv->fatal_err, "%s", err);
    }
    return rc;
}

/* A PS that refuses, again and again, to restore a checkpoint the master
 * verified (its config does not fit the checkpoint, or it cannot read the
 * files) will not change its mind: after RECOVERY_MAX_REFUSALS refusals in
 * a row the master gives up rather than roll back for ever. */
#define RECOVERY_MAX_REFUSALS 10

static void note_refusal(recovery_t *rv, bool refused, uint64_t step, const char *err) {
    if (!refused)
        return;
    if (++rv->refusals < RECOVERY_MAX_REFUSALS)
        return;
    rv->fatal = true;
    snprintf(rv->fatal_err, sizeof rv->fatal_err,
             "a PS refused to restore ckpt-%llu %d times in a row: %s", (unsigned long long)step,
             RECOVERY_MAX_REFUSALS, err);
}

int recovery_rollback(recovery_t *rv, const char *why) {
    char err[PS_ERRLEN];
    uint64_t step = 0;
    int rc = rollback_target(rv, &step, err, sizeof err);
    if (rc < 0) {
        log_error("cannot roll back (%s): %s", why, err);
        return -1;
    }
    bool initial = rc == 1;
    uint64_t lineage = (uint64_t)(ps_wall_now() * 1e6);
    double t0 = ps_now();
    rc = psclient_restore(rv->ps, step, lineage,
                          initial ? PSCLIENT_RESTORE_INITIAL : PSCLIENT_RESTORE_CKPT,
                          rv->cfg->rpc.deadline_secs, err, sizeof err);
    if (rc) {
        log_error("rollback (%s) failed, trying again: %s", why, err);
        note_refusal(rv, rc == PSCLIENT_RESTORE_REFUSED, step, err);
        return -1;
    }
    rv->refusals = 0;
    rv->rollbacks++;
    rv->adopted = true;
    rv->last_progress = ps_now();
    /* The next checkpoint follows the one restored (a newer one may have
     * been dropped as damaged). */
    if (rv->ckpt && !initial)
        rv->ckpt->last_step = step;
    if (initial)
        log_warn("%s: every PS is back at the initial weights (no checkpoint yet), in %.0f ms", why,
                 1e3 * (ps_now() - t0));
    else
        log_warn("%s: every PS rolled back to ckpt-%llu in %.0f ms", why, (unsigned long long)step,
                 1e3 * (ps_now() - t0));
    return 0;
}

recovery_action_t recovery_decide(const psclient_stats_t *stats, size_t n, bool adopted,
                                  long *odd) {
    *odd = -1;
    for (size_t i = 1; i < n && *odd < 0; i++)
        if (stats[i].lineage != stats[0].lineage)
            *odd = (long)i;
    if (*odd < 0)
        return RECOVERY_NONE;
    if (adopted)
        return RECOVERY_ROLLBACK;
    /* The first time the master sees every PS: PS that all started from the
     * same point (one checkpoint, or the initializer) hold one model although
     * each took its own lineage; they adopt one instead of rolling back. */
    for (size_t i = 1; i < n; i++)
        if (stats[i].origin_step != stats[0].origin_step)
            return RECOVERY_ROLLBACK;
    return RECOVERY_ADOPT;
}

bool recovery_stalled(const recovery_t *rv, double now) {
    double stall = rv->cfg->cluster.stall_secs;
    return stall > 0 && now - rv->last_progress >= stall;
}

void recovery_note_step(recovery_t *rv, int64_t step, double now) {
    if (step >= 0 && (uint64_t)step != rv->last_step) {
        rv->last_step = (uint64_t)step;
        rv->last_progress = now;
    }
}

/* Gives the PS one lineage; on failure the next check tries again. */
static void adopt(recovery_t *rv) {
    char err[PS_ERRLEN];
    uint64_t lineage = (uint64_t)(ps_wall_now() * 1e6);
    if (psclient_restore(rv->ps, 0, lineage, PSCLIENT_ADOPT, rv->cfg->rpc.deadline_secs, err,
                         sizeof err)) {
        log_warn("cannot give the PS one lineage yet: %s", err);
        return;
    }
    rv->adopted = true;
}

/* Asks every PS for its lineage and acts on recovery_decide; true when it
 * tried a rollback. */
static bool check_lineages(recovery_t *rv) {
    if (psclient_stats(rv->ps, 1.0, rv->stats))
        return false; /* one is down: wait for it, it will restore itself and register */
    long odd;
    switch (recovery_decide(rv->stats, psclient_nps(rv->ps), rv->adopted, &odd)) {
    case RECOVERY_NONE:
        rv->adopted = true;
        return false;
    case RECOVERY_ADOPT:
        adopt(rv);
        return false;
    case RECOVERY_ROLLBACK:
        break;
    }
    char why[160];
    snprintf(why, sizeof why,
             "ps%ld holds another history than ps0 (lineage %llu, from step %llu; ps0: "
             "step %llu)",
             odd, (unsigned long long)rv->stats[odd].lineage,
             (unsigned long long)rv->stats[odd].origin_step, (unsigned long long)rv->stats[0].step);
    recovery_rollback(rv, why);
    return true;
}

void recovery_tick(recovery_t *rv, int64_t step) {
    double now = ps_now();
    recovery_note_step(rv, step, now);
    if (now - rv->last_check >= RECOVERY_CHECK_S) {
        rv->last_check = now;
        if (check_lineages(rv))
            return;
    }
    if (recovery_stalled(rv, now)) {
        char why[160];
        snprintf(why, sizeof why, "STALL: the global step has not moved from %llu for %.0f s",
                 (unsigned long long)rv->last_step, now - rv->last_progress);
        log_error("%s", why);
        rv->last_progress = now; /* act once per stall period */
        recovery_rollback(rv, why);
    }
}

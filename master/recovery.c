#include "recovery.h"

#include <stdlib.h>
#include <string.h>

#include "common/train/checkpoint.h"
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

int recovery_rollback(recovery_t *rv, const char *why) {
    char err[PS_ERRLEN];
    const char *md = rv->cfg->checkpoint.model_dir;
    ckpt_manifest_t man;
    int mrc = ckpt_manifest_read(md, &man, err, sizeof err);
    if (mrc < 0) {
        log_error("cannot roll back (%s): %s", why, err);
        return -1;
    }
    bool initial = mrc == 1;
    uint64_t lineage = (uint64_t)(ps_wall_now() * 1e6);
    double t0 = ps_now();
    if (psclient_restore(rv->ps, initial ? 0 : man.latest, lineage,
                         initial ? PSCLIENT_RESTORE_INITIAL : PSCLIENT_RESTORE_CKPT,
                         rv->cfg->rpc.deadline_secs, err, sizeof err)) {
        log_error("rollback (%s) failed, trying again: %s", why, err);
        return -1;
    }
    rv->rollbacks++;
    rv->adopted = true;
    rv->last_progress = ps_now();
    if (initial)
        log_warn("%s: every PS is back at the initial weights (no checkpoint yet), in %.0f ms", why,
                 1e3 * (ps_now() - t0));
    else
        log_warn("%s: every PS rolled back to ckpt-%llu in %.0f ms", why,
                 (unsigned long long)man.latest, 1e3 * (ps_now() - t0));
    return 0;
}

/* The first time the master sees every PS: PS that all started from the
 * same point (one checkpoint, or the initializer) hold one model although
 * each took its own lineage; they adopt one instead of rolling back. */
static bool adopt(recovery_t *rv) {
    size_t n = psclient_nps(rv->ps);
    for (size_t i = 1; i < n; i++)
        if (rv->stats[i].origin_step != rv->stats[0].origin_step)
            return false;
    char err[PS_ERRLEN];
    uint64_t lineage = (uint64_t)(ps_wall_now() * 1e6);
    if (psclient_restore(rv->ps, 0, lineage, PSCLIENT_ADOPT, rv->cfg->rpc.deadline_secs, err,
                         sizeof err)) {
        log_warn("cannot give the PS one lineage yet: %s", err);
        return true; /* try again at the next check */
    }
    rv->adopted = true;
    return true;
}

/* The PS that disagrees with ps 0, or -1 when all agree (or one is down:
 * then wait for it, it will restore itself and register). */
static long odd_ps(recovery_t *rv) {
    if (psclient_stats(rv->ps, 1.0, rv->stats))
        return -1;
    long odd = -1;
    for (size_t i = 1; i < psclient_nps(rv->ps) && odd < 0; i++)
        if (rv->stats[i].lineage != rv->stats[0].lineage)
            odd = (long)i;
    if (!rv->adopted && (odd < 0 || adopt(rv))) {
        rv->adopted = odd < 0 ? true : rv->adopted;
        return -1;
    }
    return odd;
}

void recovery_tick(recovery_t *rv, int64_t step) {
    double now = ps_now();
    if (step >= 0 && (uint64_t)step != rv->last_step) {
        rv->last_step = (uint64_t)step;
        rv->last_progress = now;
    }
    if (now - rv->last_check >= RECOVERY_CHECK_S) {
        rv->last_check = now;
        long odd = odd_ps(rv);
        if (odd >= 0) {
            char why[160];
            snprintf(why, sizeof why,
                     "ps%ld holds another history than ps0 (lineage %llu, from step %llu; ps0: "
                     "step %llu)",
                     odd, (unsigned long long)rv->stats[odd].lineage,
                     (unsigned long long)rv->stats[odd].origin_step,
                     (unsigned long long)rv->stats[0].step);
            recovery_rollback(rv, why);
            return;
        }
    }
    double stall = rv->cfg->cluster.stall_secs;
    if (stall > 0 && now - rv->last_progress >= stall) {
        char why[160];
        snprintf(why, sizeof why, "STALL: the global step has not moved from %llu for %.0f s",
                 (unsigned long long)rv->last_step, now - rv->last_progress);
        log_error("%s", why);
        rv->last_progress = now; /* act once per stall period */
        recovery_rollback(rv, why);
    }
}

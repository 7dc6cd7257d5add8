#include "checkpointer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/train/checkpoint.h"
#include "common/base/log.h"
#include "common/base/util.h"

/* After a failed checkpoint (a PS down, the disk full), wait this long. */
#define CHECKPOINT_RETRY_S 2.0

int checkpointer_init(checkpointer_t *c, psclient_t *ps, const config_t *cfg, const model_t *m,
                      char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->ps = ps;
    c->cfg = cfg;
    c->model = m;
    c->last_time = ps_now();
    ckpt_manifest_t man;
    int rc = ckpt_manifest_read(cfg->checkpoint.model_dir, &man, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        c->last_step = man.latest;
        c->final = man.final;
    }
    return 0;
}

bool checkpointer_due(const checkpointer_t *c, uint64_t step, double now) {
    return now >= c->retry_after &&
           ckpt_due(c->cfg->checkpoint.every_steps, c->cfg->checkpoint.every_secs, step,
                    c->last_step, c->last_time, now);
}

bool checkpointer_training_over(const checkpointer_t *c, uint64_t target) {
    return c->final && c->last_step >= target;
}

int checkpointer_take(checkpointer_t *c, uint64_t step, bool final, char *err, size_t errlen) {
    const char *md = c->cfg->checkpoint.model_dir;
    char dir[PATH_MAX];
    ckpt_dir(dir, sizeof dir, md, step);
    double t0 = ps_now();
    c->last_time = t0;
    if (step == c->last_step && step > 0)
        /* Already safe (training ended right at a checkpoint, or a resumed
         * run that had nothing left to do): mark it final. */
        return ckpt_manifest_commit(md, step, (size_t)c->cfg->checkpoint.keep, final, NULL, err,
                                    errlen);
    /* A directory the manifest does not name is what a crash left: its
     * files may come from another number of PS. */
    ps_remove_flat_dir(dir);
    /* The files are read back and verified before the manifest names them,
     * with their lengths and CRC32Cs: every checkpoint committed verified
     * once, so the newest kept one, which pruning never removes, did. */
    ckpt_sums_t sums = {0};
    int rc =
        ps_mkdirs(dir, err, errlen) ||
        psclient_save(c->ps, step, c->cfg->rpc.deadline_secs, err, errlen) ||
        ckpt_write_model(dir, c->model, err, errlen) ||
        ckpt_verify(dir, NULL, &sums, NULL, err, errlen) ||
        ckpt_manifest_commit(md, step, (size_t)c->cfg->checkpoint.keep, final, &sums, err, errlen);
    ckpt_sums_free(&sums);
    if (rc) {
        c->retry_after = ps_now() + CHECKPOINT_RETRY_S;
        return -1;
    }
    c->last_step = step;
    log_info("checkpoint %s written by %zu PS in %.0f ms%s", dir, psclient_nps(c->ps),
             1e3 * (ps_now() - t0), final ? " (final)" : "");
    return 0;
}

typedef struct {
    const char *model_dir;
    uint64_t bad[CKPT_MAX_KEPT];
    size_t nbad;
} newest_t;

/* ckpt_try_fn: verifies one checkpoint against the manifest. */
static int try_verify(void *arg, const char *dir, uint64_t step, char *err, size_t errlen) {
    newest_t *n = arg;
    (void)dir;
    bool unchecked = false;
    int rc = ckpt_verify_step(n->model_dir, step, &unchecked, err, errlen);
    if (rc == 0 && unchecked)
        log_warn("ckpt-%llu has no checksums (written before pstrain kept them): only NaN and Inf "
                 "are checked",
                 (unsigned long long)step);
    return rc;
}

/* ckpt_bad_fn: one line naming the file and the tensor. */
static void note_bad(void *arg, uint64_t step, const char *why) {
    newest_t *n = arg;
    log_error("%s: ckpt-%llu does not verify", why, (unsigned long long)step);
    n->bad[n->nbad++] = step;
}

int checkpointer_newest_good(const config_t *cfg, uint64_t *step, char *err, size_t errlen) {
    newest_t n = {.model_dir = cfg->checkpoint.model_dir};
    ckpt_manifest_t man;
    int rc = ckpt_manifest_read(n.model_dir, &man, err, errlen);
    if (rc != 0)
        return rc;
    rc = ckpt_try_newest(n.model_dir, &man, try_verify, note_bad, &n, step, err, errlen);
    if (rc != 0)
        return rc;
    /* Only once one verifies: the manifest never loses its last checkpoint. */
    for (size_t i = 0; i < n.nbad; i++) {
        if (ckpt_manifest_drop(n.model_dir, n.bad[i], err, errlen))
            return -1;
        log_warn("ckpt-%llu dropped from the manifest; ckpt-%llu is the latest",
                 (unsigned long long)n.bad[i], (unsigned long long)*step);
    }
    return 0;
}

int checkpointer_verify(checkpointer_t *c, char *err, size_t errlen) {
    uint64_t step;
    int rc = checkpointer_newest_good(c->cfg, &step, err, errlen);
    if (rc == 1)
        return 0;
    if (rc != 0)
        return -1;
    if (step != c->last_step) {
        c->last_step = step;
        c->final = false;
    }
    return 0;
}

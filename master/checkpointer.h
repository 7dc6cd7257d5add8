/* When and how the master takes a checkpoint: every checkpoint.every_steps
 * global steps or checkpoint.every_secs seconds, and at the end. Every PS
 * writes its file of model_dir/ckpt-<step>/ (Save, all at once); the master
 * adds model.json and then, only once every file is safe, commits the
 * manifest, which keeps the newest checkpoint.keep. */
#ifndef PSTRAIN_MASTER_CHECKPOINTER_H
#define PSTRAIN_MASTER_CHECKPOINTER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/daemon/config.h"
#include "common/model/model.h"
#include "common/peers/psclient.h"

typedef struct {
    psclient_t *ps;
    const config_t *cfg;
    const model_t *model;
    uint64_t last_step; /* of the latest checkpoint; 0 before one */
    double last_time;   /* ps_now() of the last attempt */
    double retry_after; /* after a failure: no attempt before this ps_now() */
    bool final;         /* the manifest says training ended */
} checkpointer_t;

/* Starts from model_dir's manifest (a resumed run). -1 on a broken one. */
int checkpointer_init(checkpointer_t *c, psclient_t *ps, const config_t *cfg, const model_t *m,
                      char *err, size_t errlen);
bool checkpointer_due(const checkpointer_t *c, uint64_t step, double now);
/* A master restarted after the final checkpoint: the manifest says final
 * and its step reached target. */
bool checkpointer_training_over(const checkpointer_t *c, uint64_t target);
/* Takes ckpt-<step>; final marks the manifest as the end of training. The
 * files are read back and verified before the manifest names them. */
int checkpointer_take(checkpointer_t *c, uint64_t step, bool final, char *err, size_t errlen);
/* The newest checkpoint of cfg's model_dir that verifies: 0 and *step, after
 * logging one ERROR line for each newer one (naming the file and tensor) and
 * dropping those from the manifest; 1 when there is no checkpoint;
 * CKPT_ECORRUPT when none verifies (err says which file of the newest);
 * -1 on a broken manifest. */
int checkpointer_newest_good(const config_t *cfg, uint64_t *step, char *err, size_t errlen);
/* At the master's start: checkpointer_newest_good, and the checkpointer
 * follows the checkpoint found. -1 (err set) when none verifies. */
int checkpointer_verify(checkpointer_t *c, char *err, size_t errlen);

#endif

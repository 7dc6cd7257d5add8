/* Checkpoints: model_dir/ckpt-<step>/ holds one safetensors file per PS
 * (ps-<i>-of-<n>.safetensors) with the PS's partitions of every variable and
 * their optimizer slots, plus model.json; model_dir/checkpoint (JSON) names
 * the latest and the kept ones, and is rewritten only after every file of a
 * new checkpoint is safe on disk.
 *
 * A tensor is named after its variable ("dense/kernel") or its slot
 * ("dense/kernel/momentum"); a partition that is not the whole variable adds
 * "@<first row>" ("dense/kernel@4608"). Restore reads by name and row range,
 * so a checkpoint restores into any number of PS, and an export (one file,
 * whole variables, no slots) reads the same way for warm starts. */
#ifndef PSTRAIN_CHECKPOINT_H
#define PSTRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/train/store.h"

#define CKPT_MAX_KEPT 1000

/* The manifest, model_dir/checkpoint. */
typedef struct {
    uint64_t latest; /* step of the latest checkpoint */
    size_t nkept;    /* oldest first; the last is the latest */
    uint64_t kept[CKPT_MAX_KEPT];
    bool final; /* written at the end of training */
} ckpt_manifest_t;

/* model_dir/ckpt-<step> */
void ckpt_dir(char *out, size_t len, const char *model_dir, uint64_t step);
/* The file PS `index` of `nps` writes into a checkpoint directory. */
void ckpt_shard_path(char *out, size_t len, const char *dir, int index, int nps);

/* 0 and *m filled; 1 when model_dir has no manifest; -1 on a broken one. */
int ckpt_manifest_read(const char *model_dir, ckpt_manifest_t *m, char *err, size_t errlen);
/* Adds step as the latest, keeps the newest `keep`, writes the manifest
 * atomically, then deletes the directories of checkpoints no longer kept
 * (and any ckpt-* directory the manifest never named, left by a crash). */
int ckpt_manifest_commit(const char *model_dir, uint64_t step, size_t keep, bool final, char *err,
                         size_t errlen);

/* DIR/model.json: the model's canonical spec (beside a checkpoint's shards,
 * or in an export). */
int ckpt_write_model(const char *dir, const model_t *m, char *err, size_t errlen);

/* A checkpoint of a whole store in one process (a standalone worker): its
 * one file, model.json, then the manifest. */
int ckpt_take_local(const store_t *s, const char *model_dir, uint64_t step, size_t keep, bool final,
                    char *err, size_t errlen);

/* Whether a checkpoint is due at global step `step`, the last one having
 * been taken at last_step, last_time (ps_now()): every checkpoint.every_steps
 * steps or checkpoint.every_secs seconds (0 turns either off). */
bool ckpt_due(int64_t every_steps, double every_secs, uint64_t step, uint64_t last_step,
              double last_time, double now);

/* Writes a store's partitions with their slots to path (atomically). step
 * is the global step the checkpoint is taken for. */
int ckpt_save_store(const store_t *s, const char *path, uint64_t step, char *err, size_t errlen);

typedef struct {
    /* POSIX extended regex: only variables whose name matches are restored
     * (a warm start of some layers); NULL restores every variable. */
    const char *pattern;
    /* Restore optimizer slots and the update count too (resume); false reads
     * weights only and leaves the store's slots and iterations alone. */
    bool slots;
} ckpt_restore_opts_t;

/* Fills the store's partitions (those the pattern names) from `path`: a
 * safetensors file, a directory of them (a checkpoint or an export), or a
 * model_dir whose manifest names a latest checkpoint. Every row of every
 * partition restored must be found, with the variable's shape. *step gets
 * the checkpoint's step (0 for an export). */
int ckpt_restore_store(store_t *s, const char *path, const ckpt_restore_opts_t *o, uint64_t *step,
                       char *err, size_t errlen);

/* The whole model's weights (a parameter slab) from a checkpoint or an export. */
int ckpt_load_params(const model_t *m, const char *path, float *params, uint64_t *step, char *err,
                     size_t errlen);

#endif

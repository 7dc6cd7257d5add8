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
/* The largest step a checkpoint may have: 2^53 - 1, the largest integer
 * every JSON reader holds exactly (the manifest stores steps as numbers). */
#define CKPT_MAX_STEP ((UINT64_C(1) << 53) - 1)
/* What restore and verification return for a checkpoint that is damaged (a
 * checksum that does not match, a file truncated or missing, NaN or Inf):
 * an older checkpoint may still do. Other errors are -1. */
#define CKPT_ECORRUPT (-2)

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

/* The length and CRC32C of one file of a checkpoint, as the manifest
 * records them. */
typedef struct {
    char name[64]; /* ps-0-of-2.safetensors */
    uint64_t bytes;
    uint32_t crc32c;
} ckpt_file_sum_t;

typedef struct {
    size_t n;
    ckpt_file_sum_t *f;
} ckpt_sums_t;

void ckpt_sums_add(ckpt_sums_t *s, const char *name, uint64_t bytes, uint32_t crc);
void ckpt_sums_free(ckpt_sums_t *s);

/* 0 and *m filled; 1 when model_dir has no manifest; -1 on a broken one. */
int ckpt_manifest_read(const char *model_dir, ckpt_manifest_t *m, char *err, size_t errlen);
/* The files the manifest records for checkpoint `step`: 0 and *s filled
 * (ckpt_sums_free); 1 when it records none (a checkpoint written before
 * pstrain kept checksums); -1 on a broken manifest. */
int ckpt_manifest_sums(const char *model_dir, uint64_t step, ckpt_sums_t *s, char *err,
                       size_t errlen);
/* Adds step as the latest with its files' sums (NULL keeps what the manifest
 * recorded for that step), keeps the newest `keep`, writes the manifest
 * atomically, then deletes the directories of checkpoints no longer kept
 * (and any ckpt-<digits> directory the manifest never named or cannot name:
 * left by a crash, or out of range). A step over CKPT_MAX_STEP is an error. */
int ckpt_manifest_commit(const char *model_dir, uint64_t step, size_t keep, bool final,
                         const ckpt_sums_t *sums, char *err, size_t errlen);
/* Takes a checkpoint that does not verify out of the manifest (its directory
 * goes at the next commit); the latest becomes the newest left, not final.
 * The last checkpoint kept is never dropped (an error). */
int ckpt_manifest_drop(const char *model_dir, uint64_t step, char *err, size_t errlen);

/* ---- verification (checkpoint_verify.c) ---- */

/* Reads every .safetensors file of a checkpoint or export directory whole:
 * each must be one that `want` lists (when given: the manifest's record),
 * with its length and CRC32C, and every tensor must match the CRC32C in its
 * file's metadata and hold no NaN or Inf. 0, or CKPT_ECORRUPT and one error
 * naming the file and the tensor. *got (NULL: not wanted) gets every file's
 * sums; *unchecked (NULL: not wanted) whether no checksum at all was found. */
int ckpt_verify(const char *dir, const ckpt_sums_t *want, ckpt_sums_t *got, bool *unchecked,
                char *err, size_t errlen);
/* ckpt_verify of model_dir's checkpoint `step` against the manifest. */
int ckpt_verify_step(const char *model_dir, uint64_t step, bool *unchecked, char *err,
                     size_t errlen);

/* Tries the checkpoints the manifest m keeps, newest first: try(arg, dir,
 * step) returns 0 (done: *step set), CKPT_ECORRUPT (bad(arg, step, why) is
 * told, then the next older is tried) or -1 (an error that another
 * checkpoint would not cure: returned as is). When none is left:
 * CKPT_ECORRUPT and "no checkpoint of MODEL_DIR verifies; the newest: ...". */
typedef int (*ckpt_try_fn)(void *arg, const char *dir, uint64_t step, char *err, size_t errlen);
typedef void (*ckpt_bad_fn)(void *arg, uint64_t step, const char *why);
int ckpt_try_newest(const char *model_dir, const ckpt_manifest_t *m, ckpt_try_fn try,
                    ckpt_bad_fn bad, void *arg, uint64_t *step, char *err, size_t errlen);

/* DIR/model.json: the model's canonical spec (beside a checkpoint's shards,
 * or in an export). */
int ckpt_write_model(const char *dir, const model_t *m, char *err, size_t errlen);

/* A checkpoint of a whole store in one process (a standalone worker): its
 * one file, model.json, then (once the file read back verifies) the
 * manifest with the file's sums. */
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
    /* When not NULL: set to whether the files carried no checksum at all (a
     * checkpoint from before checksums), so the caller can say so. */
    bool *unchecked;
} ckpt_restore_opts_t;

/* Fills the store's partitions (those the pattern names) from `path`: a
 * safetensors file, a directory of them (a checkpoint or an export), or a
 * model_dir whose manifest names a latest checkpoint. Every file is first
 * verified whole (ckpt_verify, against model_dir's manifest for a
 * checkpoint): a damaged one returns CKPT_ECORRUPT and changes nothing.
 * Every row of every partition restored must be found, with the variable's
 * shape. *step gets the checkpoint's step (0 for an export). */
int ckpt_restore_store(store_t *s, const char *path, const ckpt_restore_opts_t *o, uint64_t *step,
                       char *err, size_t errlen);

/* The whole model's weights (a parameter slab) from a checkpoint or an export. */
int ckpt_load_params(const model_t *m, const char *path, float *params, uint64_t *step, char *err,
                     size_t errlen);

#endif

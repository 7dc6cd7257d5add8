/* The data sets a configuration names (data.train, data.val, data.test,
 * data.format and the per-format keys; data.dir's IDX files by default),
 * read for a model: images at its input size, labels below its classes. */
#ifndef PSTRAIN_DATASETS_H
#define PSTRAIN_DATASETS_H

#include <stddef.h>

#include "common/daemon/config.h"
#include "common/data/dataset.h"
#include "common/model/model.h"

/* The training set, and the validation set in *val (val->n = 0 when there
 * is none): data.val, else data.val_split's seeded hold-out of data.train.
 * val may be NULL (a master counts the training examples only). */
int datasets_load_train(const config_t *c, const model_t *m, dataset_t *train, dataset_t *val,
                        char *err, size_t errlen);
/* The same for worker `shard` of `nshards`: with at least as many TFRecord
 * files as workers (and no data.val_split, which holds out of the whole
 * set), it reads only its files (train->file_shard; train->total counts all). */
int datasets_load_train_shard(const config_t *c, const model_t *m, size_t shard, size_t nshards,
                              dataset_t *train, dataset_t *val, char *err, size_t errlen);
/* data.stream: the training data as a stream for worker shard of nshards
 * (TFRecord or image folders; data.val_split, which needs the whole set, is
 * refused), and data.val whole in *val (val->n = 0 when there is none; val
 * NULL: not read). */
struct data_stream *datasets_open_stream(const config_t *c, const model_t *m, size_t shard,
                                         size_t nshards, dataset_t *val, char *err, size_t errlen);
/* data.stream, for a master or an evaluator: the training records counted
 * (nothing decoded, memory bounded) in train->n, with an image folder's
 * class names but no examples, and data.val whole in *val. */
int datasets_count_stream(const config_t *c, const model_t *m, dataset_t *train, dataset_t *val,
                          char *err, size_t errlen);
/* The test set: data.test, else data.dir's t10k-* IDX pair. Image folders
 * take the classes of data.train's folders. */
int datasets_load_test(const config_t *c, const model_t *m, dataset_t *test, char *err,
                       size_t errlen);
/* What names a set in messages: its path, or data.dir for the default. */
const char *datasets_where(const config_t *c, const char *path);
/* Writes DIR/class_names.json (["name", ...]) when d has class names, so
 * that predict and evaluate print names; nothing otherwise. */
int datasets_write_class_names(const dataset_t *d, const char *model_dir, char *err, size_t errlen);

/* The augmentation the data.augment_* keys ask for. */
augment_opts_t datasets_augment(const config_t *c);

/* Reads class_names.json from path, or else from its parent or
 * grandparent (an export or checkpoint directory inside a model_dir).
 * Returns 1 with *names (free with data_free_files), 0 when there is none,
 * -1 for a file that is not a JSON array of strings. */
int datasets_read_class_names(const char *path, char ***names, size_t *n, char *err, size_t errlen);

#endif

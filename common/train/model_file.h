/* What model= names, read: a builtin (cnn, mlp), a JSON file (pstrain's
 * dialect or Keras's to_json()), or a Keras 3 .keras file, whose
 * config.json gives the architecture and whose compile_config may give the
 * loss. The loss is then, in this order: train.loss when it names one; for
 * train.loss=auto, the .keras file's compile_config loss; else what the last
 * layer implies (model_loss_auto). */
#ifndef PSTRAIN_MODEL_FILE_H
#define PSTRAIN_MODEL_FILE_H

#include <stddef.h>

#include "common/model/model.h"

/* The model of name_or_path (a .keras file: its config.json). */
int model_file_load(model_t *m, const char *name_or_path, char *err, size_t errlen);

/* model_file_load, then the loss as above (one log line says which and
 * why). The caller frees m with model_free, also after a failure of the
 * loss. */
int model_open(model_t *m, const char *name_or_path, const char *train_loss, char *err,
               size_t errlen);

/* Sets m's loss from train_loss, or for "auto" from the compile_config of
 * config_json (a .keras file's config.json at source; NULL: none) when it
 * has a loss, else by the last layer. */
int model_loss_from_config(model_t *m, const char *train_loss, const char *config_json,
                           const char *source, char *err, size_t errlen);

#endif

/* model= as a builtin, a JSON file or a .keras file (see model_file.h). */
#include "common/train/model_file.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/log.h"
#include "common/base/util.h"
#include "common/formats/keras_file.h"
#include "common/model/keras_json.h"

static bool is_dot_keras(const char *path) {
    size_t n = strlen(path);
    return n > 6 && !strcmp(path + n - 6, ".keras");
}

/* The config.json of a .keras file at path (caller frees), NULL otherwise;
 * a weights file (.h5) is refused, saying what takes it. */
static int keras_config(const char *path, char **json, char *err, size_t errlen) {
    *json = NULL;
    if (kf_is_keras_path(path) && !is_dot_keras(path))
        return ps_errf(err, errlen,
                       "%s holds weights only: model= takes a .keras file or a JSON model "
                       "(weights go to train.warm_start_from)",
                       path);
    return is_dot_keras(path) ? kf_read_config(path, json, err, errlen) : 0;
}

/* m from a .keras file's config.json. */
static int parse_config(model_t *m, const char *json, const char *path, char *err, size_t errlen) {
    char inner[PS_ERRLEN];
    if (model_parse(m, json, inner, sizeof inner))
        return ps_errf(err, errlen, "%s: config.json: %s", path, inner);
    log_info("model %s: a Keras file; its config.json gives the layers", path);
    return 0;
}

int model_file_load(model_t *m, const char *name_or_path, char *err, size_t errlen) {
    char *json;
    if (keras_config(name_or_path, &json, err, errlen))
        return -1;
    int rc = json ? parse_config(m, json, name_or_path, err, errlen)
                  : model_load(m, name_or_path, err, errlen);
    free(json);
    return rc;
}

int model_loss_from_config(model_t *m, const char *train_loss, const char *config_json,
                           const char *source, char *err, size_t errlen) {
    char loss[64] = "", inner[PS_ERRLEN];
    if (!strcmp(train_loss, "auto") && config_json &&
        keras_compile_loss(config_json, loss, sizeof loss, inner, sizeof inner))
        return ps_errf(err, errlen, "%s: %s", source, inner);
    if (!loss[0])
        return model_set_loss(m, train_loss, err, errlen);
    char why[PS_ERRLEN];
    snprintf(why, sizeof why, "the loss %s was compiled with", source);
    if (model_set_loss_from(m, loss, why, inner, sizeof inner))
        return ps_errf(err, errlen, "%s: the loss of its compile_config: %s", source, inner);
    return 0;
}

int model_open(model_t *m, const char *name_or_path, const char *train_loss, char *err,
               size_t errlen) {
    char *json;
    if (keras_config(name_or_path, &json, err, errlen))
        return -1;
    int rc = json ? parse_config(m, json, name_or_path, err, errlen)
                  : model_load(m, name_or_path, err, errlen);
    if (rc == 0)
        rc = model_loss_from_config(m, train_loss, json, name_or_path, err, errlen);
    free(json);
    return rc;
}

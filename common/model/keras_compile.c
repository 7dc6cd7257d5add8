/* The loss of a .keras file's compile_config (see keras_json.h): Keras 3
 * writes it as a string ("sparse_categorical_crossentropy") or as a
 * serialized loss object ({"class_name": "SparseCategoricalCrossentropy",
 * "config": {"from_logits": true, ...}}); a loss function passed to compile
 * is {"class_name": "function", "config": "name"}. */
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/keras_json.h"

static json_object *get(json_object *o, const char *key) {
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

/* Keras's names of a loss (function and class, lower-cased aliases), the
 * pstrain loss and whether its from_logits form is supported. */
static const struct {
    const char *fn, *cls, *alias;
    const char *loss;        /* train.loss name; NULL: refused */
    const char *logits_loss; /* with from_logits=True; NULL: refused */
} keras_losses[] = {
    {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", NULL,
     "sparse_categorical_crossentropy", "sparse_categorical_crossentropy_from_logits"},
    {"binary_crossentropy", "BinaryCrossentropy", "bce", "binary_crossentropy", NULL},
    {"mean_squared_error", "MeanSquaredError", "mse", "mean_squared_error", NULL},
    /* one-hot labels: pstrain's class indexes stand for them (model_loss.c) */
    {"categorical_crossentropy", "CategoricalCrossentropy", NULL, "categorical_crossentropy",
     "categorical_crossentropy_from_logits"},
};

static const char supported[] =
    "sparse_categorical_crossentropy and categorical_crossentropy (from_logits too), "
    "binary_crossentropy, mean_squared_error";

/* Keys of a loss object's config that must hold their default. */
static int check_config(json_object *cfg, const char *cls, char *err, size_t errlen) {
    json_object_object_foreach(cfg, key, val) {
        bool ok = !strcmp(key, "name") || !strcmp(key, "from_logits") || !strcmp(key, "dtype");
        if (!strcmp(key, "reduction"))
            ok = json_object_is_type(val, json_type_string) &&
                 (!strcmp(json_object_get_string(val), "sum_over_batch_size") ||
                  !strcmp(json_object_get_string(val), "auto"));
        if (!strcmp(key, "ignore_class"))
            ok = json_object_is_type(val, json_type_null);
        if (!strcmp(key, "axis"))
            ok = json_object_is_type(val, json_type_int) && json_object_get_int(val) == -1;
        if (!strcmp(key, "label_smoothing"))
            ok = json_object_get_double(val) == 0.0;
        if (!ok)
            return ps_errf(err, errlen,
                           "compile_config: loss %s: \"%s\" = %s is not supported (pstrain "
                           "computes the loss averaged over the batch, without label smoothing "
                           "or an ignored class)",
                           cls, key, json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN));
    }
    return 0;
}

int keras_compile_loss(const char *config_json, char *loss, size_t len, char *err, size_t errlen) {
    json_object *root = json_tokener_parse(config_json);
    json_object *v = get(get(root, "compile_config"), "loss");
    int rc = 0;
    loss[0] = '\0';
    if (!v || json_object_is_type(v, json_type_null))
        goto out;
    const char *name = NULL;
    bool logits = false;
    json_object *cfg = get(v, "config");
    if (json_object_is_type(v, json_type_string))
        name = json_object_get_string(v);
    else if (json_object_is_type(cfg, json_type_string)) /* a function */
        name = json_object_get_string(cfg);
    else if (get(v, "class_name") && json_object_is_type(cfg, json_type_object)) {
        name = json_object_get_string(get(v, "class_name"));
        json_object *fl = get(cfg, "from_logits");
        logits = fl && json_object_get_boolean(fl);
        if ((rc = check_config(cfg, name, err, errlen)))
            goto out;
    }
    if (!name) {
        rc = ps_errf(err, errlen,
                     "compile_config: loss %s is not one loss (pstrain trains one output; "
                     "supported: %s)",
                     json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), supported);
        goto out;
    }
    for (size_t i = 0; i < PS_ARRAY_LEN(keras_losses); i++) {
        if (strcmp(name, keras_losses[i].fn) && strcmp(name, keras_losses[i].cls) &&
            !(keras_losses[i].alias && !strcmp(name, keras_losses[i].alias)))
            continue;
        const char *l = logits ? keras_losses[i].logits_loss : keras_losses[i].loss;
        if (!l) {
            rc = ps_errf(err, errlen, "compile_config: loss %s%s is not supported (supported: %s)",
                         name, logits ? " with from_logits=True" : "", supported);
            goto out;
        }
        snprintf(loss, len, "%s", l);
        goto out;
    }
    rc = ps_errf(err, errlen, "compile_config: loss %s is not supported (supported: %s)", name,
                 supported);
out:
    json_object_put(root);
    return rc;
}

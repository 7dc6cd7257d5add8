/* The losses: which one a model's last layer implies (train.loss=auto), which
 * ones train.loss may name for it, and whether a backend has their kernels.
 * Their forward and backward calls are in model_exec.c. */
#include <math.h>
#include <string.h>

#include "common/base/log.h"
#include "common/base/util.h"
#include "common/model/model_internal.h"

static const char *const loss_names[] = {
    [LOSS_SPARSE_CE] = "sparse_categorical_crossentropy",
    [LOSS_SPARSE_CE_LOGITS] = "sparse_categorical_crossentropy_from_logits",
    [LOSS_BCE] = "binary_crossentropy",
    [LOSS_MSE] = "mean_squared_error",
};

/* What each loss needs of the last layer: its activation and its units. */
static const struct {
    activation_t act;
    bool one_unit; /* exactly 1 unit, else at least 2 */
    const char *why;
} heads[] = {
    [LOSS_SPARSE_CE] = {ACT_SOFTMAX, false, "Dense with softmax and 2 or more units"},
    [LOSS_SPARSE_CE_LOGITS] = {ACT_LINEAR, false, "Dense, linear, with 2 or more units"},
    [LOSS_BCE] = {ACT_SIGMOID, true, "Dense with sigmoid and 1 unit"},
    [LOSS_MSE] = {ACT_LINEAR, true, "Dense, linear, with 1 unit"},
};

const char *model_loss_name(loss_t loss) {
    return (size_t)loss < PS_ARRAY_LEN(loss_names) ? loss_names[loss] : "?";
}

static bool head_fits(const model_t *m, loss_t loss) {
    const layer_t *l = &m->layers[m->nlayers - 1];
    return l->kind == LAYER_DENSE && l->activation == heads[loss].act &&
           (heads[loss].one_unit ? m->nclasses == 1 : m->nclasses >= 2);
}

int model_loss_auto(const model_t *m, loss_t *out, char *err, size_t errlen) {
    static const loss_t order[] = {LOSS_SPARSE_CE, LOSS_BCE, LOSS_MSE, LOSS_SPARSE_CE_LOGITS};
    for (size_t i = 0; i < PS_ARRAY_LEN(order); i++)
        if (head_fits(m, order[i])) {
            *out = order[i];
            return 0;
        }
    return ps_errf(err, errlen,
                   "model: layer %zu: the last layer must be Dense with softmax (2 or more "
                   "units: sparse categorical cross-entropy), sigmoid (1 unit: binary "
                   "cross-entropy) or linear (1 unit: mean squared error; 2 or more: sparse "
                   "categorical cross-entropy from the logits)",
                   m->nlayers - 1);
}

/* Sets the loss named name (not "auto") when the last layer fits it. */
/* Categorical cross-entropy takes one-hot labels; pstrain's labels are class
 * indexes, and the cross-entropy of one_hot(label) is the sparse one's to the
 * last bit, so these are its other names (what Keras users compile with). */
static const struct {
    const char *name;
    loss_t loss;
} loss_aliases[] = {
    {"categorical_crossentropy", LOSS_SPARSE_CE},
    {"categorical_crossentropy_from_logits", LOSS_SPARSE_CE_LOGITS},
};

static int set_named(model_t *m, const char *name, char *err, size_t errlen) {
    for (size_t i = 0; i < PS_ARRAY_LEN(loss_aliases); i++)
        if (strcmp(name, loss_aliases[i].name) == 0)
            name = loss_names[loss_aliases[i].loss];
    for (size_t i = 0; i < PS_ARRAY_LEN(loss_names); i++) {
        if (strcmp(name, loss_names[i]) != 0)
            continue;
        if (!head_fits(m, (loss_t)i))
            return ps_errf(err, errlen, "train.loss %s needs the last layer to be %s", name,
                           heads[i].why);
        m->loss = (loss_t)i;
        return 0;
    }
    return ps_errf(err, errlen, "train.loss %s is not a loss pstrain implements", name);
}

int model_set_loss(model_t *m, const char *name, char *err, size_t errlen) {
    if (strcmp(name, "auto") == 0) {
        log_info("train.loss auto: %s (the last layer is %s)", model_loss_name(m->loss),
                 heads[m->loss].why);
        return 0;
    }
    if (set_named(m, name, err, errlen))
        return -1;
    log_info("train.loss %s", name);
    return 0;
}

int model_set_loss_from(model_t *m, const char *name, const char *source, char *err,
                        size_t errlen) {
    if (set_named(m, name, err, errlen))
        return -1;
    log_info("train.loss auto: %s (%s)", name, source);
    return 0;
}

int model_loss_check_backend(const model_t *m, const backend_t *be, char *err, size_t errlen) {
    bool ok = m->loss == LOSS_BCE   ? be->sigmoid_bce_forward && be->sigmoid_bce_backward
              : m->loss == LOSS_MSE ? be->mse_forward && be->mse_backward
                                    : true;
    if (!ok)
        return ps_errf(err, errlen, "train.loss %s is not implemented on the %s backend",
                       model_loss_name(m->loss), be->name);
    return 0;
}

size_t model_label_classes(const model_t *m) {
    if (m->loss == LOSS_BCE)
        return 2;
    /* a regression's integer targets: any label the data readers take */
    if (m->loss == LOSS_MSE)
        return MODEL_MAX_LABELS;
    return m->nclasses;
}

int32_t model_predict_class(const model_t *m, const float *out) {
    if (m->loss == LOSS_BCE)
        return out[0] >= 0.5f;
    if (m->loss == LOSS_MSE)
        return (int32_t)lroundf(out[0]);
    size_t best = 0;
    for (size_t c = 1; c < m->nclasses; c++)
        if (out[c] > out[best])
            best = c;
    return (int32_t)best;
}

#include "common/train/export.h"

#include <inttypes.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/train/checkpoint.h"
#include "common/formats/keras_file.h"
#include "common/formats/npz.h"
#include "common/formats/safetensors.h"
#include "common/train/keras_weights.h"
#include "common/base/util.h"

static int write_weights(const model_t *m, const float *params, uint64_t step, const char *dir,
                         char *err, size_t errlen) {
    char path[PATH_MAX], step_s[32];
    if (ps_path_join(path, sizeof path, dir, "weights.safetensors", err, errlen))
        return -1;
    snprintf(step_s, sizeof step_s, "%" PRIu64, step);
    st_tensor_t *t = xcalloc(m->nvars, sizeof *t);
    for (size_t i = 0; i < m->nvars; i++) {
        const var_t *v = &m->vars[i];
        t[i] = (st_tensor_t){.name = v->name, .ndim = v->ndim, .data = params + v->offset};
        memcpy(t[i].shape, v->shape, v->ndim * sizeof v->shape[0]);
    }
    st_meta_t meta[] = {{"format", "pstrain"}, {"step", step_s}};
    int rc = st_write(path, t, m->nvars, meta, PS_ARRAY_LEN(meta), err, errlen);
    free(t);
    return rc;
}

/* weights.npz: the arrays of Keras's model.get_weights(), in its order,
 * keyed by variable name. */
static int write_npz(const model_t *m, const float *params, const char *dir, char *err,
                     size_t errlen) {
    char path[PATH_MAX];
    if (ps_path_join(path, sizeof path, dir, "weights.npz", err, errlen))
        return -1;
    npz_array_t *a = xcalloc(m->nvars, sizeof *a);
    for (size_t i = 0; i < m->nvars; i++) {
        const var_t *v = &m->vars[i];
        a[i] = (npz_array_t){.name = v->name, .ndim = v->ndim, .data = params + v->offset};
        memcpy(a[i].shape, v->shape, v->ndim * sizeof v->shape[0]);
    }
    int rc = npz_write(path, m->nvars, a, err, errlen);
    free(a);
    return rc;
}

/* model.keras: Keras 3's own file of the model, which keras.models.load_model
 * opens (config.json from model_keras_config, the weights per layer). */
static int write_keras(const model_t *m, const float *params, const char *dir, char *err,
                       size_t errlen) {
    char path[PATH_MAX];
    if (ps_path_join(path, sizeof path, dir, "model.keras", err, errlen))
        return -1;
    /* A Functional model lists its InputLayer among its layers: an empty group. */
    kf_layer_t *layers = xcalloc(m->nlayers + 1, sizeof *layers);
    kf_var_t *vars = xcalloc(MODEL_LAYER_MAX_VARS * m->nlayers, sizeof *vars);
    char(*names)[MODEL_NAME_LEN] = xcalloc(m->nlayers, sizeof *names);
    for (size_t i = 0; i < m->nlayers; i++) {
        int idx[MODEL_LAYER_MAX_VARS];
        size_t nv = model_layer_vars(m, i, idx);
        model_keras_h5_name(m, i, names[i], sizeof names[i]);
        layers[i] = (kf_layer_t){.name = names[i], .vars = vars + MODEL_LAYER_MAX_VARS * i};
        for (size_t k = 0; k < nv; k++) {
            const var_t *v = &m->vars[idx[k]];
            kf_var_t *o = &vars[MODEL_LAYER_MAX_VARS * i + layers[i].nvars++];
            *o = (kf_var_t){.ndim = v->ndim, .data = params + v->offset};
            memcpy(o->shape, v->shape, v->ndim * sizeof v->shape[0]);
        }
    }
    char *config = model_keras_config(m);
    size_t n = m->nlayers;
    if (m->graph)
        layers[n++] = (kf_layer_t){.name = "input_layer"};
    int rc = kf_write(path, config, "3.5.0", m->graph ? "functional" : "sequential", layers, n, err,
                      errlen);
    free(config);
    free(names);
    free(vars);
    free(layers);
    return rc;
}

static int write_files(const model_t *m, const float *params, uint64_t step, const char *dir,
                       char *err, size_t errlen) {
    if (ps_mkdirs(dir, err, errlen) || ckpt_write_model(dir, m, err, errlen))
        return -1;
    if (write_weights(m, params, step, dir, err, errlen))
        return -1;
    if (write_npz(m, params, dir, err, errlen))
        return -1;
    return write_keras(m, params, dir, err, errlen);
}

int export_write(const model_t *m, const float *params, uint64_t step, const char *dir, char *err,
                 size_t errlen) {
    char tmp[PATH_MAX], old[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", dir, (int)getpid()) >= (int)sizeof tmp ||
        snprintf(old, sizeof old, "%s.old.%d", dir, (int)getpid()) >= (int)sizeof old)
        return ps_errf(err, errlen, "path too long: %s", dir);
    ps_remove_flat_dir(tmp);
    if (write_files(m, params, step, tmp, err, errlen)) {
        ps_remove_flat_dir(tmp);
        return -1;
    }
    /* A directory cannot be renamed over a full one: move the old aside. */
    bool had_old = rename(dir, old) == 0;
    if (rename(tmp, dir) != 0) {
        int rc = ps_errf(err, errlen, "rename %s -> %s: %m", tmp, dir);
        if (had_old)
            rename(old, dir);
        ps_remove_flat_dir(tmp);
        return rc;
    }
    if (had_old)
        ps_remove_flat_dir(old);
    return ps_fsync_dir_of(dir, err, errlen);
}

int export_load(const char *dir, model_t *m, float **params, uint64_t *step, char *err,
                size_t errlen) {
    char path[PATH_MAX];
    if (kf_is_keras_path(dir)) {
        *step = 0;
        return keras_load(dir, m, params, err, errlen);
    }
    if (ps_path_join(path, sizeof path, dir, "model.json", err, errlen))
        return -1;
    char *spec;
    size_t len;
    if (ps_read_file(path, &spec, &len, err, errlen))
        return -1;
    char perr[PS_ERRLEN];
    int rc = model_parse(m, spec, perr, sizeof perr);
    free(spec);
    if (rc)
        return ps_errf(err, errlen, "%s: %s", path, perr);
    *params = xalloc_aligned(m->nparams * sizeof(float));
    if (ckpt_load_params(m, dir, *params, step, err, errlen)) {
        free(*params);
        *params = NULL;
        model_free(m);
        return -1;
    }
    return 0;
}

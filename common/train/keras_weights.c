/* Keras 3 weight files as pstrain variables (see keras_weights.h). */
#include "common/train/keras_weights.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/formats/keras_file.h"
#include "common/formats/safetensors.h"
#include "common/train/model_file.h"

/* The file's groups that hold arrays, for errors: "conv2d, dense, dense_1". */
static void groups_found(const kf_file_t *f, char *out, size_t len) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < f->ngroups && n + 1 < len; i++)
        if (f->groups[i].nvars)
            n += (size_t)snprintf(out + n, len - n, "%s%s", n ? ", " : "", f->groups[i].name);
    if (!out[0])
        snprintf(out, len, "none");
}

/* "[3, 3, 1, 32]" */
static void shape_str(char *out, size_t len, const size_t *shape, size_t ndim) {
    size_t n = (size_t)snprintf(out, len, "[");
    for (size_t d = 0; d < ndim && n < len; d++)
        n += (size_t)snprintf(out + n, len - n, "%s%zu", d ? ", " : "", shape[d]);
    if (n < len)
        snprintf(out + n, len - n, "]");
}

static bool same_shape(const kf_array_t *a, const var_t *v) {
    if (a->ndim != v->ndim)
        return false;
    for (size_t d = 0; d < v->ndim; d++)
        if (a->shape[d] != v->shape[d])
            return false;
    return true;
}

/* Layer i's group checked against the model: its arrays one per variable,
 * each of the variable's shape. NULL (no error) when the file lacks it. */
static int layer_group(const model_t *m, size_t i, const kf_file_t *f, const char *path,
                       const kf_group_t **out, char *err, size_t errlen) {
    const layer_t *l = &m->layers[i];
    char name[MODEL_NAME_LEN + 16];
    model_keras_h5_name(m, i, name, sizeof name);
    const kf_group_t *g = kf_find(f, name);
    *out = NULL;
    int idx[MODEL_LAYER_MAX_VARS];
    size_t want = model_layer_vars(m, i, idx);
    if (!g || (g->nvars == 0 && want > 0))
        return 0;
    if (g->nvars != want)
        return ps_errf(err, errlen,
                       "%s: layers/%s holds %zu arrays; pstrain's layer \"%s\" has %zu", path, name,
                       g->nvars, l->name, want);
    for (size_t a = 0; a < want; a++) {
        const var_t *v = &m->vars[idx[a]];
        if (!same_shape(&g->vars[a], v)) {
            char have[96], want_s[96];
            shape_str(have, sizeof have, g->vars[a].shape, g->vars[a].ndim);
            shape_str(want_s, sizeof want_s, v->shape, v->ndim);
            return ps_errf(err, errlen, "%s: layers/%s/vars/%zu has shape %s; pstrain's %s is %s",
                           path, name, a, have, v->name, want_s);
        }
    }
    *out = g;
    return 0;
}

/* The error for layer i (which has variables) missing from f. */
static int missing(const model_t *m, size_t i, const kf_file_t *f, const char *path, char *err,
                   size_t errlen) {
    char name[MODEL_NAME_LEN + 16], found[512];
    int idx[MODEL_LAYER_MAX_VARS];
    model_layer_vars(m, i, idx);
    model_keras_h5_name(m, i, name, sizeof name);
    groups_found(f, found, sizeof found);
    return ps_errf(err, errlen,
                   "%s: no weights for %s (Keras's group layers/%s); the file has weights for: %s",
                   path, m->vars[idx[0]].name, name, found);
}

/* The tensors of layer i's group under pstrain's names into t (up to
 * MODEL_LAYER_MAX_VARS). */
static size_t layer_tensors(const model_t *m, size_t i, const kf_group_t *g, st_tensor_t *t) {
    int idx[MODEL_LAYER_MAX_VARS];
    size_t n = model_layer_vars(m, i, idx);
    for (size_t k = 0; k < n; k++) {
        const var_t *v = &m->vars[idx[k]];
        t[k] = (st_tensor_t){.name = v->name, .ndim = v->ndim, .data = g->vars[k].data};
        memcpy(t[k].shape, v->shape, v->ndim * sizeof v->shape[0]);
    }
    return n;
}

/* Whether some variable of layer i matches re (NULL: all do). */
static bool layer_wanted(const model_t *m, size_t i, regex_t *re) {
    int idx[MODEL_LAYER_MAX_VARS];
    size_t n = model_layer_vars(m, i, idx);
    for (size_t k = 0; k < n; k++)
        if (!re || regexec(re, m->vars[idx[k]].name, 0, NULL, 0) == 0)
            return true;
    return false;
}

int keras_weights_to_safetensors(const model_t *m, const char *path, const char *pattern,
                                 const char *out, char *err, size_t errlen) {
    regex_t re;
    if (pattern && regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
        return ps_errf(err, errlen, "bad variable pattern \"%s\"", pattern);
    kf_file_t f;
    if (kf_read(path, &f, err, errlen)) {
        if (pattern)
            regfree(&re);
        return -1;
    }
    st_tensor_t *t = xcalloc(m->nvars + 1, sizeof *t);
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m->nlayers; i++) {
        const kf_group_t *g;
        if (!layer_wanted(m, i, pattern ? &re : NULL))
            continue;
        rc = layer_group(m, i, &f, path, &g, err, errlen);
        if (rc == 0 && !g)
            rc = missing(m, i, &f, path, err, errlen);
        if (rc == 0)
            n += layer_tensors(m, i, g, t + n);
    }
    st_meta_t meta[] = {{"format", "keras"}};
    if (rc == 0)
        rc = st_write(out, t, n, meta, PS_ARRAY_LEN(meta), err, errlen);
    free(t);
    kf_free(&f);
    if (pattern)
        regfree(&re);
    return rc;
}

/* Every variable of m from f into params. */
static int fill_params(const model_t *m, const kf_file_t *f, const char *path, float *params,
                       char *err, size_t errlen) {
    for (size_t i = 0; i < m->nlayers; i++) {
        int idx[MODEL_LAYER_MAX_VARS];
        const kf_group_t *g;
        if (layer_group(m, i, f, path, &g, err, errlen))
            return -1;
        if (model_layer_vars(m, i, idx) == 0)
            continue;
        if (!g)
            return missing(m, i, f, path, err, errlen);
        st_tensor_t t[MODEL_LAYER_MAX_VARS];
        size_t n = layer_tensors(m, i, g, t);
        for (size_t k = 0; k < n; k++)
            memcpy(params + m->vars[model_find_var(m, t[k].name)].offset, t[k].data,
                   m->vars[model_find_var(m, t[k].name)].size * sizeof(float));
    }
    return 0;
}

int keras_load(const char *path, model_t *m, float **params, char *err, size_t errlen) {
    kf_file_t f;
    if (kf_read(path, &f, err, errlen))
        return -1;
    char inner[PS_ERRLEN];
    int rc = -1;
    *params = NULL;
    if (!f.config_json) {
        ps_errf(err, errlen, "%s holds weights only: give the .keras file (with its config)", path);
        goto out;
    }
    if (model_parse(m, f.config_json, inner, sizeof inner)) {
        ps_errf(err, errlen, "%s: config.json: %s", path, inner);
        goto out;
    }
    /* The loss it was compiled with, as model=FILE.keras takes it. */
    if (model_loss_from_config(m, "auto", f.config_json, path, err, errlen)) {
        model_free(m);
        goto out;
    }
    *params = xalloc_aligned(m->nparams * sizeof(float));
    rc = fill_params(m, &f, path, *params, err, errlen);
    if (rc) {
        free(*params);
        *params = NULL;
        model_free(m);
    }
out:
    kf_free(&f);
    return rc;
}

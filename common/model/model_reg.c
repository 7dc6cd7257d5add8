/* L2 regularizers of the kernels and biases of Dense, Conv2D and
 * DepthwiseConv2D, as Keras defines them: the loss adds l2 * sum(w^2) for
 * each regularized variable (keras.regularizers.L2, also L1L2 with l1 = 0),
 * once per batch, and the gradient 2 * l2 * w. Every worker adds the term to
 * the gradient it computes (model_reg_backward, from model_backward): the
 * parameter servers apply what they are pushed, as for any other loss. */
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

/* Keras's factor when none is given (keras.regularizers.L2(), "l2"). */
#define KERAS_DEFAULT_L2 0.01

static const char *const reg_keys[2] = {"kernel_regularizer", "bias_regularizer"};

static json_object *get(json_object *o, const char *key) {
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

/* A config's number at key into *out (absent: def); -1 if not a number. */
static int get_number(json_object *cfg, const char *key, double def, double *out) {
    json_object *v = get(cfg, key);
    *out = def;
    if (!v || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return -1;
    *out = json_object_get_double(v);
    return 0;
}

int model_reg_value(json_object *v, float *l2, char *why, size_t whylen) {
    static const char want[] = "null or L2 (or L1L2 with l1 0): pstrain implements L2 only";
    *l2 = 0.0f;
    if (!v || json_object_is_type(v, json_type_null))
        return 0;
    double x = KERAS_DEFAULT_L2, l1 = 0.0;
    int bad = 0;
    if (json_object_is_type(v, json_type_string)) {
        bad = strcmp(json_object_get_string(v), "l2") != 0;
    } else if (json_object_is_type(v, json_type_object) && get(v, "class_name")) {
        /* Keras 3 and tf.keras 2: {"class_name": "L2", "config": {"l2": x}} */
        const char *cls = json_object_get_string(get(v, "class_name"));
        json_object *cfg = get(v, "config");
        bool l2_only = !strcmp(cls, "L2"), both = !strcmp(cls, "L1L2");
        bad = !(l2_only || both) || get_number(cfg, "l2", both ? 0.0 : KERAS_DEFAULT_L2, &x) ||
              (both && get_number(cfg, "l1", 0.0, &l1));
    } else if (json_object_is_type(v, json_type_object)) {
        /* pstrain's own {"l2": x} */
        bad = json_object_object_length(v) != 1 || !get(v, "l2") ||
              get_number(v, "l2", KERAS_DEFAULT_L2, &x);
    } else {
        bad = 1;
    }
    if (bad || l1 != 0.0 || !(x >= 0.0 && x < 1e6))
        return ps_errf(why, whylen, "%s; it must be %s",
                       json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), want);
    *l2 = (float)x;
    return 0;
}

int model_reg_parse(layer_t *l, json_object *o, char *why, size_t whylen) {
    for (size_t k = 0; k < 2; k++) {
        char inner[PS_ERRLEN];
        if (model_reg_value(get(o, reg_keys[k]), &l->l2[k], inner, sizeof inner))
            return ps_errf(why, whylen, "\"%s\" is %s", reg_keys[k], inner);
    }
    if (l->l2[1] > 0.0f && !l->use_bias)
        return ps_errf(why, whylen, "\"bias_regularizer\" needs \"use_bias\": true");
    return 0;
}

void model_reg_json(const layer_t *l, json_object *o) {
    for (size_t k = 0; k < 2; k++) {
        if (l->l2[k] <= 0.0f)
            continue;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "l2", json_object_new_double((double)l->l2[k]));
        json_object_object_add(o, reg_keys[k], r);
    }
}

void model_reg_keras(const layer_t *l, json_object *config, const char *kernel_key) {
    for (size_t k = 0; k < 2; k++) {
        if (l->l2[k] <= 0.0f)
            continue;
        json_object *c = json_object_new_object();
        json_object_object_add(c, "l2", json_object_new_double((double)l->l2[k]));
        json_object *r = json_object_new_object();
        json_object_object_add(r, "module", json_object_new_string("keras.regularizers"));
        json_object_object_add(r, "class_name", json_object_new_string("L2"));
        json_object_object_add(r, "config", c);
        json_object_object_add(r, "registered_name", NULL);
        json_object_object_add(config, k ? reg_keys[1] : kernel_key, r);
    }
}

bool model_has_reg(const model_t *m) {
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].l2[0] > 0.0f || m->layers[i].l2[1] > 0.0f)
            return true;
    return false;
}

/* Layer l's kernel (k = 0) or bias (1) when it is regularized, else NULL. */
static const var_t *reg_var(const model_t *m, const layer_t *l, size_t k) {
    int idx = k ? l->bias_var : l->kernel_var;
    return idx >= 0 && l->l2[k] > 0.0f ? &m->vars[idx] : NULL;
}

double model_reg_loss(const model_t *m, const backend_t *be, const float *params, float *dot) {
    double sum = 0.0;
    for (size_t i = 0; i < m->nlayers; i++)
        for (size_t k = 0; k < 2; k++) {
            const var_t *v = reg_var(m, &m->layers[i], k);
            if (!v)
                continue;
            /* sum(w^2) as the product of the row w[1, size] and the column w[size, 1] */
            const float *w = params + v->offset;
            float host;
            be->gemm(false, false, 1, 1, v->size, 1.0f, w, w, 0.0f, dot);
            be->download(&host, dot, sizeof host);
            sum += (double)m->layers[i].l2[k] * (double)host;
        }
    return sum;
}

void model_reg_backward(const model_t *m, const layer_t *l, const backend_t *be,
                        const float *params, float factor, float *grads) {
    for (size_t k = 0; k < 2; k++) {
        const var_t *v = reg_var(m, l, k);
        if (v)
            be->axpy(grads + v->offset, factor * 2.0f * l->l2[k], params + v->offset, v->size);
    }
}

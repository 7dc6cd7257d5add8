/* The layers beyond the builtin models, as Keras defines them: Activation,
 * Reshape, Rescaling, AveragePooling2D, GlobalAveragePooling2D,
 * GlobalMaxPooling2D and CenterCrop: their spec attributes, output shapes and canonical
 * JSON. Their forward and backward are in model_exec.c. */
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

static const char *const activation_names[] = {"linear", "relu", "softmax", "sigmoid",
                                               "tanh",   "gelu", "silu"};
const char model_activation_names[] = "linear, relu, softmax, sigmoid, tanh, gelu, silu";

int model_activation_parse(const char *name, activation_t *out) {
    for (size_t i = 0; i < PS_ARRAY_LEN(activation_names); i++)
        if (strcmp(name, activation_names[i]) == 0) {
            *out = (activation_t)i;
            return 0;
        }
    return -1;
}

const char *model_activation_name(activation_t a) {
    return (size_t)a < PS_ARRAY_LEN(activation_names) ? activation_names[a] : "linear";
}

static bool is_number(json_object *v) {
    return v && (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int));
}

/* target_shape: [n] or [h, w, c], positive. */
static int parse_target(layer_t *l, json_object *v, char *why, size_t whylen) {
    size_t nd = v && json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    size_t d[3];
    for (size_t i = 0; i < nd && i < 3; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        int64_t x = json_object_is_type(e, json_type_int) ? json_object_get_int64(e) : 0;
        if (x < 1 || x > (1 << 24))
            nd = 0;
        d[i] = (size_t)x;
    }
    if (nd != 1 && nd != 3)
        return ps_errf(why, whylen,
                       "\"target_shape\" must be [n] or [h, w, c] of positive integers "
                       "(no -1)");
    l->target_flat = nd == 1;
    l->target[0] = nd == 1 ? 1 : d[0];
    l->target[1] = nd == 1 ? 1 : d[1];
    l->target[2] = nd == 1 ? d[0] : d[2];
    return 0;
}

/* Pooling windows as in model.c's max_pool2d: pool_size 2, strides the pool. */
static int parse_pool(layer_t *l, json_object *o, char *why, size_t whylen) {
    json_object *v;
    l->pool[0] = l->pool[1] = 2;
    if (json_object_object_get_ex(o, "pool_size", &v) && model_get_pair(v, l->pool))
        return ps_errf(why, whylen, "\"pool_size\" must be a positive integer or a pair of them");
    l->strides[0] = l->pool[0];
    l->strides[1] = l->pool[1];
    if (json_object_object_get_ex(o, "strides", &v) && !json_object_is_type(v, json_type_null) &&
        model_get_pair(v, l->strides))
        return ps_errf(why, whylen, "\"strides\" must be a positive integer or a pair of them");
    return 0;
}

int model_extra_parse(layer_t *l, json_object *o, char *why, size_t whylen) {
    json_object *v = NULL;
    switch (l->kind) {
    case LAYER_ACTIVATION:
        if (!json_object_object_get_ex(o, "activation", &v) ||
            !json_object_is_type(v, json_type_string) ||
            model_activation_parse(json_object_get_string(v), &l->activation))
            return ps_errf(why, whylen, "\"activation\" must be one of %s", model_activation_names);
        return 0;
    case LAYER_RESHAPE:
        json_object_object_get_ex(o, "target_shape", &v);
        return parse_target(l, v, why, whylen);
    case LAYER_RESCALING:
        l->scale = 1.0f;
        if (json_object_object_get_ex(o, "scale", &v) && !is_number(v))
            return ps_errf(why, whylen, "\"scale\" must be a number");
        l->scale = v ? (float)json_object_get_double(v) : 1.0f;
        v = NULL;
        if (json_object_object_get_ex(o, "offset", &v) && !is_number(v))
            return ps_errf(why, whylen, "\"offset\" must be a number");
        l->offset = v ? (float)json_object_get_double(v) : 0.0f;
        return 0;
    case LAYER_AVG_POOL2D:
        return parse_pool(l, o, why, whylen);
    case LAYER_CENTER_CROP:
        for (size_t d = 0; d < 2; d++) {
            const char *key = d ? "width" : "height";
            v = NULL;
            json_object_object_get_ex(o, key, &v);
            int64_t x = v && json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : 0;
            if (x < 1 || x > 65536)
                return ps_errf(why, whylen, "\"%s\" must be a positive integer", key);
            l->target[d] = (size_t)x;
        }
        return 0;
    case LAYER_BATCH_NORM:
        return model_bn_parse(l, o, why, whylen);
    default:
        return 0;
    }
}

int model_extra_infer(layer_t *l, char *why, size_t whylen) {
    size_t h = l->in[0], w = l->in[1], c = l->in[2];
    bool spatial = l->kind == LAYER_AVG_POOL2D || l->kind == LAYER_GLOBAL_AVG_POOL2D ||
                   l->kind == LAYER_GLOBAL_MAX_POOL2D || l->kind == LAYER_CENTER_CROP;
    if (spatial && l->flat_in)
        return ps_errf(why, whylen, "needs an image input [h, w, c], not a flat one");
    l->flat_out = l->flat_in;
    memcpy(l->out, l->in, sizeof l->out);
    switch (l->kind) {
    case LAYER_RESHAPE:
        if (l->target[0] * l->target[1] * l->target[2] != h * w * c)
            return ps_errf(why, whylen, "\"target_shape\" has %zu elements, the input %zu",
                           l->target[0] * l->target[1] * l->target[2], h * w * c);
        memcpy(l->out, l->target, sizeof l->out);
        l->flat_out = l->target_flat;
        return 0;
    case LAYER_AVG_POOL2D: {
        pool2d_shape_t s = {.n = 1, .h = h, .w = w, .c = c, .ph = l->pool[0], .pw = l->pool[1]};
        s.sh = l->strides[0];
        s.sw = l->strides[1];
        pool2d_shape_init(&s, l->same);
        if (s.oh == 0 || s.ow == 0)
            return ps_errf(why, whylen,
                           "window %zux%zu does not fit the input %zux%zu with \"valid\" padding",
                           l->pool[0], l->pool[1], h, w);
        l->out[0] = s.oh;
        l->out[1] = s.ow;
        return 0;
    }
    case LAYER_CENTER_CROP:
        if (l->target[0] > h || l->target[1] > w)
            return ps_errf(why, whylen,
                           "the input %zux%zu is smaller than the crop %zux%zu (Keras would resize "
                           "it; pstrain only crops)",
                           h, w, l->target[0], l->target[1]);
        l->target[2] = c;
        memcpy(l->out, l->target, sizeof l->out);
        return 0;
    case LAYER_GLOBAL_AVG_POOL2D:
    case LAYER_GLOBAL_MAX_POOL2D:
        /* One window over the whole image. */
        l->pool[0] = l->strides[0] = h;
        l->pool[1] = l->strides[1] = w;
        l->same = false;
        l->out[0] = l->out[1] = 1;
        l->flat_out = true;
        return 0;
    default:
        return 0;
    }
}

static json_object *pair(const size_t p[2]) {
    json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_int64((int64_t)p[0]));
    json_object_array_add(a, json_object_new_int64((int64_t)p[1]));
    return a;
}

void model_extra_json(const layer_t *l, json_object *o) {
    switch (l->kind) {
    case LAYER_ACTIVATION:
        json_object_object_add(o, "activation",
                               json_object_new_string(model_activation_name(l->activation)));
        break;
    case LAYER_RESHAPE: {
        json_object *t = json_object_new_array();
        for (size_t d = l->target_flat ? 2 : 0; d < 3; d++)
            json_object_array_add(t, json_object_new_int64((int64_t)l->target[d]));
        json_object_object_add(o, "target_shape", t);
        break;
    }
    case LAYER_RESCALING:
        json_object_object_add(o, "scale", json_object_new_double((double)l->scale));
        json_object_object_add(o, "offset", json_object_new_double((double)l->offset));
        break;
    case LAYER_CENTER_CROP:
        json_object_object_add(o, "height", json_object_new_int64((int64_t)l->target[0]));
        json_object_object_add(o, "width", json_object_new_int64((int64_t)l->target[1]));
        break;
    case LAYER_AVG_POOL2D:
        json_object_object_add(o, "pool_size", pair(l->pool));
        json_object_object_add(o, "strides", pair(l->strides));
        json_object_object_add(o, "padding", json_object_new_string(l->same ? "same" : "valid"));
        break;
    case LAYER_BATCH_NORM:
        model_bn_json(l, o);
        break;
    default:
        break;
    }
}

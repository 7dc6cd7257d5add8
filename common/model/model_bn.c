/* BatchNormalization as Keras 3 defines it (keras.layers.BatchNormalization):
 * along the channels (axis -1) of an image or a vector, with gamma (scale)
 * and beta (center) trained like any variable, and moving_mean and
 * moving_variance, non-trainable, updated from each batch's statistics.
 * Here: its spec attributes, its variables in Keras's order and its
 * canonical JSON. Its forward and backward are in model_exec.c; how the
 * moving statistics are updated, in common/train/moving.h. */
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

/* The initializer keys, in the order of the variables they start. */
static const char *const init_keys[4] = {"gamma_initializer", "beta_initializer",
                                         "moving_mean_initializer", "moving_variance_initializer"};
static const float init_defaults[4] = {1.0f, 0.0f, 0.0f, 1.0f};

static bool is_number(json_object *v) {
    return v && (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int));
}

/* A number key into *out (absent: left as it is); -1 when not a number. */
static int get_number(json_object *o, const char *key, double *out) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (!is_number(v))
        return -1;
    *out = json_object_get_double(v);
    return 0;
}

static int get_bool(json_object *o, const char *key, bool *out) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return -1;
    *out = json_object_get_boolean(v);
    return 0;
}

/* axis: an int, or a list of one (tf.keras 2 writes [3]). */
static int get_axis(json_object *o, int *out) {
    json_object *v = NULL;
    *out = -1;
    if (!json_object_object_get_ex(o, "axis", &v))
        return 0;
    if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 1)
        v = json_object_array_get_idx(v, 0);
    if (!json_object_is_type(v, json_type_int))
        return -1;
    int64_t a = json_object_get_int64(v);
    if (a < -1 || a > 3)
        return -1;
    *out = (int)a;
    return 0;
}

/* "zeros" or "ones" into *out. */
static int get_init(json_object *o, const char *key, float *out) {
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
    if (strcmp(s, "zeros") != 0 && strcmp(s, "ones") != 0)
        return -1;
    *out = s[0] == 'o' ? 1.0f : 0.0f;
    return 0;
}

int model_bn_parse(layer_t *l, json_object *o, char *why, size_t whylen) {
    double momentum = 0.99, epsilon = 1e-3;
    l->bn_center = l->bn_scale = true;
    memcpy(l->bn_init, init_defaults, sizeof l->bn_init);
    if (get_number(o, "momentum", &momentum) || !(momentum >= 0.0 && momentum <= 1.0))
        return ps_errf(why, whylen, "\"momentum\" must be a number in [0, 1]");
    if (get_number(o, "epsilon", &epsilon) || !(epsilon > 0.0 && epsilon < 1e30))
        return ps_errf(why, whylen, "\"epsilon\" must be a positive number");
    if (get_bool(o, "center", &l->bn_center) || get_bool(o, "scale", &l->bn_scale))
        return ps_errf(why, whylen, "\"center\" and \"scale\" must be true or false");
    if (get_axis(o, &l->axis))
        return ps_errf(why, whylen, "\"axis\" must be -1 (the channels, the last axis)");
    for (size_t k = 0; k < 4; k++)
        if (get_init(o, init_keys[k], &l->bn_init[k]))
            return ps_errf(why, whylen, "\"%s\" must be \"zeros\" or \"ones\"", init_keys[k]);
    l->momentum = momentum;
    l->epsilon = epsilon;
    return 0;
}

/* One per-channel variable of c elements that starts at fill. */
static int add_channel_var(model_t *m, const layer_t *l, const char *suffix, size_t c, float fill,
                           bool moving) {
    size_t shape[1] = {c};
    var_t *v = model_add_var(m, l, suffix, 1, shape, 0, 0);
    v->fill = fill;
    v->moving = moving;
    v->momentum = moving ? l->momentum : 0.0;
    return (int)m->nvars - 1;
}

int model_bn_infer(model_t *m, size_t i, char *why, size_t whylen) {
    layer_t *l = &m->layers[i];
    int last = l->flat_in ? 1 : 3; /* Keras's index of the channels: (batch, h, w, c) */
    if (l->axis != -1 && l->axis != last)
        return ps_errf(why, whylen,
                       "\"axis\" is %d; pstrain normalizes along the channels only (-1, or %d "
                       "for this input)",
                       l->axis, last);
    memcpy(l->out, l->in, sizeof l->out);
    l->flat_out = l->flat_in;
    size_t c = l->in[2];
    /* Keras's build order, which is get_weights's. */
    if (l->bn_scale)
        l->kernel_var = add_channel_var(m, l, "gamma", c, l->bn_init[0], false);
    if (l->bn_center)
        l->bias_var = add_channel_var(m, l, "beta", c, l->bn_init[1], false);
    l->moving_var = add_channel_var(m, l, "moving_mean", c, l->bn_init[2], true);
    add_channel_var(m, l, "moving_variance", c, l->bn_init[3], true);
    return 0;
}

void model_bn_json(const layer_t *l, json_object *o) {
    json_object_object_add(o, "axis", json_object_new_int(-1));
    json_object_object_add(o, "momentum", json_object_new_double(l->momentum));
    json_object_object_add(o, "epsilon", json_object_new_double(l->epsilon));
    json_object_object_add(o, "center", json_object_new_boolean(l->bn_center));
    json_object_object_add(o, "scale", json_object_new_boolean(l->bn_scale));
    for (size_t k = 0; k < 4; k++)
        json_object_object_add(o, init_keys[k],
                               json_object_new_string(l->bn_init[k] != 0.0f ? "ones" : "zeros"));
}

/* The model as Keras 3 serializes it: model_keras_config (model.h). Each
 * layer's config carries its name and the arguments that set its math;
 * Keras fills every other argument with its default when it rebuilds the
 * model, which is what pstrain computes (initializers are those of a fresh
 * Keras layer, so a model rebuilt and trained in Keras starts like one
 * written there). */
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

static json_object *int_list(const size_t *v, size_t n) {
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_int64((int64_t)v[i]));
    return a;
}

/* [null, d...] for a per-example shape [h, w, c] (flat: [null, c]). */
static json_object *batch_shape(const size_t s[3], bool flat) {
    json_object *a = json_object_new_array();
    json_object_array_add(a, NULL);
    for (size_t d = flat ? 2 : 0; d < 3; d++)
        json_object_array_add(a, json_object_new_int64((int64_t)s[d]));
    return a;
}

static json_object *keras_layer(const char *cls, json_object *config) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "module", json_object_new_string("keras.layers"));
    json_object_object_add(o, "class_name", json_object_new_string(cls));
    json_object_object_add(o, "config", config);
    json_object_object_add(o, "registered_name", NULL);
    return o;
}

static void add_str(json_object *o, const char *key, const char *v) {
    json_object_object_add(o, key, json_object_new_string(v));
}

static void add_window(json_object *c, const layer_t *l, const size_t *window, const char *key) {
    json_object_object_add(c, key, int_list(window, 2));
    json_object_object_add(c, "strides", int_list(l->strides, 2));
    add_str(c, "padding", l->same ? "same" : "valid");
}

/* An initializer as Keras serializes one: Zeros or Ones. */
static json_object *keras_initializer(float value) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "module", json_object_new_string("keras.initializers"));
    json_object_object_add(o, "class_name",
                           json_object_new_string(value != 0.0f ? "Ones" : "Zeros"));
    json_object_object_add(o, "config", json_object_new_object());
    json_object_object_add(o, "registered_name", NULL);
    return o;
}

/* BatchNormalization's arguments (momentum and epsilon as the doubles the
 * spec gave, so Keras computes with the same float32 constants). */
static void bn_args(json_object *c, const layer_t *l) {
    static const char *const keys[4] = {"gamma_initializer", "beta_initializer",
                                        "moving_mean_initializer", "moving_variance_initializer"};
    json_object_object_add(c, "axis", json_object_new_int(-1));
    json_object_object_add(c, "momentum", json_object_new_double(l->momentum));
    json_object_object_add(c, "epsilon", json_object_new_double(l->epsilon));
    json_object_object_add(c, "center", json_object_new_boolean(l->bn_center));
    json_object_object_add(c, "scale", json_object_new_boolean(l->bn_scale));
    for (size_t k = 0; k < 4; k++)
        json_object_object_add(c, keys[k], keras_initializer(l->bn_init[k]));
}

/* The arguments of one layer's config beyond its name. */
static void layer_args(json_object *c, const layer_t *l) {
    switch (l->kind) {
    case LAYER_CONV2D:
        json_object_object_add(c, "filters", json_object_new_int64((int64_t)l->filters));
        add_window(c, l, l->kernel, "kernel_size");
        break;
    case LAYER_DEPTHWISE_CONV2D:
        json_object_object_add(c, "depth_multiplier",
                               json_object_new_int64((int64_t)l->multiplier));
        add_window(c, l, l->kernel, "kernel_size");
        break;
    case LAYER_DENSE:
        json_object_object_add(c, "units", json_object_new_int64((int64_t)l->units));
        break;
    case LAYER_MAX_POOL2D:
    case LAYER_AVG_POOL2D:
        add_window(c, l, l->pool, "pool_size");
        break;
    case LAYER_DROPOUT:
        json_object_object_add(c, "rate", json_object_new_double((double)l->rate));
        break;
    case LAYER_RESHAPE:
        json_object_object_add(
            c, "target_shape",
            int_list(l->target + (l->target_flat ? 2 : 0), l->target_flat ? 1 : 3));
        break;
    case LAYER_CENTER_CROP:
        json_object_object_add(c, "height", json_object_new_int64((int64_t)l->target[0]));
        json_object_object_add(c, "width", json_object_new_int64((int64_t)l->target[1]));
        break;
    case LAYER_RESCALING:
        json_object_object_add(c, "scale", json_object_new_double((double)l->scale));
        json_object_object_add(c, "offset", json_object_new_double((double)l->offset));
        break;
    case LAYER_EMBEDDING:
        json_object_object_add(c, "input_dim", json_object_new_int64((int64_t)l->input_dim));
        json_object_object_add(c, "output_dim", json_object_new_int64((int64_t)l->units));
        break;
    case LAYER_BATCH_NORM:
        bn_args(c, l);
        break;
    default:
        break;
    }
    bool kernel =
        l->kind == LAYER_CONV2D || l->kind == LAYER_DENSE || l->kind == LAYER_DEPTHWISE_CONV2D;
    if (kernel || l->kind == LAYER_ACTIVATION)
        add_str(c, "activation", model_activation_name(l->activation));
    if (kernel) {
        json_object_object_add(c, "use_bias", json_object_new_boolean(l->use_bias));
        model_reg_keras(l, c,
                        l->kind == LAYER_DEPTHWISE_CONV2D ? "depthwise_regularizer"
                                                          : "kernel_regularizer");
    }
}

/* A Keras tensor naming the layer that makes it (a Functional model's edge). */
static json_object *keras_tensor(const model_t *m, int j) {
    json_object *c = json_object_new_object();
    bool flat = j < 0 ? m->input_flat : m->layers[j].flat_out;
    json_object *shape = batch_shape(j < 0 ? m->input : m->layers[j].out, flat);
    if (j >= 0 && m->layers[j].seq_out)
        json_object_array_del_idx(shape, 1, 1); /* [null, steps, features] */
    json_object_object_add(c, "shape", shape);
    add_str(c, "dtype", "float32");
    json_object *h = json_object_new_array();
    json_object_array_add(h, json_object_new_string(j < 0 ? "input_layer" : m->layers[j].name));
    json_object_array_add(h, json_object_new_int(0));
    json_object_array_add(h, json_object_new_int(0));
    json_object_object_add(c, "keras_history", h);
    json_object *t = json_object_new_object();
    add_str(t, "class_name", "__keras_tensor__");
    json_object_object_add(t, "config", c);
    return t;
}

/* A Functional layer's name and inbound_nodes: one call on its inputs (a
 * merge takes them as one list). */
static void add_graph_keys(json_object *o, const model_t *m, const layer_t *l) {
    json_object *args = json_object_new_array();
    if (l->ninputs == 1) {
        json_object_array_add(args, keras_tensor(m, l->inputs[0]));
    } else {
        json_object *list = json_object_new_array();
        for (size_t k = 0; k < l->ninputs; k++)
            json_object_array_add(list, keras_tensor(m, l->inputs[k]));
        json_object_array_add(args, list);
    }
    json_object *node = json_object_new_object();
    json_object_object_add(node, "args", args);
    json_object_object_add(node, "kwargs", json_object_new_object());
    json_object *nodes = json_object_new_array();
    json_object_array_add(nodes, node);
    add_str(o, "name", l->name);
    json_object_object_add(o, "inbound_nodes", nodes);
}

/* [name, 0, 0] */
static json_object *node_ref(const char *name) {
    json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_string(name));
    json_object_array_add(a, json_object_new_int(0));
    json_object_array_add(a, json_object_new_int(0));
    return a;
}

char *model_keras_config(const model_t *m) {
    json_object *layers = json_object_new_array();
    json_object *in = json_object_new_object();
    json_object_object_add(in, "batch_shape", batch_shape(m->input, m->input_flat));
    add_str(in, "dtype", "float32");
    add_str(in, "name", "input_layer");
    json_object *input = keras_layer("InputLayer", in);
    if (m->graph) {
        add_str(input, "name", "input_layer");
        json_object_object_add(input, "inbound_nodes", json_object_new_array());
    }
    json_object_array_add(layers, input);
    for (size_t i = 0; i < m->nlayers; i++) {
        const layer_t *l = &m->layers[i];
        json_object *c = json_object_new_object();
        add_str(c, "name", l->name);
        layer_args(c, l);
        json_object *o = keras_layer(model_layer_class(l->kind), c);
        if (m->graph)
            add_graph_keys(o, m, l);
        json_object_array_add(layers, o);
    }
    json_object *config = json_object_new_object();
    add_str(config, "name", m->graph ? "functional" : "sequential");
    json_object_object_add(config, "layers", layers);
    if (m->graph) {
        json_object_object_add(config, "input_layers", node_ref("input_layer"));
        json_object_object_add(config, "output_layers", node_ref(m->layers[m->nlayers - 1].name));
    }
    json_object *root = keras_layer(m->graph ? "Functional" : "Sequential", config);
    json_object_object_add(
        root, "module", json_object_new_string(m->graph ? "keras.src.models.functional" : "keras"));
    if (m->graph)
        json_object_object_add(root, "registered_name", json_object_new_string("Functional"));
    json_object *build = json_object_new_object();
    json_object_object_add(build, "input_shape", batch_shape(m->input, m->input_flat));
    json_object_object_add(root, "build_config", build);
    char *s = xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
    json_object_put(root);
    return s;
}

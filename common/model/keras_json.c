/* Keras model JSON -> pstrain's spec (see keras_json.h). The conversion is
 * a table: each supported Keras class names the pstrain layer type it
 * becomes and the keys it carries over; every other key of a layer's config
 * must be one that does not change the math, at the value that makes that
 * so (a null regularizer, dilation 1, channels_last, ...). */
#include "common/model/keras_json.h"

#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

/* Activations pstrain runs (Keras's names; "swish" is Keras's alias of silu). */
static const char supported_activations[] = "linear, relu, softmax, sigmoid, tanh, gelu, silu";

typedef struct {
    const char *cls;  /* Keras class_name */
    const char *type; /* pstrain spec type */
    const char *keys; /* config keys copied into the spec, space separated */
} keras_class_t;

static const keras_class_t keras_classes[] = {
    {"Conv2D", "conv2d",
     " filters kernel_size strides padding activation use_bias kernel_regularizer "
     "bias_regularizer "},
    {"Dense", "dense", " units activation use_bias kernel_regularizer bias_regularizer "},
    {"DepthwiseConv2D", "depthwise_conv2d",
     " depth_multiplier kernel_size strides padding activation use_bias depthwise_regularizer "
     "bias_regularizer "},
    {"MaxPooling2D", "max_pool2d", " pool_size strides padding "},
    {"AveragePooling2D", "avg_pool2d", " pool_size strides padding "},
    {"GlobalAveragePooling2D", "global_avg_pool2d", " "},
    {"GlobalMaxPooling2D", "global_max_pool2d", " "},
    {"Dropout", "dropout", " rate "},
    {"Flatten", "flatten", " "},
    {"Activation", "activation", " activation "},
    {"Reshape", "reshape", " target_shape "},
    {"Rescaling", "rescaling", " scale offset "},
    {"CenterCrop", "center_crop", " height width "},
    {"Add", "add", " "},
    {"Multiply", "multiply", " "},
    {"Concatenate", "concatenate", " "},
    {"Embedding", "embedding", " input_dim output_dim "},
    {"GlobalAveragePooling1D", "global_avg_pool1d", " "},
    {"BatchNormalization", "batch_normalization",
     " axis momentum epsilon center scale beta_initializer gamma_initializer "
     "moving_mean_initializer moving_variance_initializer "},
};

static const char supported_classes[] =
    "InputLayer, Conv2D, Dense, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, "
    "GlobalMaxPooling2D, Dropout, Flatten, Activation, Reshape, Rescaling, CenterCrop, Add, "
    "Multiply, Concatenate, Embedding, GlobalAveragePooling1D, DepthwiseConv2D, "
    "BatchNormalization";

static bool has_word(const char *words, const char *w) {
    char probe[96];
    snprintf(probe, sizeof probe, " %s ", w);
    return strstr(words, probe) != NULL;
}

static json_object *get(json_object *o, const char *key) {
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static bool is_null(json_object *v) {
    return !v || json_object_is_type(v, json_type_null);
}

static const char *get_str(json_object *o, const char *key) {
    json_object *v = get(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

bool keras_json_is_model(json_object *root) {
    return get(root, "class_name") != NULL;
}

/* An initializer's class as "GlorotUniform" whether written as an object
 * (Keras 3, tf.keras 2) or a string ("glorot_uniform"). */
static bool initializer_is(json_object *v, const char *cls, const char *str) {
    if (v && json_object_is_type(v, json_type_string))
        return strcmp(json_object_get_string(v), str) == 0;
    const char *c = get_str(v, "class_name");
    return c && strcmp(c, cls) == 0;
}

/* A float32 dtype or dtype policy, or none. */
static bool dtype_is_float32(json_object *v) {
    if (is_null(v))
        return true;
    if (json_object_is_type(v, json_type_string))
        return strcmp(json_object_get_string(v), "float32") == 0;
    const char *name = get_str(get(v, "config"), "name");
    return name && strcmp(name, "float32") == 0;
}

/* 1 or [1, 1] (or [1]). */
static bool all_ones(json_object *v) {
    if (json_object_is_type(v, json_type_int))
        return json_object_get_int64(v) == 1;
    if (!json_object_is_type(v, json_type_array))
        return false;
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *e = json_object_array_get_idx(v, i);
        if (!json_object_is_type(e, json_type_int) || json_object_get_int64(e) != 1)
            return false;
    }
    return true;
}

/* RandomUniform(-0.05, 0.05), Keras's default embeddings_initializer. */
static bool default_uniform(json_object *v) {
    if (v && json_object_is_type(v, json_type_string))
        return strcmp(json_object_get_string(v), "uniform") == 0;
    json_object *c = get(v, "config");
    json_object *lo = get(c, "minval"), *hi = get(c, "maxval");
    return initializer_is(v, "RandomUniform", "uniform") &&
           (!lo || json_object_get_double(lo) == -0.05) &&
           (!hi || json_object_get_double(hi) == 0.05);
}

/* An Embedding's keys that do not change the math at the value checked
 * (as neutral_key). */
static const char *embedding_key(const char *key, json_object *v) {
    if (!strcmp(key, "input_length"))
        return "";
    if (!strcmp(key, "mask_zero") || !strcmp(key, "sparse"))
        return is_null(v) ||
                       (json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v))
                   ? ""
                   : "false (masking and sparse outputs are not supported)";
    if (!strcmp(key, "embeddings_initializer"))
        return default_uniform(v) ? ""
                                  : "RandomUniform(-0.05, 0.05) (the embeddings initializer "
                                    "pstrain implements)";
    return NULL;
}

/* Keys that may appear on any layer and do not change the math at the
 * value checked. Returns NULL when key is not one of them, "" when its
 * value is fine, else what the value must be. */
static const char *neutral_key(const char *key, json_object *v) {
    static const char *must_be_null[] = {"kernel_regularizer",
                                         "bias_regularizer",
                                         "activity_regularizer",
                                         "kernel_constraint",
                                         "bias_constraint",
                                         "quantization_config",
                                         "noise_shape",
                                         "lora_rank",
                                         "embeddings_regularizer",
                                         "embeddings_constraint",
                                         "depthwise_constraint",
                                         "beta_regularizer",
                                         "gamma_regularizer",
                                         "beta_constraint",
                                         "gamma_constraint",
                                         "renorm_clipping",
                                         "virtual_batch_size",
                                         "adjustment"};
    static const char *must_be_false[] = {"synchronized", "renorm"};
    for (size_t i = 0; i < PS_ARRAY_LEN(must_be_false); i++)
        if (strcmp(key, must_be_false[i]) == 0)
            return json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v)
                       ? ""
                       : "false (pstrain implements plain BatchNormalization)";
    for (size_t i = 0; i < PS_ARRAY_LEN(must_be_null); i++)
        if (strcmp(key, must_be_null[i]) == 0)
            return is_null(v) ? "" : "null (pstrain implements none)";
    /* renorm_momentum acts only with renorm; fused picks a kernel, not the math. */
    if (!strcmp(key, "name") || !strcmp(key, "seed") || !strcmp(key, "lora_alpha") ||
        !strcmp(key, "autocast") || !strcmp(key, "batch_input_shape") ||
        !strcmp(key, "renorm_momentum") || !strcmp(key, "fused"))
        return "";
    if (!strcmp(key, "trainable"))
        return json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v)
                   ? ""
                   : "true (frozen layers are not supported)";
    if (!strcmp(key, "dtype"))
        return dtype_is_float32(v) ? "" : "float32 (the only dtype pstrain computes in)";
    if (!strcmp(key, "data_format"))
        return is_null(v) || (json_object_is_type(v, json_type_string) &&
                              !strcmp(json_object_get_string(v), "channels_last"))
                   ? ""
                   : "\"channels_last\"";
    if (!strcmp(key, "dilation_rate"))
        return all_ones(v) ? "" : "1 (dilated convolutions are not supported)";
    if (!strcmp(key, "groups"))
        return all_ones(v) ? "" : "1 (grouped convolutions are not supported)";
    if (!strcmp(key, "axis"))
        return json_object_is_type(v, json_type_int) && json_object_get_int64(v) == -1
                   ? ""
                   : "-1 (concatenation along the channels)";
    if (!strcmp(key, "keepdims"))
        return json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v) ? ""
                                                                                        : "false";
    if (!strcmp(key, "kernel_initializer") || !strcmp(key, "depthwise_initializer"))
        return initializer_is(v, "GlorotUniform", "glorot_uniform")
                   ? ""
                   : "GlorotUniform (the kernel initializer pstrain implements)";
    if (!strcmp(key, "bias_initializer"))
        return initializer_is(v, "Zeros", "zeros")
                   ? ""
                   : "Zeros (the bias initializer pstrain implements)";
    return embedding_key(key, v);
}

#define KERAS_ERR(err, errlen, name, cls, fmt, ...)                                                \
    ps_errf(err, errlen, "model: layer \"%s\" (%s): " fmt, (name), (cls), __VA_ARGS__)

/* Keras's activation name as pstrain's, or NULL when not supported. */
static const char *activation_of(json_object *v) {
    if (is_null(v))
        return "linear";
    if (!json_object_is_type(v, json_type_string))
        return NULL;
    const char *s = json_object_get_string(v);
    if (!strcmp(s, "swish"))
        return "silu";
    static const char *names[] = {"linear", "relu", "softmax", "sigmoid", "tanh", "gelu", "silu"};
    for (size_t i = 0; i < PS_ARRAY_LEN(names); i++)
        if (!strcmp(s, names[i]))
            return names[i];
    return NULL;
}

/* Copies one carried key into the spec layer; activations are checked and
 * renamed here so that the error names the Keras layer. */
static int carry_key(json_object *out, const char *name, const char *cls, const char *key,
                     json_object *v, char *err, size_t errlen) {
    if (!strcmp(key, "activation")) {
        const char *a = activation_of(v);
        if (!a)
            return KERAS_ERR(
                err, errlen, name, cls, "activation %s is not supported (supported: %s)",
                json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), supported_activations);
        json_object_object_add(out, key, json_object_new_string(a));
        return 0;
    }
    if (!strcmp(key, "strides") && is_null(v))
        return 0; /* pooling: the pool size */
    if (strstr(key, "_regularizer")) {
        /* checked here so that the error names the Keras layer; carried as
         * pstrain's {"l2": x}, the depthwise kernel's as the kernel's */
        float l2;
        char why[PS_ERRLEN];
        if (model_reg_value(v, &l2, why, sizeof why))
            return KERAS_ERR(err, errlen, name, cls, "\"%s\" is %s", key, why);
        if (l2 > 0.0f) {
            json_object *r = json_object_new_object();
            json_object_object_add(r, "l2", json_object_new_double((double)l2));
            json_object_object_add(out,
                                   strcmp(key, "bias_regularizer") ? "kernel_regularizer" : key, r);
        }
        return 0;
    }
    if (strstr(key, "_initializer")) { /* BatchNormalization's: Zeros or Ones */
        bool ones = initializer_is(v, "Ones", "ones");
        if (!ones && !initializer_is(v, "Zeros", "zeros"))
            return KERAS_ERR(err, errlen, name, cls, "\"%s\" is %s; it must be Zeros or Ones", key,
                             json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        json_object_object_add(out, key, json_object_new_string(ones ? "ones" : "zeros"));
        return 0;
    }
    json_object_object_add(out, key, json_object_get(v));
    return 0;
}

/* One Keras layer (not an InputLayer) as a spec layer. */
static json_object *convert_layer(json_object *layer, size_t index, char *err, size_t errlen) {
    const char *cls = get_str(layer, "class_name");
    json_object *cfg = get(layer, "config");
    const char *name = get_str(cfg, "name");
    if (!cls || !cfg || !name)
        return ps_errf(err, errlen,
                       "model: Keras layer %zu: needs \"class_name\" and a \"config\" with "
                       "\"name\"",
                       index),
               NULL;
    const keras_class_t *k = NULL;
    for (size_t i = 0; i < PS_ARRAY_LEN(keras_classes); i++)
        if (!strcmp(keras_classes[i].cls, cls))
            k = &keras_classes[i];
    if (!k)
        return ps_errf(err, errlen,
                       "model: layer \"%s\": class %s is not supported (supported: %s)", name, cls,
                       supported_classes),
               NULL;
    json_object *out = json_object_new_object();
    json_object_object_add(out, "type", json_object_new_string(k->type));
    json_object_object_add(out, "name", json_object_new_string(name));
    json_object_object_foreach(cfg, key, val) {
        if (has_word(k->keys, key)) {
            if (carry_key(out, name, cls, key, val, err, errlen))
                goto fail;
            continue;
        }
        const char *need = neutral_key(key, val);
        if (!need) {
            KERAS_ERR(err, errlen, name, cls, "key \"%s\" is not supported (supported:%sand %s)",
                      key, k->keys, "name, trainable, dtype, initializers and null regularizers");
            goto fail;
        }
        if (need[0]) {
            KERAS_ERR(err, errlen, name, cls, "\"%s\" is %s; it must be %s", key,
                      json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN), need);
            goto fail;
        }
    }
    return out;
fail:
    json_object_put(out);
    return NULL;
}

/* [null, d1, ...] -> the spec's "input" [d1, ...]. */
static json_object *input_of_shape(json_object *shape, const char *name, char *err, size_t errlen) {
    size_t n =
        shape && json_object_is_type(shape, json_type_array) ? json_object_array_length(shape) : 0;
    if (n < 2 || n > 4 || !is_null(json_object_array_get_idx(shape, 0)))
        return ps_errf(err, errlen,
                       "model: layer \"%s\": the input shape must be [null, d1, ...] with 1 to "
                       "3 dimensions (a flat vector or an image h, w, c), got %s",
                       name,
                       shape ? json_object_to_json_string_ext(shape, JSON_C_TO_STRING_PLAIN)
                             : "none"),
               NULL;
    json_object *in = json_object_new_array();
    for (size_t i = 1; i < n; i++)
        json_object_array_add(in, json_object_get(json_object_array_get_idx(shape, i)));
    return in;
}

/* The spec's "input" from an InputLayer's config (Keras 3's batch_shape,
 * tf.keras 2's batch_input_shape). */
static json_object *input_of_layer(json_object *cfg, char *err, size_t errlen) {
    if (!json_object_is_type(cfg, json_type_object))
        return ps_errf(err, errlen, "model: the InputLayer needs a \"config\" object"), NULL;
    const char *name = get_str(cfg, "name");
    name = name ? name : "input";
    json_object_object_foreach(cfg, key, val) {
        bool ok = !strcmp(key, "batch_shape") || !strcmp(key, "batch_input_shape") ||
                  !strcmp(key, "name");
        if (!strcmp(key, "dtype"))
            ok = dtype_is_float32(val);
        if (!strcmp(key, "sparse") || !strcmp(key, "ragged") || !strcmp(key, "optional"))
            ok = json_object_is_type(val, json_type_boolean) && !json_object_get_boolean(val);
        if (!ok)
            return ps_errf(err, errlen,
                           "model: layer \"%s\" (InputLayer): \"%s\" = %s is not supported "
                           "(supported: batch_shape, a float32 dtype, sparse/ragged/optional "
                           "false)",
                           name, key, json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN)),
                   NULL;
    }
    json_object *shape = get(cfg, "batch_shape");
    return input_of_shape(shape ? shape : get(cfg, "batch_input_shape"), name, err, errlen);
}

/* The names of the layers feeding one layer of a Functional model, in
 * Keras 3's form ({"args": [keras tensors]}) or tf.keras 2's ([[name, 0, 0,
 * {}]]). Returns the count (up to max) or -1 when the form is unknown. */
static int inbound_names(json_object *nodes, const char **names, int max) {
    int n = 0;
    if (!json_object_is_type(nodes, json_type_array))
        return -1;
    for (size_t i = 0; i < json_object_array_length(nodes); i++) {
        json_object *node = json_object_array_get_idx(nodes, i);
        json_object *args = get(node, "args");
        json_object *list = args ? args : node;
        if (!json_object_is_type(list, json_type_array))
            return -1;
        /* A merge's args are one list of tensors. */
        if (args && json_object_array_length(list) == 1 &&
            json_object_is_type(json_object_array_get_idx(list, 0), json_type_array))
            list = json_object_array_get_idx(list, 0);
        for (size_t j = 0; j < json_object_array_length(list); j++) {
            json_object *t = json_object_array_get_idx(list, j);
            json_object *hist = args ? get(get(t, "config"), "keras_history") : t;
            /* [name, node, tensor]: the name must be a string (null would be NULL). */
            if (!json_object_is_type(hist, json_type_array) || json_object_array_length(hist) < 1 ||
                !json_object_is_type(json_object_array_get_idx(hist, 0), json_type_string))
                return -1;
            if (n < max)
                names[n] = json_object_get_string(json_object_array_get_idx(hist, 0));
            n++;
        }
    }
    return n;
}

/* A Functional layer's "inputs" for the spec: the names of the layers its
 * one inbound node takes, the InputLayer's as "@input". */
static int graph_inputs(json_object *layer, json_object *out, const char *input_name, char *err,
                        size_t errlen) {
    const char *name = get_str(get(layer, "config"), "name");
    json_object *nodes = get(layer, "inbound_nodes");
    const char *from[8];
    int n = inbound_names(nodes, from, 8);
    if (n < 0)
        return ps_errf(err, errlen,
                       "model: layer \"%s\": \"inbound_nodes\" is not in a form Keras writes",
                       name);
    if (json_object_array_length(nodes) != 1 || n < 1 || n > 8)
        return ps_errf(err, errlen,
                       "model: layer \"%s\": called %zu times with %d inputs; pstrain supports "
                       "each layer called once, on 1 to 8 inputs",
                       name, json_object_array_length(nodes), n);
    json_object *a = json_object_new_array();
    for (int k = 0; k < n; k++)
        json_object_array_add(a, json_object_new_string(input_name && !strcmp(from[k], input_name)
                                                            ? "@input"
                                                            : from[k]));
    json_object_object_add(out, "inputs", a);
    return 0;
}

/* The Functional model's single output must be its last layer. */
static int check_output(json_object *cfg, const char *last, char *err, size_t errlen) {
    json_object *out = get(cfg, "output_layers");
    if (!out)
        return 0;
    json_object *first =
        json_object_is_type(out, json_type_array) && json_object_array_length(out) > 0
            ? json_object_array_get_idx(out, 0)
            : NULL;
    /* [name, 0, 0] or [[name, 0, 0]] */
    bool nested = first && json_object_is_type(first, json_type_array);
    size_t outputs = nested ? json_object_array_length(out) : 1;
    const char *name = json_object_get_string(nested ? json_object_array_get_idx(first, 0) : first);
    if (outputs != 1 || !name || strcmp(name, last) != 0)
        return ps_errf(err, errlen,
                       "model: \"output_layers\" must be the last layer (\"%s\") alone; "
                       "pstrain supports one output",
                       last);
    return 0;
}

/* Converts the layer list into spec->layers (and spec->input from the
 * InputLayer, or from the first layer's batch_input_shape). */
static int convert_layers(json_object *spec, json_object *list, bool functional, char *err,
                          size_t errlen) {
    json_object *layers = json_object_new_array();
    json_object_object_add(spec, "layers", layers);
    const char *prev = NULL, *input_name = NULL;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *layer = json_object_array_get_idx(list, i);
        const char *cls = get_str(layer, "class_name");
        json_object *cfg = get(layer, "config");
        prev = get_str(cfg, "name");
        if (cls && !strcmp(cls, "InputLayer"))
            input_name = prev;
        if (cls && !strcmp(cls, "InputLayer")) {
            if (i != 0)
                return ps_errf(err, errlen, "model: layer \"%s\": an InputLayer must come first",
                               prev ? prev : "?");
            json_object *in = input_of_layer(cfg, err, errlen);
            if (!in)
                return -1;
            json_object_object_add(spec, "input", in);
            continue;
        }
        json_object *shape = get(cfg, "batch_input_shape");
        if (i == 0 && shape) {
            json_object *in = input_of_shape(shape, prev ? prev : "?", err, errlen);
            if (!in)
                return -1;
            json_object_object_add(spec, "input", in);
        }
        json_object *out = convert_layer(layer, i, err, errlen);
        if (!out)
            return -1;
        json_object_array_add(layers, out);
        if (functional && graph_inputs(layer, out, input_name, err, errlen))
            return -1;
    }
    if (!get(spec, "input"))
        return ps_errf(err, errlen,
                       "model: the Keras model has no InputLayer (build it with "
                       "keras.Input(shape) first)");
    return prev ? 0 : ps_errf(err, errlen, "model: the Keras model has no layers");
}

json_object *keras_json_to_spec(json_object *root, char *err, size_t errlen) {
    const char *cls = get_str(root, "class_name");
    json_object *cfg = get(root, "config");
    bool functional = cls && (!strcmp(cls, "Functional") || !strcmp(cls, "Model"));
    if (!cls || !(functional || !strcmp(cls, "Sequential")))
        return ps_errf(err, errlen,
                       "model: Keras class_name %s is not supported (supported: Sequential, "
                       "Functional)",
                       cls ? cls : "(not a string)"),
               NULL;
    json_object *list = get(cfg, "layers");
    if (!list || !json_object_is_type(list, json_type_array))
        return ps_errf(err, errlen, "model: the Keras %s has no \"config\".\"layers\" array", cls),
               NULL;
    json_object *spec = json_object_new_object();
    if (convert_layers(spec, list, functional, err, errlen))
        goto fail;
    size_t n = json_object_array_length(list);
    const char *last = get_str(get(json_object_array_get_idx(list, n - 1), "config"), "name");
    if (functional && check_output(cfg, last ? last : "", err, errlen))
        goto fail;
    return spec;
fail:
    json_object_put(spec);
    return NULL;
}

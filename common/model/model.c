/* The model spec: parsing, validation, shape inference, variables, the
 * initializer and the summary. Execution lives in model_exec.c. */
#include "common/model/model.h"

#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/log.h"
#include "common/base/util.h"
#include "common/model/keras_json.h"
#include "common/model/model_internal.h"

/* The Keras MNIST CNN (keras.io/examples/vision/mnist_convnet, with the
 * dense head of the classic Keras mnist_cnn.py) and the Keras guide's MLP. */
static const char builtin_cnn[] =
    "{\"input\": [28, 28, 1], \"layers\": ["
    "{\"type\": \"conv2d\", \"filters\": 32, \"kernel_size\": 3, \"padding\": \"same\","
    " \"activation\": \"relu\"},"
    "{\"type\": \"conv2d\", \"filters\": 64, \"kernel_size\": 3, \"padding\": \"same\","
    " \"activation\": \"relu\"},"
    "{\"type\": \"max_pool2d\", \"pool_size\": 2}, {\"type\": \"dropout\", \"rate\": 0.25},"
    "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 128, \"activation\": \"relu\"},"
    "{\"type\": \"dropout\", \"rate\": 0.5},"
    "{\"type\": \"dense\", \"units\": 10, \"activation\": \"softmax\"}]}";

static const char builtin_mlp[] =
    "{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"},"
    "{\"type\": \"dense\", \"units\": 128, \"activation\": \"relu\"},"
    "{\"type\": \"dense\", \"units\": 128, \"activation\": \"relu\"},"
    "{\"type\": \"dense\", \"units\": 10, \"activation\": \"softmax\"}]}";

typedef struct {
    const char *type;       /* spec name */
    const char *keras_name; /* base of the automatic layer name */
    const char *keras_class;
    layer_kind_t kind;
    const char *keys; /* accepted keys, space separated */
} layer_info_t;

static const layer_info_t layer_infos[] = {
    {"conv2d", "conv2d", "Conv2D", LAYER_CONV2D,
     " type name filters kernel_size strides padding activation use_bias kernel_regularizer "
     "bias_regularizer "},
    {"dense", "dense", "Dense", LAYER_DENSE,
     " type name units activation use_bias kernel_regularizer bias_regularizer "},
    {"max_pool2d", "max_pooling2d", "MaxPooling2D", LAYER_MAX_POOL2D,
     " type name pool_size strides padding "},
    {"dropout", "dropout", "Dropout", LAYER_DROPOUT, " type name rate "},
    {"flatten", "flatten", "Flatten", LAYER_FLATTEN, " type name "},
    {"activation", "activation", "Activation", LAYER_ACTIVATION, " type name activation "},
    {"reshape", "reshape", "Reshape", LAYER_RESHAPE, " type name target_shape "},
    {"rescaling", "rescaling", "Rescaling", LAYER_RESCALING, " type name scale offset "},
    {"avg_pool2d", "average_pooling2d", "AveragePooling2D", LAYER_AVG_POOL2D,
     " type name pool_size strides padding "},
    {"global_avg_pool2d", "global_average_pooling2d", "GlobalAveragePooling2D",
     LAYER_GLOBAL_AVG_POOL2D, " type name "},
    {"global_max_pool2d", "global_max_pooling2d", "GlobalMaxPooling2D", LAYER_GLOBAL_MAX_POOL2D,
     " type name "},
    {"center_crop", "center_crop", "CenterCrop", LAYER_CENTER_CROP, " type name height width "},
    {"add", "add", "Add", LAYER_ADD, " type name "},
    {"multiply", "multiply", "Multiply", LAYER_MULTIPLY, " type name "},
    {"concatenate", "concatenate", "Concatenate", LAYER_CONCATENATE, " type name "},
    {"embedding", "embedding", "Embedding", LAYER_EMBEDDING, " type name input_dim output_dim "},
    {"global_avg_pool1d", "global_average_pooling1d", "GlobalAveragePooling1D",
     LAYER_GLOBAL_AVG_POOL1D, " type name "},
    {"depthwise_conv2d", "depthwise_conv2d", "DepthwiseConv2D", LAYER_DEPTHWISE_CONV2D,
     " type name depth_multiplier kernel_size strides padding activation use_bias "
     "kernel_regularizer bias_regularizer "},
    {"batch_normalization", "batch_normalization", "BatchNormalization", LAYER_BATCH_NORM,
     " type name axis momentum epsilon center scale beta_initializer gamma_initializer "
     "moving_mean_initializer moving_variance_initializer "},
};

/* Layers with a kernel (and a bias): their activation, use_bias and
 * regularizers. */
static bool has_kernel(layer_kind_t k) {
    return k == LAYER_CONV2D || k == LAYER_DENSE || k == LAYER_DEPTHWISE_CONV2D;
}

/* Convolutions over an image: kernel_size, strides, padding. */
static bool is_conv(layer_kind_t k) {
    return k == LAYER_CONV2D || k == LAYER_DEPTHWISE_CONV2D;
}

static const layer_info_t *info_of_kind(layer_kind_t kind) {
    for (size_t i = 0; i < PS_ARRAY_LEN(layer_infos); i++)
        if (layer_infos[i].kind == kind)
            return &layer_infos[i];
    return &layer_infos[0];
}

const char *model_layer_class(layer_kind_t kind) {
    return info_of_kind(kind)->keras_class;
}

void model_keras_h5_name(const model_t *m, size_t layer, char *out, size_t len) {
    layer_kind_t kind = m->layers[layer].kind;
    size_t before = 0;
    for (size_t i = 0; i < layer; i++)
        before += m->layers[i].kind == kind;
    const char *base = info_of_kind(kind)->keras_name;
    if (before)
        snprintf(out, len, "%s_%zu", base, before);
    else
        snprintf(out, len, "%s", base);
}

static const layer_info_t *info_of_type(const char *type) {
    for (size_t i = 0; i < PS_ARRAY_LEN(layer_infos); i++)
        if (strcmp(layer_infos[i].type, type) == 0)
            return &layer_infos[i];
    /* Keras's class-derived spelling is accepted too. */
    if (strcmp(type, "max_pooling2d") == 0)
        return info_of_kind(LAYER_MAX_POOL2D);
    return NULL;
}

/* Error prefix naming the layer: `layer 3 (max_pool2d)`. */
#define LAYER_ERR(err, errlen, i, l, fmt, ...)                                                     \
    ps_errf(err, errlen, "model: layer %zu (%s): " fmt, (i), info_of_kind((l)->kind)->type,        \
            __VA_ARGS__)

/* Reads a positive int or a pair of them ([a, b]) into out[2]. */
int model_get_pair(json_object *v, size_t out[2]) {
    if (json_object_is_type(v, json_type_int)) {
        int64_t x = json_object_get_int64(v);
        if (x < 1 || x > 65536)
            return -1;
        out[0] = out[1] = (size_t)x;
        return 0;
    }
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) != 2)
        return -1;
    for (size_t i = 0; i < 2; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        if (!json_object_is_type(e, json_type_int))
            return -1;
        int64_t x = json_object_get_int64(e);
        if (x < 1 || x > 65536)
            return -1;
        out[i] = (size_t)x;
    }
    return 0;
}

#define COUNT_MAX (1 << 24)

static int get_count(json_object *v, size_t *out) {
    if (!json_object_is_type(v, json_type_int))
        return -1;
    int64_t x = json_object_get_int64(v);
    if (x < 1 || x > COUNT_MAX)
        return -1;
    *out = (size_t)x;
    return 0;
}

/* What a count that get_count refused must be: a positive integer, or one
 * no larger than its limit when it was too large. */
static const char *count_want(json_object *v) {
    return json_object_is_type(v, json_type_int) && json_object_get_int64(v) > COUNT_MAX
               ? "at most 16777216"
               : "a positive integer";
}

static int parse_activation(json_object *v, activation_t *out) {
    if (!v || json_object_is_type(v, json_type_null)) {
        *out = ACT_LINEAR;
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return -1;
    return model_activation_parse(json_object_get_string(v), out);
}

static int parse_padding(json_object *v, bool *same) {
    if (!v) {
        *same = false;
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return -1;
    const char *s = json_object_get_string(v);
    if (strcmp(s, "same") != 0 && strcmp(s, "valid") != 0)
        return -1;
    *same = s[0] == 's';
    return 0;
}

/* Fills one layer's attributes from its JSON object (shapes come later). */
static int parse_layer(layer_t *l, size_t i, json_object *o, char *err, size_t errlen) {
    json_object *v;
    if (!json_object_is_type(o, json_type_object))
        return ps_errf(err, errlen, "model: layer %zu: expected an object", i);
    if (!json_object_object_get_ex(o, "type", &v) || !json_object_is_type(v, json_type_string))
        return ps_errf(err, errlen, "model: layer %zu: missing \"type\" (a string)", i);
    const layer_info_t *info = info_of_type(json_object_get_string(v));
    if (!info)
        return ps_errf(
            err, errlen,
            "model: layer %zu: unknown type \"%s\" (want conv2d, dense, max_pool2d, "
            "dropout, flatten, activation, reshape, rescaling, avg_pool2d, "
            "global_avg_pool2d, global_max_pool2d, center_crop, add, multiply, concatenate, "
            "embedding, global_avg_pool1d, depthwise_conv2d or batch_normalization)",
            i, json_object_get_string(v));
    memset(l, 0, sizeof *l);
    l->kind = info->kind;
    l->use_bias = true;
    l->kernel_var = l->bias_var = l->moving_var = -1;
    json_object_object_foreach(o, key, val) {
        char probe[80];
        snprintf(probe, sizeof probe, " %s ", key);
        if (!strstr(info->keys, probe) && strcmp(key, "inputs") != 0)
            return LAYER_ERR(err, errlen, i, l, "unknown key \"%s\"", key);
        (void)val;
    }
    if (json_object_object_get_ex(o, "name", &v)) {
        const char *name = json_object_get_string(v);
        if (!json_object_is_type(v, json_type_string) || !name[0] ||
            strlen(name) >= MODEL_NAME_LEN || strchr(name, '/'))
            return LAYER_ERR(err, errlen, i, l,
                             "\"name\" must be a non-empty string under %d "
                             "characters without '/'",
                             MODEL_NAME_LEN);
        snprintf(l->name, sizeof l->name, "%s", name);
    }
    switch (l->kind) {
    case LAYER_CONV2D:
    case LAYER_DEPTHWISE_CONV2D:
        if (l->kind == LAYER_CONV2D &&
            (!json_object_object_get_ex(o, "filters", &v) || get_count(v, &l->filters)))
            return LAYER_ERR(err, errlen, i, l, "\"filters\" must be %s", count_want(v));
        l->multiplier = 1;
        if (l->kind == LAYER_DEPTHWISE_CONV2D &&
            json_object_object_get_ex(o, "depth_multiplier", &v) && get_count(v, &l->multiplier))
            return LAYER_ERR(err, errlen, i, l, "\"depth_multiplier\" must be %s", count_want(v));
        if (!json_object_object_get_ex(o, "kernel_size", &v) || model_get_pair(v, l->kernel))
            return LAYER_ERR(err, errlen, i, l, "%s",
                             "\"kernel_size\" must be a positive integer or a pair of them");
        l->strides[0] = l->strides[1] = 1;
        if (json_object_object_get_ex(o, "strides", &v) && model_get_pair(v, l->strides))
            return LAYER_ERR(err, errlen, i, l, "%s",
                             "\"strides\" must be a positive integer or a pair of them");
        break;
    case LAYER_DENSE:
        if (!json_object_object_get_ex(o, "units", &v) || get_count(v, &l->units))
            return LAYER_ERR(err, errlen, i, l, "\"units\" must be %s", count_want(v));
        break;
    case LAYER_MAX_POOL2D:
        l->pool[0] = l->pool[1] = 2;
        if (json_object_object_get_ex(o, "pool_size", &v) && model_get_pair(v, l->pool))
            return LAYER_ERR(err, errlen, i, l, "%s",
                             "\"pool_size\" must be a positive integer or a pair of them");
        l->strides[0] = l->pool[0];
        l->strides[1] = l->pool[1];
        if (json_object_object_get_ex(o, "strides", &v) &&
            !json_object_is_type(v, json_type_null) && model_get_pair(v, l->strides))
            return LAYER_ERR(err, errlen, i, l, "%s",
                             "\"strides\" must be a positive integer or a pair of them");
        break;
    case LAYER_DROPOUT:
        if (!json_object_object_get_ex(o, "rate", &v) ||
            !(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
            return LAYER_ERR(err, errlen, i, l, "%s", "\"rate\" must be a number in [0, 1)");
        l->rate = (float)json_object_get_double(v);
        if (!(l->rate >= 0.0f && l->rate < 1.0f))
            return LAYER_ERR(err, errlen, i, l, "\"rate\" must be in [0, 1), got %g",
                             (double)l->rate);
        break;
    case LAYER_FLATTEN:
        break;
    case LAYER_EMBEDDING:
        if (!json_object_object_get_ex(o, "input_dim", &v) || get_count(v, &l->input_dim))
            return LAYER_ERR(err, errlen, i, l, "\"input_dim\" must be %s", count_want(v));
        if (!json_object_object_get_ex(o, "output_dim", &v) || get_count(v, &l->units))
            return LAYER_ERR(err, errlen, i, l, "\"output_dim\" must be %s", count_want(v));
        break;
    default: {
        char why[PS_ERRLEN];
        if (model_extra_parse(l, o, why, sizeof why))
            return LAYER_ERR(err, errlen, i, l, "%s", why);
        break;
    }
    }
    if (is_conv(l->kind) || l->kind == LAYER_MAX_POOL2D || l->kind == LAYER_AVG_POOL2D) {
        json_object *p = NULL;
        json_object_object_get_ex(o, "padding", &p);
        if (parse_padding(p, &l->same))
            return LAYER_ERR(err, errlen, i, l, "%s", "\"padding\" must be \"valid\" or \"same\"");
    }
    if (has_kernel(l->kind)) {
        json_object *a = NULL;
        json_object_object_get_ex(o, "activation", &a);
        if (parse_activation(a, &l->activation))
            return LAYER_ERR(err, errlen, i, l, "\"activation\" must be one of %s, or null",
                             model_activation_names);
        if (json_object_object_get_ex(o, "use_bias", &v)) {
            if (!json_object_is_type(v, json_type_boolean))
                return LAYER_ERR(err, errlen, i, l, "%s", "\"use_bias\" must be true or false");
            l->use_bias = json_object_get_boolean(v);
        }
        char why[PS_ERRLEN];
        if (model_reg_parse(l, o, why, sizeof why))
            return LAYER_ERR(err, errlen, i, l, "%s", why);
    }
    return 0;
}

/* Keras's automatic names: the first conv2d is "conv2d", the next "conv2d_1". */
static int name_layers(model_t *m, char *err, size_t errlen) {
    size_t counts[PS_ARRAY_LEN(layer_infos)] = {0};
    for (size_t i = 0; i < m->nlayers; i++) {
        layer_t *l = &m->layers[i];
        if (l->name[0])
            continue;
        const layer_info_t *info = info_of_kind(l->kind);
        size_t k = (size_t)(info - layer_infos);
        if (counts[k] == 0)
            snprintf(l->name, sizeof l->name, "%s", info->keras_name);
        else
            snprintf(l->name, sizeof l->name, "%s_%zu", info->keras_name, counts[k]);
        counts[k]++;
    }
    for (size_t i = 0; i < m->nlayers; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->layers[i].name, m->layers[j].name) == 0)
                return ps_errf(err, errlen,
                               "model: layer %zu: name \"%s\" is already used by "
                               "layer %zu",
                               i, m->layers[i].name, j);
    return 0;
}

var_t *model_add_var(model_t *m, const layer_t *l, const char *suffix, size_t ndim,
                     const size_t *shape, size_t fan_in, size_t fan_out) {
    var_t *v = &m->vars[m->nvars++];
    memset(v, 0, sizeof *v);
    snprintf(v->name, sizeof v->name, "%s/%s", l->name, suffix);
    v->ndim = ndim;
    v->size = 1;
    for (size_t d = 0; d < ndim; d++) {
        v->shape[d] = shape[d];
        v->size *= shape[d];
    }
    v->offset = m->nparams;
    v->fan_in = fan_in;
    v->fan_out = fan_out;
    m->nparams += v->size;
    return v;
}

/* Output shape of one layer from its input shape; creates its variables. */
static int infer_layer(model_t *m, size_t i, char *err, size_t errlen) {
    layer_t *l = &m->layers[i];
    size_t h = l->in[0], w = l->in[1], c = l->in[2];
    l->flat_out = l->kind == LAYER_DENSE || l->kind == LAYER_FLATTEN || l->flat_in;
    if (l->seq_in && !model_takes_sequence(l->kind))
        return LAYER_ERR(err, errlen, i, l, "%s",
                         "takes no sequence [steps, features]: put flatten or "
                         "global_avg_pool1d after the embedding first");
    switch (l->kind) {
    case LAYER_CONV2D:
    case LAYER_DEPTHWISE_CONV2D:
    case LAYER_MAX_POOL2D: {
        if (l->flat_in)
            return LAYER_ERR(err, errlen, i, l, "%s",
                             "needs an image input [h, w, c], not a flat one");
        size_t kh = is_conv(l->kind) ? l->kernel[0] : l->pool[0];
        size_t kw = is_conv(l->kind) ? l->kernel[1] : l->pool[1];
        conv2d_shape_t s = {.n = 1,
                            .h = h,
                            .w = w,
                            .c = c,
                            .kh = kh,
                            .kw = kw,
                            .sh = l->strides[0],
                            .sw = l->strides[1]};
        conv2d_shape_init(&s, l->same);
        if (s.oh == 0 || s.ow == 0)
            return LAYER_ERR(err, errlen, i, l,
                             "window %zux%zu does not fit the input %zux%zu with \"valid\" padding",
                             kh, kw, h, w);
        l->out[0] = s.oh;
        l->out[1] = s.ow;
        if (l->kind == LAYER_DEPTHWISE_CONV2D)
            l->filters = c * l->multiplier;
        l->out[2] = is_conv(l->kind) ? l->filters : c;
        if (is_conv(l->kind)) {
            /* Keras's depthwise kernel is [kh, kw, c, multiplier] (Keras 3 calls
             * it "kernel", tf.keras 2 "depthwise_kernel"); its Glorot fans are
             * those of that shape. */
            size_t cout = l->kind == LAYER_CONV2D ? l->filters : l->multiplier;
            size_t shape[4] = {kh, kw, c, cout};
            model_add_var(m, l, "kernel", 4, shape, kh * kw * c, kh * kw * cout);
            l->kernel_var = (int)m->nvars - 1;
        }
        break;
    }
    case LAYER_DENSE: {
        if (!l->flat_in)
            return LAYER_ERR(err, errlen, i, l,
                             "input has shape (%zu, %zu, %zu); add a flatten layer before it", h, w,
                             c);
        size_t shape[2] = {c, l->units};
        model_add_var(m, l, "kernel", 2, shape, c, l->units);
        l->kernel_var = (int)m->nvars - 1;
        l->out[0] = l->out[1] = 1;
        l->out[2] = l->units;
        break;
    }
    case LAYER_FLATTEN:
        l->out[0] = l->out[1] = 1;
        l->out[2] = h * w * c;
        break;
    case LAYER_DROPOUT:
        memcpy(l->out, l->in, sizeof l->out);
        break;
    case LAYER_EMBEDDING:
    case LAYER_GLOBAL_AVG_POOL1D: {
        char why[PS_ERRLEN];
        if (model_embed_infer(m, i, why, sizeof why))
            return LAYER_ERR(err, errlen, i, l, "%s", why);
        break;
    }
    default: {
        char why[PS_ERRLEN];
        bool merge =
            l->kind == LAYER_ADD || l->kind == LAYER_MULTIPLY || l->kind == LAYER_CONCATENATE;
        int rc = merge                         ? model_graph_infer(m, i, why, sizeof why)
                 : l->kind == LAYER_BATCH_NORM ? model_bn_infer(m, i, why, sizeof why)
                                               : model_extra_infer(l, why, sizeof why);
        if (rc)
            return LAYER_ERR(err, errlen, i, l, "%s", why);
        break;
    }
    }
    if (has_kernel(l->kind) && l->use_bias) {
        size_t shape[1] = {l->out[2]};
        model_add_var(m, l, "bias", 1, shape, 0, 0);
        l->bias_var = (int)m->nvars - 1;
    }
    l->seq_out =
        l->kind == LAYER_EMBEDDING ||
        (l->seq_in && !l->flat_out &&
         (l->kind == LAYER_DROPOUT || l->kind == LAYER_ACTIVATION || l->kind == LAYER_RESCALING));
    l->in_size = h * w * c;
    l->out_size = l->out[0] * l->out[1] * l->out[2];
    return 0;
}

static int parse_input(model_t *m, json_object *root, char *err, size_t errlen) {
    json_object *in;
    if (!json_object_object_get_ex(root, "input", &in) || !json_object_is_type(in, json_type_array))
        return ps_errf(err, errlen, "model: \"input\" must be an array like [28, 28, 1]");
    size_t nd = json_object_array_length(in);
    size_t dims[3];
    if (nd < 1 || nd > 3)
        return ps_errf(err, errlen, "model: \"input\" must have 1 to 3 dimensions, got %zu", nd);
    for (size_t d = 0; d < nd; d++)
        if (get_count(json_object_array_get_idx(in, d), &dims[d]))
            return ps_errf(err, errlen, "model: \"input\"[%zu] must be a positive integer", d);
    /* [n] is a flat input, [h, w] a one-channel image. */
    m->input[0] = nd == 1 ? 1 : dims[0];
    m->input[1] = nd == 1 ? 1 : dims[1];
    m->input[2] = nd == 1 ? dims[0] : nd == 2 ? 1 : dims[2];
    m->input_flat = nd == 1;
    return 0;
}

static int check_head(model_t *m, char *err, size_t errlen) {
    for (size_t i = 0; i + 1 < m->nlayers; i++) {
        const layer_t *l = &m->layers[i];
        if (l->activation == ACT_SOFTMAX)
            return LAYER_ERR(err, errlen, i, l, "%s",
                             "\"softmax\" is only supported on the last layer");
    }
    return model_loss_auto(m, &m->loss, err, errlen);
}

int model_parse(model_t *m, const char *json_text, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    enum json_tokener_error jerr;
    json_object *root = json_tokener_parse_verbose(json_text, &jerr);
    if (!root)
        return ps_errf(err, errlen, "model: not JSON: %s", json_tokener_error_desc(jerr));
    int rc = -1;
    json_object *layers;
    if (keras_json_is_model(root)) {
        json_object *spec = keras_json_to_spec(root, err, errlen);
        json_object_put(root);
        if (!spec)
            return -1;
        root = spec;
    }
    if (!json_object_is_type(root, json_type_object)) {
        ps_errf(err, errlen, "model: expected a JSON object with \"input\" and \"layers\"");
        goto out;
    }
    json_object_object_foreach(root, key, val) {
        (void)val;
        if (strcmp(key, "input") && strcmp(key, "layers") && strcmp(key, "name")) {
            ps_errf(err, errlen, "model: unknown key \"%s\" (want \"input\", \"layers\")", key);
            goto out;
        }
    }
    if (parse_input(m, root, err, errlen))
        goto out;
    if (!json_object_object_get_ex(root, "layers", &layers) ||
        !json_object_is_type(layers, json_type_array) || json_object_array_length(layers) == 0) {
        ps_errf(err, errlen, "model: \"layers\" must be a non-empty array");
        goto out;
    }
    m->nlayers = json_object_array_length(layers);
    m->layers = xcalloc(m->nlayers, sizeof *m->layers);
    m->vars = xcalloc(MODEL_LAYER_MAX_VARS * m->nlayers, sizeof *m->vars);
    for (size_t i = 0; i < m->nlayers; i++)
        if (parse_layer(&m->layers[i], i, json_object_array_get_idx(layers, i), err, errlen))
            goto out;
    if (name_layers(m, err, errlen))
        goto out;
    for (size_t i = 0; i < m->nlayers; i++) {
        layer_t *l = &m->layers[i];
        char why[PS_ERRLEN];
        if (model_graph_inputs(m, i, json_object_array_get_idx(layers, i), why, sizeof why)) {
            LAYER_ERR(err, errlen, i, l, "%s", why);
            goto out;
        }
        int src = l->inputs[0];
        memcpy(l->in, src >= 0 ? m->layers[src].out : m->input, sizeof m->input);
        l->flat_in = src >= 0 ? m->layers[src].flat_out : m->input_flat;
        l->seq_in = src >= 0 && m->layers[src].seq_out;
        if (infer_layer(m, i, err, errlen))
            goto out;
    }
    m->nclasses = m->layers[m->nlayers - 1].out_size;
    if (check_head(m, err, errlen))
        goto out;
    m->json = model_to_json(m);
    rc = 0;
out:
    json_object_put(root);
    if (rc)
        model_free(m);
    return rc;
}

int model_load(model_t *m, const char *name_or_path, char *err, size_t errlen) {
    if (strcmp(name_or_path, "cnn") == 0)
        return model_parse(m, builtin_cnn, err, errlen);
    if (strcmp(name_or_path, "mlp") == 0)
        return model_parse(m, builtin_mlp, err, errlen);
    char *text = NULL;
    if (ps_read_file(name_or_path, &text, NULL, err, errlen))
        return ps_errf(err, errlen,
                       "model: %s is neither a builtin (cnn, mlp) nor a readable "
                       "file",
                       name_or_path);
    char inner[PS_ERRLEN];
    int rc = model_parse(m, text, inner, sizeof inner);
    bool keras = strstr(text, "\"class_name\"") != NULL;
    free(text);
    if (rc)
        return ps_errf(err, errlen, "%s: %s", name_or_path, inner);
    /* to_json() carries no loss: say which one the last layer implies. */
    if (keras)
        log_info("model %s: Keras JSON; loss %s by its last layer (train.loss may say "
                 "otherwise)",
                 name_or_path, model_loss_name(m->loss));
    return 0;
}

void model_free(model_t *m) {
    free(m->layers);
    free(m->vars);
    free(m->json);
    memset(m, 0, sizeof *m);
}

int model_find_var(const model_t *m, const char *name) {
    for (size_t i = 0; i < m->nvars; i++)
        if (strcmp(m->vars[i].name, name) == 0)
            return (int)i;
    return -1;
}

void model_init_var(const var_t *v, uint64_t seed, size_t begin, size_t end, float *out) {
    if (v->fan_in == 0 && v->uniform <= 0.0f) {
        for (size_t i = begin; i < end; i++)
            out[i - begin] = v->fill;
        return;
    }
    uint64_t key = rng_key(seed, v->name, 0);
    float limit = v->uniform > 0.0f ? v->uniform : sqrtf(6.0f / (float)(v->fan_in + v->fan_out));
    for (size_t i = begin; i < end; i++)
        out[i - begin] = (2.0f * rng_uniform(key, i) - 1.0f) * limit;
}

void model_init_params(const model_t *m, uint64_t seed, float *params) {
    for (size_t i = 0; i < m->nvars; i++)
        model_init_var(&m->vars[i], seed, 0, m->vars[i].size, params + m->vars[i].offset);
}

/* 1234567 -> "1,234,567" */
static void group_thousands(char *buf, size_t len, size_t x) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%zu", x);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < len; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

size_t model_layer_vars(const model_t *m, size_t layer, int out[MODEL_LAYER_MAX_VARS]) {
    const layer_t *l = &m->layers[layer];
    int all[MODEL_LAYER_MAX_VARS] = {l->kernel_var, l->bias_var, l->moving_var,
                                     l->moving_var >= 0 ? l->moving_var + 1 : -1};
    size_t n = 0;
    for (size_t k = 0; k < MODEL_LAYER_MAX_VARS; k++)
        if (all[k] >= 0)
            out[n++] = all[k];
    return n;
}

size_t model_trainable_params(const model_t *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->nvars; i++)
        n += m->vars[i].moving ? 0 : m->vars[i].size;
    return n;
}

/* Elements of layer i's variables (Keras's count_params: non-trainable too). */
static size_t layer_params(const model_t *m, size_t i) {
    int idx[MODEL_LAYER_MAX_VARS];
    size_t n = 0, k = model_layer_vars(m, i, idx);
    while (k-- > 0)
        n += m->vars[idx[k]].size;
    return n;
}

/* "Total params: 1,234 (4.82 KB)": the count and its float32 bytes in
 * Keras's units (B, KB, MB, GB of 1024). */
static void summary_count(FILE *out, const char *what, size_t params) {
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    char count[32];
    group_thousands(count, sizeof count, params);
    double size = (double)params * 4.0;
    size_t u = 0;
    while (size >= 1024.0 && u + 1 < PS_ARRAY_LEN(units)) {
        size /= 1024.0;
        u++;
    }
    fprintf(out, "%s: %s (%.2f %s)\n", what, count, size, units[u]);
}

static void summary_rule(FILE *out, char c, size_t width) {
    for (size_t i = 0; i < width; i++)
        fputc(c, out);
    fputc('\n', out);
}

void model_summary(const model_t *m, FILE *out) {
    size_t w0 = 28;
    for (size_t i = 0; i < m->nlayers; i++) {
        const layer_t *l = &m->layers[i];
        size_t need = strlen(l->name) + strlen(info_of_kind(l->kind)->keras_class) + 4;
        w0 = PS_MAX(w0, need);
    }
    size_t width = w0 + 1 + 26 + 10;
    fprintf(out, "Model: \"%s\"\n", m->graph ? "functional" : "sequential");
    summary_rule(out, '_', width);
    fprintf(out, " %-*s%-26s%-10s\n", (int)w0, "Layer (type)", "Output Shape", "Param #");
    summary_rule(out, '=', width);
    for (size_t i = 0; i < m->nlayers; i++) {
        const layer_t *l = &m->layers[i];
        char name[160], shape[64];
        snprintf(name, sizeof name, "%s (%s)", l->name, info_of_kind(l->kind)->keras_class);
        if (l->flat_out)
            snprintf(shape, sizeof shape, "(None, %zu)", l->out[2]);
        else if (l->seq_out)
            snprintf(shape, sizeof shape, "(None, %zu, %zu)", l->out[1], l->out[2]);
        else
            snprintf(shape, sizeof shape, "(None, %zu, %zu, %zu)", l->out[0], l->out[1], l->out[2]);
        fprintf(out, " %-*s%-26s%-10zu\n", (int)w0, name, shape, layer_params(m, i));
        if (i + 1 < m->nlayers)
            fprintf(out, "\n");
    }
    summary_rule(out, '=', width);
    size_t trainable = model_trainable_params(m);
    summary_count(out, "Total params", m->nparams);
    summary_count(out, "Trainable params", trainable);
    summary_count(out, "Non-trainable params", m->nparams - trainable);
    summary_rule(out, '_', width);
}

static json_object *pair_json(const size_t p[2]) {
    json_object *a = json_object_new_array();
    json_object_array_add(a, json_object_new_int64((int64_t)p[0]));
    json_object_array_add(a, json_object_new_int64((int64_t)p[1]));
    return a;
}

static json_object *layer_json(const layer_t *l) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string(info_of_kind(l->kind)->type));
    json_object_object_add(o, "name", json_object_new_string(l->name));
    switch (l->kind) {
    case LAYER_CONV2D:
    case LAYER_DEPTHWISE_CONV2D:
        if (l->kind == LAYER_CONV2D)
            json_object_object_add(o, "filters", json_object_new_int64((int64_t)l->filters));
        else
            json_object_object_add(o, "depth_multiplier",
                                   json_object_new_int64((int64_t)l->multiplier));
        json_object_object_add(o, "kernel_size", pair_json(l->kernel));
        json_object_object_add(o, "strides", pair_json(l->strides));
        break;
    case LAYER_DENSE:
        json_object_object_add(o, "units", json_object_new_int64((int64_t)l->units));
        break;
    case LAYER_MAX_POOL2D:
        json_object_object_add(o, "pool_size", pair_json(l->pool));
        json_object_object_add(o, "strides", pair_json(l->strides));
        break;
    case LAYER_DROPOUT:
        json_object_object_add(o, "rate", json_object_new_double((double)l->rate));
        break;
    case LAYER_FLATTEN:
        break;
    case LAYER_EMBEDDING:
        json_object_object_add(o, "input_dim", json_object_new_int64((int64_t)l->input_dim));
        json_object_object_add(o, "output_dim", json_object_new_int64((int64_t)l->units));
        break;
    default:
        model_extra_json(l, o);
        break;
    }
    if (is_conv(l->kind) || l->kind == LAYER_MAX_POOL2D)
        json_object_object_add(o, "padding", json_object_new_string(l->same ? "same" : "valid"));
    if (has_kernel(l->kind)) {
        json_object_object_add(o, "activation",
                               json_object_new_string(model_activation_name(l->activation)));
        json_object_object_add(o, "use_bias", json_object_new_boolean(l->use_bias));
        model_reg_json(l, o);
    }
    return o;
}

/* A graph layer's "inputs": the names of the layers it takes. */
static json_object *inputs_json(const model_t *m, const layer_t *l) {
    json_object *a = json_object_new_array();
    for (size_t k = 0; k < l->ninputs; k++) {
        int j = l->inputs[k];
        json_object_array_add(a,
                              json_object_new_string(j < 0 ? MODEL_INPUT_NAME : m->layers[j].name));
    }
    return a;
}

char *model_to_json(const model_t *m) {
    json_object *root = json_object_new_object();
    json_object *in = json_object_new_array();
    for (size_t d = m->input_flat ? 2 : 0; d < 3; d++)
        json_object_array_add(in, json_object_new_int64((int64_t)m->input[d]));
    json_object_object_add(root, "input", in);
    json_object *layers = json_object_new_array();
    for (size_t i = 0; i < m->nlayers; i++) {
        json_object *o = layer_json(&m->layers[i]);
        if (m->graph)
            json_object_object_add(o, "inputs", inputs_json(m, &m->layers[i]));
        json_object_array_add(layers, o);
    }
    json_object_object_add(root, "layers", layers);
    char *s = xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    return s;
}

/* Multiply-adds of one example through a conv or dense layer's forward. */
static double layer_macs(const layer_t *l) {
    if (l->kind == LAYER_CONV2D)
        return (double)(l->out[0] * l->out[1] * l->filters) *
               (double)(l->kernel[0] * l->kernel[1] * l->in[2]);
    if (l->kind == LAYER_DEPTHWISE_CONV2D)
        return (double)(l->out[0] * l->out[1] * l->filters) * (double)(l->kernel[0] * l->kernel[1]);
    if (l->kind == LAYER_DENSE)
        return (double)l->in_size * (double)l->units;
    return 0.0;
}

double model_forward_flops(const model_t *m) {
    double f = 0.0;
    for (size_t i = 0; i < m->nlayers; i++)
        f += 2.0 * layer_macs(&m->layers[i]);
    return f;
}

double model_train_flops(const model_t *m) {
    /* forward + backward-filter everywhere, backward-data except for the first
     * layer with weights (nothing below it needs a gradient). */
    double f = 0.0;
    bool first = true;
    for (size_t i = 0; i < m->nlayers; i++) {
        double macs = layer_macs(&m->layers[i]);
        if (macs == 0.0)
            continue;
        f += 2.0 * macs * (first ? 2.0 : 3.0);
        first = false;
    }
    return f;
}

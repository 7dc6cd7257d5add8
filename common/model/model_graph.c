/* Functional graphs: which earlier layers each layer takes its inputs from
 * (the spec's "inputs", names of earlier layers or "@input" for the model's
 * input; by default the previous layer), and the merges Add, Multiply and
 * Concatenate (along the channels, Keras's axis=-1). */
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

/* The index of the layer called name among layers [0, before), -1 for
 * "@input", or -2 when there is none. */
static int find_before(const model_t *m, size_t before, const char *name) {
    if (!strcmp(name, MODEL_INPUT_NAME))
        return -1;
    for (size_t j = 0; j < before; j++)
        if (!strcmp(m->layers[j].name, name))
            return (int)j;
    return -2;
}

static bool is_merge(layer_kind_t k) {
    return k == LAYER_ADD || k == LAYER_MULTIPLY || k == LAYER_CONCATENATE;
}

int model_graph_inputs(model_t *m, size_t i, json_object *o, char *why, size_t whylen) {
    layer_t *l = &m->layers[i];
    json_object *v = NULL;
    l->ninputs = 1;
    l->inputs[0] = (int)i - 1;
    if (!json_object_object_get_ex(o, "inputs", &v))
        return is_merge(l->kind) ? ps_errf(why, whylen, "a merge needs \"inputs\" (2 or more)") : 0;
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    if (n < 1 || n > MODEL_MAX_INPUTS || (is_merge(l->kind) ? n < 2 : n != 1))
        return ps_errf(why, whylen,
                       "\"inputs\" must be an array of %s names of earlier layers (or \"%s\")",
                       is_merge(l->kind) ? "2 to 8" : "1", MODEL_INPUT_NAME);
    for (size_t k = 0; k < n; k++) {
        json_object *e = json_object_array_get_idx(v, k);
        const char *name =
            json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
        int j = find_before(m, i, name);
        if (j == -2)
            return ps_errf(why, whylen, "input \"%s\" is not an earlier layer (nor \"%s\")", name,
                           MODEL_INPUT_NAME);
        l->inputs[k] = j;
    }
    l->ninputs = n;
    if (n != 1 || l->inputs[0] != (int)i - 1)
        m->graph = true;
    return 0;
}

/* Shape and flatness of layer j's output (-1: the model's input). */
static const size_t *out_of(const model_t *m, int j, bool *flat) {
    *flat = j < 0 ? m->input_flat : m->layers[j].flat_out;
    return j < 0 ? m->input : m->layers[j].out;
}

int model_graph_infer(model_t *m, size_t i, char *why, size_t whylen) {
    layer_t *l = &m->layers[i];
    bool flat0, flat;
    const size_t *s0 = out_of(m, l->inputs[0], &flat0);
    memcpy(l->out, s0, sizeof l->out);
    l->flat_out = flat0;
    for (size_t k = 1; k < l->ninputs; k++) {
        const size_t *s = out_of(m, l->inputs[k], &flat);
        bool same_grid = flat == flat0 && s[0] == s0[0] && s[1] == s0[1];
        if (!same_grid || (l->kind != LAYER_CONCATENATE && s[2] != s0[2]))
            return ps_errf(why, whylen,
                           "input %zu has shape (%zu, %zu, %zu), input 0 (%zu, %zu, %zu): %s", k,
                           s[0], s[1], s[2], s0[0], s0[1], s0[2],
                           l->kind == LAYER_CONCATENATE ? "only the channels may differ"
                                                        : "they must be equal");
        if (l->kind == LAYER_CONCATENATE)
            l->out[2] += s[2];
    }
    return 0;
}

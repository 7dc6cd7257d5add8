/* What model.c and model_extra.c share: the attributes, shapes and spec
 * JSON of the layers beyond the builtin models, and the activation names. */
#ifndef PSTRAIN_MODEL_INTERNAL_H
#define PSTRAIN_MODEL_INTERNAL_H

#include <json-c/json.h>

#include "common/model/model.h"

/* A positive int or a pair of them ([a, b]) into out[2]; -1 if not. */
int model_get_pair(json_object *v, size_t out[2]);

/* Fills the attributes of a layer of an extra kind (l->kind set) from its
 * spec object; on error writes what is wrong into why (without the layer's
 * name, which the caller prefixes) and returns -1. */
int model_extra_parse(layer_t *l, json_object *o, char *why, size_t whylen);
/* Output shape of a layer of an extra kind from l->in; -1 with why. */
int model_extra_infer(layer_t *l, char *why, size_t whylen);
/* Adds an extra kind's attributes to its canonical spec object. */
void model_extra_json(const layer_t *l, json_object *o);

/* "relu" <-> ACT_RELU; -1 for a name pstrain does not run. */
int model_activation_parse(const char *name, activation_t *out);
const char *model_activation_name(activation_t a);
/* The names accepted, for errors: "linear, relu, ...". */
extern const char model_activation_names[];

/* The name that stands for the model's input in a layer's "inputs". */
#define MODEL_INPUT_NAME "@input"

/* Reads layer i's "inputs" (names of earlier layers) from its spec object
 * into l->inputs (default: the previous layer) and sets m->graph when the
 * model is not a chain; -1 with why. */
int model_graph_inputs(model_t *m, size_t i, json_object *o, char *why, size_t whylen);
/* Output shape of a merge (Add, Multiply, Concatenate) from its inputs'. */
int model_graph_infer(model_t *m, size_t i, char *why, size_t whylen);

/* Appends variable "<layer>/<suffix>" of the given shape to the model's slab
 * (fan_in and fan_out for Glorot, or 0 for a constant fill, set after). */
var_t *model_add_var(model_t *m, const layer_t *l, const char *suffix, size_t ndim,
                     const size_t *shape, size_t fan_in, size_t fan_out);

/* BatchNormalization (model_bn.c): its spec attributes (as
 * model_extra_parse), its output shape and variables, its canonical JSON. */
int model_bn_parse(layer_t *l, json_object *o, char *why, size_t whylen);
int model_bn_infer(model_t *m, size_t i, char *why, size_t whylen);
void model_bn_json(const layer_t *l, json_object *o);
/* Whether a layer of this kind takes a sequence (an embedding's output). */
bool model_takes_sequence(layer_kind_t kind);
/* Output shape (and the table) of an Embedding or GlobalAveragePooling1D
 * layer i from its input; -1 with why. */
int model_embed_infer(model_t *m, size_t i, char *why, size_t whylen);

/* Keras's class name of a layer kind ("Conv2D"). */
const char *model_layer_class(layer_kind_t kind);

/* L2 regularizers (model_reg.c). A regularizer's L2 factor from its JSON:
 * null (0), "l2", Keras's {"class_name": "L2" or "L1L2" with l1 0, "config":
 * {...}}, or pstrain's {"l2": x}; -1 with why (the value and what it must
 * be) for any other. */
int model_reg_value(json_object *v, float *l2, char *why, size_t whylen);
/* A layer's "kernel_regularizer" and "bias_regularizer" into l->l2. */
int model_reg_parse(layer_t *l, json_object *o, char *why, size_t whylen);
/* The canonical spec's regularizers ({"l2": x}; none when 0). */
void model_reg_json(const layer_t *l, json_object *o);
/* Keras 3's serialized L2 objects into a layer's config, the kernel's under
 * kernel_key ("kernel_regularizer", "depthwise_regularizer"). */
void model_reg_keras(const layer_t *l, json_object *config, const char *kernel_key);
bool model_has_reg(const model_t *m);
/* sum of l2 * sum(w^2) over the regularized variables at params (backend
 * memory); dot is one float of backend scratch. */
double model_reg_loss(const model_t *m, const backend_t *be, const float *params, float *dot);
/* grads += factor * 2 * l2 * w for layer l's regularized variables. */
void model_reg_backward(const model_t *m, const layer_t *l, const backend_t *be,
                        const float *params, float factor, float *grads);

#endif

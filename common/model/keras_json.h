/* Keras's model JSON (what model.to_json() writes in Keras 3, and tf.keras
 * 2.x where it differs) turned into pstrain's own spec, which model_parse
 * then validates like any other. Sequential and Functional models (one
 * input, one output, each layer called once; Add, Multiply, Concatenate)
 * are accepted. A layer, key, activation or
 * initializer pstrain does not implement is refused with one error naming
 * the layer, the key and what is supported; keys that do not change the math
 * (dtype policies, build_config, trainable: true, module, ...) are accepted. */
#ifndef PSTRAIN_KERAS_JSON_H
#define PSTRAIN_KERAS_JSON_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

/* True when root looks like a Keras model (an object with "class_name"). */
bool keras_json_is_model(json_object *root);

/* A new pstrain spec object ({"input": ..., "layers": [...]}) for the Keras
 * model at root; NULL with err filled when something is not supported. The
 * caller puts the result. */
json_object *keras_json_to_spec(json_object *root, char *err, size_t errlen);

/* The train.loss name of the loss in a .keras file's config.json
 * ("compile_config": {"loss": ...}; keras_compile.c) into loss, or "" when
 * the model was saved uncompiled; -1 with err naming the loss and what is
 * supported (categorical cross-entropy's one-hot labels, from_logits on
 * binary cross-entropy, several outputs' losses, label smoothing). */
int keras_compile_loss(const char *config_json, char *loss, size_t len, char *err, size_t errlen);

#endif

/* Keras 3 weight files (.keras, .weights.h5) as pstrain variables. Keras
 * saves layer i's variables as arrays 0, 1, ... of the group
 * layers/<model_keras_h5_name(m, i)>/vars, in get_weights order: kernel then
 * bias for Conv2D, DepthwiseConv2D and Dense, which is pstrain's order too. */
#ifndef PSTRAIN_KERAS_WEIGHTS_H
#define PSTRAIN_KERAS_WEIGHTS_H

#include <stddef.h>

#include "common/model/model.h"

/* Writes the weights of the Keras file at path that m has a use for as a
 * safetensors file under pstrain's names at out (so that the checkpoint
 * restore, with its partitions and patterns, reads them like any other);
 * a layer the file lacks is an error naming the variable and the layers
 * found. A layer whose
 * arrays do not fit m is an error naming both, unless no variable of it
 * matches pattern (a POSIX extended regex; NULL matches all). */
int keras_weights_to_safetensors(const model_t *m, const char *path, const char *pattern,
                                 const char *out, char *err, size_t errlen);

/* A .keras file as a model and its weights: the model from config.json,
 * *params (a slab the caller frees) from model.weights.h5; every variable
 * must be there. The caller frees m with model_free. */
int keras_load(const char *path, model_t *m, float **params, char *err, size_t errlen);

#endif

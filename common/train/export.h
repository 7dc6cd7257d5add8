/* Exports: what a trained model leaves for people and other frameworks.
 * DIR/model.json is the canonical model spec; DIR/weights.safetensors holds
 * every variable whole, under its Keras name and layout, in the model's
 * order (which is the order of Keras's model.get_weights()); DIR/weights.npz
 * holds the same arrays in the same order, keyed by variable name, so that
 * keras_model.set_weights(list(np.load(f).values())) works. The directory
 * is written beside its place and renamed into it, so a reader never sees a
 * half-written export. */
#ifndef PSTRAIN_EXPORT_H
#define PSTRAIN_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "common/model/model.h"

int export_write(const model_t *m, const float *params, uint64_t step, const char *dir, char *err,
                 size_t errlen);

/* The model and weights of an export, or of a checkpoint directory (whose
 * model.json the master wrote beside the shards). *params is a model slab
 * the caller frees; the caller frees m with model_free. */
int export_load(const char *dir, model_t *m, float **params, uint64_t *step, char *err,
                size_t errlen);

#endif

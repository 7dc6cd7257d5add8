/* Keras 3's .keras file: a zip (libzip) of config.json (the model's
 * serialized config), metadata.json (keras_version, date_saved) and
 * model.weights.h5 (HDF5, through libhdf5's C API), which
 * keras.models.load_model opens. In the weights file every layer of the
 * model has a group layers/<name>/vars holding its
 * variables as float32 datasets "0", "1", ... in get_weights order; layers
 * without variables have an empty one; the root's vars group is named after
 * the model. */
#ifndef PSTRAIN_KERAS_FILE_H
#define PSTRAIN_KERAS_FILE_H

#include <stdbool.h>
#include <stddef.h>

#define KERAS_FILE_MAX_NDIM 4

typedef struct {
    size_t ndim;
    size_t shape[KERAS_FILE_MAX_NDIM];
    const float *data; /* row-major */
} kf_var_t;

typedef struct {
    const char *name; /* the layer's group in model.weights.h5 (Keras: the class in snake
                         case, numbered per class: "dense_1") */
    size_t nvars;
    const kf_var_t *vars;
} kf_layer_t;

/* Writes path (a .keras zip, entries stored) from the model's config JSON,
 * the Keras version to claim in metadata.json, the model's name and its
 * layers in order. */
int kf_write(const char *path, const char *config_json, const char *keras_version,
             const char *model_name, const kf_layer_t *layers, size_t nlayers, char *err,
             size_t errlen);

/* What kf_read returns: the arrays of one layers/<name>/vars group. */
typedef struct {
    size_t ndim;
    size_t shape[KERAS_FILE_MAX_NDIM];
    size_t count; /* elements */
    float *data;
} kf_array_t;

typedef struct {
    char *name; /* the group's name under layers/ */
    size_t nvars;
    kf_array_t *vars; /* "0", "1", ... in order */
} kf_group_t;

typedef struct {
    char *config_json; /* a .keras file's config.json; NULL for a .weights.h5 */
    size_t ngroups;
    kf_group_t *groups;
} kf_file_t;

/* True for a path that names a .keras or .h5 file. */
bool kf_is_keras_path(const char *path);

/* Reads a .keras file (its config.json and model.weights.h5) or a
 * .weights.h5 file: every group under layers/ with its float arrays (float64
 * ones converted). Sizes are checked before anything is allocated: a zip
 * entry against its stored bytes and 4 GiB, an array against 2^28 elements.
 * On error out is left empty. */
int kf_read(const char *path, kf_file_t *out, char *err, size_t errlen);
void kf_free(kf_file_t *f);
/* A .keras file's config.json alone, NUL-terminated (caller frees *json). */
int kf_read_config(const char *path, char **json, char *err, size_t errlen);
/* The group named name, or NULL. */
const kf_group_t *kf_find(const kf_file_t *f, const char *name);

#endif

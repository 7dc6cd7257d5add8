/* One tf.train.Example (proto/example.proto) read from a record's bytes:
 * the image feature (bytes: PNG, JPEG or raw pixels), the label (int64) and,
 * when present, the int64 features height, width and depth that writers of
 * raw pixels add (TensorFlow's convert_to_records does). Parsing works on a
 * buffer, so a fuzzer can drive it. */
#ifndef PSTRAIN_EXAMPLE_H
#define PSTRAIN_EXAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    void *msg;            /* the unpacked Tensorflow__Example; the fields point into it */
    const uint8_t *image; /* the image feature's first value (a bytes list) */
    size_t image_len;
    const float *floats; /* or the feature's values (a float list: tabular data) */
    size_t nfloats;
    int64_t label;
    int64_t height, width, depth; /* -1 when absent */
} example_t;

/* Parses buf. Errors (without a file name: the caller adds file and record)
 * say what is wrong: not an Example, a missing feature (naming it and the
 * features there are), a feature of the wrong type or with no value. */
int example_parse(example_t *e, const uint8_t *buf, size_t len, const char *image_key,
                  const char *label_key, char *err, size_t errlen);
void example_free(example_t *e);

/* What example_pack writes: the image as bytes (with its shape as int64
 * height, width, depth when shape is given) or as floats, and the label. */
typedef struct {
    const char *image_key, *label_key;
    const uint8_t *image; /* or NULL and floats */
    size_t image_len;
    const float *floats;
    size_t nfloats;
    const size_t *shape; /* [3] or NULL */
    int64_t label;
} example_fields_t;

/* Serializes an Example of f into *out (the caller frees it). */
void example_pack(const example_fields_t *f, uint8_t **out, size_t *len);

#endif

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
    const uint8_t *image; /* the image feature's first value */
    size_t image_len;
    int64_t label;
    int64_t height, width, depth; /* -1 when absent */
} example_t;

/* Parses buf. Errors (without a file name: the caller adds file and record)
 * say what is wrong: not an Example, a missing feature (naming it and the
 * features there are), a feature of the wrong type or with no value. */
int example_parse(example_t *e, const uint8_t *buf, size_t len, const char *image_key,
                  const char *label_key, char *err, size_t errlen);
void example_free(example_t *e);

#endif

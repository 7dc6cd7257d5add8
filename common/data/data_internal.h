/* What the readers of source.c share: a growing data set, and the reader of
 * each format. Not for use outside common/data/. */
#ifndef PSTRAIN_DATA_INTERNAL_H
#define PSTRAIN_DATA_INTERNAL_H

#include <stdint.h>

#include "common/data/source.h"

/* A data set grown one example at a time (capacity doubles). */
typedef struct {
    dataset_t *d;
    size_t cap;
    float *scratch; /* one decoded image, [h, w, c] */
} dsb_t;

/* Starts d as empty, examples of h * w * c values: bytes, or floats when
 * `features`. */
void dsb_init(dsb_t *b, dataset_t *d, size_t h, size_t w, size_t c, bool features);
/* Changes the shape of an empty data set (CSV read without a model). */
void dsb_reshape(dsb_t *b, size_t h, size_t w, size_t c);
/* Shrinks the capacity to the examples held (at least one): a staging
 * data set that holds one example at a time keeps no more room. */
void dsb_trim(dsb_t *b);
/* Room for one more example, labelled `label`: returns where its bytes go
 * (dsb_add_floats: its floats). */
uint8_t *dsb_add(dsb_t *b, uint8_t label);
float *dsb_add_floats(dsb_t *b, uint8_t label);
/* Decoded floats in [0, 1] to the bytes of the example just added, rounded
 * (exact for 8-bit images decoded at their own size). */
void dsb_store_unit(uint8_t *dst, const float *src, size_t n);
/* Sets nclasses and frees the scratch buffer. */
void dsb_finish(dsb_t *b);

/* The label check every reader applies: "NAME: WHERE: label L is out of
 * range [0, K)". */
int data_check_label(long long label, const data_spec_t *s, const char *name, const char *where,
                     char *err, size_t errlen);

/* "DIR/NAME", allocated. */
char *data_join(const char *dir, const char *name);

/* One TFRecord record (a tf.Example) as one more example of b, which it
 * starts (dsb_init) at its first record: bytes or floats as that record's
 * image feature is. where = "record N", for the errors. */
int data_tfrecord_add(dsb_t *b, const data_spec_t *s, const uint8_t *rec, size_t len,
                      const char *file, const char *where, char *err, size_t errlen);

/* Counts the records of a TFRecord file (framing checked, nothing parsed). */
int data_tfrecord_count(const char *file, size_t *count, char *err, size_t errlen);

/* The images of an image folder, in the order they are read: class folders
 * sorted, files sorted in each; labels by s->class_names when given. */
typedef struct {
    char **paths;
    uint8_t *labels;
    size_t n;
    char **class_names; /* the training set's, or the folder's own */
    size_t nclass_names;
} data_image_list_t;

int data_image_list(data_image_list_t *l, const data_spec_t *s, char *err, size_t errlen);
void data_image_list_free(data_image_list_t *l);
/* Decodes one image file (PNG or JPEG) as one more example of b, started
 * with dsb_init at the model's input shape. */
int data_image_add(dsb_t *b, const char *path, uint8_t label, char *err, size_t errlen);

int data_load_tfrecord(dataset_t *d, const data_spec_t *s, char **files, size_t nfiles, char *err,
                       size_t errlen);
int data_load_images(dataset_t *d, const data_spec_t *s, char *err, size_t errlen);
int data_load_csv(dataset_t *d, const data_spec_t *s, char **files, size_t nfiles, char *err,
                  size_t errlen);

#endif

/* A data set named by a path and a format, read whole into a dataset_t:
 * IDX (dataset.h), TFRecord files of tf.train.Example, image folders in
 * Keras's image_dataset_from_directory layout, and CSV. Every reader checks
 * every record as it goes; bad input is one error naming the file and the
 * record (or line and column), and the caller exits 65 (EX_DATAERR).
 * docs/data.md documents the formats. */
#ifndef PSTRAIN_SOURCE_H
#define PSTRAIN_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/data/dataset.h"

typedef enum { DATA_IDX, DATA_TFRECORD, DATA_IMAGES, DATA_CSV } data_format_t;

typedef struct {
    const char *path;   /* a file, a glob of files, or a folder */
    const char *format; /* idx | tfrecord | images | csv | auto (from the names) */
    bool train;         /* IDX folder: the train-* pair, else the t10k-* pair */
    size_t h, w, c;     /* the model's input: images decode and resize to it; CSV:
                         * 0, 0, 0 takes the columns of the first row */
    size_t nclasses;    /* labels must lie in [0, nclasses); at most 256 */
    const char *image_feature, *label_feature; /* tf.Example feature names */
    const char *label_column; /* CSV: the label's header name or 0-based number; "" = last */
    const char *csv_header;   /* CSV's first line: names | none | skip */
    /* Image folders: the classes of the training set, which a validation or
     * test folder must use (its subfolders must be among them); NULL = the
     * folder's own subfolders, sorted. */
    char *const *class_names;
    size_t nclass_names;
    /* Worker `shard` of `nshards` (0 and 0 or 1: one reader). TFRecord files
     * at least as many as the workers are split by file (file i goes to
     * worker i % nshards, whose dataset_t says file_shard, and the other
     * files' records are only counted); otherwise every worker reads all
     * and the loader splits by record. */
    size_t shard, nshards;
} data_spec_t;

/* Reads the data set s names into d (which the caller frees with
 * dataset_free). */
int dataset_load(dataset_t *d, const data_spec_t *s, char *err, size_t errlen);

/* The format s->format names, or for "auto" the one path's names suggest:
 * *.tfrecord[s], *.tfrec (and .gz) are TFRecord, *.csv CSV, *idx3-ubyte* and
 * folders holding IDX files IDX, other folders image folders. */
int data_format_of(const data_spec_t *s, data_format_t *f, char *err, size_t errlen);

/* The files a path names, sorted: the matches of a glob, the regular files
 * of a folder (hidden ones skipped), or the file itself. An empty match is
 * an error naming the path. The caller frees each name and the array. */
int data_list_files(const char *path, char ***files, size_t *n, char *err, size_t errlen);
void data_free_files(char **files, size_t n);
/* The class names of an image folder: its subfolders, sorted (free with
 * data_free_files). */
int data_image_classes(const char *dir, char ***names, size_t *n, char *err, size_t errlen);

#endif

/* Training data: IDX files (MNIST, Fashion-MNIST; gzip or plain) read whole
 * into memory as bytes (source.h reads the other formats into the same
 * dataset_t), and a loader that shards, shuffles (seeded per epoch),
 * batches and scales pixels to [0, 1] on a background thread, so that compute
 * never waits for data. */
#ifndef PSTRAIN_DATASET_H
#define PSTRAIN_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/data/augment.h"

typedef struct {
    size_t n;            /* examples */
    size_t h, w, c;      /* image shape; c = 1 for IDX; 1, 1, features for CSV */
    size_t example_size; /* h * w * c values */
    uint8_t *images;     /* [n, h, w, c] bytes, scaled by 1/255 on the way out; or NULL */
    float *features;     /* [n, example_size], used as they are (CSV); or NULL */
    uint8_t *labels;     /* [n] */
    size_t nclasses;     /* max label + 1 */
    char **class_names;  /* [nclass_names] (image folders), or NULL */
    size_t nclass_names;
    /* A worker's share of files (source.h, data_spec_t.nshards): the loader
     * takes all of it (shard 0 of 1), and total counts every worker's. */
    bool file_shard;
    size_t total; /* examples of all shards together (n when not file-sharded) */
} dataset_t;

/* Reads an images file (magic 0x00000803, dims n, rows, cols) and a labels file
 * (magic 0x00000801, dim n), gzip or plain (detected by content, not name).
 * Checks magics, dimensions, that the counts agree and that the payload is
 * complete: a truncated or corrupt file is one error naming the file.
 * labels_path NULL reads images only (every label 0). */
int dataset_load_idx(dataset_t *d, const char *images_path, const char *labels_path, char *err,
                     size_t errlen);
/* Loads DIR/train-images-idx3-ubyte[.gz] + labels (train) or the t10k pair
 * (test), preferring the .gz name when both exist. */
int dataset_load_split(dataset_t *d, const char *dir, bool train, char *err, size_t errlen);
void dataset_free(dataset_t *d);
/* Example i as the model sees it: image bytes / 255, or the features. */
void dataset_example(const dataset_t *d, size_t i, float *dst);
/* Moves every example whose seeded draw falls under `fraction` from d into
 * *held (a fresh data set; class names copied): the same seed and fraction
 * hold out the same examples on every machine. Fails when either side would
 * be empty. */
int dataset_hold_out(dataset_t *d, double fraction, uint64_t seed, dataset_t *held, char *err,
                     size_t errlen);

typedef struct {
    size_t n;               /* examples in this batch; the last of an epoch may be short */
    float *x;               /* [n, h, w, c] in [0, 1] */
    int32_t *y;             /* [n] */
    uint64_t epoch;         /* 0-based */
    uint64_t step_in_epoch; /* 0-based */
    uint64_t step;          /* 0-based count of batches since the loader's epoch 0 */
} batch_t;

typedef struct {
    size_t batch_size;
    uint64_t seed;
    size_t shard, nshards; /* this loader takes examples shard, shard + nshards, ... */
    bool shuffle;          /* reshuffle the shard every epoch with a seed from (seed, epoch);
                            * the shard index is mixed in so shards differ in order */
    size_t prefetch;       /* batches prepared ahead (>= 1) */
    uint64_t start_step;   /* skip this many batches first (resume) */
    /* Optional allocator for the batch buffers (pinned memory for a GPU);
     * NULL means aligned host memory. */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    /* Augmentation of image examples (augment.h); all off = none. Keyed by
     * (seed, epoch, shard) and the example's index. */
    augment_opts_t augment;
} loader_opts_t;

typedef struct loader loader_t;

/* d is read by the loader's thread and must outlive the loader. Fails (NULL,
 * err names the option) on batch_size 0, nshards 0, shard >= nshards, a shard
 * with no examples, prefetch outside [1, 4096], or alloc without free. */
loader_t *loader_create(const dataset_t *d, const loader_opts_t *o, char *err, size_t errlen);
/* A loader over a TFRecord stream (stream.h; it must outlive the loader):
 * the stream shards and shuffles, so o->shard, nshards and shuffle are not
 * used; batches are made in step order, start_step by replaying. */
struct data_stream;
loader_t *loader_create_stream(struct data_stream *st, const loader_opts_t *o, char *err,
                               size_t errlen);
/* A stream's batch with n = 0 is a read error (a file changed under the
 * run): this says which. "" for in-memory loaders, which cannot fail. */
const char *loader_error(const loader_t *l);
/* The next batch, waiting for the prefetch thread if it is behind. The batch
 * stays valid until the next call. Epochs follow each other without end.
 * One consumer: calls on one loader must not overlap. */
const batch_t *loader_next(loader_t *l);
size_t loader_shard_size(const loader_t *l);
size_t loader_steps_per_epoch(const loader_t *l);
/* Stops the thread and frees everything. */
void loader_free(loader_t *l);

#endif

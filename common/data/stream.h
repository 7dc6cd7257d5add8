/* TFRecord data or image folders streamed from disk, as tf.data reads them:
 * the files (this worker's share; each image is a file of one record) in a
 * seeded order per epoch, their records through a bounded shuffle buffer,
 * so memory holds `buffer` examples however large the data. Opening reads
 * every record once: this worker's are parsed and decoded (a bad record is
 * the same error as when loading whole, before training), the others'
 * TFRecord framing is checked and counted. A file that differs later (cut,
 * corrupt, fewer or more records) is an error naming the file and record. */
#ifndef PSTRAIN_STREAM_H
#define PSTRAIN_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/data/source.h"

typedef struct data_stream data_stream_t;

/* s names TFRecord files (file, glob, folder) or an image folder, and the
 * shard: worker
 * s->shard of s->nshards takes files i % nshards == shard when there are at
 * least as many files as workers, else records whose index over the sorted
 * files is i % nshards == shard. buffer >= 1 examples (1: no shuffling, file
 * order); seed keys each epoch's file order and draws. */
data_stream_t *data_stream_open(const data_spec_t *s, size_t buffer, bool shuffle, uint64_t seed,
                                char *err, size_t errlen);
/* The records of all shards of s together (TFRecord framing checked,
 * nothing decoded; images counted, not read): what a master needs. */
int data_stream_count(const data_spec_t *s, size_t *n, char *err, size_t errlen);
/* Examples this worker takes per epoch, and all workers together. */
size_t data_stream_size(const data_stream_t *st);
size_t data_stream_total(const data_stream_t *st);
/* The shape: h, w, c, example_size of the examples (and an image
 * folder's class names), no data. */
const dataset_t *data_stream_shape(const data_stream_t *st);
/* Fills b with batch `step` (0-based over all epochs; steps come in order,
 * a later one skips ahead: whole epochs unread, the batches before it in
 * its epoch read and dropped) of batch_size examples, the last of an epoch
 * short. lut maps a pixel byte to its float. b->n = 0 on an error (a file
 * changed since opening), which data_stream_error() then names, and every
 * later batch is empty too. */
void data_stream_fill(data_stream_t *st, batch_t *b, uint64_t step, size_t batch_size,
                      const float *lut);
const char *data_stream_error(const data_stream_t *st);
void data_stream_close(data_stream_t *st);

#endif

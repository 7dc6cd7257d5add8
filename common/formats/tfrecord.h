/* TFRecord framing, the container of TensorBoard event files and of
 * TensorFlow's record data sets. A record is
 *   uint64 length (little-endian), uint32 masked CRC-32C of those 8 bytes,
 *   length bytes of data, uint32 masked CRC-32C of the data. */
#ifndef PSTRAIN_TFRECORD_H
#define PSTRAIN_TFRECORD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Records longer than this are refused on reading, before any allocation. */
#define TFRECORD_MAX_LEN ((uint64_t)1 << 30)

/* Appends one record to f; path names the file in the error message. */
int tfrecord_write(FILE *f, const char *path, const void *data, size_t len, char *err,
                   size_t errlen);

typedef struct tfrecord_reader tfrecord_reader_t;

/* Opens a TFRecord file, plain or gzip-compressed (zlib tells them apart). */
tfrecord_reader_t *tfrecord_open(const char *path, char *err, size_t errlen);
/* Reads the next record into a buffer the reader owns (valid until the next
 * call). Returns 1 with a record, 0 at a clean end of file, -1 on a truncated
 * record, a CRC mismatch or a read error, with the file, the record's index and
 * its offset in the message. */
int tfrecord_next(tfrecord_reader_t *r, const uint8_t **data, size_t *len, char *err,
                  size_t errlen);
void tfrecord_close(tfrecord_reader_t *r);

#endif

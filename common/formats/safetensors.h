/* safetensors files: an 8-byte little-endian header length, a JSON header
 * ({"__metadata__": {str: str}, "<name>": {"dtype", "shape", "data_offsets"}}),
 * then the raw little-endian tensors. pstrain writes float32 only and reads
 * float32 only; checkpoints, exports and warm starts use it.
 *
 * A reader validates the whole header before anything is read: offsets inside
 * the file, no two tensors overlapping, each tensor's bytes matching its shape,
 * so a corrupt or truncated file is one clear error and never a bad read. */
#ifndef PSTRAIN_SAFETENSORS_H
#define PSTRAIN_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8
/* st_write records a CRC32C of every tensor's bytes in the metadata, under
 * this prefix and the tensor's name ("crc32c:dense/kernel": "1a2b3c4d"). */
#define ST_CRC_PREFIX "crc32c:"

typedef struct {
    const char *name;
    size_t ndim;
    size_t shape[ST_MAX_DIMS];
    const float *data; /* host, prod(shape) floats */
} st_tensor_t;

/* Metadata entries, written as __metadata__. */
typedef struct {
    const char *key;
    const char *value;
} st_meta_t;

/* Writes the tensors, in the order given, to path through a temp file, fsync
 * and rename (and an fsync of the directory), so a reader sees the old file
 * or the whole new one. The metadata gets a CRC32C of each tensor besides
 * the entries given. */
int st_write(const char *path, const st_tensor_t *t, size_t n, const st_meta_t *meta, size_t nmeta,
             char *err, size_t errlen);

typedef struct {
    char *name;
    size_t ndim;
    size_t shape[ST_MAX_DIMS];
    size_t count;   /* elements */
    uint64_t begin; /* byte offset in the file */
} st_entry_t;

typedef struct {
    char *path;
    int fd;
    size_t n;
    st_entry_t *entries; /* sorted by offset, i.e. in the order written */
    size_t nmeta;
    st_meta_t *meta; /* owned strings */
} st_file_t;

int st_open(st_file_t *f, const char *path, char *err, size_t errlen);
void st_close(st_file_t *f);
const st_entry_t *st_find(const st_file_t *f, const char *name);
/* The metadata value for key, or NULL. */
const char *st_meta_get(const st_file_t *f, const char *key);
/* Reads `count` elements of an entry starting at element `first`. */
int st_read(const st_file_t *f, const st_entry_t *e, size_t first, size_t count, float *out,
            char *err, size_t errlen);

/* What st_verify learnt of a file. */
typedef struct {
    uint64_t bytes;  /* the file's length */
    uint32_t crc32c; /* of the whole file, header included */
    size_t nsums;    /* tensors whose metadata carried a CRC32C (0: an old file) */
} st_sum_t;

/* Reads the whole file once: checks every tensor that has a CRC32C in the
 * metadata against its bytes and, with `finite`, that no value is NaN or Inf,
 * and fills *sum. An error names the file and the tensor ("PATH: tensor
 * dense/kernel: CRC32C mismatch (...)"). */
int st_verify(const st_file_t *f, bool finite, st_sum_t *sum, char *err, size_t errlen);

#endif

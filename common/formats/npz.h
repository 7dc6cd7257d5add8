/* NumPy's .npz: a zip (libzip) of .npy files, one per array, in order.
 * Array "conv2d/kernel" is the entry "conv2d/kernel.npy", which np.load
 * shows as key "conv2d/kernel"; the entries keep the arrays' order, so
 * `keras_model.set_weights(list(np.load(f).values()))` works. Arrays are
 * float32 ('<f4'), C order; each .npy has a version 1.0 header, byte for byte
 * what np.save writes. */
#ifndef PSTRAIN_NPZ_H
#define PSTRAIN_NPZ_H

#include <stddef.h>

#define NPZ_MAX_NDIM 4

typedef struct {
    const char *name; /* "conv2d/kernel": 1 to 1024 bytes, no leading or trailing '/', no
                         empty or ".." component */
    size_t ndim;      /* 0 (a scalar) to NPZ_MAX_NDIM */
    size_t shape[NPZ_MAX_NDIM];
    const float *data; /* product of shape elements, row-major */
} npz_array_t;

/* Writes n arrays to path, through a temp file that is fsynced and renamed
 * into place: a reader sees the old file or the whole new one. Entries are
 * stored uncompressed, like np.savez. */
int npz_write(const char *path, size_t n, const npz_array_t *arrays, char *err, size_t errlen);

/* What npz_read returns; it owns every name and data buffer. */
typedef struct {
    size_t n;
    npz_array_t *arrays; /* in the file's order */
} npz_t;

/* Reads every array of an npz (stored or deflated; '<f4' or '<f8', the latter
 * converted to float; C order; up to NPZ_MAX_NDIM dimensions). Every size in
 * the file is checked against the file before anything is allocated; zip CRCs
 * are checked. On error out is left empty. */
int npz_read(const char *path, npz_t *out, char *err, size_t errlen);
/* The array named name, or NULL. */
const npz_array_t *npz_find(const npz_t *z, const char *name);
/* The number of elements of a. */
size_t npz_count(const npz_array_t *a);
void npz_free(npz_t *z);

#endif

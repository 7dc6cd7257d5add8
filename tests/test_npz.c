/* Tests of the npz module: round trips of every rank, order and names kept,
 * atomic replacement, refused arrays, a full disk, numpy's other layouts
 * (deflate, float64, .npy version 2), and damaged files, each refused with a
 * message naming the file and the entry. */
#include "test.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <zip.h>

#include "common/formats/npz.h"
#include "common/base/util.h"

/* Arrays of ranks 0 to 4, one empty, with values that tell them apart. */
typedef struct {
    npz_array_t a[6];
    float *bufs[6];
} sample_t;

static void sample_init(sample_t *s) {
    npz_array_t a[6] = {
        {"conv2d/kernel", 4, {3, 3, 2, 4}, NULL}, {"conv2d/bias", 1, {4}, NULL},
        {"dense_1/kernel", 2, {5, 3}, NULL},      {"global_step", 0, {0}, NULL},
        {"block/3d", 3, {2, 1, 3}, NULL},         {"empty", 2, {0, 7}, NULL},
    };
    for (size_t k = 0; k < 6; k++) {
        size_t n = npz_count(&a[k]);
        s->bufs[k] = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++)
            s->bufs[k][i] = (float)k + (float)i * 0.001f - 0.5f;
        a[k].data = s->bufs[k];
        s->a[k] = a[k];
    }
}

static void sample_free(sample_t *s) {
    for (size_t k = 0; k < 6; k++)
        free(s->bufs[k]);
}

/* z holds exactly want[0..n), in that order. */
static int same_arrays(const npz_t *z, const npz_array_t *want, size_t n) {
    if (z->n != n)
        return fprintf(stderr, "%zu arrays, want %zu\n", z->n, n), -1;
    for (size_t k = 0; k < n; k++) {
        const npz_array_t *a = &z->arrays[k], *b = &want[k];
        if (strcmp(a->name, b->name) != 0 || a->ndim != b->ndim ||
            memcmp(a->shape, b->shape, a->ndim * sizeof(size_t)) != 0)
            return fprintf(stderr, "array %zu: %s, want %s\n", k, a->name, b->name), -1;
        if (npz_count(a) && memcmp(a->data, b->data, npz_count(a) * sizeof(float)) != 0)
            return fprintf(stderr, "array %zu (%s): data differ\n", k, a->name), -1;
    }
    return 0;
}

/* Writes w[0..nw) to path, reads it back and compares with want[0..nwant). */
static int write_read(const char *path, const npz_array_t *w, size_t nw, const npz_array_t *want,
                      size_t nwant) {
    char err[PS_ERRLEN];
    npz_t z;
    if (npz_write(path, nw, w, err, sizeof err) != 0 || npz_read(path, &z, err, sizeof err) != 0)
        return fprintf(stderr, "%s\n", err), -1;
    int same = same_arrays(&z, want, nwant);
    npz_free(&z);
    return same;
}

void test_npz_roundtrip(void) {
    sample_t s;
    sample_init(&s);
    int same = write_read(test_path("w.npz"), s.a, 6, s.a, 6);
    sample_free(&s);
    CHECK_INT_EQ(same, 0);
    npz_t z;
    char err[PS_ERRLEN];
    CHECK_INT_EQ(npz_read(test_path("w.npz"), &z, err, sizeof err), 0);
    const npz_array_t *f = npz_find(&z, "dense_1/kernel");
    bool found = f == &z.arrays[2] && npz_find(&z, "dense_1") == NULL;
    npz_free(&z);
    CHECK(found);
}

static size_t count_files(const char *dir) {
    DIR *d = opendir(dir);
    size_t n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

void test_npz_replace(void) {
    sample_t s;
    sample_init(&s);
    const char *path = test_path("w.npz");
    int same = write_read(path, s.a, 6, s.a, 6);
    if (same == 0)
        same = write_read(path, s.a + 1, 2, s.a + 1, 2);
    sample_free(&s);
    CHECK_INT_EQ(same, 0);
    /* No temp file is left beside it. */
    CHECK_INT_EQ(count_files(test_tmpdir()), 1);
}

static int write_fails_with(npz_array_t *a, size_t n, const char *want) {
    char err[PS_ERRLEN] = "";
    const char *path = test_path("bad.npz");
    if (npz_write(path, n, a, err, sizeof err) == 0 || !strstr(err, want) || !strstr(err, path) ||
        access(path, F_OK) == 0) {
        fprintf(stderr, "want \"%s\": %s\n", want, err);
        return -1;
    }
    return 0;
}

void test_npz_write_errors(void) {
    float x[4] = {0};
    npz_array_t a[2] = {{"a", 1, {4}, x}, {"b", 1, {4}, x}};
    const char *bad_names[] = {"", "/abs", "a//b", "../up", "a/../b", "a/..", "dir/"};
    for (size_t i = 0; i < PS_ARRAY_LEN(bad_names); i++) {
        a[1].name = bad_names[i];
        CHECK(write_fails_with(a, 2, "array 1: bad name") == 0);
    }
    char long_name[1100];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    a[1].name = long_name;
    CHECK(write_fails_with(a, 2, "array 1: bad name") == 0);
    a[1].name = "a";
    CHECK(write_fails_with(a, 2, "two arrays are named \"a\"") == 0);
    a[1] = (npz_array_t){"b", 5, {1, 1, 1, 1}, x};
    CHECK(write_fails_with(a, 2, "array \"b\" has 5 dimensions, at most 4") == 0);
    a[1] = (npz_array_t){"b", 1, {4}, NULL};
    CHECK(write_fails_with(a, 2, "array \"b\" has no data") == 0);
    a[1] = (npz_array_t){"b", 2, {SIZE_MAX / 2, 4}, x};
    CHECK(write_fails_with(a, 2, "array \"b\" is too large") == 0);
    CHECK(write_fails_with(a, 0, "no arrays to write") == 0);
    /* "a/..b" and "..a" are names, not climbs. */
    a[1] = (npz_array_t){"a/..b", 1, {4}, x};
    char err[PS_ERRLEN];
    CHECK_INT_EQ(npz_write(test_path("ok.npz"), 2, a, err, sizeof err), 0);

    char dir[600];
    snprintf(dir, sizeof dir, "%s/no/such/dir/w.npz", test_tmpdir());
    CHECK(npz_write(dir, 1, a, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, dir);
}

void test_npz_write_error_disk_full(void) {
    size_t n = 100000;
    float *x = xcalloc(n, sizeof *x);
    npz_array_t a = {"big", 1, {n}, x};
    test_limit_file_size(64 * 1024);
    char err[PS_ERRLEN] = "";
    const char *path = test_path("big.npz");
    int rc = npz_write(path, 1, &a, err, sizeof err);
    free(x);
    CHECK(rc != 0);
    CHECK_STR_CONTAINS(err, path);
    CHECK_INT_EQ(count_files(test_tmpdir()), 0);
}

/* ---- files numpy could have written ---------------------------------------- */

/* An .npy file's bytes from a header dict (version 1 or 2) and data. */
static size_t npy_bytes(uint8_t *out, int version, const char *dict, const void *data,
                        size_t dlen) {
    size_t hl = strlen(dict), off = version == 1 ? 10 : 12;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (uint8_t)version;
    out[7] = 0;
    for (size_t i = 0; i < off - 8; i++)
        out[8 + i] = (uint8_t)(hl >> (8 * i));
    memcpy(out + off, dict, hl);
    memcpy(out + off + hl, data, dlen);
    return off + hl + dlen;
}

/* A zip of n entries (deflated or stored), with libzip. */
static void write_zip(const char *path, size_t n, const char *const *names, uint8_t *const *bytes,
                      const size_t *lens, bool deflate) {
    int zerr;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    for (size_t i = 0; za && i < n; i++) {
        zip_source_t *src = zip_source_buffer(za, bytes[i], lens[i], 0);
        zip_int64_t idx = zip_file_add(za, names[i], src, 0);
        zip_set_file_compression(za, (zip_uint64_t)idx, deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
    }
    if (!za || zip_close(za) != 0) {
        fprintf(stderr, "%s: cannot write the zip\n", path);
        exit(2);
    }
}

void test_npz_read_deflate_f8(void) {
    double d[6] = {1.5, -2.25, 3e-3, 4e10, 0, -0.0};
    float f[2] = {7, 8};
    uint8_t e0[256], e1[256];
    uint8_t *bytes[] = {e0, e1};
    size_t lens[] = {
        npy_bytes(e0, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }\n", d,
                  sizeof d),
        npy_bytes(e1, 2, "{\"shape\":(2,),\"fortran_order\":False,\"descr\":\"<f4\"}", f, sizeof f),
    };
    const char *names[] = {"arr_0.npy", "arr_1.npy"};
    const char *path = test_path("np.npz");
    write_zip(path, 2, names, bytes, lens, true);
    npz_t z;
    char err[PS_ERRLEN];
    int rc = npz_read(path, &z, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    CHECK_INT_EQ(rc, 0);
    float want[6] = {1.5f, -2.25f, 3e-3f, 4e10f, 0, -0.0f};
    npz_array_t w[2] = {{"arr_0", 2, {2, 3}, want}, {"arr_1", 1, {2}, f}};
    int same = same_arrays(&z, w, 2);
    npz_free(&z);
    CHECK_INT_EQ(same, 0);
}

static int read_fails_with(const char *path, const char *want) {
    char err[PS_ERRLEN] = "";
    npz_t z;
    int rc = npz_read(path, &z, err, sizeof err);
    if (rc == 0 || !strstr(err, want) || !strstr(err, path) || z.n != 0 || strchr(err, '\n')) {
        fprintf(stderr, "want \"%s\", got rc %d: %s\n", want, rc, err);
        if (rc == 0)
            npz_free(&z);
        return -1;
    }
    return 0;
}

/* Writes the sample arrays to path and returns the file's bytes. */
static char *sample_bytes(const char *path, size_t *len) {
    sample_t s;
    sample_init(&s);
    char err[PS_ERRLEN], *data = NULL;
    if (npz_write(path, 6, s.a, err, sizeof err) != 0 ||
        ps_read_file(path, &data, len, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit(2);
    }
    sample_free(&s);
    return data;
}

void test_npz_read_not_zip(void) {
    CHECK(read_fails_with(test_path("missing.npz"), "No such file") == 0);
    test_write_bytes(test_path("text.npz"), "hello, world\n", 13);
    CHECK(read_fails_with(test_path("text.npz"), "not a readable npz (zip) file") == 0);
    test_write_bytes(test_path("empty.npz"), "", 0);
    CHECK(read_fails_with(test_path("empty.npz"), "not a readable npz (zip) file") == 0);
}

void test_npz_read_truncated(void) {
    size_t len;
    char *data = sample_bytes(test_path("w.npz"), &len);
    /* Cut anywhere: the directory at the end is gone or does not fit. */
    size_t cuts[] = {len - 1, len - 22, len / 2, 100};
    for (size_t i = 0; i < PS_ARRAY_LEN(cuts); i++) {
        test_write_bytes(test_path("cut.npz"), data, cuts[i]);
        if (read_fails_with(test_path("cut.npz"), "not a readable npz (zip) file") != 0) {
            free(data);
            CHECK(!"a truncated npz is refused");
        }
    }
    free(data);
}

void test_npz_read_corrupt_data(void) {
    const char *path = test_path("w.npz");
    size_t len;
    char *data = sample_bytes(path, &len);
    /* The first entry's data starts after its local header (30 bytes + name)
     * and the 128-byte .npy header; flip a bit in its first float. */
    data[30 + strlen("conv2d/kernel.npy") + 128] ^= 0x10;
    test_write_bytes(path, data, len);
    free(data);
    CHECK(read_fails_with(path, "entry \"conv2d/kernel.npy\": CRC error") == 0);
}

/* One entry with the given .npy bytes must be refused with want. */
static int entry_fails_with(const char *name, uint8_t *bytes, size_t len, const char *want) {
    const char *path = test_path("e.npz");
    write_zip(path, 1, &name, &bytes, &len, false);
    return read_fails_with(path, want);
}

void test_npz_read_bad_entries(void) {
    float f[4] = {1, 2, 3, 4};
    uint8_t b[512];
    struct {
        const char *dict, *want;
    } cases[] = {
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }",
         "dtype is not float32 or float64"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }",
         "dtype is not float32 or float64"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", "Fortran order"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }", "shape does not match"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2, 2), }",
         "more than 4 dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 0), }",
         "bad shape"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
         "shape does not match"},
        {"{'descr': '<f4', 'shape': (4,), }", "header lacks"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", "unknown key"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} junk", "junk after"},
        {"['<f4']", "header is not a dict"},
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(cases); i++) {
        size_t n = npy_bytes(b, 1, cases[i].dict, f, sizeof f);
        CHECK(entry_fails_with("x.npy", b, n, cases[i].want) == 0);
    }
    size_t n =
        npy_bytes(b, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", f, sizeof f);
    CHECK(entry_fails_with("x.txt", b, n, "entry \"x.txt\": not an .npy entry") == 0);
    b[6] = 4;
    CHECK(entry_fails_with("x.npy", b, n, "unsupported .npy version") == 0);
    b[6] = 1;
    b[8] = 0xff; /* a header longer than the entry */
    CHECK(entry_fails_with("x.npy", b, n, "header runs past the end") == 0);
    b[0] = 'P';
    CHECK(entry_fails_with("x.npy", b, n, "bad magic") == 0);
    CHECK(entry_fails_with("x.npy", b, 5, "bad magic") == 0);
}

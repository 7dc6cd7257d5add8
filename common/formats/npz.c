#include "common/formats/npz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "common/base/util.h"

/* .npy data is little-endian and copied as it is. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npz.c assumes a little-endian host"
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64
/* np.save leaves room for axis 0 to grow to this many digits (numpy >= 1.24). */
#define NPY_GROWTH_DIGITS 21
/* Longest header npz_write makes: the dict with 4 axes of 20 digits, padded. */
#define NPY_HEADER_MAX 256
/* Longer names are refused (zip allows 65535 bytes; no variable needs this). */
#define NPZ_MAX_NAME 1024
/* Deflate never inflates more than 1032-fold; a larger claim is a lie. */
#define DEFLATE_MAX_RATIO 1032

size_t npz_count(const npz_array_t *a) {
    size_t n = 1;
    for (size_t d = 0; d < a->ndim; d++)
        n *= a->shape[d];
    return n;
}

/* ---- writing ------------------------------------------------------------ */

/* A name must make a safe, unambiguous zip entry: no absolute path, no climb
 * out of the directory an unzip writes to, no empty path component. */
static bool name_ok(const char *name) {
    size_t len = strlen(name);
    if (len == 0 || len > NPZ_MAX_NAME || name[0] == '/' || name[len - 1] == '/' ||
        strstr(name, "//"))
        return false;
    for (const char *p = name; (p = strstr(p, "..")) != NULL; p += 2)
        if ((p == name || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return false;
    return true;
}

static int check_array(const char *path, const npz_array_t *arrays, size_t i, char *err,
                       size_t errlen) {
    const npz_array_t *a = &arrays[i];
    if (!a->name || !name_ok(a->name))
        return ps_errf(err, errlen, "%s: array %zu: bad name \"%s\"", path, i,
                       a->name ? a->name : "(null)");
    for (size_t j = 0; j < i; j++)
        if (strcmp(arrays[j].name, a->name) == 0)
            return ps_errf(err, errlen, "%s: two arrays are named \"%s\"", path, a->name);
    if (a->ndim > NPZ_MAX_NDIM)
        return ps_errf(err, errlen, "%s: array \"%s\" has %zu dimensions, at most %d", path,
                       a->name, a->ndim, NPZ_MAX_NDIM);
    size_t count = 1;
    for (size_t d = 0; d < a->ndim; d++) {
        if (a->shape[d] && count > SIZE_MAX / sizeof(float) / a->shape[d])
            return ps_errf(err, errlen, "%s: array \"%s\" is too large", path, a->name);
        count *= a->shape[d];
    }
    if (count && !a->data)
        return ps_errf(err, errlen, "%s: array \"%s\" has no data", path, a->name);
    return 0;
}

/* The .npy header np.save writes for a float32 C-order array, padded so the
 * data starts at a multiple of 64 bytes. Returns its length. */
static size_t npy_header(const npz_array_t *a, char *buf) {
    char dict[NPY_HEADER_MAX], shape[128] = "(";
    size_t s = 1;
    for (size_t d = 0; d < a->ndim; d++)
        s += (size_t)snprintf(shape + s, sizeof shape - s, d ? ", %zu" : "%zu", a->shape[d]);
    snprintf(shape + s, sizeof shape - s, a->ndim == 1 ? ",)" : ")");
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }",
                       shape);
    if (a->ndim > 0) {
        int digits = snprintf(NULL, 0, "%zu", a->shape[0]);
        len +=
            snprintf(dict + len, sizeof dict - (size_t)len, "%*s", NPY_GROWTH_DIGITS - digits, "");
    }
    /* numpy's rule, which pads a whole block when the header already fits. */
    size_t hlen = (size_t)len + 1;
    size_t pad = NPY_ALIGN - (NPY_MAGIC_LEN + 2 + 2 + hlen) % NPY_ALIGN;
    size_t total = NPY_MAGIC_LEN + 2 + 2 + hlen + pad;
    memcpy(buf, NPY_MAGIC "\x01\x00", NPY_MAGIC_LEN + 2);
    buf[8] = (char)((hlen + pad) & 0xff);
    buf[9] = (char)((hlen + pad) >> 8);
    memcpy(buf + 10, dict, (size_t)len);
    memset(buf + 10 + len, ' ', pad);
    buf[total - 1] = '\n';
    return total;
}

static int zip_fail(zip_t *za, const char *what, const char *path, char *err, size_t errlen) {
    return ps_errf(err, errlen, "%s %s: %s", what, path, zip_strerror(za));
}

/* Adds one array as "<name>.npy": the header and the caller's data as two
 * fragments, so the data is not copied; both must live until zip_close. */
static int add_array(zip_t *za, const char *tmp, const npz_array_t *a, char *header, char *err,
                     size_t errlen) {
    zip_buffer_fragment_t frags[2] = {{(zip_uint8_t *)header, npy_header(a, header)},
                                      {(zip_uint8_t *)a->data, npz_count(a) * sizeof(float)}};
    zip_source_t *src = zip_source_buffer_fragment(za, frags, frags[1].length ? 2 : 1, 0);
    if (!src)
        return zip_fail(za, "write", tmp, err, errlen);
    char entry[NPZ_MAX_NAME + 8];
    snprintf(entry, sizeof entry, "%s.npy", a->name);
    zip_int64_t idx = zip_file_add(za, entry, src, ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
        zip_source_free(src);
        return zip_fail(za, "write", tmp, err, errlen);
    }
    if (zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0) != 0)
        return zip_fail(za, "write", tmp, err, errlen);
    return 0;
}

static int fsync_path(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ps_errf(err, errlen, "open %s: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    return rc ? ps_errf(err, errlen, "fsync %s: %s", path, strerror(e)) : 0;
}

/* zip_close writes the archive; on success the archive handle is gone. */
static int write_zip(const char *tmp, size_t n, const npz_array_t *arrays, char *err,
                     size_t errlen) {
    int zerr = 0;
    zip_t *za = zip_open(tmp, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        ps_errf(err, errlen, "create %s: %s", tmp, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }
    char *headers = xmalloc(n * NPY_HEADER_MAX + 1);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = add_array(za, tmp, &arrays[i], headers + i * NPY_HEADER_MAX, err, errlen);
    if (rc == 0 && zip_close(za) != 0)
        rc = zip_fail(za, "write", tmp, err, errlen);
    if (rc != 0)
        zip_discard(za);
    free(headers);
    return rc;
}

int npz_write(const char *path, size_t n, const npz_array_t *arrays, char *err, size_t errlen) {
    /* libzip writes no file at all for an archive without entries. */
    if (n == 0)
        return ps_errf(err, errlen, "%s: no arrays to write", path);
    for (size_t i = 0; i < n; i++)
        if (check_array(path, arrays, i, err, errlen) != 0)
            return -1;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return ps_errf(err, errlen, "path too long: %s", path);
    if (write_zip(tmp, n, arrays, err, errlen) != 0 || fsync_path(tmp, err, errlen) != 0) {
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ps_errf(err, errlen, "rename %s -> %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

/* The header dict is a Python literal, e.g.
 * {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * read by a small parser that accepts any key order, either quote and any
 * white space, and nothing else. */
typedef struct {
    const char *p, *end;
} cursor_t;

typedef struct {
    char descr[8];
    bool fortran_order;
    size_t ndim, shape[NPZ_MAX_NDIM];
    unsigned seen; /* bit per key */
} npy_dict_t;

static void skip_ws(cursor_t *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool eat(cursor_t *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

static bool parse_str(cursor_t *c, char *out, size_t cap) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (n + 1 >= cap)
            return false;
        out[n++] = *c->p++;
    }
    out[n] = '\0';
    return eat(c, q);
}

static bool parse_word(cursor_t *c, const char *word) {
    size_t n = strlen(word);
    skip_ws(c);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return false;
    c->p += n;
    return true;
}

static bool parse_size(cursor_t *c, size_t *v) {
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return false;
    size_t x = 0;
    for (; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++) {
        size_t digit = (size_t)(*c->p - '0');
        if (x > (SIZE_MAX - digit) / 10)
            return false;
        x = x * 10 + digit;
    }
    *v = x;
    return true;
}

/* (), (3,), (2, 3), (2, 3,) */
static const char *parse_shape(cursor_t *c, npy_dict_t *d) {
    if (!eat(c, '('))
        return "shape is not a tuple";
    d->ndim = 0;
    while (!eat(c, ')')) {
        if (d->ndim == NPZ_MAX_NDIM)
            return "more than 4 dimensions";
        if (!parse_size(c, &d->shape[d->ndim++]))
            return "bad shape";
        if (!eat(c, ',') && !(skip_ws(c), c->p < c->end && *c->p == ')'))
            return "bad shape";
    }
    return NULL;
}

static const char *parse_value(cursor_t *c, const char *key, npy_dict_t *d) {
    if (strcmp(key, "descr") == 0) {
        d->seen |= 1;
        return parse_str(c, d->descr, sizeof d->descr) ? NULL : "bad or unsupported descr";
    }
    if (strcmp(key, "fortran_order") == 0) {
        d->seen |= 2;
        d->fortran_order = parse_word(c, "True");
        return d->fortran_order || parse_word(c, "False") ? NULL : "bad fortran_order";
    }
    if (strcmp(key, "shape") == 0) {
        d->seen |= 4;
        return parse_shape(c, d);
    }
    return "unknown key in header";
}

static const char *parse_dict(const char *text, size_t len, npy_dict_t *d) {
    cursor_t c = {text, text + len};
    if (!eat(&c, '{'))
        return "header is not a dict";
    while (!eat(&c, '}')) {
        char key[32];
        if (!parse_str(&c, key, sizeof key) || !eat(&c, ':'))
            return "bad header";
        const char *why = parse_value(&c, key, d);
        if (why)
            return why;
        if (!eat(&c, ',') && !(skip_ws(&c), c.p < c.end && *c.p == '}'))
            return "bad header";
    }
    skip_ws(&c);
    if (c.p != c.end)
        return "junk after the header";
    return d->seen == 7 ? NULL : "header lacks descr, fortran_order or shape";
}

static size_t itemsize_of(const char *descr) {
    if (strcmp(descr, "<f4") == 0)
        return 4;
    if (strcmp(descr, "<f8") == 0)
        return 8;
    return 0;
}

/* Locates the header dict and the data in an .npy file's bytes. */
static const char *npy_split(const uint8_t *b, size_t n, size_t *hoff, size_t *hlen) {
    if (n < 10 || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return "not an .npy file (bad magic)";
    if (b[6] == 1) {
        *hoff = 10;
        *hlen = (size_t)b[8] | (size_t)b[9] << 8;
    } else if ((b[6] == 2 || b[6] == 3) && n >= 12) {
        *hoff = 12;
        *hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    } else {
        return "unsupported .npy version";
    }
    return *hlen > n - *hoff ? "header runs past the end" : NULL;
}

/* Fills a's shape and data from an .npy file's bytes. */
static const char *npy_parse(const uint8_t *b, size_t n, npz_array_t *a) {
    size_t hoff, hlen;
    npy_dict_t d = {0};
    const char *why = npy_split(b, n, &hoff, &hlen);
    if (!why)
        why = parse_dict((const char *)b + hoff, hlen, &d);
    if (why)
        return why;
    size_t item = itemsize_of(d.descr);
    if (!item)
        return "dtype is not float32 or float64 ('<f4' or '<f8')";
    if (d.fortran_order)
        return "Fortran order is not supported";
    a->ndim = d.ndim;
    memcpy(a->shape, d.shape, sizeof d.shape);
    size_t count = 1, data_len = n - hoff - hlen;
    for (size_t i = 0; i < d.ndim; i++) {
        if (d.shape[i] && count > data_len / d.shape[i])
            return "shape does not match the data size";
        count *= d.shape[i];
    }
    if (count * item != data_len)
        return "shape does not match the data size";
    float *out = xmalloc(count * sizeof *out);
    const uint8_t *src = b + hoff + hlen;
    for (size_t i = 0; i < count; i++) {
        if (item == 4) {
            memcpy(&out[i], src + 4 * i, 4);
        } else {
            double v;
            memcpy(&v, src + 8 * i, 8);
            out[i] = (float)v;
        }
    }
    a->data = out;
    return NULL;
}

/* Checks an entry's stated sizes against the archive before reading it. */
static const char *entry_check(const zip_stat_t *st, uint64_t file_size) {
    size_t len = strlen(st->name);
    if (len <= 4 || strcmp(st->name + len - 4, ".npy") != 0)
        return "not an .npy entry";
    if (st->comp_method != ZIP_CM_STORE && st->comp_method != ZIP_CM_DEFLATE)
        return "compressed with a method other than store or deflate";
    if (st->comp_size > file_size || st->size > (uint64_t)SIZE_MAX / 2 ||
        st->size > st->comp_size * DEFLATE_MAX_RATIO + 64)
        return "sizes in the zip directory do not fit the file (corrupt)";
    return NULL;
}

/* Reads a whole entry; a final read past the end makes libzip check the CRC. */
static int entry_bytes(zip_t *za, zip_uint64_t i, const char *path, const zip_stat_t *st,
                       uint8_t **out, char *err, size_t errlen) {
    zip_file_t *zf = zip_fopen_index(za, i, 0);
    if (!zf)
        return ps_errf(err, errlen, "%s: entry \"%s\": %s", path, st->name, zip_strerror(za));
    uint8_t *buf = xmalloc((size_t)st->size + 1);
    size_t got = 0;
    zip_int64_t k = 1;
    while (k > 0 && got <= (size_t)st->size) {
        k = zip_fread(zf, buf + got, st->size + 1 - got);
        got += k > 0 ? (size_t)k : 0;
    }
    int rc = 0;
    if (k < 0)
        rc = ps_errf(err, errlen, "%s: entry \"%s\": %s", path, st->name, zip_file_strerror(zf));
    else if (got != (size_t)st->size)
        rc = ps_errf(err, errlen, "%s: entry \"%s\": %zu bytes, the directory says %llu", path,
                     st->name, got, (unsigned long long)st->size);
    zip_fclose(zf);
    if (rc)
        free(buf);
    else
        *out = buf;
    return rc;
}

static int read_entry(zip_t *za, zip_uint64_t i, const char *path, uint64_t file_size,
                      npz_array_t *a, char *err, size_t errlen) {
    zip_stat_t st;
    if (zip_stat_index(za, i, 0, &st) != 0)
        return ps_errf(err, errlen, "%s: entry %llu: %s", path, (unsigned long long)i,
                       zip_strerror(za));
    const char *why = entry_check(&st, file_size);
    if (why)
        return ps_errf(err, errlen, "%s: entry \"%s\": %s", path, st.name, why);
    uint8_t *bytes = NULL;
    if (entry_bytes(za, i, path, &st, &bytes, err, errlen) != 0)
        return -1;
    why = npy_parse(bytes, (size_t)st.size, a);
    free(bytes);
    if (why)
        return ps_errf(err, errlen, "%s: entry \"%s\": %s", path, st.name, why);
    size_t len = strlen(st.name) - 4;
    char *name = xmalloc(len + 1);
    memcpy(name, st.name, len);
    name[len] = '\0';
    a->name = name;
    return 0;
}

static zip_t *open_zip(const char *path, uint64_t *file_size, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        ps_errf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    *file_size = (uint64_t)sb.st_size;
    int zerr = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (!za) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        ps_errf(err, errlen, "%s: not a readable npz (zip) file: %s", path,
                zip_error_strerror(&ze));
        zip_error_fini(&ze);
    }
    return za;
}

int npz_read(const char *path, npz_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    uint64_t file_size = 0;
    zip_t *za = open_zip(path, &file_size, err, errlen);
    if (!za)
        return -1;
    zip_int64_t n = zip_get_num_entries(za, 0);
    npz_t z = {0, xcalloc(n > 0 ? (size_t)n : 1, sizeof(npz_array_t))};
    int rc = n > 0 ? 0 : ps_errf(err, errlen, "%s: the npz holds no arrays", path);
    for (zip_int64_t i = 0; i < n && rc == 0; i++, z.n += rc == 0)
        rc = read_entry(za, (zip_uint64_t)i, path, file_size, &z.arrays[i], err, errlen);
    zip_discard(za);
    if (rc)
        npz_free(&z);
    else
        *out = z;
    return rc;
}

const npz_array_t *npz_find(const npz_t *z, const char *name) {
    for (size_t i = 0; i < z->n; i++)
        if (strcmp(z->arrays[i].name, name) == 0)
            return &z->arrays[i];
    return NULL;
}

void npz_free(npz_t *z) {
    for (size_t i = 0; i < z->n; i++) {
        free((void *)z->arrays[i].name);
        free((void *)z->arrays[i].data);
    }
    free(z->arrays);
    memset(z, 0, sizeof *z);
}

#include "common/formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/failpoint.h"
#include "common/base/util.h"
#include "common/formats/crc32c.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors are little-endian: a big-endian build must swap bytes"
#endif

/* The header may not be larger than this (the format's reference reader
 * refuses over 100 MB too); it bounds what a corrupt length can allocate. */
#define ST_MAX_HEADER (100u << 20)
/* No tensor has more elements than this (2^60): it bounds shape products
 * against overflow whatever the file's length. */
#define ST_MAX_ELEMENTS ((uint64_t)1 << 60)

static size_t count_of(const size_t *shape, size_t ndim) {
    size_t n = 1;
    for (size_t d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

/* The metadata: the caller's entries, then a CRC32C of every tensor's bytes
 * ("crc32c:<name>": 8 hex digits), computed from memory before the file is
 * written, so that a reader can tell the tensors it reads are those written. */
static json_object *metadata_json(const st_tensor_t *t, size_t n, const st_meta_t *meta,
                                  size_t nmeta) {
    json_object *m = json_object_new_object();
    for (size_t i = 0; i < nmeta; i++)
        json_object_object_add(m, meta[i].key, json_object_new_string(meta[i].value));
    char value[16];
    for (size_t i = 0; i < n; i++) {
        size_t bytes = count_of(t[i].shape, t[i].ndim) * sizeof(float);
        char *key = xmalloc(strlen(ST_CRC_PREFIX) + strlen(t[i].name) + 1);
        sprintf(key, "%s%s", ST_CRC_PREFIX, t[i].name);
        snprintf(value, sizeof value, "%08x", (unsigned)crc32c(0, t[i].data, bytes));
        json_object_object_add(m, key, json_object_new_string(value));
        free(key);
    }
    return m;
}

static char *header_json(const st_tensor_t *t, size_t n, const st_meta_t *meta, size_t nmeta,
                         size_t *len) {
    json_object *h = json_object_new_object();
    json_object_object_add(h, "__metadata__", metadata_json(t, n, meta, nmeta));
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_new_object(), *shape = json_object_new_array();
        for (size_t d = 0; d < t[i].ndim; d++)
            json_object_array_add(shape, json_object_new_int64((int64_t)t[i].shape[d]));
        uint64_t bytes = count_of(t[i].shape, t[i].ndim) * sizeof(float);
        json_object *offs = json_object_new_array();
        json_object_array_add(offs, json_object_new_int64((int64_t)off));
        json_object_array_add(offs, json_object_new_int64((int64_t)(off + bytes)));
        json_object_object_add(e, "dtype", json_object_new_string("F32"));
        json_object_object_add(e, "shape", shape);
        json_object_object_add(e, "data_offsets", offs);
        json_object_object_add(h, t[i].name, e);
        off += bytes;
    }
    const char *text = json_object_to_json_string_ext(h, JSON_C_TO_STRING_PLAIN);
    /* Spaces pad the header to 8 bytes, so that every tensor stays aligned. */
    size_t tlen = strlen(text), padded = (tlen + 7) & ~(size_t)7;
    char *out = xmalloc(padded + 1);
    memcpy(out, text, tlen);
    memset(out + tlen, ' ', padded - tlen);
    out[padded] = '\0';
    json_object_put(h);
    *len = padded;
    return out;
}

int st_write(const char *path, const st_tensor_t *t, size_t n, const st_meta_t *meta, size_t nmeta,
             char *err, size_t errlen) {
    size_t hlen;
    char *header = header_json(t, n, meta, nmeta, &hlen);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    ps_atomic_t a;
    int rc = -1;
    if (ps_atomic_open(&a, path, err, errlen))
        goto out;
    if (ps_atomic_write(&a, len8, 8, err, errlen) || ps_atomic_write(&a, header, hlen, err, errlen))
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (i == n / 2)
            failpoint("safetensors_write"); /* a test may kill us halfway */
        size_t bytes = count_of(t[i].shape, t[i].ndim) * sizeof(float);
        if (ps_atomic_write(&a, t[i].data, bytes, err, errlen))
            goto out;
    }
    rc = ps_atomic_commit(&a, err, errlen);
out:
    free(header);
    return rc;
}

static int cmp_entry(const void *a, const void *b) {
    const st_entry_t *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int parse_entry(st_entry_t *e, const char *name, json_object *v, uint64_t data_len,
                       const char *path, char *err, size_t errlen) {
    json_object *dtype, *shape, *offs;
    if (!json_object_is_type(v, json_type_object) ||
        !json_object_object_get_ex(v, "dtype", &dtype) ||
        !json_object_object_get_ex(v, "shape", &shape) ||
        !json_object_object_get_ex(v, "data_offsets", &offs) ||
        !json_object_is_type(shape, json_type_array) ||
        !json_object_is_type(offs, json_type_array) || json_object_array_length(offs) != 2)
        return ps_errf(err, errlen, "%s: tensor \"%s\" needs dtype, shape and data_offsets", path,
                       name);
    if (strcmp(json_object_get_string(dtype), "F32") != 0)
        return ps_errf(err, errlen, "%s: tensor \"%s\" is %s; pstrain reads F32 only", path, name,
                       json_object_get_string(dtype));
    e->ndim = json_object_array_length(shape);
    if (e->ndim > ST_MAX_DIMS)
        return ps_errf(err, errlen, "%s: tensor \"%s\" has %zu dimensions (at most %d)", path, name,
                       e->ndim, ST_MAX_DIMS);
    /* The shape is bounded by what any file could hold, not by this file's
     * length: a file cut short is "truncated" below, not "a bad shape". */
    uint64_t count = 1;
    for (size_t d = 0; d < e->ndim; d++) {
        int64_t x = json_object_get_int64(json_object_array_get_idx(shape, d));
        if (x < 0 || (x > 0 && count > ST_MAX_ELEMENTS / (uint64_t)x))
            return ps_errf(err, errlen, "%s: tensor \"%s\" has a bad shape", path, name);
        e->shape[d] = (size_t)x;
        count *= (uint64_t)x;
    }
    int64_t b = json_object_get_int64(json_object_array_get_idx(offs, 0));
    int64_t end = json_object_get_int64(json_object_array_get_idx(offs, 1));
    if (b < 0 || end < b)
        return ps_errf(err, errlen, "%s: tensor \"%s\" has bad data_offsets", path, name);
    if ((uint64_t)end > data_len)
        return ps_errf(err, errlen,
                       "%s: truncated: tensor \"%s\" ends at byte %lld of the data, which holds "
                       "%llu bytes",
                       path, name, (long long)end, (unsigned long long)data_len);
    if ((uint64_t)(end - b) != count * sizeof(float))
        return ps_errf(err, errlen, "%s: tensor \"%s\" has %lld bytes for %llu floats", path, name,
                       (long long)(end - b), (unsigned long long)count);
    e->name = xstrdup(name);
    e->count = (size_t)count;
    e->begin = (uint64_t)b;
    return 0;
}

static int parse_meta(st_file_t *f, json_object *m, char *err, size_t errlen) {
    if (!json_object_is_type(m, json_type_object))
        return ps_errf(err, errlen, "%s: __metadata__ is not an object", f->path);
    f->meta = xcalloc((size_t)json_object_object_length(m) + 1, sizeof *f->meta);
    json_object_object_foreach(m, k, v) {
        if (!json_object_is_type(v, json_type_string))
            return ps_errf(err, errlen, "%s: __metadata__ value of \"%s\" is not a string", f->path,
                           k);
        f->meta[f->nmeta].key = xstrdup(k);
        f->meta[f->nmeta++].value = xstrdup(json_object_get_string(v));
    }
    return 0;
}

/* Fills the entries from the header text and checks that no two overlap. */
static int parse_header(st_file_t *f, const char *text, uint64_t data_len, char *err,
                        size_t errlen) {
    json_tokener *tok = json_tokener_new();
    json_object *h = json_tokener_parse_ex(tok, text, (int)strlen(text));
    json_tokener_free(tok);
    if (!h || !json_object_is_type(h, json_type_object)) {
        json_object_put(h);
        return ps_errf(err, errlen, "%s: the header is not a JSON object (not a safetensors file?)",
                       f->path);
    }
    int rc = 0;
    f->entries = xcalloc((size_t)json_object_object_length(h) + 1, sizeof *f->entries);
    json_object_object_foreach(h, k, v) {
        if (!strcmp(k, "__metadata__"))
            rc = parse_meta(f, v, err, errlen);
        else if ((rc = parse_entry(&f->entries[f->n], k, v, data_len, f->path, err, errlen)) == 0)
            f->n++;
        if (rc)
            break;
    }
    json_object_put(h);
    if (rc)
        return rc;
    qsort(f->entries, f->n, sizeof *f->entries, cmp_entry);
    for (size_t i = 1; i < f->n; i++) {
        const st_entry_t *p = &f->entries[i - 1];
        if (p->begin + p->count * sizeof(float) > f->entries[i].begin)
            return ps_errf(err, errlen, "%s: tensors \"%s\" and \"%s\" overlap", f->path, p->name,
                           f->entries[i].name);
    }
    return 0;
}

static int read_at(int fd, void *buf, size_t len, uint64_t off) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int read_header(st_file_t *f, char *err, size_t errlen) {
    struct stat sb;
    if (fstat(f->fd, &sb) != 0)
        return ps_errf(err, errlen, "%s: %s", f->path, strerror(errno));
    uint8_t len8[8];
    if ((uint64_t)sb.st_size < 8 || read_at(f->fd, len8, 8, 0))
        return ps_errf(err, errlen, "%s: too short for a safetensors file", f->path);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > ST_MAX_HEADER || hlen > (uint64_t)sb.st_size - 8)
        return ps_errf(err, errlen,
                       "%s: header length %llu does not fit the file's %lld bytes (truncated or "
                       "not a safetensors file)",
                       f->path, (unsigned long long)hlen, (long long)sb.st_size);
    char *text = xmalloc((size_t)hlen + 1);
    int rc = read_at(f->fd, text, (size_t)hlen, 8);
    text[hlen] = '\0';
    if (rc)
        rc = ps_errf(err, errlen, "%s: cannot read the header", f->path);
    else
        rc = parse_header(f, text, (uint64_t)sb.st_size - 8 - hlen, err, errlen);
    free(text);
    /* Entry offsets become file offsets. */
    for (size_t i = 0; i < f->n; i++)
        f->entries[i].begin += 8 + hlen;
    return rc;
}

int st_open(st_file_t *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->path = xstrdup(path);
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        ps_errf(err, errlen, "open %s: %s", path, strerror(errno));
        st_close(f);
        return -1;
    }
    if (read_header(f, err, errlen)) {
        st_close(f);
        return -1;
    }
    return 0;
}

void st_close(st_file_t *f) {
    if (f->fd >= 0)
        close(f->fd);
    for (size_t i = 0; i < f->n; i++)
        free(f->entries[i].name);
    for (size_t i = 0; i < f->nmeta; i++) {
        free((char *)f->meta[i].key);
        free((char *)f->meta[i].value);
    }
    free(f->entries);
    free(f->meta);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

const st_entry_t *st_find(const st_file_t *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->entries[i].name, name))
            return &f->entries[i];
    return NULL;
}

const char *st_meta_get(const st_file_t *f, const char *key) {
    for (size_t i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta[i].key, key))
            return f->meta[i].value;
    return NULL;
}

int st_read(const st_file_t *f, const st_entry_t *e, size_t first, size_t count, float *out,
            char *err, size_t errlen) {
    if (first > e->count || count > e->count - first)
        return ps_errf(err, errlen, "%s: elements [%zu, +%zu) are outside \"%s\" (%zu)", f->path,
                       first, count, e->name, e->count);
    if (read_at(f->fd, out, count * sizeof(float), e->begin + first * sizeof(float)))
        return ps_errf(err, errlen, "%s: cannot read \"%s\" (truncated?)", f->path, e->name);
    return 0;
}

/* ---- verifying a whole file ---- */

/* Bytes read at a time while verifying; a multiple of 4, so tensors (which
 * start 8-aligned) split into whole floats. */
#define ST_VERIFY_CHUNK (1u << 20)

typedef struct {
    const st_file_t *f;
    uint32_t *crc;  /* running CRC of each entry */
    size_t *nonfin; /* first NaN or Inf element of each entry + 1, or 0 */
    size_t next;    /* the first entry not yet wholly seen */
} verify_t;

/* The index of the first NaN or Inf among n floats at p, or n. */
static size_t first_nonfinite(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + 4 * i, sizeof u);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return i;
    }
    return n;
}

/* Folds the bytes [pos, pos + n) of the file into the entries they hold. */
static void verify_chunk(verify_t *v, const uint8_t *buf, uint64_t pos, size_t n, bool finite) {
    const st_file_t *f = v->f;
    while (v->next < f->n &&
           f->entries[v->next].begin + f->entries[v->next].count * sizeof(float) <= pos)
        v->next++;
    for (size_t i = v->next; i < f->n && f->entries[i].begin < pos + n; i++) {
        const st_entry_t *e = &f->entries[i];
        uint64_t lo = PS_MAX(pos, e->begin), hi = PS_MIN(pos + n, e->begin + e->count * 4);
        if (lo >= hi)
            continue;
        v->crc[i] = crc32c(v->crc[i], buf + (lo - pos), (size_t)(hi - lo));
        if (!finite || v->nonfin[i])
            continue;
        size_t k = first_nonfinite(buf + (lo - pos), (size_t)(hi - lo) / 4);
        if (k < (hi - lo) / 4)
            v->nonfin[i] = (size_t)((lo - e->begin) / 4) + k + 1;
    }
}

/* Compares each entry's CRC with the one its metadata records. */
static int verify_entries(const verify_t *v, st_sum_t *sum, char *err, size_t errlen) {
    const st_file_t *f = v->f;
    for (size_t i = 0; i < f->n; i++) {
        const st_entry_t *e = &f->entries[i];
        char *key = xmalloc(strlen(ST_CRC_PREFIX) + strlen(e->name) + 1);
        sprintf(key, "%s%s", ST_CRC_PREFIX, e->name);
        const char *want = st_meta_get(f, key);
        free(key);
        if (want) {
            char *end;
            unsigned long x = strtoul(want, &end, 16);
            if (strlen(want) != 8 || *end)
                return ps_errf(err, errlen, "%s: tensor %s: bad CRC32C in the metadata (\"%s\")",
                               f->path, e->name, want);
            if ((uint32_t)x != v->crc[i])
                return ps_errf(err, errlen,
                               "%s: tensor %s: CRC32C mismatch (the metadata says %08lx, the data "
                               "gives %08x)",
                               f->path, e->name, x, (unsigned)v->crc[i]);
            sum->nsums++;
        }
        if (v->nonfin[i])
            return ps_errf(err, errlen, "%s: tensor %s: element %zu is NaN or Inf", f->path,
                           e->name, v->nonfin[i] - 1);
    }
    return 0;
}

int st_verify(const st_file_t *f, bool finite, st_sum_t *sum, char *err, size_t errlen) {
    memset(sum, 0, sizeof *sum);
    struct stat sb;
    if (fstat(f->fd, &sb) != 0)
        return ps_errf(err, errlen, "%s: %s", f->path, strerror(errno));
    verify_t v = {.f = f,
                  .crc = xcalloc(f->n ? f->n : 1, sizeof *v.crc),
                  .nonfin = xcalloc(f->n ? f->n : 1, sizeof *v.nonfin)};
    uint8_t *buf = xmalloc(ST_VERIFY_CHUNK);
    int rc = 0;
    for (uint64_t pos = 0; rc == 0 && pos < (uint64_t)sb.st_size;) {
        size_t n = (size_t)PS_MIN((uint64_t)ST_VERIFY_CHUNK, (uint64_t)sb.st_size - pos);
        if (read_at(f->fd, buf, n, pos)) {
            rc = ps_errf(err, errlen, "%s: cannot read %zu bytes at %llu (truncated?)", f->path, n,
                         (unsigned long long)pos);
            break;
        }
        sum->crc32c = crc32c(sum->crc32c, buf, n);
        verify_chunk(&v, buf, pos, n, finite);
        pos += n;
    }
    sum->bytes = (uint64_t)sb.st_size;
    if (rc == 0)
        rc = verify_entries(&v, sum, err, errlen);
    free(buf);
    free(v.crc);
    free(v.nonfin);
    return rc;
}

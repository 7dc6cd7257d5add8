#include "common/formats/tfrecord.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/formats/crc32c.h"
#include "common/base/util.h"

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p) {
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

int tfrecord_write(FILE *f, const char *path, const void *data, size_t len, char *err,
                   size_t errlen) {
    uint8_t head[12], foot[4];
    for (int i = 0; i < 8; i++)
        head[i] = (uint8_t)((uint64_t)len >> (8 * i));
    put_le32(head + 8, crc32c_mask(crc32c(0, head, 8)));
    put_le32(foot, crc32c_mask(crc32c(0, data, len)));
    if (fwrite(head, 1, sizeof head, f) != sizeof head || fwrite(data, 1, len, f) != len ||
        fwrite(foot, 1, sizeof foot, f) != sizeof foot)
        return ps_errf(err, errlen, "write %s: %s", path, strerror(errno));
    return 0;
}

struct tfrecord_reader {
    gzFile gz;
    char *path;
    uint8_t *buf;
    size_t cap;
    uint64_t index, offset; /* the next record's number and where it starts */
};

tfrecord_reader_t *tfrecord_open(const char *path, char *err, size_t errlen) {
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        ps_errf(err, errlen, "%s: %s", path, errno ? strerror(errno) : "cannot open");
        return NULL;
    }
    tfrecord_reader_t *r = xcalloc(1, sizeof *r);
    r->gz = gz;
    r->path = xstrdup(path);
    return r;
}

/* Reads exactly n bytes; returns the number read (short only at end of file),
 * or -1 on a read or decompression error. */
static long long read_full(tfrecord_reader_t *r, uint8_t *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        unsigned chunk = (unsigned)PS_MIN(n - got, (size_t)1 << 20);
        int k = gzread(r->gz, p + got, chunk);
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (long long)got;
}

static int read_error(tfrecord_reader_t *r, const char *what, char *err, size_t errlen) {
    int zerr = Z_OK;
    const char *msg = gzerror(r->gz, &zerr);
    return ps_errf(err, errlen, "%s: record %llu at offset %llu: %s: %s", r->path,
                   (unsigned long long)r->index, (unsigned long long)r->offset, what,
                   zerr == Z_ERRNO ? strerror(errno) : msg);
}

static int bad_record(tfrecord_reader_t *r, const char *what, char *err, size_t errlen) {
    return ps_errf(err, errlen, "%s: record %llu at offset %llu: %s", r->path,
                   (unsigned long long)r->index, (unsigned long long)r->offset, what);
}

/* Reads the data into r->buf, growing it only as bytes arrive, so a length
 * that lies costs no more memory than the file holds. */
static int read_data(tfrecord_reader_t *r, size_t len, char *err, size_t errlen) {
    size_t got = 0;
    while (got < len) {
        size_t want = PS_MIN(len - got, PS_MAX(got, (size_t)1 << 16));
        if (got + want > r->cap) {
            r->cap = got + want;
            r->buf = xrealloc(r->buf, r->cap);
        }
        long long k = read_full(r, r->buf + got, want);
        if (k < 0)
            return read_error(r, "reading data", err, errlen);
        got += (size_t)k;
        if ((size_t)k < want)
            return bad_record(r, "truncated data", err, errlen);
    }
    return 0;
}

int tfrecord_next(tfrecord_reader_t *r, const uint8_t **data, size_t *len, char *err,
                  size_t errlen) {
    uint8_t head[12], foot[4];
    long long k = read_full(r, head, sizeof head);
    if (k < 0)
        return read_error(r, "reading length", err, errlen);
    if (k == 0)
        return 0;
    if (k < (long long)sizeof head)
        return bad_record(r, "truncated length", err, errlen);
    if (crc32c_mask(crc32c(0, head, 8)) != get_le32(head + 8))
        return bad_record(r, "length CRC mismatch (corrupt file)", err, errlen);
    uint64_t n = get_le64(head);
    if (n > TFRECORD_MAX_LEN)
        return bad_record(r, "length over 1 GiB", err, errlen);
    if (read_data(r, (size_t)n, err, errlen) != 0)
        return -1;
    k = read_full(r, foot, sizeof foot);
    if (k < 0)
        return read_error(r, "reading data CRC", err, errlen);
    if (k < (long long)sizeof foot)
        return bad_record(r, "truncated data CRC", err, errlen);
    if (crc32c_mask(crc32c(0, r->buf, (size_t)n)) != get_le32(foot))
        return bad_record(r, "data CRC mismatch (corrupt file)", err, errlen);
    *data = r->buf;
    *len = (size_t)n;
    r->index++;
    r->offset += sizeof head + n + sizeof foot;
    return 1;
}

void tfrecord_close(tfrecord_reader_t *r) {
    if (!r)
        return;
    gzclose(r->gz);
    free(r->buf);
    free(r->path);
    free(r);
}

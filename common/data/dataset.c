/* IDX reading (gzip or plain) and the sharding, shuffling, batching loader
 * with its prefetch thread. See dataset.h for the contract. */
#include "common/data/dataset.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "kernels/backend.h"
#include "common/base/util.h"
#include "common/data/stream.h"

/* ---------------------------------------------------------------------------
 * A byte source over a file that may be gzip-compressed. zlib's gzread would
 * hide two things we must report: bytes after the end of the gzip stream (it
 * silently ignores them) and where exactly a stream was cut, so the inflate
 * loop is done here. */

#define SRC_BUFSZ (64 * 1024)

typedef struct {
    const char *path; /* for error messages */
    FILE *f;
    bool gz;
    bool file_eof;
    bool member_end; /* inflate reached the end of a gzip member */
    bool cut;        /* the file ended inside a gzip member */
    z_stream zs;
    bool zs_init;
    uint8_t *in;     /* raw file bytes not yet used: in[pos, len) */
    size_t pos, len; /* for plain files; gzip keeps zs.next_in/avail_in */
} src_t;

static int src_refill(src_t *s, char *err, size_t errlen) {
    size_t got = fread(s->in, 1, SRC_BUFSZ, s->f);
    if (got == 0 && ferror(s->f))
        return ps_errf(err, errlen, "%s: read error: %s", s->path, strerror(errno));
    if (got == 0)
        s->file_eof = true;
    s->pos = 0;
    s->len = got;
    s->zs.next_in = s->in;
    s->zs.avail_in = (uInt)got;
    return 0;
}

static void src_close(src_t *s) {
    if (s->zs_init)
        inflateEnd(&s->zs);
    if (s->f)
        fclose(s->f);
    free(s->in);
    memset(s, 0, sizeof *s);
}

/* Opens path and decides gzip or plain from its first two bytes (1f 8b); an
 * IDX file begins with two zero bytes, so the two can never be confused. */
static int src_open(src_t *s, const char *path, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->path = path;
    s->f = fopen(path, "rb");
    if (!s->f)
        return ps_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    s->in = xmalloc(SRC_BUFSZ);
    if (src_refill(s, err, errlen) != 0)
        goto fail;
    s->gz = s->len >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b;
    if (s->gz) {
        /* 16 + MAX_WBITS: gzip wrapper only, with its CRC and length checked. */
        int rc = inflateInit2(&s->zs, 16 + MAX_WBITS);
        if (rc != Z_OK) {
            ps_errf(err, errlen, "%s: zlib init failed: %s", path, zError(rc));
            goto fail;
        }
        s->zs_init = true;
        s->zs.next_in = s->in;
        s->zs.avail_in = (uInt)s->len;
    }
    return 0;
fail:
    src_close(s);
    return -1;
}

/* Counts the bytes left in the file from the current position, for the
 * message about garbage after a gzip stream. */
static size_t src_count_rest(src_t *s) {
    size_t n = s->zs.avail_in;
    size_t got;
    while ((got = fread(s->in, 1, SRC_BUFSZ, s->f)) > 0)
        n += got;
    s->zs.avail_in = 0;
    return n;
}

/* Starts the next gzip member when the file goes on after one ends (what
 * `cat a.gz b.gz` makes); anything that is not a gzip header is garbage.
 * Sets *at_eof when the file simply ends. */
static int gz_next_member(src_t *s, bool *at_eof, char *err, size_t errlen) {
    *at_eof = false;
    if (s->zs.avail_in == 0 && src_refill(s, err, errlen) != 0)
        return -1;
    if (s->zs.avail_in == 0) {
        *at_eof = true;
        return 0;
    }
    if (s->zs.next_in[0] != 0x1f) {
        size_t n = src_count_rest(s);
        return ps_errf(err, errlen, "%s: %zu bytes of trailing garbage after the gzip stream",
                       s->path, n);
    }
    inflateReset(&s->zs);
    s->member_end = false;
    return 0;
}

/* Inflates up to n bytes (n fits in uInt). Returns the count, which is short
 * only at the end of the data (s->cut says whether that end was a clean one),
 * or -1 for a corrupt stream or a read error. */
static long long gz_read(src_t *s, uint8_t *dst, size_t n, char *err, size_t errlen) {
    s->zs.next_out = dst;
    s->zs.avail_out = (uInt)n;
    while (s->zs.avail_out > 0) {
        if (s->member_end) {
            bool at_eof;
            if (gz_next_member(s, &at_eof, err, errlen) != 0)
                return -1;
            if (at_eof)
                break;
        }
        if (s->zs.avail_in == 0 && src_refill(s, err, errlen) != 0)
            return -1;
        if (s->zs.avail_in == 0) {
            s->cut = true;
            break;
        }
        int rc = inflate(&s->zs, Z_NO_FLUSH);
        if (rc == Z_STREAM_END)
            s->member_end = true;
        else if (rc != Z_OK && rc != Z_BUF_ERROR)
            return ps_errf(err, errlen, "%s: corrupt gzip stream: %s", s->path,
                           s->zs.msg ? s->zs.msg : zError(rc));
    }
    return (long long)(n - s->zs.avail_out);
}

static long long plain_read(src_t *s, uint8_t *dst, size_t n, char *err, size_t errlen) {
    size_t have = PS_MIN(n, s->len - s->pos);
    memcpy(dst, s->in + s->pos, have);
    s->pos += have;
    if (have < n && !s->file_eof) {
        /* Large reads go straight into the destination. */
        size_t got = fread(dst + have, 1, n - have, s->f);
        if (got < n - have && ferror(s->f))
            return ps_errf(err, errlen, "%s: read error: %s", s->path, strerror(errno));
        have += got;
    }
    return (long long)have;
}

/* Reads up to n bytes; returns how many (short only at the end) or -1. */
static int src_read(src_t *s, uint8_t *dst, size_t n, size_t *got, char *err, size_t errlen) {
    *got = 0;
    while (*got < n) {
        size_t chunk = PS_MIN(n - *got, (size_t)1 << 30);
        long long r = s->gz ? gz_read(s, dst + *got, chunk, err, errlen)
                            : plain_read(s, dst + *got, chunk, err, errlen);
        if (r < 0)
            return -1;
        *got += (size_t)r;
        if ((size_t)r < chunk)
            break;
    }
    return 0;
}

/* The suffix that tells a cut gzip file from a short payload. */
static const char *src_cut_note(const src_t *s) {
    return s->cut ? " (the gzip stream ends early)" : "";
}

/* After the payload the file must end: for gzip that also checks the CRC and
 * length in the trailer, which inflate reads only when asked for more. */
static int src_expect_end(src_t *s, size_t payload, char *err, size_t errlen) {
    uint8_t *scratch = xmalloc(SRC_BUFSZ);
    size_t extra = 0, got;
    int rc = 0;
    do {
        rc = src_read(s, scratch, SRC_BUFSZ, &got, err, errlen);
        extra += got;
    } while (rc == 0 && got == SRC_BUFSZ);
    free(scratch);
    if (rc != 0)
        return -1;
    if (extra > 0)
        return ps_errf(err, errlen, "%s: %zu trailing bytes after the %zu-byte payload", s->path,
                       extra, payload);
    if (s->cut)
        return ps_errf(err, errlen, "%s: truncated gzip stream: the file ends before the trailer",
                       s->path);
    return 0;
}

/* ---------------------------------------------------------------------------
 * IDX files: a 4-byte magic (0, 0, element type, number of dimensions), the
 * dimensions as big-endian uint32, then the elements in row-major order. */

#define IDX_UBYTE 0x08
/* A file claiming more than this is corrupt, not a data set we can hold. */
#define IDX_MAX_PAYLOAD ((uint64_t)4 << 30)

typedef struct {
    const char *what;   /* "images" or "labels" */
    const char *unit;   /* "pixel" or "label" */
    unsigned ndims;     /* 3 or 1 */
    const char *dim[3]; /* names of the dimensions, for messages */
} idx_kind_t;

static const idx_kind_t IDX_IMAGES = {"images", "pixel", 3, {"count", "rows", "cols"}};
static const idx_kind_t IDX_LABELS = {"labels", "label", 1, {"count", NULL, NULL}};

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int idx_check_magic(const src_t *s, const idx_kind_t *k, const uint8_t m[4], char *err,
                           size_t errlen) {
    uint32_t want = (uint32_t)IDX_UBYTE << 8 | k->ndims;
    uint32_t got = be32(m);
    if (got == want)
        return 0;
    if (m[0] == 0 && m[1] == 0 && m[2] == IDX_UBYTE)
        return ps_errf(
            err, errlen,
            "%s: bad magic 0x%08x, want 0x%08x (an IDX %s file): %u dimension%s, want %u", s->path,
            got, want, k->what, m[3], m[3] == 1 ? "" : "s", k->ndims);
    return ps_errf(err, errlen, "%s: bad magic 0x%08x, want 0x%08x (an IDX %s file)", s->path, got,
                   want, k->what);
}

/* Reads exactly n header bytes; a short read is a truncated header. */
static int idx_read_header(src_t *s, uint8_t *dst, size_t n, size_t done, size_t total, char *err,
                           size_t errlen) {
    size_t got;
    if (src_read(s, dst, n, &got, err, errlen) != 0)
        return -1;
    if (got < n)
        return ps_errf(err, errlen, "%s: truncated header: expected %zu bytes, got %zu%s", s->path,
                       total, done + got, src_cut_note(s));
    return 0;
}

/* Validates the dimensions and returns the payload size in *bytes. */
static int idx_check_dims(const src_t *s, const idx_kind_t *k, const uint32_t *dims, size_t *bytes,
                          char *err, size_t errlen) {
    uint64_t total = 1;
    for (unsigned i = 0; i < k->ndims; i++) {
        if (dims[i] == 0)
            return ps_errf(err, errlen, "%s: dimension %u (%s) is 0", s->path, i, k->dim[i]);
        /* Each factor is below 2^32 and the running product stays at or below
         * the cap (2^32), so the product cannot overflow 64 bits. */
        total *= dims[i];
        if (total > IDX_MAX_PAYLOAD || total > SIZE_MAX)
            return ps_errf(err, errlen,
                           "%s: dimensions too large: the %s payload would exceed %llu bytes",
                           s->path, k->what, (unsigned long long)IDX_MAX_PAYLOAD);
    }
    *bytes = (size_t)total;
    return 0;
}

/* Reads the payload into a buffer grown as the data arrives, so that a forged
 * header cannot make us allocate gigabytes for a tiny file. */
static int idx_read_payload(src_t *s, const idx_kind_t *k, size_t want, uint8_t **out, char *err,
                            size_t errlen) {
    size_t cap = PS_MIN(want, (size_t)1 << 20), have = 0;
    uint8_t *buf = xmalloc(cap);
    while (have < want) {
        if (have == cap) {
            cap = PS_MIN(want, cap * 2);
            buf = xrealloc(buf, cap);
        }
        size_t got;
        if (src_read(s, buf + have, cap - have, &got, err, errlen) != 0)
            goto fail;
        have += got;
        if (got == 0) {
            ps_errf(err, errlen, "%s: truncated: expected %zu %s bytes, got %zu%s", s->path, want,
                    k->unit, have, src_cut_note(s));
            goto fail;
        }
    }
    *out = buf;
    return 0;
fail:
    free(buf);
    return -1;
}

/* Reads one IDX file of the given kind: dims[] gets its dimensions, *data its
 * payload (the caller frees it). */
static int idx_read(const char *path, const idx_kind_t *k, uint32_t *dims, uint8_t **data,
                    char *err, size_t errlen) {
    src_t s;
    uint8_t hdr[16];
    size_t hdr_len = 4 + 4 * (size_t)k->ndims, bytes = 0;
    *data = NULL;
    if (src_open(&s, path, err, errlen) != 0)
        return -1;
    /* The magic first, so that a wrong kind of file is reported as such and
     * not as a header that is too short. */
    if (idx_read_header(&s, hdr, 4, 0, hdr_len, err, errlen) != 0 ||
        idx_check_magic(&s, k, hdr, err, errlen) != 0 ||
        idx_read_header(&s, hdr + 4, hdr_len - 4, 4, hdr_len, err, errlen) != 0)
        goto fail;
    for (unsigned i = 0; i < k->ndims; i++)
        dims[i] = be32(hdr + 4 + 4 * i);
    if (idx_check_dims(&s, k, dims, &bytes, err, errlen) != 0 ||
        idx_read_payload(&s, k, bytes, data, err, errlen) != 0 ||
        src_expect_end(&s, bytes, err, errlen) != 0)
        goto fail;
    src_close(&s);
    return 0;
fail:
    free(*data);
    *data = NULL;
    src_close(&s);
    return -1;
}

int dataset_load_idx(dataset_t *d, const char *images_path, const char *labels_path, char *err,
                     size_t errlen) {
    uint32_t idims[3], ldims[1];
    uint8_t *images = NULL, *labels = NULL;
    memset(d, 0, sizeof *d);
    if (idx_read(images_path, &IDX_IMAGES, idims, &images, err, errlen) != 0 ||
        (labels_path && idx_read(labels_path, &IDX_LABELS, ldims, &labels, err, errlen) != 0))
        goto fail;
    if (!labels_path) {
        ldims[0] = idims[0];
        labels = xcalloc(idims[0] ? idims[0] : 1, 1);
    }
    if (idims[0] != ldims[0]) {
        ps_errf(err, errlen, "%s has %u images but %s has %u labels", images_path, idims[0],
                labels_path, ldims[0]);
        goto fail;
    }
    d->n = idims[0];
    d->h = idims[1];
    d->w = idims[2];
    d->c = 1;
    d->example_size = d->h * d->w;
    d->images = images;
    d->labels = labels;
    /* Labels are bytes, so every one is below 256 by construction. */
    uint8_t max = 0;
    for (size_t i = 0; i < d->n; i++)
        max = PS_MAX(max, labels[i]);
    d->nclasses = (size_t)max + 1;
    return 0;
fail:
    free(labels);
    free(images);
    return -1;
}

/* DIR/NAME.gz if it exists, else DIR/NAME (which may not exist: opening it
 * then gives the error that names it). */
static void split_path(char *out, size_t outlen, const char *dir, const char *name) {
    struct stat st;
    snprintf(out, outlen, "%s/%s.gz", dir, name);
    if (stat(out, &st) == 0)
        return;
    snprintf(out, outlen, "%s/%s", dir, name);
}

int dataset_load_split(dataset_t *d, const char *dir, bool train, char *err, size_t errlen) {
    const char *prefix = train ? "train" : "t10k";
    char name[64], images[4096], labels[4096];
    memset(d, 0, sizeof *d);
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    split_path(images, sizeof images, dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    split_path(labels, sizeof labels, dir, name);
    return dataset_load_idx(d, images, labels, err, errlen);
}

void dataset_free(dataset_t *d) {
    if (!d)
        return;
    free(d->images);
    free(d->features);
    free(d->labels);
    for (size_t i = 0; i < d->nclass_names; i++)
        free(d->class_names[i]);
    free(d->class_names);
    memset(d, 0, sizeof *d);
}

void dataset_example(const dataset_t *d, size_t i, float *dst) {
    size_t es = d->example_size;
    if (d->features) {
        memcpy(dst, d->features + i * es, es * sizeof *dst);
        return;
    }
    const uint8_t *src = d->images + i * es;
    for (size_t p = 0; p < es; p++)
        dst[p] = (float)src[p] * (1.0f / 255.0f);
}

/* Copies example i of src to position j of dst (same shape). */
static void copy_example(dataset_t *dst, size_t j, const dataset_t *src, size_t i) {
    size_t es = src->example_size;
    if (src->features)
        memcpy(dst->features + j * es, src->features + i * es, es * sizeof(float));
    else
        memcpy(dst->images + j * es, src->images + i * es, es);
    dst->labels[j] = src->labels[i];
}

/* An empty data set of n examples shaped like d. */
static void dataset_like(dataset_t *out, const dataset_t *d, size_t n) {
    *out = *d;
    out->n = n;
    out->images = d->images ? xmalloc(PS_MAX(n, 1) * d->example_size) : NULL;
    out->features = d->features ? xmalloc(PS_MAX(n, 1) * d->example_size * sizeof(float)) : NULL;
    out->labels = xmalloc(PS_MAX(n, 1));
    out->class_names = d->nclass_names ? xcalloc(d->nclass_names, sizeof(char *)) : NULL;
    for (size_t i = 0; i < d->nclass_names; i++)
        out->class_names[i] = xstrdup(d->class_names[i]);
}

int dataset_hold_out(dataset_t *d, double fraction, uint64_t seed, dataset_t *held, char *err,
                     size_t errlen) {
    memset(held, 0, sizeof *held);
    uint64_t key = rng_key(seed, "data.val_split", 0);
    /* Example i is held out when its draw, a uniform double in [0, 1), is below
     * the fraction: independent of the order of the others. */
    bool *out = xcalloc(PS_MAX(d->n, 1), sizeof *out);
    size_t nheld = 0;
    for (size_t i = 0; i < d->n; i++) {
        out[i] = (double)(rng_mix(key, i) >> 11) * 0x1.0p-53 < fraction;
        nheld += out[i];
    }
    if (nheld == 0 || nheld == d->n) {
        free(out);
        return ps_errf(err, errlen,
                       "data.val_split %g of %zu examples leaves %s empty: choose a fraction "
                       "that holds out some but not all",
                       fraction, d->n, nheld == 0 ? "the validation set" : "the training set");
    }
    dataset_t kept;
    dataset_like(&kept, d, d->n - nheld);
    dataset_like(held, d, nheld);
    for (size_t i = 0, a = 0, b = 0; i < d->n; i++) {
        if (out[i])
            copy_example(held, b++, d, i);
        else
            copy_example(&kept, a++, d, i);
    }
    free(out);
    kept.total = kept.n;
    held->total = held->n;
    dataset_free(d);
    *d = kept;
    return 0;
}

/* ---------------------------------------------------------------------------
 * The loader. Step k of the sequence is (epoch k / steps_per_epoch, batch
 * k % steps_per_epoch), and each epoch's order is a pure function of (seed,
 * epoch), so any batch can be made without replaying the ones before it:
 * that is what makes start_step exact.
 *
 * The ring has prefetch + 1 slots: one held by the consumer (valid until its
 * next call) and up to `prefetch` filled ahead by the thread. Counters only
 * grow; a slot is counter % nslots. */

/* A prefetch deeper than this is a configuration mistake, not a need. */
#define LOADER_MAX_PREFETCH 4096

struct loader {
    const dataset_t *d;
    loader_opts_t o;
    size_t shard_size, steps, batch_cap;
    float lut[256];             /* byte -> byte / 255 */
    float *aug_tmp;             /* one example, for augmentation (producer thread) */
    struct data_stream *stream; /* or NULL: the examples come from d */

    /* Owned by the producer thread. */
    size_t *perm; /* positions in the shard, in this epoch's order */
    uint64_t perm_epoch;
    bool perm_valid;

    batch_t *ring;
    size_t nslots;
    pthread_mutex_t mu;
    pthread_cond_t can_fill, can_take;
    bool sync_init;
    uint64_t filled, taken, released; /* released <= taken <= filled */
    bool stop;
    pthread_t thread;
    bool thread_started;
};

static int loader_check_opts(const dataset_t *d, const loader_opts_t *o, char *err, size_t errlen) {
    if (!d || d->n == 0 || !(d->images || d->features) || !d->labels)
        return ps_errf(err, errlen, "loader: the data set is empty");
    if (o->batch_size < 1)
        return ps_errf(err, errlen, "loader: batch_size must be >= 1, got %zu", o->batch_size);
    if (o->nshards < 1)
        return ps_errf(err, errlen, "loader: nshards must be >= 1, got %zu", o->nshards);
    if (o->shard >= o->nshards)
        return ps_errf(err, errlen, "loader: shard %zu must be < nshards %zu", o->shard,
                       o->nshards);
    if (o->prefetch < 1 || o->prefetch > LOADER_MAX_PREFETCH)
        return ps_errf(err, errlen, "loader: prefetch must be in [1, %d], got %zu",
                       LOADER_MAX_PREFETCH, o->prefetch);
    if ((o->alloc == NULL) != (o->free == NULL))
        return ps_errf(err, errlen, "loader: alloc and free must be given together");
    if (o->shard >= d->n)
        return ps_errf(err, errlen,
                       "loader: shard %zu of nshards %zu has no examples (the data set has %zu)",
                       o->shard, o->nshards, d->n);
    return 0;
}

static void *loader_alloc(const loader_t *l, size_t bytes) {
    return l->o.alloc ? l->o.alloc(bytes) : xalloc_aligned(bytes);
}

static void loader_release(const loader_t *l, void *p) {
    if (!p)
        return;
    if (l->o.free)
        l->o.free(p);
    else
        free(p);
}

/* Fisher-Yates over the shard, driven by the counter-based generator so that
 * the order is the same on every machine. Draws are unbiased: a value in the
 * short top range of 2^64 is rejected and the next counter used. The shard
 * index is mixed into the key: with one order for all shards, workers would
 * take file neighbours (i, i+1, ...) at the same step, and a file sorted by
 * class would give every worker the same classes at once. */
static void loader_shuffle(loader_t *l, uint64_t epoch) {
    size_t n = l->shard_size;
    for (size_t i = 0; i < n; i++)
        l->perm[i] = i;
    if (l->o.shuffle) {
        uint64_t key = rng_mix(rng_key(l->o.seed, "data.shuffle", epoch), l->o.shard);
        uint64_t ctr = 0;
        for (size_t i = n - 1; i > 0; i--) {
            uint64_t bound = (uint64_t)i + 1, limit = -bound % bound, r;
            do
                r = rng_mix(key, ctr++);
            while (r < limit);
            size_t j = (size_t)(r % bound), t = l->perm[i];
            l->perm[i] = l->perm[j];
            l->perm[j] = t;
        }
    }
    l->perm_epoch = epoch;
    l->perm_valid = true;
}

/* Augments the n rows of b, row i being example ids[i] of the shard. */
static void loader_augment(loader_t *l, batch_t *b, uint64_t epoch, const size_t *ids, size_t n,
                           size_t first_id) {
    const dataset_t *d = l->d;
    uint64_t key = rng_mix(rng_key(l->o.seed, "data.augment", epoch), l->o.shard);
    for (size_t i = 0; i < n; i++)
        augment_example(b->x + i * d->example_size, l->aug_tmp, d->h, d->w, d->c, &l->o.augment,
                        key, ids ? l->o.shard + ids[i] * l->o.nshards : first_id + i);
}

static void loader_fill(loader_t *l, batch_t *b, uint64_t step) {
    const dataset_t *d = l->d;
    uint64_t epoch = step / l->steps, in_epoch = step % l->steps;
    if (l->stream) {
        data_stream_fill(l->stream, b, step, l->o.batch_size, l->lut);
        if (l->aug_tmp && b->n)
            loader_augment(l, b, epoch, NULL, b->n, (size_t)in_epoch * l->o.batch_size);
        return;
    }
    if (!l->perm_valid || l->perm_epoch != epoch)
        loader_shuffle(l, epoch);
    size_t first = (size_t)in_epoch * l->o.batch_size;
    size_t n = PS_MIN(l->o.batch_size, l->shard_size - first), es = d->example_size;
    for (size_t i = 0; i < n; i++) {
        size_t ex = l->o.shard + l->perm[first + i] * l->o.nshards;
        float *dst = b->x + i * es;
        if (d->features) {
            memcpy(dst, d->features + ex * es, es * sizeof *dst);
        } else {
            const uint8_t *src = d->images + ex * es;
            for (size_t p = 0; p < es; p++)
                dst[p] = l->lut[src[p]];
        }
        b->y[i] = d->labels[ex];
    }
    if (l->aug_tmp)
        loader_augment(l, b, epoch, l->perm + first, n, 0);
    b->n = n;
    b->epoch = epoch;
    b->step_in_epoch = in_epoch;
    b->step = step;
}

static void *loader_thread(void *arg) {
    loader_t *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && l->filled - l->released >= l->nslots)
            pthread_cond_wait(&l->can_fill, &l->mu);
        if (l->stop) {
            pthread_mutex_unlock(&l->mu);
            return NULL;
        }
        uint64_t k = l->filled;
        pthread_mutex_unlock(&l->mu);
        /* The slot is neither ready nor held, so it is filled unlocked. */
        loader_fill(l, &l->ring[k % l->nslots], l->o.start_step + k);
        pthread_mutex_lock(&l->mu);
        l->filled = k + 1;
        pthread_cond_signal(&l->can_take);
        pthread_mutex_unlock(&l->mu);
    }
}

static int loader_init_ring(loader_t *l, char *err, size_t errlen) {
    size_t es = l->d->example_size;
    if (es == 0 || l->batch_cap > SIZE_MAX / sizeof(float) / es)
        return ps_errf(err, errlen, "loader: batch_size %zu x example size %zu is too large",
                       l->o.batch_size, es);
    l->nslots = l->o.prefetch + 1;
    l->ring = xcalloc(l->nslots, sizeof *l->ring);
    for (size_t i = 0; i < l->nslots; i++) {
        l->ring[i].x = loader_alloc(l, l->batch_cap * es * sizeof(float));
        l->ring[i].y = loader_alloc(l, l->batch_cap * sizeof(int32_t));
        if (!l->ring[i].x || !l->ring[i].y)
            return ps_errf(err, errlen, "loader: the batch buffer allocator failed (%zu bytes)",
                           l->batch_cap * es * sizeof(float));
    }
    return 0;
}

static int loader_start(loader_t *l, char *err, size_t errlen) {
    if (pthread_mutex_init(&l->mu, NULL) != 0)
        return ps_errf(err, errlen, "loader: pthread_mutex_init failed");
    if (pthread_cond_init(&l->can_fill, NULL) != 0) {
        pthread_mutex_destroy(&l->mu);
        return ps_errf(err, errlen, "loader: pthread_cond_init failed");
    }
    if (pthread_cond_init(&l->can_take, NULL) != 0) {
        pthread_cond_destroy(&l->can_fill);
        pthread_mutex_destroy(&l->mu);
        return ps_errf(err, errlen, "loader: pthread_cond_init failed");
    }
    l->sync_init = true;
    int rc = pthread_create(&l->thread, NULL, loader_thread, l);
    if (rc != 0)
        return ps_errf(err, errlen, "loader: cannot start the prefetch thread: %s", strerror(rc));
    l->thread_started = true;
    return 0;
}

/* What both kinds of loader share, once shard_size is known. */
static loader_t *loader_finish(loader_t *l, char *err, size_t errlen) {
    l->steps = (l->shard_size + l->o.batch_size - 1) / l->o.batch_size;
    /* No batch holds more than the shard, so a huge batch_size costs nothing. */
    l->batch_cap = PS_MIN(l->o.batch_size, l->shard_size);
    for (int i = 0; i < 256; i++)
        l->lut[i] = (float)i / 255.0f;
    /* Tabular features have no pixels to move. */
    if (augment_enabled(&l->o.augment) && !l->d->features)
        l->aug_tmp = xmalloc(l->d->example_size * sizeof *l->aug_tmp);
    if (loader_init_ring(l, err, errlen) != 0 || loader_start(l, err, errlen) != 0) {
        loader_free(l);
        return NULL;
    }
    return l;
}

loader_t *loader_create(const dataset_t *d, const loader_opts_t *o, char *err, size_t errlen) {
    if (loader_check_opts(d, o, err, errlen) != 0)
        return NULL;
    loader_t *l = xcalloc(1, sizeof *l);
    l->d = d;
    l->o = *o;
    l->shard_size = (d->n - o->shard + o->nshards - 1) / o->nshards;
    l->perm = xmalloc(l->shard_size * sizeof *l->perm);
    return loader_finish(l, err, errlen);
}

loader_t *loader_create_stream(struct data_stream *st, const loader_opts_t *o, char *err,
                               size_t errlen) {
    loader_opts_t one = *o;
    one.shard = 0; /* the stream holds this worker's share already */
    one.nshards = 1;
    const dataset_t *shape = data_stream_shape(st);
    dataset_t probe = *shape;
    probe.n = data_stream_size(st);
    probe.labels = shape->labels;
    if (loader_check_opts(&probe, &one, err, errlen) != 0)
        return NULL;
    loader_t *l = xcalloc(1, sizeof *l);
    l->d = shape;
    l->o = one;
    l->stream = st;
    l->shard_size = data_stream_size(st);
    return loader_finish(l, err, errlen);
}

const char *loader_error(const loader_t *l) {
    return l->stream ? data_stream_error(l->stream) : "";
}

const batch_t *loader_next(loader_t *l) {
    pthread_mutex_lock(&l->mu);
    if (l->taken > l->released) {
        /* The batch handed out last time is done with; its slot is free. */
        l->released = l->taken;
        pthread_cond_signal(&l->can_fill);
    }
    while (l->filled == l->taken)
        pthread_cond_wait(&l->can_take, &l->mu);
    const batch_t *b = &l->ring[l->taken % l->nslots];
    l->taken++;
    pthread_mutex_unlock(&l->mu);
    return b;
}

size_t loader_shard_size(const loader_t *l) {
    return l->shard_size;
}

size_t loader_steps_per_epoch(const loader_t *l) {
    return l->steps;
}

void loader_free(loader_t *l) {
    if (!l)
        return;
    if (l->thread_started) {
        /* The thread may be waiting for a free slot: wake it to see stop. */
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->can_fill);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    if (l->sync_init) {
        pthread_cond_destroy(&l->can_take);
        pthread_cond_destroy(&l->can_fill);
        pthread_mutex_destroy(&l->mu);
    }
    for (size_t i = 0; l->ring && i < l->nslots; i++) {
        loader_release(l, l->ring[i].y);
        loader_release(l, l->ring[i].x);
    }
    free(l->ring);
    free(l->perm);
    free(l->aug_tmp);
    free(l);
}

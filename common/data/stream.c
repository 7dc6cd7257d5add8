#include "common/data/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/data/data_internal.h"
#include "common/formats/tfrecord.h"
#include "kernels/backend.h"

struct data_stream {
    data_spec_t spec;
    bool images; /* image folders: each file is one record, labelled by its folder */
    char **files;
    uint8_t *labels; /* images: each file's label */
    size_t nfiles;
    size_t *offset; /* global index of each file's first record */
    size_t *count;  /* each file's records when opened */
    bool by_file, shuffle;
    size_t size, total;
    uint64_t seed;

    /* Reading: the epoch's order of this worker's files, the open one. */
    size_t *order, norder, order_pos;
    tfrecord_reader_t *r;
    bool reading; /* a file is open: cur, its next record rec */
    size_t cur, rec;
    uint64_t epoch, ctr;
    size_t read, taken; /* examples of this epoch read into, taken from the buffer */
    uint64_t next_step;
    bool failed; /* a read error: err says which, and every later batch is empty */

    dataset_t buf; /* the shuffle buffer: buf.n examples of capacity cap */
    size_t cap;
    dataset_t staged; /* one decoded record */
    dsb_t stage;
    char err[PS_ERRLEN];
};

static bool mine(const data_stream_t *st, size_t file, size_t rec) {
    size_t n = st->spec.nshards, k = st->spec.shard;
    if (n <= 1)
        return true;
    return st->by_file ? file % n == k : (st->offset[file] + rec) % n == k;
}

/* Opens file f to read its records from the first. */
static int open_file(data_stream_t *st, size_t f, char *err, size_t errlen) {
    st->cur = f;
    st->rec = 0;
    st->reading = true;
    if (st->images)
        return 0;
    st->r = tfrecord_open(st->files[f], err, errlen);
    st->reading = st->r != NULL;
    return st->reading ? 0 : -1;
}

static void close_file(data_stream_t *st) {
    tfrecord_close(st->r);
    st->r = NULL;
    st->reading = false;
}

/* The open file's next record: 1 (its bytes in *rec; an image is read when
 * staged), 0 at the file's end, -1 on an error. */
static int next_record(data_stream_t *st, const uint8_t **rec, size_t *len, char *err,
                       size_t errlen) {
    if (st->images) {
        *rec = NULL;
        *len = 0;
        return st->rec == 0;
    }
    return tfrecord_next(st->r, rec, len, err, errlen);
}

/* Parses and decodes record `index` of file f into the staging example. */
static int stage(data_stream_t *st, const uint8_t *rec, size_t len, size_t file, size_t index,
                 char *err, size_t errlen) {
    st->staged.n = 0;
    if (st->images)
        return data_image_add(&st->stage, st->files[file], st->labels[file], err, errlen);
    char where[64];
    snprintf(where, sizeof where, "record %zu", index);
    int rc =
        data_tfrecord_add(&st->stage, &st->spec, rec, len, st->files[file], where, err, errlen);
    dsb_trim(&st->stage);
    return rc;
}

/* The opening pass over one file: counts, and checks this worker's records
 * (the others' TFRecord framing is checked; others' images are not read). */
static int scan_file(data_stream_t *st, size_t f, char *err, size_t errlen) {
    if (open_file(st, f, err, errlen) != 0)
        return -1;
    const uint8_t *rec;
    size_t len;
    int rc;
    while ((rc = next_record(st, &rec, &len, err, errlen)) == 1) {
        size_t i = st->rec++;
        if (mine(st, f, i)) {
            if (stage(st, rec, len, f, i, err, errlen) != 0) {
                rc = -1;
                break;
            }
            st->size++;
        }
    }
    close_file(st);
    st->count[f] = st->rec;
    st->total += st->rec;
    if (f + 1 < st->nfiles)
        st->offset[f + 1] = st->offset[f] + st->rec;
    return rc;
}

static int scan(data_stream_t *st, char *err, size_t errlen) {
    st->offset = xcalloc(st->nfiles, sizeof *st->offset);
    st->count = xcalloc(st->nfiles, sizeof *st->count);
    st->by_file = st->spec.nshards > 1 && st->nfiles >= st->spec.nshards;
    for (size_t f = 0; f < st->nfiles; f++)
        if (scan_file(st, f, err, errlen) != 0)
            return -1;
    if (st->size == 0)
        return ps_errf(err, errlen, "%s: no records for worker %zu of %zu", st->spec.path,
                       st->spec.shard, PS_MAX(st->spec.nshards, 1));
    return 0;
}

/* The shuffle buffer, shaped like the staged records. */
static void init_buffer(data_stream_t *st, size_t buffer) {
    dataset_t *b = &st->buf, *s = &st->staged;
    st->cap = PS_MIN(buffer, st->size);
    b->h = s->h;
    b->w = s->w;
    b->c = s->c;
    b->example_size = s->example_size;
    if (s->features)
        b->features = xmalloc(st->cap * s->example_size * sizeof(float));
    else
        b->images = xmalloc(st->cap * s->example_size);
    b->labels = xmalloc(st->cap);
}

/* The files s names: TFRecord files, or an image folder's images (their
 * labels and class names kept, the staging example shaped for them). */
static int list_files(data_stream_t *st, char *err, size_t errlen) {
    const data_spec_t *s = &st->spec;
    data_format_t f;
    if (data_format_of(s, &f, err, errlen) != 0)
        return -1;
    if (f != DATA_TFRECORD && f != DATA_IMAGES)
        return ps_errf(err, errlen,
                       "data.stream: %s is neither TFRecord data nor an image folder (the formats "
                       "streamed)",
                       s->path);
    if (f == DATA_TFRECORD)
        return data_list_files(s->path, &st->files, &st->nfiles, err, errlen);
    data_image_list_t l;
    if (data_image_list(&l, s, err, errlen) != 0)
        return -1;
    st->images = true;
    st->files = l.paths;
    st->nfiles = l.n;
    st->labels = l.labels;
    st->buf.class_names = l.class_names;
    st->buf.nclass_names = l.nclass_names;
    dsb_init(&st->stage, &st->staged, s->h, s->w, s->c, false);
    dsb_trim(&st->stage);
    return 0;
}

data_stream_t *data_stream_open(const data_spec_t *s, size_t buffer, bool shuffle, uint64_t seed,
                                char *err, size_t errlen) {
    data_stream_t *st = xcalloc(1, sizeof *st);
    st->spec = *s;
    st->shuffle = shuffle;
    st->seed = seed;
    st->stage.d = &st->staged;
    if (list_files(st, err, errlen) != 0 || scan(st, err, errlen) != 0) {
        data_stream_close(st);
        return NULL;
    }
    init_buffer(st, shuffle ? PS_MAX(buffer, 1) : 1);
    st->order = xmalloc(st->nfiles * sizeof *st->order);
    st->epoch = UINT64_MAX; /* the first example starts epoch 0 */
    return st;
}

int data_stream_count(const data_spec_t *s, size_t *n, char *err, size_t errlen) {
    data_format_t f;
    *n = 0;
    if (data_format_of(s, &f, err, errlen) != 0)
        return -1;
    if (f == DATA_IMAGES) {
        data_image_list_t l;
        if (data_image_list(&l, s, err, errlen) != 0)
            return -1;
        *n = l.n;
        data_image_list_free(&l);
        return 0;
    }
    char **files;
    size_t nfiles;
    if (data_list_files(s->path, &files, &nfiles, err, errlen) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < nfiles && rc == 0; i++)
        rc = data_tfrecord_count(files[i], n, err, errlen);
    data_free_files(files, nfiles);
    return rc;
}

size_t data_stream_size(const data_stream_t *st) {
    return st->size;
}

size_t data_stream_total(const data_stream_t *st) {
    return st->total;
}

const dataset_t *data_stream_shape(const data_stream_t *st) {
    return &st->buf;
}

const char *data_stream_error(const data_stream_t *st) {
    return st->err;
}

static uint64_t draw(data_stream_t *st) {
    uint64_t key = rng_mix(rng_key(st->seed, "data.stream", st->epoch), st->spec.shard);
    return rng_mix(key, st->ctr++);
}

/* This worker's files in the epoch's order (a seeded shuffle). */
static void start_epoch(data_stream_t *st, uint64_t epoch) {
    st->epoch = epoch;
    st->ctr = 0;
    st->norder = 0;
    for (size_t f = 0; f < st->nfiles; f++)
        if (!st->by_file || f % st->spec.nshards == st->spec.shard)
            st->order[st->norder++] = f;
    for (size_t i = st->norder; st->shuffle && i > 1; i--) {
        size_t j = (size_t)(draw(st) % i), t = st->order[i - 1];
        st->order[i - 1] = st->order[j];
        st->order[j] = t;
    }
    st->order_pos = 0;
    close_file(st);
    st->read = st->taken = 0;
}

/* Copies the staged example into buffer slot i. */
static void put(data_stream_t *st, size_t i) {
    size_t es = st->buf.example_size;
    if (st->buf.features)
        memcpy(st->buf.features + i * es, st->staged.features, es * sizeof(float));
    else
        memcpy(st->buf.images + i * es, st->staged.images, es);
    st->buf.labels[i] = st->staged.labels[0];
}

/* The error for a file whose records are not those counted when the
 * stream opened: it changed during the run. */
static int changed(data_stream_t *st) {
    size_t had = st->count[st->cur];
    if (st->rec < had)
        return ps_errf(st->err, sizeof st->err,
                       "%s: record %zu: missing (the file had %zu records when the run began; it "
                       "changed during the run)",
                       st->files[st->cur], st->rec, had);
    return ps_errf(st->err, sizeof st->err,
                   "%s: record %zu: new (the file had %zu records when the run began; it changed "
                   "during the run)",
                   st->files[st->cur], st->rec, had);
}

/* The next record of this worker into buffer slot `slot`. */
static int read_one(data_stream_t *st, size_t slot) {
    for (;;) {
        if (!st->reading) {
            if (st->order_pos == st->norder)
                return ps_errf(st->err, sizeof st->err, "%s: fewer records than when opened",
                               st->spec.path);
            if (open_file(st, st->order[st->order_pos++], st->err, sizeof st->err) != 0)
                return -1;
        }
        const uint8_t *rec;
        size_t len;
        int rc = next_record(st, &rec, &len, st->err, sizeof st->err);
        if (rc < 0)
            return -1;
        if (rc == 0 || st->rec >= st->count[st->cur]) {
            if (rc == 1 || st->rec < st->count[st->cur])
                return changed(st);
            close_file(st);
            continue;
        }
        size_t i = st->rec++;
        if (!mine(st, st->cur, i))
            continue;
        if (stage(st, rec, len, st->cur, i, st->err, sizeof st->err) != 0)
            return -1;
        put(st, slot);
        st->read++;
        return 0;
    }
}

/* The next example of the stream into x (floats) and *y. */
static int next(data_stream_t *st, float *x, int32_t *y, const float *lut) {
    if (st->epoch == UINT64_MAX || st->taken == st->size)
        start_epoch(st, st->epoch + 1);
    while (st->buf.n < st->cap && st->read < st->size) {
        if (read_one(st, st->buf.n) != 0)
            return -1;
        st->buf.n++;
    }
    size_t j = st->shuffle ? (size_t)(draw(st) % st->buf.n) : 0, es = st->buf.example_size;
    if (st->buf.features) {
        memcpy(x, st->buf.features + j * es, es * sizeof *x);
    } else {
        const uint8_t *p = st->buf.images + j * es;
        for (size_t k = 0; k < es; k++)
            x[k] = lut[p[k]];
    }
    *y = st->buf.labels[j];
    /* The last example fills the hole; with no shuffling the buffer holds one. */
    size_t last = --st->buf.n;
    if (j != last) {
        if (st->buf.features)
            memcpy(st->buf.features + j * es, st->buf.features + last * es, es * sizeof(float));
        else
            memcpy(st->buf.images + j * es, st->buf.images + last * es, es);
        st->buf.labels[j] = st->buf.labels[last];
    }
    st->taken++;
    return 0;
}

/* Batch `step`'s examples in order into b. */
static int fill_one(data_stream_t *st, batch_t *b, uint64_t step, size_t batch_size,
                    const float *lut) {
    size_t steps = (st->size + batch_size - 1) / batch_size;
    uint64_t in_epoch = step % steps;
    size_t n = PS_MIN(batch_size, st->size - (size_t)in_epoch * batch_size);
    size_t es = st->buf.example_size;
    for (size_t i = 0; i < n; i++)
        if (next(st, b->x + i * es, b->y + i, lut) != 0)
            return -1;
    b->n = n;
    b->epoch = step / steps;
    b->step_in_epoch = in_epoch;
    b->step = step;
    return 0;
}

/* Each epoch starts with an empty buffer and its own seeded order, so the
 * stream can move from an epoch's start to a later epoch's start without
 * reading the epochs between. */
static void skip_epochs(data_stream_t *st, uint64_t step, size_t batch_size) {
    size_t steps = (st->size + batch_size - 1) / batch_size;
    uint64_t epoch = step / steps;
    if (st->next_step % steps != 0 || st->next_step >= epoch * steps)
        return;
    st->next_step = epoch * steps;
    st->epoch = epoch - 1; /* next() starts `epoch` */
    st->taken = st->size;
}

void data_stream_fill(data_stream_t *st, batch_t *b, uint64_t step, size_t batch_size,
                      const float *lut) {
    /* A resumed run replays the batches of its epoch before its first
     * (decoding them), so that it sees what an unbroken run would have. */
    skip_epochs(st, step, batch_size);
    for (; !st->failed && st->next_step <= step; st->next_step++)
        if (fill_one(st, b, st->next_step, batch_size, lut) != 0)
            st->failed = true;
    if (st->failed)
        b->n = 0;
}

void data_stream_close(data_stream_t *st) {
    if (!st)
        return;
    tfrecord_close(st->r);
    data_free_files(st->files, st->nfiles);
    free(st->labels);
    free(st->offset);
    free(st->count);
    free(st->order);
    dataset_free(&st->buf);
    if (st->staged.labels)
        dsb_finish(&st->stage);
    dataset_free(&st->staged);
    free(st);
}

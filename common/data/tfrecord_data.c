/* TFRecord files of tf.train.Example into a data set: every record's
 * framing CRC-checked (formats/tfrecord.c, which also reads gzip files),
 * its Example parsed (example.c), its image decoded (PNG, JPEG) or taken
 * raw, its label checked against the model's classes. */
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "common/data/data_internal.h"
#include "common/data/example.h"
#include "common/formats/image.h"
#include "common/formats/jpeg.h"
#include "common/formats/tfrecord.h"

/* Raw pixels must be the model's input exactly (no resizing of raw data),
 * and a shape the record gives must agree. */
static int check_raw(const example_t *e, const dataset_t *d, char *why, size_t whylen) {
    if (e->image_len != d->example_size)
        return ps_errf(why, whylen,
                       "raw image of %zu bytes, but the model's input is %zux%zux%zu = %zu "
                       "(PNG or JPEG bytes are resized; raw bytes are not)",
                       e->image_len, d->h, d->w, d->c, d->example_size);
    if ((e->height >= 0 && (size_t)e->height != d->h) ||
        (e->width >= 0 && (size_t)e->width != d->w) || (e->depth >= 0 && (size_t)e->depth != d->c))
        return ps_errf(why, whylen,
                       "the record's shape (height %lld, width %lld, depth %lld) is not the "
                       "model's input %zux%zux%zu",
                       (long long)e->height, (long long)e->width, (long long)e->depth, d->h, d->w,
                       d->c);
    return 0;
}

static bool encoded(const example_t *e) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return jpeg_sniff(e->image, e->image_len) ||
           (e->image_len >= 8 && !memcmp(e->image, png_sig, 8));
}

static int add_floats(dsb_t *b, const example_t *e, const char *file, const char *where, char *err,
                      size_t errlen) {
    if (e->nfloats != b->d->example_size)
        return ps_errf(err, errlen, "%s: %s: %zu features, but the model's input has %zu values",
                       file, where, e->nfloats, b->d->example_size);
    memcpy(dsb_add_floats(b, (uint8_t)e->label), e->floats, e->nfloats * sizeof(float));
    return 0;
}

/* One record's bytes to one example of b (started at the first record: bytes
 * or floats as that record's image feature is). where = "record N". */
int data_tfrecord_add(dsb_t *b, const data_spec_t *s, const uint8_t *rec, size_t len,
                      const char *file, const char *where, char *err, size_t errlen) {
    char why[PS_ERRLEN];
    example_t e;
    if (example_parse(&e, rec, len, s->image_feature, s->label_feature, why, sizeof why) != 0)
        return ps_errf(err, errlen, "%s: %s: %s", file, where, why);
    if (!b->d->images && !b->d->features)
        dsb_init(b, b->d, s->h, s->w, s->c, e.floats != NULL);
    int rc = data_check_label(e.label, s, file, where, err, errlen);
    if (rc == 0 && (e.floats != NULL) != (b->d->features != NULL))
        rc = ps_errf(
            err, errlen, "%s: %s: feature \"%s\" is a %s list, the first record's a %s list", file,
            where, s->image_feature, e.floats ? "float" : "bytes", e.floats ? "bytes" : "float");
    else if (rc == 0 && e.floats)
        rc = add_floats(b, &e, file, where, err, errlen);
    else if (rc == 0 && encoded(&e)) {
        char name[4200];
        snprintf(name, sizeof name, "%s: %s", file, where);
        dataset_t *d = b->d;
        rc = image_decode(name, e.image, e.image_len, d->h, d->w, d->c, b->scratch, err, errlen);
        if (rc == 0)
            dsb_store_unit(dsb_add(b, (uint8_t)e.label), b->scratch, d->example_size);
    } else if (rc == 0) {
        rc = check_raw(&e, b->d, why, sizeof why);
        if (rc != 0)
            ps_errf(err, errlen, "%s: %s: %s", file, where, why);
        else
            memcpy(dsb_add(b, (uint8_t)e.label), e.image, e.image_len);
    }
    example_free(&e);
    return rc;
}

static int load_file(dsb_t *b, const data_spec_t *s, const char *file, char *err, size_t errlen) {
    tfrecord_reader_t *r = tfrecord_open(file, err, errlen);
    if (!r)
        return -1;
    const uint8_t *rec;
    size_t len;
    int rc;
    for (size_t i = 0; (rc = tfrecord_next(r, &rec, &len, err, errlen)) == 1; i++) {
        char where[64];
        snprintf(where, sizeof where, "record %zu", i);
        if (data_tfrecord_add(b, s, rec, len, file, where, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    tfrecord_close(r);
    return rc;
}

int data_tfrecord_count(const char *file, size_t *count, char *err, size_t errlen) {
    tfrecord_reader_t *r = tfrecord_open(file, err, errlen);
    if (!r)
        return -1;
    const uint8_t *rec;
    size_t len;
    int rc;
    while ((rc = tfrecord_next(r, &rec, &len, err, errlen)) == 1)
        (*count)++;
    tfrecord_close(r);
    return rc;
}

int data_load_tfrecord(dataset_t *d, const data_spec_t *s, char **files, size_t nfiles, char *err,
                       size_t errlen) {
    dsb_t b = {.d = d};
    memset(d, 0, sizeof *d);
    bool by_file = s->nshards > 1 && nfiles >= s->nshards;
    size_t others = 0;
    int rc = 0;
    for (size_t i = 0; i < nfiles && rc == 0; i++)
        rc = !by_file || i % s->nshards == s->shard
                 ? load_file(&b, s, files[i], err, errlen)
                 : data_tfrecord_count(files[i], &others, err, errlen);
    if (d->labels)
        dsb_finish(&b);
    d->file_shard = by_file;
    d->total = d->n + others;
    if (rc == 0 && d->n == 0)
        rc = ps_errf(err, errlen, "%s: no records", s->path);
    return rc;
}

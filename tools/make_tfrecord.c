/* pstrain make-tfrecord: any data set pstrain reads (IDX, image folders,
 * CSV, TFRecord) written as TFRecord files of tf.train.Example, in order,
 * split into contiguous shards, plain or gzip. Images are written as raw
 * pixels with their shape (height, width, depth), as TensorFlow's
 * convert_to_records did, or with --encode png as PNG bytes, as the
 * Estimator template's make_tfrec did (tf.io.encode_png); CSV rows as a
 * float list. Reading the shards back (a sorted glob) gives the same
 * examples in the same order. */
#include "tools/make_tfrecord.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/base/util.h"
#include "common/data/example.h"
#include "common/data/source.h"
#include "common/formats/image.h"
#include "common/formats/tfrecord.h"

typedef struct {
    const char *input, *format, *out, *image_feature, *label_feature, *label_column, *csv_header;
    const char *encode; /* raw | png */
    size_t shape[3], shards;
    bool gzip;
} mk_opts_t;

static const char USAGE[] =
    "usage: pstrain make-tfrecord --input PATH --out PREFIX [--format F] [--shards N] [--gzip]\n"
    "         [--shape H,W,C] [--image-feature NAME] [--label-feature NAME]\n"
    "         [--label-column NAME] [--csv-header names|none|skip] [--encode raw|png]\n";

/* gzip through stdio, so that tfrecord_write serves both kinds of file. */
static ssize_t gz_cookie_write(void *c, const char *buf, size_t n) {
    int k = gzwrite((gzFile)c, buf, (unsigned)n);
    return k > 0 ? k : -1;
}

static int gz_cookie_close(void *c) {
    return gzclose((gzFile)c) == Z_OK ? 0 : -1;
}

static FILE *open_out(const char *path, bool gz) {
    if (!gz)
        return fopen(path, "wb");
    gzFile g = gzopen(path, "wb");
    if (!g)
        return NULL;
    cookie_io_functions_t io = {.write = gz_cookie_write, .close = gz_cookie_close};
    return fopencookie(g, "w", io);
}

/* Example i of d as a record: its image raw or as PNG bytes (o->encode). */
static int pack(const dataset_t *d, size_t i, const mk_opts_t *o, uint8_t **rec, size_t *len,
                char *err, size_t errlen) {
    size_t shape[3] = {d->h, d->w, d->c}, es = d->example_size;
    example_fields_t f = {
        .image_key = o->image_feature, .label_key = o->label_feature, .label = d->labels[i]};
    uint8_t *png = NULL;
    if (d->features) {
        f.floats = d->features + i * es;
        f.nfloats = es;
    } else if (!strcmp(o->encode, "png")) {
        if (image_encode_png(d->h, d->w, d->c, d->images + i * es, &png, &f.image_len, err,
                             errlen) != 0)
            return -1;
        f.image = png;
        f.shape = shape;
    } else {
        f.image = d->images + i * es;
        f.image_len = es;
        f.shape = shape;
    }
    example_pack(&f, rec, len);
    free(png);
    return 0;
}

/* Writes examples [first, last) of d to one file. */
static int write_shard(const dataset_t *d, size_t first, size_t last, const char *path,
                       const mk_opts_t *o, char *err, size_t errlen) {
    FILE *f = open_out(path, o->gzip);
    if (!f)
        return ps_errf(err, errlen, "create %s: %s", path, strerror(errno));
    int rc = 0;
    for (size_t i = first; i < last && rc == 0; i++) {
        uint8_t *rec;
        size_t len;
        if ((rc = pack(d, i, o, &rec, &len, err, errlen)) != 0)
            break;
        rc = tfrecord_write(f, path, rec, len, err, errlen);
        free(rec);
    }
    if (fclose(f) != 0 && rc == 0)
        rc = ps_errf(err, errlen, "write %s: %s", path, strerror(errno));
    return rc;
}

static int write_all(const dataset_t *d, const mk_opts_t *o, char *err, size_t errlen) {
    size_t shards = PS_MIN(o->shards, d->n);
    for (size_t s = 0; s < shards; s++) {
        char path[4096];
        if (shards == 1)
            snprintf(path, sizeof path, "%s.tfrecord%s", o->out, o->gzip ? ".gz" : "");
        else
            snprintf(path, sizeof path, "%s-%05zu-of-%05zu.tfrecord%s", o->out, s, shards,
                     o->gzip ? ".gz" : "");
        size_t first = d->n * s / shards, last = d->n * (s + 1) / shards;
        if (write_shard(d, first, last, path, o, err, errlen) != 0)
            return -1;
        printf("%s: %zu examples\n", path, last - first);
    }
    return 0;
}

static int parse_shape(const char *s, size_t *shape) {
    return sscanf(s, "%zu,%zu,%zu", &shape[0], &shape[1], &shape[2]) == 3 && shape[0] && shape[1] &&
                   (shape[2] == 1 || shape[2] == 3)
               ? 0
               : -1;
}

/* One "--name value" pair into o; -1 for anything else. */
static int parse_arg(mk_opts_t *o, const char *name, const char *v) {
    const char **str[] = {&o->input,         &o->out,          &o->format,     &o->image_feature,
                          &o->label_feature, &o->label_column, &o->csv_header, &o->encode};
    static const char *const names[] = {"--input",         "--out",           "--format",
                                        "--image-feature", "--label-feature", "--label-column",
                                        "--csv-header",    "--encode"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i])) {
            *str[i] = v;
            return 0;
        }
    if (!strcmp(name, "--shape"))
        return parse_shape(v, o->shape);
    if (!strcmp(name, "--shards")) {
        char *end;
        unsigned long n = strtoul(v, &end, 10);
        o->shards = n;
        return *end || n < 1 || n > 100000 ? -1 : 0;
    }
    return -1;
}

static int parse_args(mk_opts_t *o, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--gzip"))
            o->gzip = true;
        else if (i + 1 >= argc || parse_arg(o, argv[i], argv[i + 1]) != 0) {
            log_print(stderr, "pstrain make-tfrecord: bad argument \"%s\" (see pstrain help)",
                      argv[i]);
            return -1;
        } else
            i++;
    }
    if (strcmp(o->encode, "raw") != 0 && strcmp(o->encode, "png") != 0) {
        log_print(stderr, "pstrain make-tfrecord: --encode \"%s\": raw or png", o->encode);
        return -1;
    }
    if (!o->input || !o->out) {
        fprintf(stderr, "pstrain make-tfrecord: --input and --out are required\n%s", USAGE);
        return -1;
    }
    return 0;
}

int cmd_make_tfrecord(int argc, char **argv) {
    mk_opts_t o = {.format = "auto",
                   .image_feature = "image",
                   .label_feature = "label",
                   .label_column = "",
                   .csv_header = "names",
                   .encode = "raw",
                   .shape = {28, 28, 1},
                   .shards = 1};
    if (parse_args(&o, argc, argv) != 0)
        return EXIT_USAGE;
    char err[PS_ERRLEN];
    data_spec_t s = {.path = o.input,
                     .format = o.format,
                     .train = true,
                     .nclasses = 256,
                     .h = o.shape[0],
                     .w = o.shape[1],
                     .c = o.shape[2],
                     .image_feature = o.image_feature,
                     .label_feature = o.label_feature,
                     .label_column = o.label_column,
                     .csv_header = o.csv_header};
    data_format_t f;
    if (data_format_of(&s, &f, err, sizeof err) == 0 && f == DATA_CSV)
        s.h = s.w = s.c = 0; /* the columns decide */
    dataset_t d;
    if (dataset_load(&d, &s, err, sizeof err) != 0) {
        log_print(stderr, "pstrain make-tfrecord: %s", err);
        return EXIT_DATAERR;
    }
    int rc = write_all(&d, &o, err, sizeof err);
    if (rc != 0)
        log_print(stderr, "pstrain make-tfrecord: %s", err);
    dataset_free(&d);
    return rc ? EXIT_IOERR : EXIT_OK;
}

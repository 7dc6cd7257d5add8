/* The data readers of common/data/source.h on files written here: tf.Example
 * records (packed by example.c, framed by formats/tfrecord.c), CSV, PNG
 * class folders; their errors; the seeded validation hold-out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/data/example.h"
#include "common/data/source.h"
#include "common/data/stream.h"
#include "common/formats/image.h"
#include "common/formats/tfrecord.h"
#include "test.h"

static data_spec_t spec(const char *path, size_t h, size_t w, size_t c) {
    return (data_spec_t){.path = path,
                         .format = "auto",
                         .h = h,
                         .w = w,
                         .c = c,
                         .nclasses = 10,
                         .image_feature = "image",
                         .label_feature = "label",
                         .label_column = "",
                         .csv_header = "names"};
}

void test_source_example_roundtrip(void) {
    uint8_t pix[6] = {1, 2, 3, 4, 5, 250};
    size_t shape[3] = {2, 3, 1};
    example_fields_t f = {.image_key = "image",
                          .label_key = "label",
                          .image = pix,
                          .image_len = 6,
                          .shape = shape,
                          .label = 7};
    uint8_t *rec;
    size_t len;
    example_pack(&f, &rec, &len);
    example_t e;
    char err[PS_ERRLEN];
    CHECK_INT_EQ(example_parse(&e, rec, len, "image", "label", err, sizeof err), 0);
    CHECK_INT_EQ(e.image_len, 6);
    CHECK(memcmp(e.image, pix, 6) == 0);
    CHECK_INT_EQ(e.label, 7);
    CHECK_INT_EQ(e.height, 2);
    CHECK_INT_EQ(e.width, 3);
    CHECK_INT_EQ(e.depth, 1);
    example_free(&e);
    free(rec);
    float x[3] = {0.5f, -1.0f, 1e3f};
    f = (example_fields_t){
        .image_key = "x", .label_key = "y", .floats = x, .nfloats = 3, .label = 2};
    example_pack(&f, &rec, &len);
    CHECK_INT_EQ(example_parse(&e, rec, len, "x", "y", err, sizeof err), 0);
    CHECK_INT_EQ(e.nfloats, 3);
    CHECK(e.floats && e.floats[2] == 1e3f && e.height == -1);
    example_free(&e);
    free(rec);
}

void test_source_example_errors(void) {
    char err[PS_ERRLEN];
    example_t e;
    const uint8_t junk[4] = {0xff, 0xff, 0xff, 0xff};
    CHECK_INT_EQ(example_parse(&e, junk, 4, "image", "label", err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "not a tf.train.Example");
    uint8_t pix[2] = {1, 2}, *rec;
    size_t len;
    example_fields_t f = {
        .image_key = "image", .label_key = "label", .image = pix, .image_len = 2, .label = 1};
    example_pack(&f, &rec, &len);
    CHECK_INT_EQ(example_parse(&e, rec, len, "image", "klass", err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "no feature \"klass\" (the example has: image, label)");
    CHECK_INT_EQ(example_parse(&e, rec, len, "label", "label", err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "feature \"label\" is neither a bytes list nor a float list");
    CHECK_INT_EQ(example_parse(&e, rec, len, "image", "image", err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "feature \"image\" is not an int64 list");
    free(rec);
    /* Every cut of a good record fails cleanly or parses: never a crash. */
    example_fields_t g = {
        .image_key = "image", .label_key = "label", .image = pix, .image_len = 2, .label = 1};
    example_pack(&g, &rec, &len);
    for (size_t cut = 0; cut < len; cut++)
        if (example_parse(&e, rec, cut, "image", "label", err, sizeof err) == 0)
            example_free(&e);
    free(rec);
}

/* Writes n raw 2x2 examples labelled labels[i] to path. */
static void write_records(const char *path, const int64_t *labels, size_t n) {
    FILE *f = fopen(path, "wb");
    char err[PS_ERRLEN];
    size_t shape[3] = {2, 2, 1};
    for (size_t i = 0; i < n; i++) {
        uint8_t pix[4] = {(uint8_t)i, 255, 0, 128}, *rec;
        size_t len;
        example_fields_t x = {.image_key = "image",
                              .label_key = "label",
                              .image = pix,
                              .image_len = 4,
                              .shape = shape,
                              .label = labels[i]};
        example_pack(&x, &rec, &len);
        if (tfrecord_write(f, path, rec, len, err, sizeof err) != 0)
            test_fail(__FILE__, __LINE__, "%s", err);
        free(rec);
    }
    fclose(f);
}

void test_source_tfrecord_load(void) {
    int64_t labels[5] = {3, 1, 4, 1, 5};
    write_records(test_path("a.tfrecord"), labels, 3);
    write_records(test_path("b.tfrecord"), labels + 3, 2);
    char glob[512], err[PS_ERRLEN];
    snprintf(glob, sizeof glob, "%s/*.tfrecord", test_tmpdir());
    data_spec_t s = spec(glob, 2, 2, 1);
    dataset_t d;
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), 0);
    CHECK_INT_EQ(d.n, 5);
    CHECK_INT_EQ(d.nclasses, 6);
    for (size_t i = 0; i < 5; i++)
        CHECK_INT_EQ(d.labels[i], labels[i]);
    CHECK_INT_EQ(d.images[4 * 4], 1); /* b's first record is its record 0 */
    CHECK_INT_EQ(d.images[4 * 2 + 3], 128);
    dataset_free(&d);
    s = spec(glob, 3, 3, 1);
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "a.tfrecord: record 0: raw image of 4 bytes");
}

void test_source_tfrecord_bad_label(void) {
    int64_t labels[3] = {0, 10, 1};
    write_records(test_path("l.tfrecords"), labels, 3);
    data_spec_t s = spec(test_path("l.tfrecords"), 2, 2, 1);
    dataset_t d;
    char err[PS_ERRLEN];
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "l.tfrecords: record 1: label 10 is out of range [0, 10)");
    labels[1] = -1;
    write_records(test_path("l.tfrecords"), labels, 3);
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "record 1: label -1 is out of range");
}

static void write_text(const char *path, const char *text) {
    test_write_bytes(path, text, strlen(text));
}

void test_source_csv_load(void) {
    write_text(test_path("t.csv"), "f1, f2 ,label\n1.5,2,3\r\n\n-4,5e1,0\n");
    data_spec_t s = spec(test_path("t.csv"), 1, 1, 2);
    s.label_column = "label";
    dataset_t d;
    char err[PS_ERRLEN];
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), 0);
    CHECK_INT_EQ(d.n, 2);
    CHECK(d.features && !d.images);
    CHECK(d.features[0] == 1.5f && d.features[1] == 2.0f && d.features[3] == 50.0f);
    CHECK_INT_EQ(d.labels[0], 3);
    CHECK_INT_EQ(d.labels[1], 0);
    float x[2];
    dataset_example(&d, 1, x);
    CHECK(x[0] == -4.0f && x[1] == 50.0f);
    dataset_free(&d);
    write_text(test_path("s.csv"), "2,2,a,b\n7,1,2\n8,3,9\n");
    s = spec(test_path("s.csv"), 1, 1, 2);
    s.csv_header = "skip";
    s.label_column = "0";
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), 0);
    CHECK_INT_EQ(d.labels[1], 8);
    CHECK(d.features[2] == 3.0f);
    dataset_free(&d);
}

static void csv_fails(const char *text, const char *header, const char *want) {
    write_text(test_path("bad.csv"), text);
    data_spec_t s = spec(test_path("bad.csv"), 1, 1, 2);
    s.csv_header = header;
    dataset_t d;
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, want);
}

void test_source_csv_errors(void) {
    csv_fails("a,b,c\n1,2,3\n1,2\n", "names", "bad.csv: line 3: 2 fields, the first row has 3");
    csv_fails("1,2,3\n1,x,3\n", "none", "bad.csv: line 2, column 2: \"x\" is not a finite number");
    csv_fails("1,2,3\n1,nan,3\n", "none", "line 2, column 2: \"nan\" is not a finite number");
    csv_fails("1,2,3\n1,2,\n", "none", "line 2, column 3: \"\" is not a finite number");
    csv_fails("1,2,3.5\n", "none", "line 1, column 3: label 3.5 is not an integer");
    csv_fails("1,2,30\n", "none", "line 1, column 3: label 30 is out of range [0, 10)");
    csv_fails("1,2,3,4\n", "none", "line 1: 4 columns, so 3 features");
    csv_fails("a,b,c\n", "names", "bad.csv: no data rows");
}

/* root/CLASS/NAME.png, a 4x4 gray image of value v. */
static void write_png(const char *root, const char *cls, const char *name, uint8_t v) {
    char dir[512], path[600], err[PS_ERRLEN];
    snprintf(dir, sizeof dir, "%s/%s", root, cls);
    mkdir(root, 0755);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s.png", dir, name);
    uint8_t pix[16];
    memset(pix, v, sizeof pix);
    if (image_write_png_gray(path, 4, 4, pix, err, sizeof err) != 0)
        test_fail(__FILE__, __LINE__, "%s", err);
}

void test_source_images_folders(void) {
    char root[512], err[PS_ERRLEN];
    snprintf(root, sizeof root, "%s/img", test_tmpdir());
    write_png(root, "zebra", "a", 200);
    write_png(root, "apple", "b", 10);
    write_png(root, "apple", "a", 20);
    write_text(test_path("img/apple/notes.txt"), "not an image");
    data_spec_t s = spec(root, 2, 2, 3); /* shrunk to 2x2, gray to RGB */
    dataset_t d;
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), 0);
    CHECK_INT_EQ(d.n, 3);
    CHECK_INT_EQ(d.nclass_names, 2);
    CHECK(!strcmp(d.class_names[0], "apple") && !strcmp(d.class_names[1], "zebra"));
    CHECK_INT_EQ(d.labels[0], 0);
    CHECK_INT_EQ(d.images[0], 20); /* apple/a.png before apple/b.png */
    CHECK_INT_EQ(d.images[12 + 11], 10);
    CHECK_INT_EQ(d.labels[2], 1);
    CHECK_INT_EQ(d.images[24 + 5], 200);
    /* A test folder labelled by the training classes. */
    char other[512];
    snprintf(other, sizeof other, "%s/other", test_tmpdir());
    write_png(other, "zebra", "c", 1);
    data_spec_t t = spec(other, 2, 2, 1);
    t.class_names = d.class_names;
    t.nclass_names = d.nclass_names;
    dataset_t e;
    CHECK_INT_EQ(dataset_load(&e, &t, err, sizeof err), 0);
    CHECK_INT_EQ(e.labels[0], 1);
    dataset_free(&e);
    write_png(other, "yak", "d", 1);
    CHECK_INT_EQ(dataset_load(&e, &t, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "class \"yak\" is not one of the training set's 2 classes");
    dataset_free(&d);
}

void test_source_format_auto(void) {
    static const struct {
        const char *path;
        int format;
    } cases[] = {{"x/train.tfrecords", DATA_TFRECORD},
                 {"a.tfrec.gz", DATA_TFRECORD},
                 {"b.tfrecord", DATA_TFRECORD},
                 {"t.csv", DATA_CSV},
                 {"t.csv.gz", DATA_CSV},
                 {"train-images-idx3-ubyte.gz", DATA_IDX}};
    char err[PS_ERRLEN];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        data_spec_t s = spec(cases[i].path, 1, 1, 1);
        data_format_t f;
        CHECK_INT_EQ(data_format_of(&s, &f, err, sizeof err), 0);
        CHECK_INT_EQ(f, cases[i].format);
    }
    data_spec_t s = spec("data.bin", 1, 1, 1);
    data_format_t f;
    CHECK_INT_EQ(data_format_of(&s, &f, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "data.bin: cannot tell the format");
    s.format = "parquet";
    CHECK_INT_EQ(data_format_of(&s, &f, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "data.format: \"parquet\"");
}

static void make_set(dataset_t *d, size_t n) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->h = d->w = d->c = d->example_size = 1;
    d->images = xmalloc(n);
    d->labels = xmalloc(n);
    for (size_t i = 0; i < n; i++) {
        d->images[i] = (uint8_t)i;
        d->labels[i] = (uint8_t)(i % 3);
    }
    d->nclasses = 3;
}

void test_source_hold_out(void) {
    dataset_t a, b, va, vb;
    char err[PS_ERRLEN];
    make_set(&a, 200);
    make_set(&b, 200);
    CHECK_INT_EQ(dataset_hold_out(&a, 0.25, 11, &va, err, sizeof err), 0);
    CHECK_INT_EQ(dataset_hold_out(&b, 0.25, 11, &vb, err, sizeof err), 0);
    CHECK_INT_EQ(a.n + va.n, 200);
    CHECK(va.n > 30 && va.n < 70);
    CHECK_INT_EQ(va.n, vb.n); /* same seed, same hold-out */
    CHECK(memcmp(va.images, vb.images, va.n) == 0);
    /* Kept and held keep the file order and together hold every example. */
    int seen[200] = {0};
    for (size_t i = 0; i < a.n; i++)
        seen[a.images[i]]++;
    for (size_t i = 0; i < va.n; i++) {
        seen[va.images[i]]++;
        CHECK_INT_EQ(va.labels[i], va.images[i] % 3);
    }
    for (size_t i = 0; i < 200; i++)
        CHECK_INT_EQ(seen[i], 1);
    dataset_t c, vc;
    make_set(&c, 200);
    CHECK_INT_EQ(dataset_hold_out(&c, 0.25, 12, &vc, err, sizeof err), 0);
    CHECK(vc.n != va.n || memcmp(vc.images, va.images, va.n) != 0);
    dataset_free(&c);
    dataset_free(&vc);
    make_set(&c, 3);
    CHECK_INT_EQ(dataset_hold_out(&c, 0.01, 1, &vc, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "leaves the validation set empty");
    dataset_free(&c);
    dataset_free(&a);
    dataset_free(&b);
    dataset_free(&va);
    dataset_free(&vb);
}

/* ---- augmentation ------------------------------------------------------- */

/* Which (flip, dy, dx) turns src[4][4] into got, or -1 for none. */
static int find_move(const float *got, const float *src, int *flip, int *dy, int *dx) {
    float tmp[16], want[16];
    for (*flip = 0; *flip < 2; (*flip)++)
        for (*dy = -2; *dy <= 2; (*dy)++)
            for (*dx = -2; *dx <= 2; (*dx)++) {
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 4; x++) {
                        int sy = y - *dy, sx = (*flip ? 3 - x : x) - *dx;
                        want[y * 4 + x] =
                            sy < 0 || sy > 3 || sx < 0 || sx > 3 ? 0.0f : src[sy * 4 + sx];
                    }
                memcpy(tmp, want, sizeof tmp);
                if (memcmp(tmp, got, sizeof tmp) == 0)
                    return 0;
            }
    return -1;
}

void test_source_augment_moves(void) {
    float src[16], x[16], tmp[16];
    for (int i = 0; i < 16; i++)
        src[i] = (float)(i + 1);
    augment_opts_t o = {.flip = true, .crop_pad = 1, .translate = 0.25};
    int flips = 0, shifted = 0;
    for (uint64_t i = 0; i < 200; i++) {
        memcpy(x, src, sizeof x);
        augment_example(x, tmp, 4, 4, 1, &o, 99, i);
        int f, dy, dx;
        if (find_move(x, src, &f, &dy, &dx) != 0) {
            test_fail(__FILE__, __LINE__, "example %llu is no flip and shift of the source",
                      (unsigned long long)i);
            return;
        }
        flips += f;
        shifted += dy != 0 || dx != 0;
        CHECK(dy >= -2 && dy <= 2 && dx >= -2 && dx <= 2);
    }
    printf("flipped %d, shifted %d of 200\n", flips, shifted);
    CHECK(flips > 70 && flips < 130);
    CHECK(shifted > 150);
    augment_opts_t off = {0};
    CHECK(!augment_enabled(&off));
    memcpy(x, src, sizeof x);
    augment_example(x, tmp, 4, 4, 1, &off, 99, 3);
    CHECK(memcmp(x, src, sizeof x) == 0);
}

/* The rows of the first two epochs of a loader over 32 4x4 examples. */
static void augmented_epochs(const dataset_t *d, uint64_t seed, float *out) {
    loader_opts_t o = {.batch_size = 32,
                       .seed = seed,
                       .nshards = 1,
                       .prefetch = 1,
                       .augment = {.flip = true, .crop_pad = 1}};
    char err[PS_ERRLEN];
    loader_t *l = loader_create(d, &o, err, sizeof err);
    if (!l) {
        test_fail(__FILE__, __LINE__, "%s", err);
        return;
    }
    for (int e = 0; e < 2; e++)
        memcpy(out + e * 32 * 16, loader_next(l)->x, 32 * 16 * sizeof(float));
    loader_free(l);
}

void test_source_augment_loader(void) {
    dataset_t d;
    memset(&d, 0, sizeof d);
    d.n = 32;
    d.h = d.w = 4;
    d.c = 1;
    d.example_size = 16;
    d.images = xmalloc(32 * 16);
    d.labels = xcalloc(32, 1);
    for (size_t i = 0; i < 32 * 16; i++)
        d.images[i] = (uint8_t)(1 + i % 200);
    d.nclasses = 1;
    float *a = xmalloc(2 * 32 * 16 * sizeof(float)), *b = xmalloc(2 * 32 * 16 * sizeof(float));
    float *c = xmalloc(2 * 32 * 16 * sizeof(float));
    augmented_epochs(&d, 5, a);
    augmented_epochs(&d, 5, b);
    augmented_epochs(&d, 6, c);
    CHECK(memcmp(a, b, 2 * 32 * 16 * sizeof(float)) == 0);       /* seeded */
    CHECK(memcmp(a, a + 32 * 16, 32 * 16 * sizeof(float)) != 0); /* per epoch */
    CHECK(memcmp(a, c, 2 * 32 * 16 * sizeof(float)) != 0);       /* per seed */
    /* Every row is a move of its own example (unshuffled: row i = example i). */
    for (size_t i = 0; i < 32; i++) {
        float src[16];
        int f, dy, dx;
        for (size_t p = 0; p < 16; p++) /* as the loader scales: byte / 255 */
            src[p] = (float)d.images[i * 16 + p] / 255.0f;
        if (find_move(a + i * 16, src, &f, &dy, &dx) != 0) {
            test_fail(__FILE__, __LINE__, "row %zu is not a move of example %zu", i, i);
            break;
        }
    }
    free(a);
    free(b);
    free(c);
    dataset_free(&d);
}

void test_source_tfrecord_file_shards(void) {
    int64_t labels[6] = {0, 1, 2, 3, 4, 5};
    write_records(test_path("s-0.tfrecord"), labels, 2);
    write_records(test_path("s-1.tfrecord"), labels + 2, 3);
    write_records(test_path("s-2.tfrecord"), labels + 5, 1);
    char glob[512], err[PS_ERRLEN];
    snprintf(glob, sizeof glob, "%s/s-*.tfrecord", test_tmpdir());
    data_spec_t s = spec(glob, 2, 2, 1);
    s.nshards = 2;
    dataset_t d;
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), 0); /* files 0 and 2 */
    CHECK(d.file_shard);
    CHECK_INT_EQ(d.n, 3);
    CHECK_INT_EQ(d.total, 6);
    CHECK_INT_EQ(d.labels[2], 5);
    dataset_free(&d);
    s.shard = 1;
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), 0); /* file 1 */
    CHECK_INT_EQ(d.n, 3);
    CHECK_INT_EQ(d.labels[0], 2);
    dataset_free(&d);
    s.nshards = 4; /* fewer files than workers: all of them, split by record */
    CHECK_INT_EQ(dataset_load(&d, &s, err, sizeof err), 0);
    CHECK(!d.file_shard);
    CHECK_INT_EQ(d.n, 6);
    CHECK_INT_EQ(d.total, 6);
    dataset_free(&d);
}

/* ---- streaming ---------------------------------------------------------- */

/* Writes n raw 2x2 examples whose first pixel is first + i (their id). */
static void write_ids(const char *path, size_t first, size_t n) {
    FILE *f = fopen(path, "wb");
    char err[PS_ERRLEN];
    size_t shape[3] = {2, 2, 1};
    for (size_t i = 0; i < n; i++) {
        uint8_t pix[4] = {(uint8_t)(first + i), 1, 2, 3}, *rec;
        size_t len;
        example_fields_t x = {.image_key = "image",
                              .label_key = "label",
                              .image = pix,
                              .image_len = 4,
                              .shape = shape,
                              .label = (int64_t)((first + i) % 10)};
        example_pack(&x, &rec, &len);
        if (tfrecord_write(f, path, rec, len, err, sizeof err) != 0)
            test_fail(__FILE__, __LINE__, "%s", err);
        free(rec);
    }
    fclose(f);
}

/* The ids of `steps` batches of a streaming loader from step `start`. */
static int stream_ids(const char *glob, size_t shard, size_t nshards, size_t buffer, bool shuffle,
                      uint64_t start, size_t steps, int *ids) {
    char err[PS_ERRLEN];
    data_spec_t s = spec(glob, 2, 2, 1);
    s.shard = shard;
    s.nshards = nshards;
    data_stream_t *st = data_stream_open(&s, buffer, shuffle, 4, err, sizeof err);
    if (!st) {
        test_fail(__FILE__, __LINE__, "%s", err);
        return -1;
    }
    loader_opts_t o = {
        .batch_size = 4, .seed = 4, .nshards = 1, .prefetch = 2, .start_step = start};
    loader_t *l = loader_create_stream(st, &o, err, sizeof err);
    int k = 0;
    for (size_t i = 0; l && i < steps; i++) {
        const batch_t *b = loader_next(l);
        for (size_t r = 0; r < b->n; r++)
            ids[k++] = (int)lroundf(b->x[r * 4] * 255.0f);
    }
    loader_free(l);
    data_stream_close(st);
    return k;
}

void test_source_stream_epochs(void) {
    write_ids(test_path("st-0.tfrecord"), 0, 10);
    write_ids(test_path("st-1.tfrecord"), 10, 7);
    write_ids(test_path("st-2.tfrecord"), 17, 3);
    char glob[512];
    snprintf(glob, sizeof glob, "%s/st-*.tfrecord", test_tmpdir());
    int ids[200], again[200];
    /* No shuffling: file order, epochs of 5 batches (the last short? 20 = 5 x 4). */
    CHECK_INT_EQ(stream_ids(glob, 0, 1, 1, false, 0, 10, ids), 40);
    for (int i = 0; i < 40; i++)
        CHECK_INT_EQ(ids[i], i % 20);
    /* Shuffled through a buffer of 3: each epoch a permutation, epochs differ. */
    CHECK_INT_EQ(stream_ids(glob, 0, 1, 3, true, 0, 15, ids), 60);
    for (int e = 0; e < 3; e++) {
        int seen[20] = {0};
        for (int i = 0; i < 20; i++)
            seen[ids[e * 20 + i]]++;
        for (int i = 0; i < 20; i++)
            CHECK_INT_EQ(seen[i], 1);
    }
    CHECK(memcmp(ids, ids + 20, 20 * sizeof *ids) != 0);
    /* Seeded, and a resumed loader sees what an unbroken one saw. */
    CHECK_INT_EQ(stream_ids(glob, 0, 1, 3, true, 7, 8, again), 32);
    CHECK(memcmp(again, ids + 28, 32 * sizeof *ids) == 0);
    /* Two whole epochs skipped unread, and one at its first batch. */
    CHECK_INT_EQ(stream_ids(glob, 0, 1, 3, true, 12, 3, again), 12);
    CHECK(memcmp(again, ids + 48, 12 * sizeof *ids) == 0);
    CHECK_INT_EQ(stream_ids(glob, 0, 1, 3, true, 10, 5, again), 20);
    CHECK(memcmp(again, ids + 40, 20 * sizeof *ids) == 0);
    /* 3 files, 2 workers: by file; 3 files, 4 workers: by record. */
    CHECK_INT_EQ(stream_ids(glob, 1, 2, 1, false, 0, 2, ids), 7); /* file 1 */
    CHECK_INT_EQ(ids[0], 10);
    CHECK_INT_EQ(stream_ids(glob, 3, 4, 1, false, 0, 2, ids), 5); /* ids 3, 7, 11, 15, 19 */
    CHECK_INT_EQ(ids[4], 19);
}

void test_source_stream_errors(void) {
    int64_t labels[3] = {1, 12, 2};
    write_records(test_path("bad.tfrecord"), labels, 3);
    char err[PS_ERRLEN];
    data_spec_t s = spec(test_path("bad.tfrecord"), 2, 2, 1);
    CHECK(data_stream_open(&s, 10, true, 1, err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "bad.tfrecord: record 1: label 12 is out of range");
    /* A file cut after opening: the batch is empty and the error names it. */
    write_ids(test_path("cut.tfrecord"), 0, 8);
    s = spec(test_path("cut.tfrecord"), 2, 2, 1);
    data_stream_t *st = data_stream_open(&s, 1, false, 1, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    if (truncate(test_path("cut.tfrecord"), 75) != 0)
        test_fail(__FILE__, __LINE__, "truncate failed");
    loader_opts_t o = {.batch_size = 8, .nshards = 1, .prefetch = 1};
    loader_t *l = loader_create_stream(st, &o, err, sizeof err);
    const batch_t *b = loader_next(l);
    CHECK_INT_EQ(b->n, 0);
    CHECK_STR_CONTAINS(loader_error(l), "cut.tfrecord: record 0 at offset 0: truncated data");
    loader_free(l);
    data_stream_close(st);
}

/* Reads batches of 3 of glob after rewriting `file` with n records (it had
 * 3) until one is empty: how many were not, the error in err. */
static size_t batches_before_error(const char *glob, const char *file, size_t n, char *err,
                                   size_t errlen) {
    data_spec_t s = spec(glob, 2, 2, 1);
    data_stream_t *st = data_stream_open(&s, 1, false, 1, err, errlen);
    if (!st) {
        test_fail(__FILE__, __LINE__, "%s", err);
        return 99;
    }
    write_ids(file, 0, n);
    loader_opts_t o = {.batch_size = 3, .nshards = 1, .prefetch = 1};
    loader_t *l = loader_create_stream(st, &o, err, errlen);
    size_t got = 0;
    while (l && got < 4 && loader_next(l)->n > 0)
        got++;
    if (l)
        snprintf(err, errlen, "%s", loader_error(l));
    loader_free(l);
    data_stream_close(st);
    return got;
}

/* A file that ends early at a record boundary, or grows, after opening:
 * the error names the file and the record. */
void test_source_stream_changed(void) {
    char err[PS_ERRLEN], glob[512];
    snprintf(glob, sizeof glob, "%s/chg-*.tfrecord", test_tmpdir());
    for (size_t n = 2; n <= 4; n += 2) {
        write_ids(test_path("chg-0.tfrecord"), 0, 3);
        write_ids(test_path("chg-1.tfrecord"), 3, 3);
        CHECK_INT_EQ(batches_before_error(glob, test_path("chg-0.tfrecord"), n, err, sizeof err),
                     n == 2 ? 0 : 1);
        CHECK_STR_CONTAINS(err, n == 2 ? "chg-0.tfrecord: record 2: missing (the file had 3 "
                                         "records when the run began; it changed"
                                       : "chg-0.tfrecord: record 3: new (the file had 3");
    }
}

/* Image folders stream as files of one record: unshuffled, the same order
 * and labels as read whole; sharded by image (the others' images are not
 * read: worker 1 opens although image 2 is spoiled); class names kept; an
 * image spoiled after opening is an error naming it. */
void test_source_stream_images(void) {
    char root[512], err[PS_ERRLEN];
    snprintf(root, sizeof root, "%s/simg", test_tmpdir());
    write_png(root, "b", "x", 30);
    write_png(root, "a", "y", 20);
    write_png(root, "a", "x", 10);
    write_png(root, "c", "x", 40);
    data_spec_t s = spec(root, 2, 2, 1);
    data_stream_t *st = data_stream_open(&s, 1, false, 1, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    const dataset_t *shape = data_stream_shape(st);
    CHECK_INT_EQ(shape->nclass_names, 3);
    CHECK(!strcmp(shape->class_names[2], "c"));
    CHECK_INT_EQ(data_stream_size(st), 4);
    loader_opts_t o = {.batch_size = 4, .nshards = 1, .prefetch = 1};
    loader_t *l = loader_create_stream(st, &o, err, sizeof err);
    const batch_t *b = loader_next(l);
    static const int want[4] = {10, 20, 30, 40}, labels[4] = {0, 0, 1, 2};
    CHECK_INT_EQ(b->n, 4);
    for (int i = 0; i < 4 && b->n == 4; i++) {
        CHECK_INT_EQ(lroundf(b->x[i * 4] * 255.0f), want[i]);
        CHECK_INT_EQ(b->y[i], labels[i]);
    }
    loader_free(l);
    data_stream_close(st);
    /* An image spoiled after opening: its batch is the error. */
    st = data_stream_open(&s, 1, false, 1, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    write_text(test_path("simg/b/x.png"), "not a PNG any more");
    l = loader_create_stream(st, &o, err, sizeof err);
    CHECK_INT_EQ(loader_next(l)->n, 0);
    CHECK_STR_CONTAINS(loader_error(l), "simg/b/x.png: neither a PNG nor a JPEG image");
    loader_free(l);
    data_stream_close(st);
    /* Worker 1 of 2 takes images 1 and 3; the others are not read. */
    s.shard = 1;
    s.nshards = 2;
    st = data_stream_open(&s, 1, false, 1, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    CHECK_INT_EQ(data_stream_size(st), 2);
    CHECK_INT_EQ(data_stream_total(st), 4);
    size_t n = 0;
    CHECK_INT_EQ(data_stream_count(&s, &n, err, sizeof err), 0);
    CHECK_INT_EQ(n, 4);
    data_stream_close(st);
}

/* Tests of CRC-32C (published vectors and a bit-at-a-time reference), TFRecord
 * framing (round trips, gzip, every kind of damage) and the event writer (read
 * back with the TFRecord reader and protobuf-c: file version, steps, tags,
 * values; unique names; errors naming the file). */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/formats/crc32c.h"
#include "common/formats/events.h"
#include "common/formats/tfrecord.h"
#include "common/base/util.h"
#include "tensorboard.pb-c.h"

/* The definition, one bit at a time, to check the sliced tables against. */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

void test_crc32c_vectors(void) {
    uint8_t buf[32];
    CHECK_INT_EQ(crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_INT_EQ(crc32c(0, "", 0), 0);
    /* RFC 3720 (iSCSI), appendix B.4. */
    memset(buf, 0, sizeof buf);
    CHECK_INT_EQ(crc32c(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof buf);
    CHECK_INT_EQ(crc32c(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    CHECK_INT_EQ(crc32c(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    CHECK_INT_EQ(crc32c(0, buf, 32), 0x113FDB5Cu);
}

void test_crc32c_split_and_reference(void) {
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    /* Every start (alignment) and length up to 40 bytes past three 8-byte blocks. */
    for (size_t start = 0; start < 8; start++)
        for (size_t n = 0; n + start <= 64; n++)
            CHECK_INT_EQ(crc32c(0, buf + start, n), crc32c_bitwise(buf + start, n));
    uint32_t whole = crc32c(0, buf, sizeof buf);
    CHECK_INT_EQ(whole, crc32c_bitwise(buf, sizeof buf));
    for (size_t cut = 0; cut <= sizeof buf; cut++)
        CHECK_INT_EQ(crc32c(crc32c(0, buf, cut), buf + cut, sizeof buf - cut), whole);
}

void test_crc32c_mask(void) {
    CHECK_INT_EQ(crc32c_mask(0), 0xa282ead8u);
    uint32_t c = crc32c(0, "123456789", 9);
    /* ((c >> 15) | (c << 17)) + 0xa282ead8, worked by hand for c = 0xE3069283. */
    CHECK_INT_EQ(crc32c_mask(c), (uint32_t)(((c >> 15) | (c << 17)) + 0xa282ead8u));
    CHECK(crc32c_mask(c) != c);
    uint32_t x = 1;
    for (int i = 0; i < 1000; i++, x = x * 2654435761u + 1)
        CHECK_INT_EQ(crc32c_unmask(crc32c_mask(x)), x);
}

/* ---- TFRecord ------------------------------------------------------------ */

static const size_t rec_lens[] = {0, 1, 100, 70000};

static uint8_t rec_byte(size_t rec, size_t i) {
    return (uint8_t)(rec * 37 + i * 11);
}

/* The records of rec_lens, as a file's bytes (written by tfrecord_write). */
static void write_records(const char *path) {
    char err[PS_ERRLEN];
    FILE *f = fopen(path, "wb");
    for (size_t r = 0; r < PS_ARRAY_LEN(rec_lens); r++) {
        uint8_t *p = xmalloc(rec_lens[r]);
        for (size_t i = 0; i < rec_lens[r]; i++)
            p[i] = rec_byte(r, i);
        if (tfrecord_write(f, path, p, rec_lens[r], err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            exit(2);
        }
        free(p);
    }
    fclose(f);
}

/* Reads path back and checks it holds exactly the records of rec_lens. */
static void check_records(const char *path) {
    char err[PS_ERRLEN];
    tfrecord_reader_t *r = tfrecord_open(path, err, sizeof err);
    CHECK(r != NULL);
    for (size_t k = 0; k < PS_ARRAY_LEN(rec_lens); k++) {
        const uint8_t *data;
        size_t len;
        int rc = tfrecord_next(r, &data, &len, err, sizeof err);
        if (rc != 1)
            fprintf(stderr, "%s\n", err);
        CHECK_INT_EQ(rc, 1);
        CHECK_INT_EQ(len, rec_lens[k]);
        for (size_t i = 0; i < len; i++)
            if (data[i] != rec_byte(k, i))
                CHECK_INT_EQ(data[i], rec_byte(k, i));
    }
    const uint8_t *data;
    size_t len;
    CHECK_INT_EQ(tfrecord_next(r, &data, &len, err, sizeof err), 0);
    tfrecord_close(r);
}

void test_tfrecord_roundtrip(void) {
    const char *path = test_path("recs");
    write_records(path);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    /* 16 bytes of framing per record. */
    CHECK_INT_EQ(st.st_size, 16 * 4 + 0 + 1 + 100 + 70000);
    check_records(path);
}

void test_tfrecord_gzip(void) {
    const char *plain = test_path("recs"), *gz = test_path("recs.gz");
    write_records(plain);
    char *data, err[PS_ERRLEN];
    size_t len;
    CHECK(ps_read_file(plain, &data, &len, err, sizeof err) == 0);
    gzFile g = gzopen(gz, "wb");
    CHECK(g != NULL);
    CHECK_INT_EQ(gzwrite(g, data, (unsigned)len), (int)len);
    CHECK_INT_EQ(gzclose(g), Z_OK);
    free(data);
    check_records(gz);
}

/* Reads every record of path; the first error must contain want. */
static int fails_with(const char *path, const char *want) {
    char err[PS_ERRLEN] = "";
    tfrecord_reader_t *r = tfrecord_open(path, err, sizeof err);
    if (!r)
        return strstr(err, want) ? 0 : (fprintf(stderr, "error: %s\n", err), -1);
    const uint8_t *data;
    size_t len;
    int rc;
    while ((rc = tfrecord_next(r, &data, &len, err, sizeof err)) == 1)
        ;
    tfrecord_close(r);
    if (rc == 0 || !strstr(err, want) || !strstr(err, path)) {
        fprintf(stderr, "want \"%s\", got rc %d: %s\n", want, rc, err);
        return -1;
    }
    return 0;
}

/* A copy of the good file with a change: bytes [at, at + n) replaced by
 * p (p NULL: cut the file at `at`). */
static const char *damaged(const char *name, size_t at, const void *p, size_t n) {
    char *data, err[PS_ERRLEN];
    size_t len;
    write_records(test_path("good"));
    if (ps_read_file(test_path("good"), &data, &len, err, sizeof err) != 0)
        exit(2);
    if (p)
        memcpy(data + at, p, n);
    const char *path = test_path(name);
    test_write_bytes(path, data, p ? len : at);
    free(data);
    return path;
}

void test_tfrecord_corrupt(void) {
    /* Record 0 (empty) is bytes 0-15; record 1 (1 byte) starts at 16. */
    uint8_t x = 0x5a;
    CHECK(fails_with(damaged("len", 16, &x, 1), "record 1 at offset 16: length CRC mismatch") == 0);
    CHECK(fails_with(damaged("data", 28, &x, 1), "record 1 at offset 16: data CRC mismatch") == 0);
    CHECK(fails_with(damaged("cut-len", 20, NULL, 0), "record 1 at offset 16: truncated length") ==
          0);
    CHECK(fails_with(damaged("cut-data", 16 + 16 + 12 + 50, NULL, 0),
                     "record 2 at offset 33: truncated data") == 0);
    CHECK(fails_with(damaged("cut-crc", 16 + 17 + 12 + 100 + 2, NULL, 0),
                     "record 2 at offset 33: truncated data CRC") == 0);
    CHECK(fails_with(test_path("missing"), "No such file") == 0);

    /* Lengths with a good CRC: 2^40 (refused before reading) and 2^20 (more
     * than the file holds: read as far as there are bytes). */
    uint8_t head[12] = {0, 0, 0, 0, 0, 1, 0, 0};
    uint32_t crc = crc32c_mask(crc32c(0, head, 8));
    memcpy(head + 8, &crc, 4);
    test_write_bytes(test_path("huge"), head, sizeof head);
    CHECK(fails_with(test_path("huge"), "record 0 at offset 0: length over 1 GiB") == 0);
    uint8_t big[40] = {0, 0, 0x10, 0, 0, 0, 0, 0};
    crc = crc32c_mask(crc32c(0, big, 8));
    memcpy(big + 8, &crc, 4);
    test_write_bytes(test_path("big"), big, sizeof big);
    CHECK(fails_with(test_path("big"), "record 0 at offset 0: truncated data") == 0);
}

/* ---- event files --------------------------------------------------------- */

/* Reads record k of an event file as an Event (the caller frees it). */
static Tensorflow__Event *next_event(tfrecord_reader_t *r) {
    char err[PS_ERRLEN];
    const uint8_t *data;
    size_t len;
    if (tfrecord_next(r, &data, &len, err, sizeof err) != 1) {
        fprintf(stderr, "no record: %s\n", err);
        return NULL;
    }
    return tensorflow__event__unpack(NULL, len, data);
}

static const char *ev_tags[] = {"loss", "accuracy", "eval/zero"};

static void write_events(events_writer_t *w, int steps) {
    char err[PS_ERRLEN];
    for (int s = 0; s < steps; s++) {
        double values[] = {1.0 / (s + 1), s / 4.0, 0.0};
        if (events_scalars(w, (uint64_t)s * 10, 1.7e9 + s, 3, ev_tags, values, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            exit(2);
        }
    }
}

static void check_event(Tensorflow__Event *ev, int s) {
    CHECK(ev != NULL);
    CHECK_INT_EQ(ev->what_case, TENSORFLOW__EVENT__WHAT_SUMMARY);
    CHECK_INT_EQ(ev->step, s * 10);
    CHECK_NEAR(ev->wall_time, 1.7e9 + s, 0);
    CHECK_INT_EQ(ev->summary->n_value, 3);
    double want[] = {(float)(1.0 / (s + 1)), s / 4.0, 0.0};
    for (size_t i = 0; i < 3; i++) {
        Tensorflow__Summary__Value *v = ev->summary->value[i];
        CHECK(strcmp(v->tag, ev_tags[i]) == 0);
        /* A zero is written too: the oneof marks it present. */
        CHECK_INT_EQ(v->value_case, TENSORFLOW__SUMMARY__VALUE__VALUE_SIMPLE_VALUE);
        CHECK_NEAR(v->simple_value, want[i], 0);
    }
}

void test_events_write_read(void) {
    char err[PS_ERRLEN];
    char dir[600];
    snprintf(dir, sizeof dir, "%s/model/eval", test_tmpdir());
    double t0 = ps_wall_now();
    events_writer_t *w = events_open(dir, err, sizeof err);
    CHECK(w != NULL);
    char host[256] = "";
    gethostname(host, sizeof host);
    char prefix[700];
    snprintf(prefix, sizeof prefix, "%s/events.out.tfevents.", dir);
    const char *path = events_path(w);
    CHECK_STR_CONTAINS(path, prefix);
    CHECK_STR_CONTAINS(path + strlen(prefix) + 10, host);
    write_events(w, 5);
    CHECK_INT_EQ(events_flush(w, err, sizeof err), 0);
    char *copy = xstrdup(path);
    CHECK_INT_EQ(events_close(w, err, sizeof err), 0);

    tfrecord_reader_t *r = tfrecord_open(copy, err, sizeof err);
    free(copy);
    CHECK(r != NULL);
    Tensorflow__Event *ev = next_event(r);
    CHECK(ev != NULL);
    CHECK_INT_EQ(ev->what_case, TENSORFLOW__EVENT__WHAT_FILE_VERSION);
    CHECK(strcmp(ev->file_version, "brain.Event:2") == 0);
    CHECK(ev->wall_time >= t0 - 1 && ev->wall_time <= ps_wall_now() + 1);
    tensorflow__event__free_unpacked(ev, NULL);
    for (int s = 0; s < 5; s++) {
        ev = next_event(r);
        check_event(ev, s);
        tensorflow__event__free_unpacked(ev, NULL);
        if (test_failures)
            break;
    }
    const uint8_t *data;
    size_t len;
    CHECK_INT_EQ(tfrecord_next(r, &data, &len, err, sizeof err), 0);
    tfrecord_close(r);
}

void test_events_unique_names(void) {
    char err[PS_ERRLEN];
    const char *dir = test_tmpdir();
    events_writer_t *a = events_open(dir, err, sizeof err);
    CHECK(a != NULL);
    /* Take the name the next writer would most likely get (same second,
     * next number): it must be skipped, not truncated. */
    char squat[1024];
    unsigned seq = (unsigned)strtoul(strrchr(events_path(a), '.') + 1, NULL, 10);
    snprintf(squat, sizeof squat, "%.*s%u",
             (int)(strrchr(events_path(a), '.') + 1 - events_path(a)), events_path(a), seq + 1);
    test_write_bytes(squat, "x", 1);
    events_writer_t *b = events_open(dir, err, sizeof err);
    CHECK(b != NULL);
    CHECK(strcmp(events_path(a), events_path(b)) != 0);
    CHECK(strcmp(squat, events_path(b)) != 0);
    write_events(a, 2);
    write_events(b, 3);
    CHECK_INT_EQ(events_close(a, err, sizeof err), 0);
    CHECK_INT_EQ(events_close(b, err, sizeof err), 0);
    struct stat st;
    CHECK(stat(squat, &st) == 0);
    CHECK_INT_EQ(st.st_size, 1);
}

void test_events_errors(void) {
    char err[PS_ERRLEN] = "";
    /* A directory under a plain file cannot be made. */
    test_write_bytes(test_path("file"), "x", 1);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sub", test_path("file"));
    CHECK(events_open(dir, err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, test_path("file"));
    CHECK_STR_CONTAINS(err, "Not a directory");

    events_writer_t *w = events_open(test_tmpdir(), err, sizeof err);
    CHECK(w != NULL);
    const char *tags[] = {"loss", ""};
    double values[] = {1, 2};
    CHECK(events_scalars(w, 1, 0, 2, tags, values, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, events_path(w));
    CHECK_STR_CONTAINS(err, "scalar 1 has no tag");
    CHECK_INT_EQ(events_close(w, err, sizeof err), 0);
}

void test_events_write_error(void) {
    char err[PS_ERRLEN] = "";
    events_writer_t *w = events_open(test_tmpdir(), err, sizeof err);
    CHECK(w != NULL);
    char *path = xstrdup(events_path(w));
    test_limit_file_size(4096);
    const char *tags[] = {"a_rather_long_tag_name_for_the_scalar"};
    double v = 1;
    int rc = 0;
    for (int s = 0; s < 1000 && rc == 0; s++) {
        rc = events_scalars(w, (uint64_t)s, 0, 1, tags, &v, err, sizeof err);
        if (rc == 0 && s % 10 == 9)
            rc = events_flush(w, err, sizeof err);
    }
    CHECK(rc != 0);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "File too large");
    CHECK(events_close(w, NULL, 0) != 0);
    free(path);
}

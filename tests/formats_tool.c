/* The file-format modules as a command, so that tests/formats_*.sh can check
 * them against independent readers and writers (numpy, protobuf, PIL):
 *   pstrain_formats_tool events DIR STEPS      writes an event file, prints its path
 *   pstrain_formats_tool npz-write PATH        writes tool_arrays() below
 *   pstrain_formats_tool npz-read PATH         prints name, shape and values a line each
 *   pstrain_formats_tool png-load PATH H W C   prints the loaded floats
 * Errors: one line on stderr, exit 1; a bad command line exits 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/formats/events.h"
#include "common/formats/image.h"
#include "common/formats/npz.h"
#include "common/base/util.h"

/* Scalars of step s: the Python side computes the same numbers. */
static int cmd_events(const char *dir, const char *steps_arg, char *err) {
    int64_t steps;
    if (ps_parse_i64(steps_arg, &steps) != 0 || steps < 0)
        return ps_errf(err, PS_ERRLEN, "bad STEPS: %s", steps_arg);
    events_writer_t *w = events_open(dir, err, PS_ERRLEN);
    if (!w)
        return -1;
    const char *tags[] = {"loss", "accuracy", "zero"};
    for (int64_t s = 0; s < steps; s++) {
        double values[] = {1.0 / (double)(s + 1), (double)s / 8.0, 0.0};
        if (events_scalars(w, (uint64_t)(s * 100), 1.7e9 + (double)s, 3, tags, values, err,
                           PS_ERRLEN) != 0) {
            events_close(w, NULL, 0);
            return -1;
        }
    }
    printf("%s\n", events_path(w));
    return events_close(w, err, PS_ERRLEN);
}

/* Element i of array k is k * 1000 + i / 4 - 3: exact in float32. */
static int cmd_npz_write(const char *path, char *err) {
    npz_array_t a[] = {
        {"conv2d/kernel", 4, {3, 3, 1, 2}, NULL},
        {"conv2d/bias", 1, {2}, NULL},
        {"dense/kernel", 2, {4, 3}, NULL},
        {"dense/bias", 1, {3}, NULL},
        {"step", 0, {0}, NULL},
        {"empty", 2, {0, 5}, NULL},
    };
    float *bufs[PS_ARRAY_LEN(a)];
    for (size_t k = 0; k < PS_ARRAY_LEN(a); k++) {
        size_t n = npz_count(&a[k]);
        bufs[k] = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++)
            bufs[k][i] = (float)k * 1000.0f + (float)i / 4.0f - 3.0f;
        a[k].data = bufs[k];
    }
    int rc = npz_write(path, PS_ARRAY_LEN(a), a, err, PS_ERRLEN);
    for (size_t k = 0; k < PS_ARRAY_LEN(a); k++)
        free(bufs[k]);
    return rc;
}

static int cmd_npz_read(const char *path, char *err) {
    npz_t z;
    if (npz_read(path, &z, err, PS_ERRLEN) != 0)
        return -1;
    for (size_t k = 0; k < z.n; k++) {
        const npz_array_t *a = &z.arrays[k];
        printf("%s\t", a->name);
        for (size_t d = 0; d < a->ndim; d++)
            printf(d ? ",%zu" : "%zu", a->shape[d]);
        putchar('\t');
        for (size_t i = 0; i < npz_count(a); i++)
            printf(i ? " %.9g" : "%.9g", (double)a->data[i]);
        putchar('\n');
    }
    npz_free(&z);
    return 0;
}

static int cmd_png_load(char **argv, char *err) {
    int64_t h, w, c;
    if (ps_parse_i64(argv[1], &h) || ps_parse_i64(argv[2], &w) || ps_parse_i64(argv[3], &c) ||
        h < 1 || w < 1 || c < 1 || h > IMAGE_MAX_SIDE || w > IMAGE_MAX_SIDE || c > 3)
        return ps_errf(err, PS_ERRLEN, "bad H W C: %s %s %s", argv[1], argv[2], argv[3]);
    size_t n = (size_t)(h * w * c);
    float *out = xmalloc(n * sizeof *out);
    int rc = image_load_png(argv[0], (size_t)h, (size_t)w, (size_t)c, out, err, PS_ERRLEN);
    for (size_t i = 0; rc == 0 && i < n; i++)
        printf(i ? " %.9g" : "%.9g", (double)out[i]);
    if (rc == 0)
        putchar('\n');
    free(out);
    return rc;
}

int main(int argc, char **argv) {
    char err[PS_ERRLEN] = "";
    int rc;
    if (argc == 4 && strcmp(argv[1], "events") == 0)
        rc = cmd_events(argv[2], argv[3], err);
    else if (argc == 3 && strcmp(argv[1], "npz-write") == 0)
        rc = cmd_npz_write(argv[2], err);
    else if (argc == 3 && strcmp(argv[1], "npz-read") == 0)
        rc = cmd_npz_read(argv[2], err);
    else if (argc == 6 && strcmp(argv[1], "png-load") == 0)
        rc = cmd_png_load(argv + 2, err);
    else {
        fprintf(stderr,
                "usage: %s events DIR STEPS | npz-write PATH | npz-read PATH | "
                "png-load PATH H W C\n",
                argv[0]);
        return 2;
    }
    if (rc != 0)
        fprintf(stderr, "error: %s\n", err);
    return rc != 0;
}

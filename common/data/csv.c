/* CSV of numeric features and an integer label column, plain or gzip:
 * every row has the same number of fields, every field is a finite number,
 * the label an integer class. A bad row is one error naming the file, the
 * line and the column. The first line is a header of names (header
 * "names"), a line to skip (header "skip": scikit-learn's bundled CSVs
 * start with a line of counts and class names), or data (header "none"). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/base/util.h"
#include "common/data/data_internal.h"

#define CSV_MAX_LINE (1 << 20)
#define CSV_MAX_FIELDS 65536

typedef struct {
    const char *file;
    gzFile gz;
    char *line;
    size_t lineno;
    char **field;
    size_t nfield;
} csv_t;

/* The next line without its end (\n or \r\n) in c->line; 0 at the end. */
static int next_line(csv_t *c, char *err, size_t errlen) {
    if (!gzgets(c->gz, c->line, CSV_MAX_LINE)) {
        int zerr;
        const char *msg = gzerror(c->gz, &zerr);
        if (zerr != Z_OK && zerr != Z_BUF_ERROR)
            return ps_errf(err, errlen, "%s: line %zu: %s", c->file, c->lineno + 1,
                           zerr == Z_ERRNO ? strerror(errno) : msg);
        return 0;
    }
    c->lineno++;
    size_t n = strlen(c->line);
    if (n == CSV_MAX_LINE - 1 && c->line[n - 1] != '\n')
        return ps_errf(err, errlen, "%s: line %zu: longer than %d bytes", c->file, c->lineno,
                       CSV_MAX_LINE - 1);
    while (n && (c->line[n - 1] == '\n' || c->line[n - 1] == '\r'))
        c->line[--n] = '\0';
    return 1;
}

/* Cuts c->line at the commas, trimming blanks around each field. */
static int split(csv_t *c, char *err, size_t errlen) {
    c->nfield = 0;
    char *p = c->line;
    for (;;) {
        if (c->nfield == CSV_MAX_FIELDS)
            return ps_errf(err, errlen, "%s: line %zu: over %d fields", c->file, c->lineno,
                           CSV_MAX_FIELDS);
        while (*p == ' ' || *p == '\t')
            p++;
        c->field[c->nfield++] = p;
        char *comma = strchr(p, ',');
        char *end = comma ? comma : p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (!comma) {
            *end = '\0';
            return 0;
        }
        *end = '\0';
        p = comma + 1;
    }
}

static int number(const csv_t *c, size_t col, double *v, char *err, size_t errlen) {
    const char *s = c->field[col];
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (!*s || *end || !isfinite(*v))
        return ps_errf(err, errlen, "%s: line %zu, column %zu: \"%.40s\" is not a finite number",
                       c->file, c->lineno, col + 1, s);
    return 0;
}

/* The label column: a header name, a 0-based number, or "" for the last. */
static int find_label(const csv_t *c, const data_spec_t *s, bool names, size_t *col, char *err,
                      size_t errlen) {
    const char *want = s->label_column;
    if (!want[0]) {
        *col = c->nfield - 1;
        return 0;
    }
    for (size_t i = 0; names && i < c->nfield; i++)
        if (!strcmp(c->field[i], want)) {
            *col = i;
            return 0;
        }
    char *end;
    unsigned long k = strtoul(want, &end, 10);
    if (!*end && k < c->nfield) {
        *col = k;
        return 0;
    }
    return ps_errf(err, errlen, "%s: line %zu: no label column \"%s\" among its %zu columns",
                   c->file, c->lineno, want, c->nfield);
}

/* One data row: nfield fields (the first row decides), numbers, a label. */
static int add_row(dsb_t *b, const data_spec_t *s, csv_t *c, size_t ncols, size_t label_col,
                   char *err, size_t errlen) {
    if (c->nfield != ncols)
        return ps_errf(err, errlen, "%s: line %zu: %zu fields, the first row has %zu", c->file,
                       c->lineno, c->nfield, ncols);
    double v;
    if (number(c, label_col, &v, err, errlen) != 0)
        return -1;
    char where[96];
    snprintf(where, sizeof where, "line %zu, column %zu", c->lineno, label_col + 1);
    if (v != floor(v))
        return ps_errf(err, errlen, "%s: %s: label %g is not an integer", c->file, where, v);
    if (data_check_label(v < -1    ? -1
                         : v > 1e9 ? (long long)1e9
                                   : (long long)v,
                         s, c->file, where, err, errlen) != 0)
        return -1;
    float *x = dsb_add_floats(b, (uint8_t)v);
    for (size_t i = 0, k = 0; i < ncols; i++) {
        if (i == label_col)
            continue;
        if (number(c, i, &v, err, errlen) != 0)
            return -1;
        x[k++] = (float)v;
    }
    return 0;
}

/* The first row fixes the columns; their count must match the model. */
static int first_row(dsb_t *b, const data_spec_t *s, csv_t *c, bool names, size_t *ncols,
                     size_t *label_col, char *err, size_t errlen) {
    if (find_label(c, s, names, label_col, err, errlen) != 0)
        return -1;
    *ncols = c->nfield;
    if (b->d->example_size == 0) /* no model: the first row decides */
        dsb_reshape(b, 1, 1, c->nfield - 1);
    if (c->nfield - 1 != b->d->example_size)
        return ps_errf(err, errlen,
                       "%s: line %zu: %zu columns, so %zu features besides the label, but the "
                       "model's input has %zu values",
                       c->file, c->lineno, c->nfield, c->nfield - 1, b->d->example_size);
    return 0;
}

static int load_file(dsb_t *b, const data_spec_t *s, csv_t *c, char *err, size_t errlen) {
    int rc;
    size_t ncols = 0, label_col = 0;
    bool header = strcmp(s->csv_header, "none") != 0, names = !strcmp(s->csv_header, "names");
    bool have_cols = false;
    while ((rc = next_line(c, err, errlen)) == 1) {
        if (!c->line[0])
            continue;
        if (split(c, err, errlen) != 0)
            return -1;
        if (header) {
            header = false;
            if (names && first_row(b, s, c, true, &ncols, &label_col, err, errlen) != 0)
                return -1;
            have_cols = names;
            continue;
        }
        if (!have_cols && first_row(b, s, c, false, &ncols, &label_col, err, errlen) != 0)
            return -1;
        have_cols = true;
        if (add_row(b, s, c, ncols, label_col, err, errlen) != 0)
            return -1;
    }
    return rc;
}

int data_load_csv(dataset_t *d, const data_spec_t *s, char **files, size_t nfiles, char *err,
                  size_t errlen) {
    dsb_t b;
    dsb_init(&b, d, s->h, s->w, s->c, true);
    csv_t c = {.line = xmalloc(CSV_MAX_LINE), .field = xmalloc(CSV_MAX_FIELDS * sizeof(char *))};
    int rc = 0;
    for (size_t i = 0; i < nfiles && rc == 0; i++) {
        c.file = files[i];
        c.lineno = 0;
        errno = 0;
        c.gz = gzopen(files[i], "rb");
        if (!c.gz) {
            rc = ps_errf(err, errlen, "%s: %s", files[i], errno ? strerror(errno) : "cannot open");
            break;
        }
        rc = load_file(&b, s, &c, err, errlen);
        gzclose(c.gz);
    }
    free(c.line);
    free(c.field);
    dsb_finish(&b);
    if (rc == 0 && d->n == 0)
        rc = ps_errf(err, errlen, "%s: no data rows", s->path);
    return rc;
}

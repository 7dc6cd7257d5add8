/* Naming a data set (a file, a glob, a folder; a format or "auto") and the
 * growing data set the readers fill. The readers: tfrecord_data.c,
 * images.c, csv.c; IDX is dataset.c. */
#include "common/data/source.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/util.h"
#include "common/data/data_internal.h"

void dsb_init(dsb_t *b, dataset_t *d, size_t h, size_t w, size_t c, bool features) {
    memset(d, 0, sizeof *d);
    memset(b, 0, sizeof *b);
    b->d = d;
    b->cap = 1024;
    d->h = h;
    d->w = w;
    d->c = c;
    d->example_size = h * w * c;
    size_t es = PS_MAX(d->example_size, 1); /* 0 until a CSV's first row */
    if (features)
        d->features = xmalloc(b->cap * es * sizeof(float));
    else
        d->images = xmalloc(b->cap * es);
    d->labels = xmalloc(b->cap);
    b->scratch = xmalloc(es * sizeof(float));
}

void dsb_reshape(dsb_t *b, size_t h, size_t w, size_t c) {
    dataset_t *d = b->d;
    d->h = h;
    d->w = w;
    d->c = c;
    d->example_size = h * w * c;
    if (d->features)
        d->features = xrealloc(d->features, b->cap * d->example_size * sizeof(float));
    else
        d->images = xrealloc(d->images, b->cap * d->example_size);
    b->scratch = xrealloc(b->scratch, d->example_size * sizeof(float));
}

static void dsb_grow(dsb_t *b) {
    dataset_t *d = b->d;
    if (d->n < b->cap)
        return;
    b->cap *= 2;
    if (d->features)
        d->features = xrealloc(d->features, b->cap * d->example_size * sizeof(float));
    else
        d->images = xrealloc(d->images, b->cap * d->example_size);
    d->labels = xrealloc(d->labels, b->cap);
}

void dsb_trim(dsb_t *b) {
    dataset_t *d = b->d;
    size_t cap = PS_MAX(d->n, 1), es = PS_MAX(d->example_size, 1);
    if (b->cap <= cap || (!d->features && !d->images))
        return;
    b->cap = cap;
    if (d->features)
        d->features = xrealloc(d->features, cap * es * sizeof(float));
    else
        d->images = xrealloc(d->images, cap * es);
    d->labels = xrealloc(d->labels, cap);
}

uint8_t *dsb_add(dsb_t *b, uint8_t label) {
    dsb_grow(b);
    dataset_t *d = b->d;
    d->labels[d->n] = label;
    return d->images + d->n++ * d->example_size;
}

float *dsb_add_floats(dsb_t *b, uint8_t label) {
    dsb_grow(b);
    dataset_t *d = b->d;
    d->labels[d->n] = label;
    return d->features + d->n++ * d->example_size;
}

void dsb_store_unit(uint8_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = src[i] * 255.0f + 0.5f;
        dst[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

void dsb_finish(dsb_t *b) {
    dataset_t *d = b->d;
    uint8_t max = 0;
    for (size_t i = 0; i < d->n; i++)
        max = PS_MAX(max, d->labels[i]);
    d->nclasses = (size_t)max + 1;
    free(b->scratch);
    b->scratch = NULL;
}

int data_check_label(long long label, const data_spec_t *s, const char *name, const char *where,
                     char *err, size_t errlen) {
    if (label >= 0 && (unsigned long long)label < s->nclasses)
        return 0;
    return ps_errf(err, errlen, "%s: %s: label %lld is out of range [0, %zu) (the model's classes)",
                   name, where, label, s->nclasses);
}

/* ---- naming files ------------------------------------------------------- */

char *data_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void data_free_files(char **files, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
}

static int list_glob(const char *pattern, char ***files, size_t *n, char *err, size_t errlen) {
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH)
        return ps_errf(err, errlen, "%s: no file matches", pattern);
    if (rc != 0)
        return ps_errf(err, errlen, "%s: glob failed (%d)", pattern, rc);
    *n = g.gl_pathc;
    *files = xcalloc(g.gl_pathc, sizeof **files);
    for (size_t i = 0; i < g.gl_pathc; i++)
        (*files)[i] = xstrdup(g.gl_pathv[i]); /* glob sorts them */
    globfree(&g);
    return 0;
}

static bool is_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int list_dir(const char *dir, char ***files, size_t *n, char *err, size_t errlen) {
    DIR *dp = opendir(dir);
    if (!dp)
        return ps_errf(err, errlen, "%s: %s", dir, strerror(errno));
    size_t cap = 16;
    *files = xmalloc(cap * sizeof **files);
    *n = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *path = data_join(dir, de->d_name);
        if (!is_regular(path)) {
            free(path);
            continue;
        }
        if (*n == cap)
            *files = xrealloc(*files, (cap *= 2) * sizeof **files);
        (*files)[(*n)++] = path;
    }
    closedir(dp);
    if (*n == 0) {
        free(*files);
        return ps_errf(err, errlen, "%s: the folder holds no files", dir);
    }
    qsort(*files, *n, sizeof **files, cmp_str);
    return 0;
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int data_list_files(const char *path, char ***files, size_t *n, char *err, size_t errlen) {
    *files = NULL;
    *n = 0;
    if (strpbrk(path, "*?["))
        return list_glob(path, files, n, err, errlen);
    if (is_dir(path))
        return list_dir(path, files, n, err, errlen);
    if (!is_regular(path))
        return ps_errf(err, errlen, "%s: %s", path, errno ? strerror(errno) : "not a file");
    *files = xmalloc(sizeof **files);
    (*files)[0] = xstrdup(path);
    *n = 1;
    return 0;
}

/* ---- formats ------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The format a file's name suggests; -1 when it suggests none. */
static int format_of_name(const char *name) {
    static const char *const tfr[] = {".tfrecord", ".tfrecords", ".tfrec"};
    char base[4096];
    snprintf(base, sizeof base, "%s", name);
    if (ends_with(base, ".gz"))
        base[strlen(base) - 3] = '\0';
    for (size_t i = 0; i < sizeof tfr / sizeof *tfr; i++)
        if (ends_with(base, tfr[i]))
            return DATA_TFRECORD;
    if (ends_with(base, ".csv"))
        return DATA_CSV;
    if (strstr(base, "idx3-ubyte") || strstr(base, "idx1-ubyte"))
        return DATA_IDX;
    return -1;
}

/* A folder: IDX when it holds IDX files, else the format of its first file
 * with a telling name, else image folders (subfolders per class). */
static int format_of_dir(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp)
        return -1;
    int f = -1;
    bool subdirs = false;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL && f < 0) {
        if (de->d_name[0] == '.')
            continue;
        f = format_of_name(de->d_name);
        char *path = data_join(dir, de->d_name);
        subdirs |= is_dir(path);
        free(path);
    }
    closedir(dp);
    return f >= 0 ? f : subdirs ? DATA_IMAGES : -1;
}

int data_format_of(const data_spec_t *s, data_format_t *f, char *err, size_t errlen) {
    static const char *const names[] = {"idx", "tfrecord", "images", "csv"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s->format, names[i])) {
            *f = (data_format_t)i;
            return 0;
        }
    if (strcmp(s->format, "auto") != 0)
        return ps_errf(err, errlen, "data.format: \"%s\" is not idx, tfrecord, images, csv or auto",
                       s->format);
    int g = is_dir(s->path) ? format_of_dir(s->path) : format_of_name(s->path);
    if (g < 0)
        return ps_errf(err, errlen,
                       "%s: cannot tell the format from the names; set data.format "
                       "(idx, tfrecord, images or csv)",
                       s->path);
    *f = (data_format_t)g;
    return 0;
}

/* ---- IDX ---------------------------------------------------------------- */

/* A folder: its train-* or t10k-* pair (dataset_load_split). A file: an
 * images file, whose labels file has "labels-idx1" for "images-idx3". */
static int load_idx(dataset_t *d, const data_spec_t *s, char *err, size_t errlen) {
    if (is_dir(s->path))
        return dataset_load_split(d, s->path, s->train, err, errlen);
    const char *at = strstr(s->path, "images-idx3");
    if (!at)
        return ps_errf(err, errlen,
                       "%s: an IDX data set is a folder or an images file named "
                       "*images-idx3-ubyte[.gz] (its labels beside it as *labels-idx1-ubyte[.gz])",
                       s->path);
    char labels[4096];
    snprintf(labels, sizeof labels, "%.*slabels-idx1%s", (int)(at - s->path), s->path,
             at + strlen("images-idx3"));
    return dataset_load_idx(d, s->path, labels, err, errlen);
}

/* IDX labels are bytes and unchecked there: the model's class count is. */
static int check_idx_labels(const dataset_t *d, const data_spec_t *s, char *err, size_t errlen) {
    for (size_t i = 0; i < d->n; i++)
        if (d->labels[i] >= s->nclasses) {
            char where[64];
            snprintf(where, sizeof where, "label %zu", i);
            return data_check_label(d->labels[i], s, s->path, where, err, errlen);
        }
    return 0;
}

static int load_any(dataset_t *d, const data_spec_t *s, char *err, size_t errlen);

int dataset_load(dataset_t *d, const data_spec_t *s, char *err, size_t errlen) {
    int rc = load_any(d, s, err, errlen);
    if (rc == 0 && !d->file_shard)
        d->total = d->n;
    return rc;
}

static int load_any(dataset_t *d, const data_spec_t *s, char *err, size_t errlen) {
    data_format_t f;
    memset(d, 0, sizeof *d);
    if (s->nclasses < 1 || s->nclasses > 256)
        return ps_errf(err, errlen, "%s: the model has %zu classes; the data sets allow 1 to 256",
                       s->path, s->nclasses);
    if (data_format_of(s, &f, err, errlen) != 0)
        return -1;
    if (f == DATA_IDX) {
        if (load_idx(d, s, err, errlen) != 0)
            return -1;
        if (check_idx_labels(d, s, err, errlen) != 0) {
            dataset_free(d);
            return -1;
        }
        return 0;
    }
    if (f == DATA_IMAGES)
        return data_load_images(d, s, err, errlen);
    char **files;
    size_t n;
    if (data_list_files(s->path, &files, &n, err, errlen) != 0)
        return -1;
    int rc = f == DATA_TFRECORD ? data_load_tfrecord(d, s, files, n, err, errlen)
                                : data_load_csv(d, s, files, n, err, errlen);
    data_free_files(files, n);
    if (rc != 0)
        dataset_free(d);
    return rc;
}

/* Image folders in Keras's image_dataset_from_directory layout: one
 * subfolder per class, classes in sorted order (label i is the i-th name),
 * PNG and JPEG files in each (other files are skipped, as Keras skips
 * them), decoded gray or RGB and resized to the model's input. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/base/util.h"
#include "common/data/data_internal.h"
#include "common/formats/image.h"

typedef struct {
    char **names;
    size_t n, cap;
} names_t;

static void names_add(names_t *v, const char *s) {
    if (v->n == v->cap)
        v->names = xrealloc(v->names, (v->cap = v->cap ? v->cap * 2 : 16) * sizeof *v->names);
    v->names[v->n++] = xstrdup(s);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool image_name(const char *name) {
    static const char *const ext[] = {".png", ".jpg", ".jpeg"};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof ext / sizeof *ext; i++)
        if (!strcasecmp(dot, ext[i]))
            return true;
    return false;
}

/* The entries of dir that are folders (want_dirs) or image files, sorted. */
static int list(const char *dir, bool want_dirs, names_t *out, char *err, size_t errlen) {
    DIR *dp = opendir(dir);
    if (!dp)
        return ps_errf(err, errlen, "%s: %s", dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *path = data_join(dir, de->d_name);
        struct stat st;
        bool ok = stat(path, &st) == 0 &&
                  (want_dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode) && image_name(path));
        free(path);
        if (ok)
            names_add(out, de->d_name);
    }
    closedir(dp);
    if (out->n)
        qsort(out->names, out->n, sizeof *out->names, cmp_str);
    return 0;
}

static void names_free(names_t *v) {
    data_free_files(v->names, v->n);
    memset(v, 0, sizeof *v);
}

/* Reads a whole file (images are small; a cap keeps a stray huge file out). */
static int slurp(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *p = xmalloc(cap);
    while ((got = fread(p + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap && cap >= ((size_t)256 << 20)) {
            fclose(f);
            free(p);
            return ps_errf(err, errlen, "%s: over 256 MiB, too large for an image", path);
        }
        if (n == cap)
            p = xrealloc(p, cap *= 2);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(p);
        return ps_errf(err, errlen, "%s: read error", path);
    }
    *buf = p;
    *len = n;
    return 0;
}

int data_image_add(dsb_t *b, const char *path, uint8_t label, char *err, size_t errlen) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (slurp(path, &buf, &len, err, errlen) != 0)
        return -1;
    dataset_t *d = b->d;
    int rc = image_decode(path, buf, len, d->h, d->w, d->c, b->scratch, err, errlen);
    free(buf);
    if (rc == 0)
        dsb_store_unit(dsb_add(b, label), b->scratch, d->example_size);
    return rc;
}

/* The label of class folder `name`: its index among the given classes. */
static int class_label(const data_spec_t *s, const names_t *classes, size_t i, const char *dir,
                       long long *label, char *err, size_t errlen) {
    if (!s->class_names) {
        *label = (long long)i;
        return 0;
    }
    for (size_t k = 0; k < s->nclass_names; k++)
        if (!strcmp(s->class_names[k], classes->names[i])) {
            *label = (long long)k;
            return 0;
        }
    return ps_errf(err, errlen, "%s/%s: class \"%s\" is not one of the training set's %zu classes",
                   dir, classes->names[i], classes->names[i], s->nclass_names);
}

/* Class folder i's images into l, labelled. */
static int list_class(data_image_list_t *l, names_t *paths, const data_spec_t *s,
                      const names_t *classes, size_t i, char *err, size_t errlen) {
    long long label = 0;
    char *sub = data_join(s->path, classes->names[i]);
    names_t files = {0};
    int rc = class_label(s, classes, i, s->path, &label, err, errlen);
    if (rc == 0)
        rc = data_check_label(label, s, sub, "class folder", err, errlen);
    if (rc == 0)
        rc = list(sub, false, &files, err, errlen);
    for (size_t k = 0; rc == 0 && k < files.n; k++) {
        char *path = data_join(sub, files.names[k]);
        names_add(paths, path);
        free(path);
        l->labels = xrealloc(l->labels, paths->cap * sizeof *l->labels);
        l->labels[paths->n - 1] = (uint8_t)label;
    }
    names_free(&files);
    free(sub);
    return rc;
}

/* The class names the data set keeps: the training set's, or its own. */
static void keep_names(data_image_list_t *l, const data_spec_t *s, names_t *classes) {
    if (s->class_names) {
        l->nclass_names = s->nclass_names;
        l->class_names = xcalloc(s->nclass_names, sizeof *l->class_names);
        for (size_t i = 0; i < s->nclass_names; i++)
            l->class_names[i] = xstrdup(s->class_names[i]);
        return;
    }
    l->class_names = classes->names;
    l->nclass_names = classes->n;
    memset(classes, 0, sizeof *classes);
}

int data_image_list(data_image_list_t *l, const data_spec_t *s, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    names_t classes = {0}, paths = {0};
    if (list(s->path, true, &classes, err, errlen) != 0)
        return -1;
    int rc = 0;
    if (classes.n == 0)
        rc = ps_errf(err, errlen, "%s: no class subfolders (the layout is DIR/CLASS/IMAGE)",
                     s->path);
    for (size_t i = 0; i < classes.n && rc == 0; i++)
        rc = list_class(l, &paths, s, &classes, i, err, errlen);
    l->paths = paths.names;
    l->n = paths.n;
    if (rc == 0 && l->n == 0)
        rc = ps_errf(err, errlen, "%s: no PNG or JPEG images in the class folders", s->path);
    if (rc == 0)
        keep_names(l, s, &classes);
    else
        data_image_list_free(l);
    names_free(&classes);
    return rc;
}

void data_image_list_free(data_image_list_t *l) {
    data_free_files(l->paths, l->n);
    data_free_files(l->class_names, l->nclass_names);
    free(l->labels);
    memset(l, 0, sizeof *l);
}

int data_load_images(dataset_t *d, const data_spec_t *s, char *err, size_t errlen) {
    data_image_list_t l;
    if (data_image_list(&l, s, err, errlen) != 0)
        return -1;
    dsb_t b;
    dsb_init(&b, d, s->h, s->w, s->c, false);
    int rc = 0;
    for (size_t i = 0; i < l.n && rc == 0; i++)
        rc = data_image_add(&b, l.paths[i], l.labels[i], err, errlen);
    dsb_finish(&b);
    if (rc == 0) {
        d->class_names = l.class_names;
        d->nclass_names = l.nclass_names;
        l.class_names = NULL;
        l.nclass_names = 0;
    } else {
        dataset_free(d);
    }
    data_image_list_free(&l);
    return rc;
}

int data_image_classes(const char *dir, char ***names, size_t *n, char *err, size_t errlen) {
    names_t classes = {0};
    int rc = list(dir, true, &classes, err, errlen);
    *names = classes.names;
    *n = classes.n;
    return rc;
}

/* Reading Keras 3's .keras and .weights.h5 files (see keras_file.h). A
 * .keras file's model.weights.h5 is read from memory (the core driver over
 * the zip entry's bytes), so nothing is unpacked to disk. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "common/base/util.h"
#include "common/formats/keras_file.h"

/* Limits on what a file may claim, checked before allocating. */
#define KF_MAX_ENTRY ((zip_uint64_t)4 << 30)
#define KF_MAX_ELEMENTS ((hsize_t)1 << 28)
#define KF_MAX_GROUPS 4096

bool kf_is_keras_path(const char *path) {
    size_t n = strlen(path);
    return (n > 6 && !strcmp(path + n - 6, ".keras")) || (n > 3 && !strcmp(path + n - 3, ".h5"));
}

static bool is_dot_keras(const char *path) {
    size_t n = strlen(path);
    return n > 6 && !strcmp(path + n - 6, ".keras");
}

/* One zip entry whole, NUL-terminated (caller frees). */
static int zip_entry(zip_t *z, const char *path, const char *name, char **out, size_t *len,
                     char *err, size_t errlen) {
    zip_stat_t st;
    if (zip_stat(z, name, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return ps_errf(err, errlen, "%s: no %s inside (not a Keras 3 .keras file?)", path, name);
    /* Deflate expands at most about 1032 times: a larger claim is a lie. */
    bool fits = (st.valid & ZIP_STAT_COMP_SIZE) && st.size <= st.comp_size * 1100 + 4096;
    if (st.size > KF_MAX_ENTRY || !fits)
        return ps_errf(err, errlen,
                       "%s: %s claims %llu bytes (from %llu stored), over the 4 GiB limit or "
                       "what its data can hold",
                       path, name, (unsigned long long)st.size, (unsigned long long)st.comp_size);
    zip_file_t *f = zip_fopen(z, name, 0);
    if (!f)
        return ps_errf(err, errlen, "%s: cannot open %s: %s", path, name, zip_strerror(z));
    *out = xmalloc((size_t)st.size + 1);
    zip_int64_t got = zip_fread(f, *out, st.size);
    zip_fclose(f);
    if (got < 0 || (zip_uint64_t)got != st.size) {
        free(*out);
        *out = NULL;
        return ps_errf(err, errlen, "%s: %s is damaged (read %lld of %llu bytes)", path, name,
                       (long long)got, (unsigned long long)st.size);
    }
    (*out)[st.size] = '\0';
    *len = (size_t)st.size;
    return 0;
}

/* Opens an HDF5 file image held in memory, read-only. */
static hid_t h5_open_image(void *image, size_t len) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0)
        return -1;
    hid_t f = -1;
    if (H5Pset_fapl_core(fapl, 1 << 20, 0) >= 0 && H5Pset_file_image(fapl, image, len) >= 0)
        f = H5Fopen("model.weights.h5", H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return f;
}

/* Reads dataset name of group g as float into a (allocated). */
static int read_array(hid_t g, const char *name, kf_array_t *a) {
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0)
        return -1;
    hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[KERAS_FILE_MAX_NDIM];
    int rc = -1;
    if (nd >= 0 && nd <= KERAS_FILE_MAX_NDIM && H5Tget_class(type) == H5T_FLOAT &&
        H5Sget_simple_extent_dims(space, dims, NULL) == nd) {
        hsize_t count = 1;
        for (int d = 0; d < nd && count <= KF_MAX_ELEMENTS; d++)
            count *= dims[d];
        if (count <= KF_MAX_ELEMENTS) {
            a->ndim = (size_t)nd;
            for (int d = 0; d < nd; d++)
                a->shape[d] = (size_t)dims[d];
            a->count = (size_t)count;
            a->data = xmalloc(PS_MAX(a->count, 1) * sizeof(float));
            rc = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a->data) < 0 ? -1 : 0;
        }
    }
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    H5Dclose(ds);
    return rc;
}

/* The arrays "0", "1", ... of layers/<name>/vars. */
static int read_group(hid_t layers, kf_group_t *g, char *err, size_t errlen) {
    char path[600];
    snprintf(path, sizeof path, "%s/vars", g->name);
    if (H5Lexists(layers, g->name, H5P_DEFAULT) <= 0 || H5Lexists(layers, path, H5P_DEFAULT) <= 0)
        return 0; /* a layer without a vars group holds nothing */
    hid_t vars = H5Gopen2(layers, path, H5P_DEFAULT);
    if (vars < 0)
        return ps_errf(err, errlen, "layers/%s is not a group", path);
    for (size_t i = 0;; i++) {
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        if (H5Lexists(vars, key, H5P_DEFAULT) <= 0)
            break;
        g->vars = xrealloc(g->vars, (i + 1) * sizeof *g->vars);
        memset(&g->vars[i], 0, sizeof g->vars[i]);
        if (read_array(vars, key, &g->vars[i])) {
            H5Gclose(vars);
            return ps_errf(err, errlen,
                           "layers/%s/%s is not a float array of at most %d dimensions and 2^28 "
                           "elements",
                           path, key, KERAS_FILE_MAX_NDIM);
        }
        g->nvars = i + 1;
    }
    H5Gclose(vars);
    return 0;
}

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *arg) {
    (void)g;
    (void)info;
    kf_file_t *f = arg;
    if (f->ngroups >= KF_MAX_GROUPS)
        return 1;
    f->groups = xrealloc(f->groups, (f->ngroups + 1) * sizeof *f->groups);
    f->groups[f->ngroups++] = (kf_group_t){.name = xstrdup(name)};
    return 0;
}

/* Every group under layers/, in creation order where the file tracks it
 * (h5py does not by default), else by name. */
static int read_layers(hid_t file, kf_file_t *out, char *err, size_t errlen) {
    if (H5Lexists(file, "layers", H5P_DEFAULT) <= 0)
        return ps_errf(err, errlen, "no layers/ group (not a Keras 3 weights file?)");
    hid_t layers = H5Gopen2(file, "layers", H5P_DEFAULT);
    if (layers < 0)
        return ps_errf(err, errlen, "layers/ is not a group");
    hsize_t idx = 0;
    int rc = H5Literate(layers, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, out) < 0 ? -1 : 0;
    if (rc)
        ps_errf(err, errlen, "cannot list layers/");
    for (size_t i = 0; rc == 0 && i < out->ngroups; i++)
        rc = read_group(layers, &out->groups[i], err, errlen);
    H5Gclose(layers);
    return rc;
}

/* The HDF5 file of path: a .weights.h5 itself, or a .keras file's
 * model.weights.h5 (its bytes in *image, freed by the caller after close). */
static hid_t open_weights(const char *path, kf_file_t *out, void **image, char *err,
                          size_t errlen) {
    *image = NULL;
    if (!is_dot_keras(path)) {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0)
            ps_errf(err, errlen, "%s: not a readable HDF5 file", path);
        return f;
    }
    int zerr = 0;
    zip_t *z = zip_open(path, ZIP_RDONLY, &zerr);
    if (!z)
        return ps_errf(err, errlen, "%s: not a readable .keras (zip) file", path), -1;
    size_t len = 0, clen = 0;
    char *bytes = NULL;
    int rc = zip_entry(z, path, "config.json", &out->config_json, &clen, err, errlen);
    if (rc == 0)
        rc = zip_entry(z, path, "model.weights.h5", &bytes, &len, err, errlen);
    zip_discard(z);
    if (rc)
        return -1;
    hid_t f = h5_open_image(bytes, len);
    if (f < 0) {
        free(bytes);
        return ps_errf(err, errlen, "%s: model.weights.h5 is not a readable HDF5 file", path), -1;
    }
    *image = bytes;
    return f;
}

int kf_read(const char *path, kf_file_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    void *image;
    hid_t f = open_weights(path, out, &image, err, errlen);
    if (f < 0) {
        kf_free(out);
        return -1;
    }
    char inner[PS_ERRLEN];
    int rc = read_layers(f, out, inner, sizeof inner);
    H5Fclose(f);
    free(image);
    if (rc) {
        kf_free(out);
        return ps_errf(err, errlen, "%s: %s", path, inner);
    }
    return 0;
}

void kf_free(kf_file_t *f) {
    for (size_t i = 0; i < f->ngroups; i++) {
        for (size_t k = 0; k < f->groups[i].nvars; k++)
            free(f->groups[i].vars[k].data);
        free(f->groups[i].vars);
        free(f->groups[i].name);
    }
    free(f->groups);
    free(f->config_json);
    memset(f, 0, sizeof *f);
}

const kf_group_t *kf_find(const kf_file_t *f, const char *name) {
    for (size_t i = 0; i < f->ngroups; i++)
        if (!strcmp(f->groups[i].name, name))
            return &f->groups[i];
    return NULL;
}

int kf_read_config(const char *path, char **json, char *err, size_t errlen) {
    int zerr = 0;
    size_t len;
    *json = NULL;
    zip_t *z = zip_open(path, ZIP_RDONLY, &zerr);
    if (!z)
        return ps_errf(err, errlen, "%s: not a readable .keras (zip) file", path);
    int rc = zip_entry(z, path, "config.json", json, &len, err, errlen);
    zip_discard(z);
    return rc;
}

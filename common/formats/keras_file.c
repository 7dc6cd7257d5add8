/* Writing Keras 3's .keras files (see keras_file.h): the weights are built
 * as an HDF5 file image in memory (the core driver, no backing store) and
 * stored in the zip beside the two JSON files, so nothing but the .keras
 * file itself touches the disk. */
#include "common/formats/keras_file.h"

#include <hdf5.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zip.h>

#include "common/base/util.h"

/* A string attribute as h5py writes one (variable-length UTF-8), which is
 * what Keras's own files carry. */
static int h5_set_name(hid_t obj, const char *value) {
    hid_t type = H5Tcopy(H5T_C_S1);
    hid_t space = H5Screate(H5S_SCALAR);
    int rc = -1;
    if (type >= 0 && space >= 0 && H5Tset_size(type, H5T_VARIABLE) >= 0 &&
        H5Tset_cset(type, H5T_CSET_UTF8) >= 0) {
        hid_t a = H5Acreate2(obj, "name", type, space, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) {
            rc = H5Awrite(a, type, &value) < 0 ? -1 : 0;
            H5Aclose(a);
        }
    }
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    return rc;
}

/* One float32 dataset named name under group g. */
static int h5_write_var(hid_t g, const char *name, const kf_var_t *v) {
    hsize_t dims[KERAS_FILE_MAX_NDIM];
    for (size_t d = 0; d < v->ndim; d++)
        dims[d] = (hsize_t)v->shape[d];
    hid_t space = H5Screate_simple((int)v->ndim, dims, NULL);
    if (space < 0)
        return -1;
    hid_t ds = H5Dcreate2(g, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = -1;
    if (ds >= 0) {
        rc = H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v->data) < 0 ? -1 : 0;
        H5Dclose(ds);
    }
    H5Sclose(space);
    return rc;
}

/* Group path (created) with a vars group named name holding the layer's
 * variables. */
static int h5_write_layer(hid_t layers, const kf_layer_t *l) {
    hid_t g = H5Gcreate2(layers, l->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return -1;
    hid_t vars = H5Gcreate2(g, "vars", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = vars < 0 || h5_set_name(vars, l->name) ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < l->nvars; i++) {
        char key[24];
        snprintf(key, sizeof key, "%zu", i);
        rc = h5_write_var(vars, key, &l->vars[i]);
    }
    if (vars >= 0)
        H5Gclose(vars);
    H5Gclose(g);
    return rc;
}

static int h5_write_tree(hid_t f, const char *model_name, const kf_layer_t *layers, size_t n) {
    hid_t lg = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (lg < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = h5_write_layer(lg, &layers[i]);
    H5Gclose(lg);
    hid_t vars = rc ? -1 : H5Gcreate2(f, "vars", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (vars < 0)
        return -1;
    rc = h5_set_name(vars, model_name);
    H5Gclose(vars);
    return rc;
}

/* The weights file as an HDF5 image in memory (caller frees *image). */
static int h5_image(const char *model_name, const kf_layer_t *layers, size_t n, void **image,
                    size_t *size, char *err, size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors come back as codes, said once below */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 20, 0) < 0)
        return ps_errf(err, errlen, "model.weights.h5: libhdf5 cannot make an in-memory file");
    hid_t f = H5Fcreate("model.weights.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0)
        return ps_errf(err, errlen, "model.weights.h5: libhdf5 cannot create the file");
    int rc = h5_write_tree(f, model_name, layers, n);
    ssize_t len =
        rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0 ? H5Fget_file_image(f, NULL, 0) : -1;
    if (len > 0) {
        *image = xmalloc((size_t)len);
        *size = (size_t)len;
        if (H5Fget_file_image(f, *image, (size_t)len) != len) {
            free(*image);
            len = -1;
        }
    }
    H5Fclose(f);
    if (len <= 0)
        return ps_errf(err, errlen, "model.weights.h5: libhdf5 failed writing the weights");
    return 0;
}

/* Adds a stored entry of len bytes at data (copied by libzip on close: the
 * buffer must live until zip_close). */
static int zip_add_entry(zip_t *z, const char *name, const void *data, size_t len) {
    zip_source_t *s = zip_source_buffer(z, data, len, 0);
    if (!s)
        return -1;
    zip_int64_t idx = zip_file_add(z, name, s, ZIP_FL_OVERWRITE | ZIP_FL_ENC_UTF_8);
    if (idx < 0) {
        zip_source_free(s);
        return -1;
    }
    return zip_set_file_compression(z, (zip_uint64_t)idx, ZIP_CM_STORE, 0);
}

int kf_write(const char *path, const char *config_json, const char *keras_version,
             const char *model_name, const kf_layer_t *layers, size_t nlayers, char *err,
             size_t errlen) {
    void *image = NULL;
    size_t image_len = 0;
    char inner[PS_ERRLEN];
    if (h5_image(model_name, layers, nlayers, &image, &image_len, inner, sizeof inner))
        return ps_errf(err, errlen, "%s: %s", path, inner);
    char meta[160], date[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%Y-%m-%d@%H:%M:%S", gmtime_r(&now, &tm));
    snprintf(meta, sizeof meta, "{\"keras_version\": \"%s\", \"date_saved\": \"%s\"}",
             keras_version, date);
    int zerr = 0;
    zip_t *z = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (!z) {
        free(image);
        return ps_errf(err, errlen, "%s: cannot create the zip (libzip error %d)", path, zerr);
    }
    bool ok = zip_add_entry(z, "metadata.json", meta, strlen(meta)) == 0 &&
              zip_add_entry(z, "config.json", config_json, strlen(config_json)) == 0 &&
              zip_add_entry(z, "model.weights.h5", image, image_len) == 0;
    if (!ok || zip_close(z) != 0) {
        int rc = ps_errf(err, errlen, "%s: %s", path, zip_strerror(z));
        zip_discard(z);
        free(image);
        return rc;
    }
    free(image);
    return 0;
}

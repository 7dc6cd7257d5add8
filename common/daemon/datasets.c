#include "common/daemon/datasets.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/data/source.h"
#include "common/data/stream.h"
#include "common/train/trainer.h"

/* The spec for one path of c, shaped by the model. */
static data_spec_t spec_of(const config_t *c, const model_t *m, const char *path, bool train) {
    bool dflt = !path[0];
    return (data_spec_t){.path = dflt ? c->data.dir : path,
                         .format = dflt ? "idx" : c->data.format,
                         .train = train,
                         .h = m->input[0],
                         .w = m->input[1],
                         .c = m->input[2],
                         .nclasses = model_label_classes(m),
                         .image_feature = c->data.image_feature,
                         .label_feature = c->data.label_feature,
                         .label_column = c->data.label_column,
                         .csv_header = c->data.csv_header};
}

const char *datasets_where(const config_t *c, const char *path) {
    return path[0] ? path : c->data.dir;
}

/* Loads one set and checks it against the model. */
static int load_one(const config_t *c, const model_t *m, const data_spec_t *s, dataset_t *d,
                    char *err, size_t errlen) {
    if (dataset_load(d, s, err, errlen) != 0)
        return -1;
    if (trainer_check_data(m, d, s->path, err, errlen) != 0) {
        dataset_free(d);
        return -1;
    }
    return 0;
}

int datasets_load_train(const config_t *c, const model_t *m, dataset_t *train, dataset_t *val,
                        char *err, size_t errlen) {
    return datasets_load_train_shard(c, m, 0, 1, train, val, err, errlen);
}

int datasets_load_train_shard(const config_t *c, const model_t *m, size_t shard, size_t nshards,
                              dataset_t *train, dataset_t *val, char *err, size_t errlen) {
    data_spec_t s = spec_of(c, m, c->data.train, true);
    if (c->data.val_split <= 0) {
        s.shard = shard;
        s.nshards = nshards;
    }
    if (val)
        memset(val, 0, sizeof *val);
    if (load_one(c, m, &s, train, err, errlen) != 0)
        return -1;
    if (!val)
        return 0;
    int rc = 0;
    if (c->data.val[0]) {
        data_spec_t v = spec_of(c, m, c->data.val, false);
        v.class_names = train->class_names;
        v.nclass_names = train->nclass_names;
        rc = load_one(c, m, &v, val, err, errlen);
    } else if (c->data.val_split > 0) {
        rc = dataset_hold_out(train, c->data.val_split, (uint64_t)c->train.seed, val, err, errlen);
    }
    if (rc != 0)
        dataset_free(train);
    return rc;
}

struct data_stream *datasets_open_stream(const config_t *c, const model_t *m, size_t shard,
                                         size_t nshards, dataset_t *val, char *err, size_t errlen) {
    data_spec_t s = spec_of(c, m, c->data.train, true);
    if (val)
        memset(val, 0, sizeof *val);
    if (c->data.val_split > 0) {
        ps_errf(err, errlen,
                "data.stream: data.val_split needs the whole training set in "
                "memory; name validation data with data.val");
        return NULL;
    }
    s.shard = shard;
    s.nshards = nshards;
    data_stream_t *st = data_stream_open(&s, (size_t)c->data.shuffle_buffer, c->data.shuffle,
                                         (uint64_t)c->train.seed, err, errlen);
    if (!st)
        return NULL;
    const dataset_t *shape = data_stream_shape(st);
    data_spec_t v = spec_of(c, m, c->data.val, false);
    v.class_names = shape->class_names;
    v.nclass_names = shape->nclass_names;
    if (trainer_check_data(m, shape, s.path, err, errlen) != 0 ||
        (val && c->data.val[0] && load_one(c, m, &v, val, err, errlen) != 0)) {
        data_stream_close(st);
        return NULL;
    }
    return st;
}

int datasets_count_stream(const config_t *c, const model_t *m, dataset_t *train, dataset_t *val,
                          char *err, size_t errlen) {
    data_spec_t s = spec_of(c, m, c->data.train, true);
    data_format_t f;
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (c->data.val_split > 0)
        return ps_errf(err, errlen,
                       "data.stream: data.val_split needs the whole training set in "
                       "memory; name validation data with data.val");
    if (data_stream_count(&s, &train->n, err, errlen) != 0)
        return -1;
    if (train->n == 0)
        return ps_errf(err, errlen, "%s: no records", s.path);
    if (data_format_of(&s, &f, err, errlen) == 0 && f == DATA_IMAGES &&
        data_image_classes(s.path, &train->class_names, &train->nclass_names, err, errlen) != 0)
        return -1;
    train->total = train->n;
    if (!c->data.val[0])
        return 0;
    data_spec_t v = spec_of(c, m, c->data.val, false);
    v.class_names = train->class_names;
    v.nclass_names = train->nclass_names;
    int rc = load_one(c, m, &v, val, err, errlen);
    if (rc != 0)
        dataset_free(train);
    return rc;
}

/* The class names of the training folders (image folders only). */
static void train_classes(const config_t *c, const model_t *m, char ***names, size_t *n) {
    char err[PS_ERRLEN];
    data_spec_t s = spec_of(c, m, c->data.train, true);
    data_format_t f;
    *names = NULL;
    *n = 0;
    if (!c->data.train[0] || data_format_of(&s, &f, err, sizeof err) != 0 || f != DATA_IMAGES)
        return;
    data_image_classes(s.path, names, n, err, sizeof err);
}

int datasets_load_test(const config_t *c, const model_t *m, dataset_t *test, char *err,
                       size_t errlen) {
    data_spec_t s = spec_of(c, m, c->data.test, false);
    char **names;
    size_t n;
    train_classes(c, m, &names, &n);
    s.class_names = names;
    s.nclass_names = n;
    int rc = load_one(c, m, &s, test, err, errlen);
    data_free_files(names, n);
    return rc;
}

int datasets_write_class_names(const dataset_t *d, const char *model_dir, char *err,
                               size_t errlen) {
    if (!d->nclass_names)
        return 0;
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < d->nclass_names; i++)
        json_object_array_add(a, json_object_new_string(d->class_names[i]));
    char path[4096];
    snprintf(path, sizeof path, "%s/class_names.json", model_dir);
    if (ps_mkdirs(model_dir, err, errlen) != 0) {
        json_object_put(a);
        return -1;
    }
    int rc = json_object_to_file_ext(path, a, JSON_C_TO_STRING_PRETTY);
    json_object_put(a);
    return rc == 0 ? 0 : ps_errf(err, errlen, "write %s: %s", path, json_util_get_last_err());
}

/* names from a parsed class_names.json; -1 unless an array of strings. */
static int names_of(json_object *a, const char *file, char ***names, size_t *n, char *err,
                    size_t errlen) {
    if (!json_object_is_type(a, json_type_array))
        return ps_errf(err, errlen, "%s: not a JSON array of class names", file);
    *n = json_object_array_length(a);
    *names = xcalloc(*n ? *n : 1, sizeof **names);
    for (size_t i = 0; i < *n; i++) {
        json_object *v = json_object_array_get_idx(a, i);
        if (!json_object_is_type(v, json_type_string)) {
            data_free_files(*names, i);
            return ps_errf(err, errlen, "%s: element %zu is not a string", file, i);
        }
        (*names)[i] = xstrdup(json_object_get_string(v));
    }
    return 1;
}

int datasets_read_class_names(const char *path, char ***names, size_t *n, char *err,
                              size_t errlen) {
    static const char *const up[] = {"", "/..", "/../.."};
    *names = NULL;
    *n = 0;
    for (size_t i = 0; i < sizeof up / sizeof *up; i++) {
        char file[4096];
        snprintf(file, sizeof file, "%s%s/class_names.json", path, up[i]);
        if (access(file, F_OK) != 0)
            continue;
        json_object *a = json_object_from_file(file);
        if (!a)
            return ps_errf(err, errlen, "%s: %s", file, json_util_get_last_err());
        int rc = names_of(a, file, names, n, err, errlen);
        json_object_put(a);
        return rc;
    }
    return 0;
}

augment_opts_t datasets_augment(const config_t *c) {
    return (augment_opts_t){.flip = c->data.augment_flip,
                            .crop_pad = (size_t)c->data.augment_crop_pad,
                            .translate = c->data.augment_translate};
}

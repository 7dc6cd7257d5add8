#include "common/data/example.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"
#include "example.pb-c.h"

typedef Tensorflow__Example Example;
typedef Tensorflow__Feature Feature;
typedef Tensorflow__Features Features;

static const Feature *find(const Features *fs, const char *key) {
    for (size_t i = 0; fs && i < fs->n_feature; i++)
        if (fs->feature[i]->key && !strcmp(fs->feature[i]->key, key))
            return fs->feature[i]->value;
    return NULL;
}

/* "image, label, height" for the message about a missing feature. */
static void list_keys(const Features *fs, char *out, size_t outlen) {
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; fs && i < fs->n_feature && used + 1 < outlen; i++) {
        int k = snprintf(out + used, outlen - used, "%s%s", i ? ", " : "",
                         fs->feature[i]->key ? fs->feature[i]->key : "");
        used += k > 0 ? (size_t)k : 0;
    }
}

static int missing(const Features *fs, const char *key, char *err, size_t errlen) {
    char keys[256];
    list_keys(fs, keys, sizeof keys);
    return ps_errf(err, errlen, "no feature \"%s\" (the example has: %s)", key,
                   keys[0] ? keys : "no features");
}

/* The first int64 of feature key; *v stays as it is when there is none. */
static int get_int(const Features *fs, const char *key, bool required, int64_t *v, char *err,
                   size_t errlen) {
    const Feature *f = find(fs, key);
    if (!f)
        return required ? missing(fs, key, err, errlen) : 0;
    if (f->kind_case != TENSORFLOW__FEATURE__KIND_INT64_LIST)
        return ps_errf(err, errlen, "feature \"%s\" is not an int64 list", key);
    if (f->int64_list->n_value < 1)
        return ps_errf(err, errlen, "feature \"%s\" has no value", key);
    *v = f->int64_list->value[0];
    return 0;
}

static int get_bytes(const Features *fs, const char *key, example_t *e, char *err, size_t errlen) {
    const Feature *f = find(fs, key);
    if (!f)
        return missing(fs, key, err, errlen);
    if (f->kind_case == TENSORFLOW__FEATURE__KIND_FLOAT_LIST && f->float_list->n_value > 0) {
        e->floats = f->float_list->value;
        e->nfloats = f->float_list->n_value;
        return 0;
    }
    if (f->kind_case != TENSORFLOW__FEATURE__KIND_BYTES_LIST)
        return ps_errf(err, errlen, "feature \"%s\" is neither a bytes list nor a float list", key);
    if (f->bytes_list->n_value < 1)
        return ps_errf(err, errlen, "feature \"%s\" has no value", key);
    e->image = f->bytes_list->value[0].data;
    e->image_len = f->bytes_list->value[0].len;
    return 0;
}

int example_parse(example_t *e, const uint8_t *buf, size_t len, const char *image_key,
                  const char *label_key, char *err, size_t errlen) {
    memset(e, 0, sizeof *e);
    e->height = e->width = e->depth = -1;
    Example *ex = tensorflow__example__unpack(NULL, len, buf);
    if (!ex)
        return ps_errf(err, errlen, "not a tf.train.Example (protobuf parse failed)");
    e->msg = ex;
    const Features *fs = ex->features;
    if (get_bytes(fs, image_key, e, err, errlen) != 0 ||
        get_int(fs, label_key, true, &e->label, err, errlen) != 0 ||
        get_int(fs, "height", false, &e->height, err, errlen) != 0 ||
        get_int(fs, "width", false, &e->width, err, errlen) != 0 ||
        get_int(fs, "depth", false, &e->depth, err, errlen) != 0) {
        example_free(e);
        return -1;
    }
    return 0;
}

void example_free(example_t *e) {
    if (e->msg)
        tensorflow__example__free_unpacked(e->msg, NULL);
    memset(e, 0, sizeof *e);
}

/* ---- writing ------------------------------------------------------------ */

typedef Tensorflow__Features__FeatureEntry Entry;

/* Up to 5 features: image, label, height, width, depth; all on the stack. */
typedef struct {
    Entry entry[5];
    Entry *entries[5];
    Feature feature[5];
    Tensorflow__Int64List ints[4];
    int64_t values[4];
    Tensorflow__BytesList bytes;
    ProtobufCBinaryData blob;
    Tensorflow__FloatList floats;
    size_t n;
} pack_t;

static Feature *add(pack_t *p, const char *key) {
    size_t i = p->n++;
    tensorflow__features__feature_entry__init(&p->entry[i]);
    tensorflow__feature__init(&p->feature[i]);
    p->entry[i].key = (char *)key;
    p->entry[i].value = &p->feature[i];
    p->entries[i] = &p->entry[i];
    return &p->feature[i];
}

static void add_int(pack_t *p, const char *key, int64_t v, size_t slot) {
    Feature *f = add(p, key);
    tensorflow__int64_list__init(&p->ints[slot]);
    p->values[slot] = v;
    p->ints[slot].n_value = 1;
    p->ints[slot].value = &p->values[slot];
    f->kind_case = TENSORFLOW__FEATURE__KIND_INT64_LIST;
    f->int64_list = &p->ints[slot];
}

static void add_image(pack_t *p, const example_fields_t *x) {
    Feature *f = add(p, x->image_key);
    if (x->image) {
        tensorflow__bytes_list__init(&p->bytes);
        p->blob.data = (uint8_t *)x->image;
        p->blob.len = x->image_len;
        p->bytes.n_value = 1;
        p->bytes.value = &p->blob;
        f->kind_case = TENSORFLOW__FEATURE__KIND_BYTES_LIST;
        f->bytes_list = &p->bytes;
        return;
    }
    tensorflow__float_list__init(&p->floats);
    p->floats.n_value = x->nfloats;
    p->floats.value = (float *)x->floats;
    f->kind_case = TENSORFLOW__FEATURE__KIND_FLOAT_LIST;
    f->float_list = &p->floats;
}

void example_pack(const example_fields_t *x, uint8_t **out, size_t *len) {
    static const char *const dims[3] = {"height", "width", "depth"};
    pack_t p = {.n = 0};
    add_image(&p, x);
    add_int(&p, x->label_key, x->label, 0);
    for (size_t i = 0; x->shape && i < 3; i++)
        add_int(&p, dims[i], (int64_t)x->shape[i], i + 1);
    Features fs = TENSORFLOW__FEATURES__INIT;
    fs.n_feature = p.n;
    fs.feature = p.entries;
    Example ex = TENSORFLOW__EXAMPLE__INIT;
    ex.features = &fs;
    *len = tensorflow__example__get_packed_size(&ex);
    *out = xmalloc(*len ? *len : 1);
    tensorflow__example__pack(&ex, *out);
}

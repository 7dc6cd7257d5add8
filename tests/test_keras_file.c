/* Keras 3 files: kf_write's .keras read back by kf_read (groups, arrays,
 * config), an export's model.keras loaded as a model and weights equal to
 * the exported ones, Keras's h5 group names, and damaged files refused with
 * one error naming the file. (tests/keras_*.sh check the same files against
 * real Keras.) */
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/formats/keras_file.h"
#include "common/model/model.h"
#include "common/train/export.h"
#include "common/train/keras_weights.h"
#include "test_helpers.h"

void test_keras_file_roundtrip(void) {
    float k[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1, 0.5f, 7};
    kf_var_t vars[2] = {{.ndim = 2, .shape = {2, 3}, .data = k},
                        {.ndim = 1, .shape = {3}, .data = b}};
    kf_layer_t layers[2] = {{.name = "dense", .nvars = 2, .vars = vars}, {.name = "dropout"}};
    char path[512], err[PS_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/rt.keras", test_tmpdir());
    CHECK(kf_write(path, "{\"class_name\": \"Sequential\"}", "3.5.0", "sequential", layers, 2, err,
                   sizeof err) == 0);
    kf_file_t f;
    CHECK(kf_read(path, &f, err, sizeof err) == 0);
    CHECK_STR_CONTAINS(f.config_json, "Sequential");
    CHECK_INT_EQ(f.ngroups, 2);
    const kf_group_t *g = kf_find(&f, "dense");
    CHECK(g != NULL);
    CHECK_INT_EQ(g->nvars, 2);
    CHECK_INT_EQ(g->vars[0].shape[1], 3);
    CHECK_ARRAY_NEAR("kernel", g->vars[0].data, k, 6, 0.0);
    CHECK_ARRAY_NEAR("bias", g->vars[1].data, b, 3, 0.0);
    CHECK_INT_EQ(kf_find(&f, "dropout")->nvars, 0);
    CHECK(kf_find(&f, "dense_1") == NULL);
    kf_free(&f);
    /* Not a zip; a zip without the weights. */
    snprintf(path, sizeof path, "%s/text.keras", test_tmpdir());
    FILE *t = fopen(path, "w");
    fputs("not a zip", t);
    fclose(t);
    CHECK(kf_read(path, &f, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "text.keras: not a readable .keras (zip) file");
}

/* An export's model.keras: the model from its config and every weight. */
void test_keras_file_export_load(void) {
    model_t m, back;
    char err[PS_ERRLEN] = "", dir[512], path[600];
    CHECK(model_parse(&m,
                      "{\"input\": [6, 6, 1], \"layers\": [{\"type\": \"conv2d\", \"name\": "
                      "\"stem\", \"filters\": 2, \"kernel_size\": 3}, {\"type\": \"conv2d\", "
                      "\"filters\": 2, \"kernel_size\": 1, \"use_bias\": false}, {\"type\": "
                      "\"add\", \"inputs\": [\"stem\", \"conv2d\"]}, {\"type\": \"flatten\"}, "
                      "{\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}]}",
                      err, sizeof err) == 0);
    float *p = xmalloc(m.nparams * sizeof(float)), *q = NULL;
    for (size_t i = 0; i < m.nparams; i++)
        p[i] = (float)i * 0.25f - 3.0f;
    snprintf(dir, sizeof dir, "%s/exp", test_tmpdir());
    CHECK(export_write(&m, p, 7, dir, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/model.keras", dir);
    CHECK(keras_load(path, &back, &q, err, sizeof err) == 0);
    if (q) {
        CHECK_INT_EQ(back.nparams, m.nparams);
        CHECK(back.graph);
        CHECK(strcmp(back.json, m.json) == 0);
        CHECK_ARRAY_NEAR("weights", q, p, m.nparams, 0.0);
        free(q);
        model_free(&back);
    } else {
        fprintf(stderr, "%s\n", err);
    }
    /* Keras's group names: the class, numbered per class, not the layer's name. */
    char name[64];
    model_keras_h5_name(&m, 0, name, sizeof name);
    CHECK(strcmp(name, "conv2d") == 0);
    model_keras_h5_name(&m, 1, name, sizeof name);
    CHECK(strcmp(name, "conv2d_1") == 0);
    /* A model the file does not fit: the tensor and what the file has. */
    model_t other;
    CHECK(
        model_parse(&other,
                    "{\"input\": [6, 6, 1], \"layers\": [{\"type\": \"flatten\"}, {\"type\": "
                    "\"dense\", \"units\": 3, \"activation\": \"softmax\"}, {\"type\": \"dense\", "
                    "\"units\": 3, \"activation\": \"softmax\"}]}",
                    err, sizeof err) != 0); /* softmax twice: refused, as before */
    CHECK(model_parse(&other,
                      "{\"input\": [6, 6, 1], \"layers\": [{\"type\": \"flatten\"}, {\"type\": "
                      "\"dense\", \"units\": 4}, {\"type\": \"dense\", \"units\": 3, "
                      "\"activation\": \"softmax\"}]}",
                      err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/other.safetensors", test_tmpdir());
    snprintf(dir, sizeof dir, "%s/exp/model.keras", test_tmpdir());
    CHECK(keras_weights_to_safetensors(&other, dir, NULL, path, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "layers/dense/vars/0 has shape [32, 3]; pstrain's dense/kernel is "
                            "[36, 4]");
    model_free(&other);
    free(p);
    model_free(&m);
}

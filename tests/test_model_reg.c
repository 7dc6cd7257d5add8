/* L2 regularizers (common/model/model_reg.c): the forms of Keras's JSON
 * accepted and refused, the loss's term against l2 * sum(w^2) by hand, its
 * gradient against finite differences and once per batch however the batch
 * is split; and the loss of a .keras file's compile_config
 * (common/model/keras_compile.c). */
#include "test.h"
#include "test_helpers.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/keras_json.h"
#include "common/model/model.h"

/* A Dense and a Conv2D with L2 on the kernel and the bias. */
#define REG_SPEC                                                                                   \
    "{\"input\": [6, 5, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, \"kernel_size\": " \
    "3, \"padding\": \"same\", \"activation\": \"tanh\", \"kernel_regularizer\": {\"l2\": 0.05}, " \
    "\"bias_regularizer\": {\"l2\": 0.2}}, {\"type\": \"flatten\"}, {\"type\": \"dense\", "        \
    "\"units\": 4, \"activation\": \"softmax\", \"kernel_regularizer\": {\"l2\": 0.1}}]}"

void test_model_reg_grads(void) {
    check_gradients_loss(REG_SPEC, "auto", 3);
}

/* The loss is the cross-entropy of the same model without regularizers
 * plus l2 * sum(w^2) per variable, for every example. */
void test_model_reg_loss_value(void) {
    static const char plain[] =
        "{\"input\": [6, 5, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
        "\"kernel_size\": 3, \"padding\": \"same\", \"activation\": \"tanh\"}, {\"type\": "
        "\"flatten\"}, {\"type\": \"dense\", \"units\": 4, \"activation\": \"softmax\"}]}";
    model_t a, b;
    char err[PS_ERRLEN];
    CHECK(model_parse(&a, REG_SPEC, err, sizeof err) == 0);
    CHECK(model_parse(&b, plain, err, sizeof err) == 0);
    CHECK_INT_EQ(a.nparams, b.nparams);
    size_t n = 5, in = 60;
    float *params = xmalloc(a.nparams * sizeof(float));
    model_init_params(&a, 3, params);
    for (size_t i = 0; i < a.nparams; i++)
        params[i] += 0.1f * (rng_uniform(4, i) - 0.5f);
    double want = 0.0;
    const float l2[] = {0.05f, 0.2f, 0.1f, 0.0f};
    for (size_t v = 0; v < a.nvars; v++)
        for (size_t i = 0; i < a.vars[v].size; i++)
            want += (double)l2[v] * params[a.vars[v].offset + i] * params[a.vars[v].offset + i];
    model_exec_t *ea = model_exec_create(&a, cpu_backend(), n);
    model_exec_t *eb = model_exec_create(&b, cpu_backend(), n);
    for (size_t i = 0; i < n * in; i++)
        model_exec_input(ea)[i] = model_exec_input(eb)[i] = rng_uniform(5, i);
    for (size_t i = 0; i < n; i++)
        model_exec_labels(ea)[i] = model_exec_labels(eb)[i] = (int32_t)(i % 4);
    double la = fixed_batch_loss(ea, params, n), lb = fixed_batch_loss(eb, params, n);
    CHECK(want > 0.01);
    CHECK_NEAR(la / (double)n, lb / (double)n + want, 1e-5);
    model_exec_free(ea);
    model_exec_free(eb);
    free(params);
    model_free(&a);
    model_free(&b);
}

/* A batch split over 3 threads adds the regularizers' gradient once. */
void test_model_reg_threads(void) {
    check_threads_same_gradient(REG_SPEC, 7);
}

/* A Keras Sequential of one Dense(2, softmax) with kernel_regularizer reg. */
static int parse_keras_reg(model_t *m, const char *reg, char *err, size_t errlen) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"class_name\": \"Sequential\", \"config\": {\"layers\": [{\"class_name\": "
             "\"InputLayer\", \"config\": {\"batch_shape\": [null, 4], \"name\": \"in\"}}, "
             "{\"class_name\": \"Dense\", \"config\": {\"name\": \"r\", \"units\": 2, "
             "\"activation\": \"softmax\", \"kernel_regularizer\": %s}}]}}",
             reg);
    return model_parse(m, json, err, errlen);
}

void test_model_reg_keras_forms(void) {
    static const struct {
        const char *reg;
        float l2;
    } ok[] = {
        {"null", 0.0f},
        {"\"l2\"", 0.01f},
        {"{\"module\": \"keras.regularizers\", \"class_name\": \"L2\", \"config\": {\"l2\": "
         "0.03}, \"registered_name\": null}",
         0.03f},
        {"{\"class_name\": \"L2\", \"config\": {\"l2\": 0.009999999776482582}}", 0.01f},
        {"{\"class_name\": \"L1L2\", \"config\": {\"l1\": 0.0, \"l2\": 0.5}}", 0.5f},
    };
    char err[PS_ERRLEN];
    for (size_t i = 0; i < PS_ARRAY_LEN(ok); i++) {
        model_t m;
        if (parse_keras_reg(&m, ok[i].reg, err, sizeof err)) {
            test_fail(__FILE__, __LINE__, "%s: %s", ok[i].reg, err);
            return;
        }
        CHECK_NEAR(m.layers[0].l2[0], ok[i].l2, 1e-7);
        /* the canonical spec and Keras's config keep it */
        char *keras = model_keras_config(&m);
        if (ok[i].l2 > 0.0f) {
            CHECK_STR_CONTAINS(m.json, "\"kernel_regularizer\"");
            CHECK_STR_CONTAINS(keras, "\"class_name\":\"L2\"");
            model_t again;
            CHECK(model_parse(&again, m.json, err, sizeof err) == 0);
            CHECK_NEAR(again.layers[0].l2[0], ok[i].l2, 1e-7);
            model_free(&again);
        } else {
            CHECK(strstr(keras, "regularizer") == NULL);
        }
        free(keras);
        model_free(&m);
    }
    static const char *bad[] = {
        "\"l1\"",
        "{\"class_name\": \"L1\", \"config\": {\"l1\": 0.01}}",
        "{\"class_name\": \"L1L2\", \"config\": {\"l1\": 0.01, \"l2\": 0.01}}",
        "{\"class_name\": \"OrthogonalRegularizer\", \"config\": {\"factor\": 0.01}}",
        "{\"class_name\": \"L2\", \"config\": {\"l2\": -1}}",
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(bad); i++) {
        model_t m;
        CHECK(parse_keras_reg(&m, bad[i], err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, "layer \"r\" (Dense)");
        CHECK_STR_CONTAINS(err, "\"kernel_regularizer\"");
        CHECK_STR_CONTAINS(err, "pstrain implements L2 only");
    }
    /* pstrain's dialect */
    model_t m;
    CHECK(model_parse(&m,
                      "{\"input\": [3], \"layers\": [{\"type\": \"dense\", \"units\": 2, "
                      "\"activation\": \"softmax\", \"bias_regularizer\": {\"l2\": 0.5}, "
                      "\"use_bias\": false}]}",
                      err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "needs \"use_bias\": true");
}

static void check_compile(const char *loss_json, const char *want, const char *err_part) {
    char cfg[1024], loss[64], err[PS_ERRLEN] = "";
    snprintf(cfg, sizeof cfg,
             "{\"class_name\": \"Sequential\", \"compile_config\": {\"optimizer\": \"adam\", "
             "\"loss\": %s}}",
             loss_json);
    int rc = keras_compile_loss(cfg, loss, sizeof loss, err, sizeof err);
    if (err_part) {
        if (rc == 0)
            test_fail(__FILE__, __LINE__, "%s: accepted as %s", loss_json, loss);
        else if (!strstr(err, err_part))
            test_fail(__FILE__, __LINE__, "%s: error \"%s\" lacks \"%s\"", loss_json, err,
                      err_part);
        return;
    }
    if (rc != 0 || strcmp(loss, want) != 0)
        test_fail(__FILE__, __LINE__, "%s: got \"%s\" (%s), want %s", loss_json, loss, err, want);
}

void test_model_keras_compile_loss(void) {
    check_compile("\"sparse_categorical_crossentropy\"", "sparse_categorical_crossentropy", NULL);
    check_compile("\"binary_crossentropy\"", "binary_crossentropy", NULL);
    check_compile("\"mse\"", "mean_squared_error", NULL);
    check_compile("null", "", NULL);
    check_compile("{\"module\": \"keras.losses\", \"class_name\": "
                  "\"SparseCategoricalCrossentropy\", \"config\": {\"name\": "
                  "\"sparse_categorical_crossentropy\", \"reduction\": \"sum_over_batch_size\", "
                  "\"from_logits\": true, \"ignore_class\": null}, \"registered_name\": null}",
                  "sparse_categorical_crossentropy_from_logits", NULL);
    check_compile("{\"class_name\": \"MeanSquaredError\", \"config\": {\"name\": \"mse\", "
                  "\"reduction\": \"sum_over_batch_size\"}}",
                  "mean_squared_error", NULL);
    check_compile("{\"module\": \"keras.losses\", \"class_name\": \"function\", \"config\": "
                  "\"binary_crossentropy\", \"registered_name\": \"function\"}",
                  "binary_crossentropy", NULL);
    check_compile("\"categorical_crossentropy\"", "categorical_crossentropy", NULL);
    check_compile("{\"class_name\": \"CategoricalCrossentropy\", \"config\": {\"from_logits\": "
                  "true}}",
                  "categorical_crossentropy_from_logits", NULL);
    check_compile("{\"class_name\": \"BinaryCrossentropy\", \"config\": {\"from_logits\": true}}",
                  NULL, "with from_logits=True is not supported");
    check_compile("{\"class_name\": \"SparseCategoricalCrossentropy\", \"config\": "
                  "{\"ignore_class\": 3}}",
                  NULL, "\"ignore_class\" = 3");
    check_compile("\"hinge\"", NULL, "loss hinge is not supported");
    check_compile("[\"mse\", \"mse\"]", NULL, "is not one loss");
    char loss[64], err[PS_ERRLEN];
    CHECK(keras_compile_loss("{\"class_name\": \"Sequential\"}", loss, sizeof loss, err,
                             sizeof err) == 0);
    CHECK(loss[0] == '\0');
    /* the compiled loss must fit the last layer like train.loss */
    model_t m;
    CHECK(model_parse(&m, REG_SPEC, err, sizeof err) == 0);
    CHECK(model_set_loss_from(&m, "binary_crossentropy", "m.keras", err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "needs the last layer to be Dense with sigmoid");
    CHECK_INT_EQ(m.loss, LOSS_SPARSE_CE);
    /* one-hot labels: the class index stands for them */
    CHECK(model_set_loss_from(&m, "categorical_crossentropy", "m.keras", err, sizeof err) == 0);
    CHECK_INT_EQ(m.loss, LOSS_SPARSE_CE);
    model_free(&m);
}

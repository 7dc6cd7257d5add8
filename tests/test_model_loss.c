/* The losses beyond softmax cross-entropy through the model: which one
 * train.loss=auto picks, forward against a naive reference, and gradients
 * against finite differences. */
#include "test.h"
#include "test_helpers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model.h"

#define HEAD(units, act)                                                                           \
    "{\"input\": [3], \"layers\": [{\"type\": \"dense\", \"units\": " #units                       \
    ", \"activation\": \"" act "\"}]}"
#define HIDDEN_HEAD(units, act)                                                                    \
    "{\"input\": [6], \"layers\": [{\"type\": \"dense\", \"units\": 5, \"activation\": "           \
    "\"tanh\"}, {\"type\": \"dense\", \"units\": " #units ", \"activation\": \"" act "\"}]}"

static loss_t parsed_loss(const char *spec) {
    model_t m;
    char err[PS_ERRLEN];
    if (model_parse(&m, spec, err, sizeof err)) {
        test_fail(__FILE__, __LINE__, "spec: %s", err);
        return (loss_t)-1;
    }
    loss_t l = m.loss;
    model_free(&m);
    return l;
}

void test_model_loss_auto(void) {
    CHECK_INT_EQ(parsed_loss(HEAD(3, "softmax")), LOSS_SPARSE_CE);
    CHECK_INT_EQ(parsed_loss(HEAD(1, "sigmoid")), LOSS_BCE);
    CHECK_INT_EQ(parsed_loss(HEAD(1, "linear")), LOSS_MSE);
    CHECK_INT_EQ(parsed_loss(HEAD(3, "linear")), LOSS_SPARSE_CE_LOGITS);
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_parse(&m, HEAD(3, "tanh"), err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "the last layer must be Dense with softmax");
    CHECK(model_parse(&m, HEAD(3, "softmax"), err, sizeof err) == 0);
    CHECK(model_set_loss(&m, "auto", err, sizeof err) == 0);
    CHECK_INT_EQ(m.loss, LOSS_SPARSE_CE);
    CHECK(model_set_loss(&m, "binary_crossentropy", err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "Dense with sigmoid and 1 unit");
    CHECK(model_set_loss(&m, "hinge", err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "hinge");
    CHECK(strcmp(model_loss_name(m.loss), "sparse_categorical_crossentropy") == 0);
    /* a backend without the kernels refuses clearly */
    backend_t partial = *cpu_backend();
    partial.sigmoid_bce_forward = NULL;
    CHECK(model_loss_check_backend(&m, &partial, err, sizeof err) == 0);
    model_free(&m);
    CHECK(model_parse(&m, HEAD(1, "sigmoid"), err, sizeof err) == 0);
    CHECK(model_loss_check_backend(&m, cpu_backend(), err, sizeof err) == 0);
    CHECK(model_loss_check_backend(&m, &partial, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "binary_crossentropy is not implemented");
    model_free(&m);
}

/* Runs a 3-input, 1-unit Dense model on 4 fixed rows and compares its
 * output, loss and predictions with z = x w + b done by hand. */
static void check_one_unit(const char *spec, bool bce) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m, spec, err, sizeof err) == 0);
    model_exec_t *e = model_exec_create(&m, cpu_backend(), 4);
    const float x[4][3] = {{1, 2, 3}, {-1, 0.5f, 2}, {0, 0, 0}, {4, -3, 1}};
    const int32_t y[4] = {1, 0, 1, bce ? 0 : 3};
    const float w[3] = {0.5f, -0.25f, 0.75f}, b = 0.1f;
    float params[4];
    memcpy(params + m.vars[0].offset, w, sizeof w);
    params[m.vars[1].offset] = b;
    memcpy(model_exec_input(e), x, sizeof x);
    memcpy(model_exec_labels(e), y, sizeof y);
    const float *out = model_forward(e, params, 4, true, 0, 0);
    (void)out;
    double loss;
    size_t correct, want_correct = 0;
    int32_t pred[4];
    model_loss(e, 4, &loss, &correct, pred);
    const float *got = model_exec_probs(e, 4);
    double want_loss = 0;
    for (size_t r = 0; r < 4; r++) {
        double z = b;
        for (size_t j = 0; j < 3; j++)
            z += (double)x[r][j] * w[j];
        double o = bce ? 1.0 / (1.0 + exp(-z)) : z;
        CHECK_NEAR(got[r], o, 1e-6);
        want_loss += bce ? -(y[r] ? log(o) : log(1.0 - o)) : (z - y[r]) * (z - y[r]);
        int32_t p = bce ? o >= 0.5 : (int32_t)lround(z);
        CHECK_INT_EQ(pred[r], p);
        want_correct += p == y[r];
    }
    CHECK_NEAR(loss, want_loss, 1e-5);
    CHECK_INT_EQ(correct, want_correct);
    model_exec_free(e);
    model_free(&m);
}

void test_model_loss_bce_reference(void) {
    check_one_unit(HEAD(1, "sigmoid"), true);
}

void test_model_loss_mse_reference(void) {
    check_one_unit(HEAD(1, "linear"), false);
}

/* from_logits on a linear head is the softmax head's loss, weight for weight. */
void test_model_loss_from_logits_matches_softmax(void) {
    model_t a, b;
    char err[PS_ERRLEN];
    CHECK(model_parse(&a, HEAD(4, "softmax"), err, sizeof err) == 0);
    CHECK(model_parse(&b, HEAD(4, "linear"), err, sizeof err) == 0);
    CHECK(model_set_loss(&b, "sparse_categorical_crossentropy_from_logits", err, sizeof err) == 0);
    float *params = xmalloc(a.nparams * sizeof(float));
    model_init_params(&a, 9, params);
    double la, lb;
    size_t ca, cb;
    model_exec_t *ea = model_exec_create(&a, cpu_backend(), 5),
                 *eb = model_exec_create(&b, cpu_backend(), 5);
    for (size_t i = 0; i < 15; i++)
        model_exec_input(ea)[i] = model_exec_input(eb)[i] = (float)i / 7.0f - 1.0f;
    for (size_t i = 0; i < 5; i++)
        model_exec_labels(ea)[i] = model_exec_labels(eb)[i] = (int32_t)(i % 4);
    model_forward(ea, params, 5, true, 0, 0);
    model_forward(eb, params, 5, true, 0, 0);
    model_loss(ea, 5, &la, &ca, NULL);
    model_loss(eb, 5, &lb, &cb, NULL);
    CHECK(la > 0.1);
    CHECK_NEAR(lb, la, 1e-6);
    CHECK_INT_EQ(cb, ca);
    model_exec_free(ea);
    model_exec_free(eb);
    free(params);
    model_free(&a);
    model_free(&b);
}

void test_model_loss_grads(void) {
    check_gradients_loss(HIDDEN_HEAD(1, "sigmoid"), "binary_crossentropy", 6);
    check_gradients_loss(HIDDEN_HEAD(1, "linear"), "mean_squared_error", 6);
    check_gradients_loss(HIDDEN_HEAD(4, "linear"), "sparse_categorical_crossentropy_from_logits",
                         6);
}

/* The model spec, its validation, the initializer, the summary, and
 * finite-difference gradient checks of every layer through forward/backward. */
#include "test.h"
#include "test_helpers.h"

#include <stdlib.h>

#include "common/model/model.h"
#include "common/train/store.h"
#include "common/train/trainer.h"
#include "common/base/util.h"

void test_model_cnn_shapes(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "cnn", err, sizeof err) == 0);
    CHECK_INT_EQ(m.nlayers, 8);
    CHECK_INT_EQ(m.nparams, 1625866);
    CHECK_INT_EQ(m.nclasses, 10);
    CHECK_INT_EQ(m.nvars, 8);
    CHECK(strcmp(m.layers[0].name, "conv2d") == 0);
    CHECK(strcmp(m.layers[1].name, "conv2d_1") == 0);
    CHECK(strcmp(m.layers[2].name, "max_pooling2d") == 0);
    CHECK(strcmp(m.layers[6].name, "dropout_1") == 0);
    CHECK(strcmp(m.vars[2].name, "conv2d_1/kernel") == 0);
    CHECK_INT_EQ(m.vars[2].shape[0], 3);
    CHECK_INT_EQ(m.vars[2].shape[2], 32);
    CHECK_INT_EQ(m.vars[2].shape[3], 64);
    CHECK(strcmp(m.vars[4].name, "dense/kernel") == 0);
    CHECK_INT_EQ(m.vars[4].shape[0], 12544);
    CHECK_INT_EQ(m.vars[4].shape[1], 128);
    CHECK_INT_EQ(m.layers[2].out[0], 14);
    CHECK_INT_EQ(m.layers[4].out_size, 12544);
    /* Offsets tile the slab in order. */
    for (size_t i = 1; i < m.nvars; i++)
        CHECK_INT_EQ(m.vars[i].offset, m.vars[i - 1].offset + m.vars[i - 1].size);
    CHECK_NEAR(model_train_flops(&m) / 1e6, 97.25, 0.001);
    model_free(&m);
}

void test_model_summary(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "cnn", err, sizeof err) == 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    model_summary(&m, f);
    fclose(f);
    CHECK_STR_CONTAINS(buf, "Layer (type)");
    CHECK_STR_CONTAINS(buf, " conv2d (Conv2D)");
    CHECK_STR_CONTAINS(buf, "(None, 28, 28, 32)");
    CHECK_STR_CONTAINS(buf, "(None, 14, 14, 64)");
    CHECK_STR_CONTAINS(buf, "(None, 12544)");
    CHECK_STR_CONTAINS(buf, "18496");
    CHECK_STR_CONTAINS(buf, "1605760");
    CHECK_STR_CONTAINS(buf, "Total params: 1,625,866");
    free(buf);
    model_free(&m);
}

/* Each bad spec and a fragment its error must contain. */
static const char *bad_specs[][2] = {
    {"[1, 2", "not JSON"},
    {"{\"layers\": []}", "\"input\""},
    {"{\"input\": [28, 28, 1], \"layers\": []}", "\"layers\""},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"conv3d\"}]}", "unknown type \"conv3d\""},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"conv2d\", \"kernel_size\": 3}]}",
     "layer 0 (conv2d): \"filters\""},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", "
     "\"units\": 10, \"activation\": \"softmax\", \"unit\": 3}]}",
     "layer 1 (dense): unknown key \"unit\""},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"dense\", \"units\": 10, "
     "\"activation\": \"softmax\"}]}",
     "add a flatten layer"},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", "
     "\"units\": 10, \"activation\": \"relu\"}]}",
     "the last layer must be Dense with softmax"},
    {"{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 3, \"activation\": "
     "\"sigmoid\"}]}",
     "sigmoid (1 unit: binary cross-entropy)"},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, "
     "\"kernel_size\": 3, \"padding\": \"full\"}]}",
     "layer 0 (conv2d): \"padding\""},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"dropout\", \"rate\": 1.0}]}",
     "layer 0 (dropout): \"rate\""},
    {"{\"input\": [4, 4, 1], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, "
     "\"kernel_size\": 5}]}",
     "does not fit"},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", "
     "\"units\": 10, \"activation\": \"softmax\"}, {\"type\": \"dense\", \"units\": 10, "
     "\"activation\": \"softmax\"}]}",
     "layer 1 (dense): \"softmax\" is only supported on the last layer"},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\", \"name\": \"a\"}, "
     "{\"type\": \"dense\", \"name\": \"a\", \"units\": 10, \"activation\": \"softmax\"}]}",
     "already used"},
    {"{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"}, {\"type\": \"conv2d\", "
     "\"filters\": 2, \"kernel_size\": 1}]}",
     "layer 1 (conv2d): needs an image input"},
    {"{\"input\": [28, 28, 1], \"extra\": 1, \"layers\": []}", "unknown key \"extra\""},
};

void test_model_validation_errors(void) {
    for (size_t i = 0; i < sizeof bad_specs / sizeof bad_specs[0]; i++) {
        model_t m;
        char err[PS_ERRLEN] = "";
        CHECK(model_parse(&m, bad_specs[i][0], err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, bad_specs[i][1]);
    }
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_load(&m, "/nonexistent/model.json", err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "/nonexistent/model.json");
}

void test_model_json_roundtrip(void) {
    model_t a, b;
    char err[PS_ERRLEN];
    CHECK(model_load(&a, "cnn", err, sizeof err) == 0);
    CHECK(model_parse(&b, a.json, err, sizeof err) == 0);
    CHECK_INT_EQ(a.nparams, b.nparams);
    CHECK(strcmp(a.json, b.json) == 0);
    model_free(&a);
    model_free(&b);
}

void test_model_init_deterministic(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "cnn", err, sizeof err) == 0);
    float *a = xmalloc(m.nparams * sizeof(float));
    float *b = xmalloc(m.nparams * sizeof(float));
    model_init_params(&m, 42, a);
    model_init_params(&m, 42, b);
    CHECK(memcmp(a, b, m.nparams * sizeof(float)) == 0);
    /* Any range of a variable equals the same range of the whole. */
    const var_t *v = &m.vars[4];
    float part[1000];
    model_init_var(v, 42, 5000, 6000, part);
    CHECK(memcmp(part, a + v->offset + 5000, sizeof part) == 0);
    /* Glorot-uniform bounds and spread; zero biases. */
    double limit = sqrt(6.0 / (double)(v->fan_in + v->fan_out)), sum = 0.0, maxabs = 0.0;
    for (size_t i = 0; i < v->size; i++) {
        sum += a[v->offset + i];
        maxabs = fmax(maxabs, fabs(a[v->offset + i]));
    }
    CHECK(maxabs <= limit);
    CHECK(maxabs > 0.99 * limit);
    CHECK(fabs(sum / (double)v->size) < 0.01 * limit);
    for (size_t i = 0; i < m.vars[5].size; i++)
        CHECK(a[m.vars[5].offset + i] == 0.0f);
    model_init_params(&m, 43, b);
    CHECK(memcmp(a, b, m.nparams * sizeof(float)) != 0);
    free(a);
    free(b);
    model_free(&m);
}

/* Compares model_backward with central differences of the loss for a sample
 * of parameters of every variable; loss is a train.loss name. */
void check_gradients_loss(const char *spec, const char *loss, size_t n) {
    model_t m;
    char err[PS_ERRLEN];
    if (model_parse(&m, spec, err, sizeof err) || model_set_loss(&m, loss, err, sizeof err)) {
        test_fail(__FILE__, __LINE__, "spec: %s", err);
        return;
    }
    const backend_t *be = cpu_backend();
    model_exec_t *e = model_exec_create(&m, be, n);
    size_t in_size = m.input[0] * m.input[1] * m.input[2];
    for (size_t i = 0; i < n * in_size; i++)
        model_exec_input(e)[i] = rng_uniform(3, i);
    for (size_t i = 0; i < n; i++)
        model_exec_labels(e)[i] = (int32_t)(rng_mix(4, i) % (m.nclasses > 1 ? m.nclasses : 2));
    float *params = xmalloc(m.nparams * sizeof(float));
    float *grads = xmalloc(m.nparams * sizeof(float));
    model_init_params(&m, 5, params);
    /* Biases start at zero; move them so that their gradients are exercised. */
    for (size_t i = 0; i < m.nparams; i++)
        params[i] += 0.05f * (rng_uniform(6, i) - 0.5f);
    fixed_batch_loss(e, params, n);
    model_backward(e, params, n, 1.0f, grads);
    size_t bad = 0, checked = 0;
    for (size_t v = 0; v < m.nvars; v++) {
        const var_t *var = &m.vars[v];
        if (var->moving)
            continue; /* its place holds the batch's statistic (test_model_bn.c checks it) */
        size_t stride = var->size > 24 ? var->size / 24 : 1;
        for (size_t j = 0; j < var->size; j += stride) {
            size_t idx = var->offset + j;
            double numeric = central_difference(e, params, idx, 1e-3f, n);
            double analytic = grads[idx];
            double scale = fmax(1e-2, fmax(fabs(numeric), fabs(analytic)));
            checked++;
            if (fabs(numeric - analytic) > 5e-2 * scale) {
                if (bad < 5)
                    fprintf(stderr, "  %s[%zu]: backward %.6g, finite difference %.6g\n", var->name,
                            j, analytic, numeric);
                bad++;
            }
        }
    }
    /* A ReLU or max-pool kink inside the step can spoil a rare sample. */
    if (bad > checked / 50)
        test_fail(__FILE__, __LINE__, "%zu of %zu gradients differ from finite differences", bad,
                  checked);
    free(params);
    free(grads);
    model_exec_free(e);
    model_free(&m);
}

static void check_gradients(const char *spec, size_t n) {
    check_gradients_loss(spec, "auto", n);
}

void test_model_grad_dense(void) {
    check_gradients("{\"input\": [6], \"layers\": [{\"type\": \"dense\", \"units\": 5, "
                    "\"activation\": \"relu\"}, {\"type\": \"dense\", \"units\": 4, "
                    "\"activation\": \"softmax\"}]}",
                    5);
}

void test_model_grad_conv2d_same(void) {
    check_gradients("{\"input\": [7, 6, 3], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, "
                    "\"kernel_size\": 3, \"padding\": \"same\", \"activation\": \"relu\"}, "
                    "{\"type\": \"conv2d\", \"filters\": 3, \"kernel_size\": [2, 3], "
                    "\"padding\": \"same\"}, {\"type\": \"flatten\"}, {\"type\": \"dense\", "
                    "\"units\": 3, \"activation\": \"softmax\"}]}",
                    3);
}

void test_model_grad_conv2d_valid_strided(void) {
    check_gradients("{\"input\": [9, 8, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
                    "\"kernel_size\": 3, \"strides\": 2}, {\"type\": \"conv2d\", \"filters\": 2, "
                    "\"kernel_size\": 2, \"strides\": [1, 2], \"padding\": \"valid\"}, "
                    "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3, "
                    "\"activation\": \"softmax\"}]}",
                    3);
}

void test_model_grad_max_pool2d(void) {
    check_gradients("{\"input\": [8, 8, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
                    "\"kernel_size\": 3, \"padding\": \"same\"}, {\"type\": \"max_pool2d\", "
                    "\"pool_size\": 2}, {\"type\": \"max_pool2d\", \"pool_size\": 3, "
                    "\"strides\": 1, \"padding\": \"same\"}, {\"type\": \"flatten\"}, "
                    "{\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}]}",
                    2);
}

void test_model_grad_dropout_flatten(void) {
    check_gradients("{\"input\": [5, 5, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
                    "\"kernel_size\": 2, \"activation\": \"relu\"}, {\"type\": \"dropout\", "
                    "\"rate\": 0.3}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 6, "
                    "\"activation\": \"relu\"}, {\"type\": \"dropout\", \"rate\": 0.5}, "
                    "{\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}]}",
                    4);
}

void check_threads_same_gradient(const char *spec, size_t n) {
    model_t m;
    char err[PS_ERRLEN];
    if (model_parse(&m, spec, err, sizeof err)) {
        test_fail(__FILE__, __LINE__, "spec: %s", err);
        return;
    }
    size_t in_size = m.input[0] * m.input[1] * m.input[2];
    float *x = xmalloc(n * in_size * sizeof(float));
    int32_t *y = xmalloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n * in_size; i++)
        x[i] = rng_uniform(8, i);
    for (size_t i = 0; i < n; i++)
        y[i] = (int32_t)(i % m.nclasses);
    float *params = xmalloc(m.nparams * sizeof(float));
    model_init_params(&m, 1, params);
    float *g1 = xmalloc(m.nparams * sizeof(float));
    float *g3 = xmalloc(m.nparams * sizeof(float));
    step_metrics_t s1, s3;
    trainer_t *t1 = trainer_create(&m, cpu_backend(), 1, n);
    trainer_t *t3 = trainer_create(&m, cpu_backend(), 3, n);
    for (int round = 0; round < 2; round++) { /* a second batch on the same pool */
        trainer_gradient(t1, params, x, y, n, 99, g1, &s1);
        trainer_gradient(t3, params, x, y, n, 99, g3, &s3);
        CHECK_NEAR(s1.loss, s3.loss, 1e-5);
        CHECK_NEAR(s1.accuracy, s3.accuracy, 1e-12);
        CHECK_ARRAY_NEAR("gradient", g3, g1, m.nparams, 1e-4);
    }
    trainer_free(t1);
    trainer_free(t3);
    free(x);
    free(y);
    free(params);
    free(g1);
    free(g3);
    model_free(&m);
}

/* Splitting a batch over threads gives the gradient of the whole batch. */
void test_model_threads_same_gradient(void) {
    check_threads_same_gradient(
        "{\"input\": [10, 10, 1], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, "
        "\"kernel_size\": 3, \"activation\": \"relu\"}, {\"type\": \"dropout\", \"rate\": 0.5}, "
        "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 5, \"activation\": "
        "\"softmax\"}]}",
        7);
}

/* A few steps of SGD on a fixed batch lower its loss: the pieces connect. */
void test_model_training_lowers_loss(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    size_t n = 32, in_size = 784;
    float *x = xmalloc(n * in_size * sizeof(float));
    int32_t y[32];
    for (size_t i = 0; i < n; i++) {
        y[i] = (int32_t)(i % 10);
        for (size_t j = 0; j < in_size; j++)
            x[i * in_size + j] = (j % 10 == (size_t)y[i]) ? 1.0f : 0.1f * rng_uniform(9, j);
    }
    optim_cfg_t oc;
    optim_defaults(&oc, OPTIM_SGD);
    oc.learning_rate = 0.05;
    oc.momentum = 0.9;
    store_t s;
    store_init_full(&s, &m, &oc, 42);
    trainer_t *t = trainer_create(&m, cpu_backend(), 2, n);
    float *g = xmalloc(m.nparams * sizeof(float));
    step_metrics_t first, last;
    trainer_gradient(t, s.w, x, y, n, 0, g, &first);
    for (int i = 0; i < 30; i++) {
        store_apply(&s, g);
        trainer_gradient(t, s.w, x, y, n, (uint64_t)i, g, &last);
    }
    CHECK(last.loss < 0.5 * first.loss);
    CHECK(last.accuracy > 0.9);
    trainer_free(t);
    store_free(&s);
    free(x);
    free(g);
    model_free(&m);
}

typedef struct {
    int waits, readies;
    float *out;       /* the gradient slab being computed */
    float *head_copy; /* the head's gradient as handed over */
    size_t head_begin, n;
} overlap_probe_t;

static void probe_wait(void *arg) {
    overlap_probe_t *p = arg;
    __atomic_add_fetch(&p->waits, 1, __ATOMIC_SEQ_CST);
}

static void probe_ready(void *arg) {
    overlap_probe_t *p = arg;
    p->readies++;
    memcpy(p->head_copy, p->out + p->head_begin, (p->n - p->head_begin) * sizeof(float));
}

/* With overlap, the head's gradient handed over mid-backward is already the
 * sum over threads, and the whole gradient is the same as without. */
void test_model_trainer_overlap(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m,
                      "{\"input\": [8, 8, 1], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, "
                      "\"kernel_size\": 3, \"activation\": \"relu\"}, {\"type\": \"max_pool2d\"}, "
                      "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 6, "
                      "\"activation\": \"relu\"}, {\"type\": \"dense\", \"units\": 3, "
                      "\"activation\": \"softmax\"}]}",
                      err, sizeof err) == 0);
    size_t n = 5;
    float *x = xmalloc(n * 64 * sizeof(float));
    int32_t y[5] = {0, 1, 2, 1, 0};
    for (size_t i = 0; i < n * 64; i++)
        x[i] = rng_uniform(11, i);
    float *params = xmalloc(m.nparams * sizeof(float));
    model_init_params(&m, 3, params);
    float *plain = xmalloc(m.nparams * sizeof(float));
    float *over = xmalloc(m.nparams * sizeof(float));
    step_metrics_t s1, s2;
    for (size_t threads = 1; threads <= 3; threads++) {
        trainer_t *t = trainer_create(&m, cpu_backend(), threads, n);
        trainer_gradient(t, params, x, y, n, 5, plain, &s1);
        overlap_probe_t p = {.out = over, .head_begin = m.vars[2].offset, .n = m.nparams};
        p.head_copy = xmalloc(m.nparams * sizeof(float));
        trainer_overlap_t o = {.head = 3,
                               .head_begin = p.head_begin,
                               .wait_head_params = probe_wait,
                               .head_grads_ready = probe_ready,
                               .arg = &p};
        trainer_set_overlap(t, &o);
        trainer_gradient(t, params, x, y, n, 5, over, &s2);
        CHECK_INT_EQ(p.readies, 1);
        CHECK_INT_EQ(p.waits, (int)threads);
        CHECK_ARRAY_NEAR("gradient", over, plain, m.nparams, 1e-5);
        CHECK_ARRAY_NEAR("head", p.head_copy, plain + p.head_begin, m.nparams - p.head_begin, 1e-5);
        /* Off again: no hooks. */
        trainer_set_overlap(t, NULL);
        trainer_gradient(t, params, x, y, n, 5, over, &s2);
        CHECK_INT_EQ(p.readies, 1);
        free(p.head_copy);
        trainer_free(t);
    }
    free(x);
    free(params);
    free(plain);
    free(over);
    model_free(&m);
}

/* tf.keras 2.x's to_json(): "Model" with nested-list inbound_nodes and the
 * input shape on an InputLayer's batch_input_shape. */
static const char tf2_functional[] =
    "{\"class_name\": \"Functional\", \"config\": {\"name\": \"model\", \"layers\": ["
    "{\"class_name\": \"InputLayer\", \"config\": {\"batch_input_shape\": [null, 6], "
    "\"dtype\": \"float32\", \"sparse\": false, \"ragged\": false, \"name\": \"in\"}, "
    "\"name\": \"in\", \"inbound_nodes\": []},"
    "{\"class_name\": \"Dense\", \"config\": {\"name\": \"h\", \"trainable\": true, "
    "\"dtype\": \"float32\", \"units\": 5, \"activation\": \"relu\", \"use_bias\": true, "
    "\"kernel_initializer\": {\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": null}}, "
    "\"bias_initializer\": {\"class_name\": \"Zeros\", \"config\": {}}, "
    "\"kernel_regularizer\": null}, \"name\": \"h\", \"inbound_nodes\": [[[\"in\", 0, 0, {}]]]},"
    "{\"class_name\": \"Dense\", \"config\": {\"name\": \"out\", \"units\": 3, "
    "\"activation\": \"softmax\"}, \"name\": \"out\", \"inbound_nodes\": [[[\"h\", 0, 0, {}]]]}"
    "], \"input_layers\": [[\"in\", 0, 0]], \"output_layers\": [[\"out\", 0, 0]]}, "
    "\"keras_version\": \"2.15.0\", \"backend\": \"tensorflow\"}";

void test_model_keras_json_tf2(void) {
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_parse(&m, tf2_functional, err, sizeof err) == 0);
    if (err[0])
        fprintf(stderr, "%s\n", err);
    CHECK_INT_EQ(m.nlayers, 2);
    CHECK_INT_EQ(m.nparams, 6 * 5 + 5 + 5 * 3 + 3);
    CHECK(strcmp(m.vars[2].name, "out/kernel") == 0);
    CHECK(m.input_flat);
    /* The canonical spec is pstrain's own dialect. */
    CHECK_STR_CONTAINS(m.json, "\"type\":\"dense\"");
    model_free(&m);
    /* A wrong output and an unknown key are named. */
    char *bad = xstrdup(tf2_functional);
    memcpy(strstr(bad, "[[\"out\", 0"), "[[\"h\"  ", 7);
    CHECK(model_parse(&m, bad, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "\"output_layers\" must be the last layer (\"out\")");
    free(bad);
    bad = xstrdup(tf2_functional);
    memcpy(strstr(bad, "\"use_bias\""), "\"use_bian\"", 10);
    CHECK(model_parse(&m, bad, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "layer \"h\" (Dense): key \"use_bian\" is not supported");
    free(bad);
}

/* Malformed Keras JSON the fuzzer found (tests/fuzz/corpus/keras_json/
 * issue17_*): each one error, no crash. */
void test_model_keras_json_malformed(void) {
    static const char *const bad[][2] = {
        {"{\"class_name\": \"Sequential\", \"config\": {\"layers\": [{\"class_name\": "
         "\"InputLayer\"}]}}",
         "the InputLayer needs a \"config\" object"},
        {"{\"class_name\": \"Sequential\", \"config\": {\"layers\": [{\"class_name\": "
         "\"InputLayer\", \"config\": [1]}]}}",
         "the InputLayer needs a \"config\" object"},
        {"{\"class_name\": \"Functional\", \"config\": {\"layers\": [{\"class_name\": "
         "\"InputLayer\", \"config\": {\"batch_shape\": [null, 4], \"name\": \"in\"}}, "
         "{\"class_name\": \"Dense\", \"config\": {\"name\": \"out\", \"units\": 2}, "
         "\"inbound_nodes\": [[[null, 0, 0, {}]]]}]}}",
         "layer \"out\": \"inbound_nodes\" is not in a form Keras writes"},
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(bad); i++) {
        model_t m;
        char err[PS_ERRLEN] = "";
        CHECK(model_parse(&m, bad[i][0], err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, bad[i][1]);
    }
}

/* The layers beyond the builtin models, through forward and backward. */
void test_model_grad_activations(void) {
    check_gradients("{\"input\": [6], \"layers\": [{\"type\": \"dense\", \"units\": 5, "
                    "\"activation\": \"sigmoid\"}, {\"type\": \"dense\", \"units\": 5, "
                    "\"activation\": \"tanh\"}, {\"type\": \"dense\", \"units\": 5, "
                    "\"activation\": \"gelu\"}, {\"type\": \"dense\", \"units\": 4}, "
                    "{\"type\": \"activation\", \"activation\": \"silu\"}, {\"type\": "
                    "\"dense\", \"units\": 4}, {\"type\": \"activation\", \"activation\": "
                    "\"sigmoid\"}, {\"type\": \"dense\", \"units\": 3, \"activation\": "
                    "\"softmax\"}]}",
                    5);
}

void test_model_grad_center_crop(void) {
    check_gradients("{\"input\": [9, 8, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
                    "\"kernel_size\": 2, \"activation\": \"tanh\"}, {\"type\": \"center_crop\", "
                    "\"height\": 5, \"width\": 4}, {\"type\": \"conv2d\", \"filters\": 2, "
                    "\"kernel_size\": 2}, {\"type\": \"flatten\"}, {\"type\": \"dense\", "
                    "\"units\": 3, \"activation\": \"softmax\"}]}",
                    3);
}

void test_model_grad_pools_reshape_rescaling(void) {
    check_gradients("{\"input\": [7, 6, 2], \"layers\": [{\"type\": \"rescaling\", \"scale\": 2, "
                    "\"offset\": -1}, {\"type\": \"conv2d\", \"filters\": 4, \"kernel_size\": 3, "
                    "\"padding\": \"same\", \"activation\": \"silu\"}, {\"type\": \"avg_pool2d\", "
                    "\"pool_size\": 3, \"strides\": 2, \"padding\": \"same\"}, {\"type\": "
                    "\"reshape\", \"target_shape\": [2, 12, 2]}, {\"type\": \"conv2d\", "
                    "\"filters\": 3, \"kernel_size\": 2, \"activation\": \"tanh\"}, {\"type\": "
                    "\"global_avg_pool2d\"}, {\"type\": \"dense\", \"units\": 3, "
                    "\"activation\": \"softmax\"}]}",
                    3);
    check_gradients(
        "{\"input\": [6, 6, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
        "\"kernel_size\": 3, \"activation\": \"gelu\"}, {\"type\": "
        "\"global_max_pool2d\"}, {\"type\": \"rescaling\", \"scale\": 0.5, \"offset\": 0.1}, "
        "{\"type\": \"reshape\", \"target_shape\": [1, 1, 3]}, "
        "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3, "
        "\"activation\": \"softmax\"}]}",
        3);
}

/* Functional graphs: a residual block (Add), a gate (Multiply), a channel
 * concatenation of two branches, and a skip from the model's input. */
void test_model_grad_graph(void) {
    check_gradients(
        "{\"input\": [6, 6, 2], \"layers\": ["
        "{\"type\": \"conv2d\", \"name\": \"stem\", \"filters\": 4, \"kernel_size\": 3, "
        "\"padding\": \"same\", \"activation\": \"relu\"},"
        "{\"type\": \"conv2d\", \"name\": \"a\", \"filters\": 4, \"kernel_size\": 3, "
        "\"padding\": \"same\", \"activation\": \"tanh\"},"
        "{\"type\": \"add\", \"name\": \"res\", \"inputs\": [\"stem\", \"a\"]},"
        "{\"type\": \"conv2d\", \"name\": \"g\", \"filters\": 4, \"kernel_size\": 1, "
        "\"activation\": \"sigmoid\", \"inputs\": [\"stem\"]},"
        "{\"type\": \"multiply\", \"name\": \"gated\", \"inputs\": [\"res\", \"g\"]},"
        "{\"type\": \"conv2d\", \"name\": \"b\", \"filters\": 3, \"kernel_size\": 1, "
        "\"inputs\": [\"@input\"]},"
        "{\"type\": \"concatenate\", \"name\": \"cat\", \"inputs\": [\"gated\", \"b\", \"a\"]},"
        "{\"type\": \"global_avg_pool2d\"},"
        "{\"type\": \"dense\", \"units\": 3, \"activation\": \"softmax\"}]}",
        3);
}

/* A chain written with explicit inputs is the same model as without. */
void test_model_graph_spec(void) {
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_parse(&m,
                      "{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"name\": \"a\", "
                      "\"units\": 3}, {\"type\": \"dense\", \"name\": \"b\", \"units\": 3, "
                      "\"inputs\": [\"@input\"]}, {\"type\": \"concatenate\", \"inputs\": "
                      "[\"a\", \"b\"]}, {\"type\": \"dense\", \"units\": 2, \"activation\": "
                      "\"softmax\"}]}",
                      err, sizeof err) == 0);
    CHECK(m.graph);
    CHECK_INT_EQ(m.layers[2].out[2], 6);
    CHECK_STR_CONTAINS(m.json, "\"inputs\":[");
    model_t again;
    CHECK(model_parse(&again, m.json, err, sizeof err) == 0);
    CHECK(strcmp(again.json, m.json) == 0);
    model_free(&again);
    model_free(&m);
    const char *bad[][2] = {
        {"{\"input\": [4], \"layers\": [{\"type\": \"add\", \"inputs\": [\"@input\", \"x\"]}]}",
         "layer 0 (add): input \"x\" is not an earlier layer"},
        {"{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 3}, {\"type\": \"add\", "
         "\"inputs\": [\"@input\", \"dense\"]}]}",
         "layer 1 (add): input 1 has shape (1, 1, 3), input 0 (1, 1, 4): they must be equal"},
        {"{\"input\": [4], \"layers\": [{\"type\": \"multiply\"}]}",
         "layer 0 (multiply): a merge needs \"inputs\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(model_parse(&m, bad[i][0], err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, bad[i][1]);
    }
}

/* BatchNormalization: its variables as Keras lays them out, its spec and
 * Keras JSON, its gradients against finite differences, the batch
 * statistics a gradient slab carries (also when threads split the batch),
 * inference on the moving statistics, and their moving average in a
 * standalone store and on a parameter server over real gRPC (async with
 * bfloat16 on the wire and staleness scaling, sync with averaged replicas). */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "common/peers/psclient.h"
#include "common/train/store.h"
#include "test_helpers.h"

/* conv2d -> batch_normalization -> relu -> global average -> dense. */
static const char conv_bn[] =
    "{\"input\": [6, 6, 2], \"layers\": [{\"type\": \"conv2d\", \"filters\": 4, "
    "\"kernel_size\": 3, \"padding\": \"same\"}, {\"type\": \"batch_normalization\", "
    "\"momentum\": 0.9}, {\"type\": \"activation\", \"activation\": \"relu\"}, "
    "{\"type\": \"global_avg_pool2d\"}, {\"type\": \"dense\", \"units\": 5, "
    "\"activation\": \"softmax\"}]}";

static int parse(model_t *m, const char *spec) {
    char err[PS_ERRLEN];
    if (model_parse(m, spec, err, sizeof err) == 0)
        return 0;
    fprintf(stderr, "%s\n", err);
    return -1;
}

/* Names, order, shapes, starting values and trainable counts as Keras has them. */
void test_model_bn_layout(void) {
    model_t m;
    CHECK(parse(&m, conv_bn) == 0);
    static const char *const names[] = {"conv2d/kernel",
                                        "conv2d/bias",
                                        "batch_normalization/gamma",
                                        "batch_normalization/beta",
                                        "batch_normalization/moving_mean",
                                        "batch_normalization/moving_variance",
                                        "dense/kernel",
                                        "dense/bias"};
    CHECK_INT_EQ(m.nvars, 8);
    for (size_t i = 0; i < m.nvars && i < 8; i++) {
        CHECK_STR_CONTAINS(m.vars[i].name, names[i]);
        CHECK_INT_EQ(m.vars[i].moving, i == 4 || i == 5);
    }
    CHECK_INT_EQ(m.vars[4].shape[0], 4);
    CHECK_NEAR(m.vars[4].momentum, 0.9, 0.0);
    int idx[MODEL_LAYER_MAX_VARS];
    CHECK_INT_EQ(model_layer_vars(&m, 1, idx), 4);
    CHECK_INT_EQ(idx[0], 2);
    CHECK_INT_EQ(idx[3], 5);
    float *p = xmalloc(m.nparams * sizeof(float));
    model_init_params(&m, 1, p);
    static const float starts[4] = {1.0f, 0.0f, 0.0f, 1.0f};
    for (size_t k = 0; k < 4; k++)
        for (size_t j = 0; j < 4; j++)
            CHECK(p[m.vars[2 + k].offset + j] == starts[k]);
    CHECK_INT_EQ(model_trainable_params(&m), m.nparams - 8);
    char buf[4096] = "";
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    model_summary(&m, f);
    fclose(f);
    CHECK_STR_CONTAINS(buf, "batch_normalization (BatchNormalization)");
    CHECK_STR_CONTAINS(buf, "Non-trainable params: 8 (32.00 B)");
    /* The canonical spec round-trips. */
    model_t again;
    CHECK(parse(&again, m.json) == 0);
    CHECK_INT_EQ(again.nparams, m.nparams);
    CHECK(again.layers[1].momentum == 0.9 && again.layers[1].epsilon == 1e-3);
    model_free(&again);
    free(p);
    model_free(&m);
    /* Without center and scale only the moving statistics are left; other
     * starting values; on a vector (after dense). */
    CHECK(parse(&m, "{\"input\": [5], \"layers\": [{\"type\": \"dense\", \"units\": 3}, "
                    "{\"type\": \"batch_normalization\", \"center\": false, \"scale\": false, "
                    "\"moving_mean_initializer\": \"ones\", \"moving_variance_initializer\": "
                    "\"zeros\"}, {\"type\": \"dense\", \"units\": 2, \"activation\": "
                    "\"softmax\"}]}") == 0);
    CHECK_INT_EQ(model_layer_vars(&m, 1, idx), 2);
    CHECK_STR_CONTAINS(m.vars[idx[0]].name, "batch_normalization/moving_mean");
    CHECK(m.vars[idx[0]].fill == 1.0f && m.vars[idx[1]].fill == 0.0f);
    CHECK_INT_EQ(model_trainable_params(&m), 5 * 3 + 3 + 3 * 2 + 2);
    model_free(&m);
}

void test_model_bn_spec_errors(void) {
    static const char *const bad[][2] = {
        {"\"axis\": 1", "\"axis\" is 1"},
        {"\"momentum\": 1.5", "\"momentum\" must be a number in [0, 1]"},
        {"\"epsilon\": 0", "\"epsilon\" must be a positive number"},
        {"\"gamma_initializer\": \"glorot_uniform\"", "\"gamma_initializer\" must be"},
        {"\"renorm\": true", "unknown key \"renorm\""},
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(bad); i++) {
        char spec[512], err[PS_ERRLEN] = "";
        snprintf(spec, sizeof spec,
                 "{\"input\": [4, 4, 2], \"layers\": [{\"type\": \"batch_normalization\", %s}, "
                 "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 2, \"activation\": "
                 "\"softmax\"}]}",
                 bad[i][0]);
        model_t m;
        CHECK(model_parse(&m, spec, err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, "layer 0 (batch_normalization)");
        CHECK_STR_CONTAINS(err, bad[i][1]);
    }
}

/* What Keras 3's to_json() writes for a BatchNormalization. */
#define KERAS_BN(extra)                                                                            \
    "{\"class_name\": \"Sequential\", \"config\": {\"name\": \"s\", \"layers\": ["                 \
    "{\"class_name\": \"InputLayer\", \"config\": {\"batch_shape\": [null, 4, 4, 3], "             \
    "\"dtype\": \"float32\", \"name\": \"input_layer\"}}, {\"module\": \"keras.layers\", "         \
    "\"class_name\": \"BatchNormalization\", \"config\": {\"name\": \"bn\", \"trainable\": "       \
    "true, \"dtype\": {\"module\": \"keras\", \"class_name\": \"DTypePolicy\", \"config\": "       \
    "{\"name\": \"float32\"}}, \"axis\": -1, \"momentum\": 0.95, \"epsilon\": 0.002, "             \
    "\"center\": true, \"scale\": true, \"beta_initializer\": {\"module\": "                       \
    "\"keras.initializers\", \"class_name\": \"Zeros\", \"config\": {}}, "                         \
    "\"gamma_initializer\": {\"module\": \"keras.initializers\", \"class_name\": \"Ones\", "       \
    "\"config\": {}}, \"moving_mean_initializer\": {\"class_name\": \"Zeros\", \"config\": "       \
    "{}}, \"moving_variance_initializer\": {\"class_name\": \"Ones\", \"config\": {}}, "           \
    "\"beta_regularizer\": null, \"gamma_regularizer\": null, \"beta_constraint\": null, "         \
    "\"gamma_constraint\": null, \"synchronized\": false, \"renorm\": false, "                     \
    "\"renorm_clipping\": null, \"renorm_momentum\": 0.99" extra "}}, {\"class_name\": "           \
    "\"Flatten\", \"config\": {\"name\": \"f\"}}, {\"class_name\": \"Dense\", \"config\": "        \
    "{\"name\": \"d\", \"units\": 2, \"activation\": \"softmax\"}}]}}"

void test_model_bn_keras_json(void) {
    model_t m;
    CHECK(parse(&m, KERAS_BN("")) == 0);
    CHECK_INT_EQ(m.layers[0].kind, LAYER_BATCH_NORM);
    CHECK(m.layers[0].momentum == 0.95 && m.layers[0].epsilon == 0.002);
    CHECK(model_find_var(&m, "bn/moving_variance") == 3);
    /* What Keras reads back (model.keras's config) carries the same. */
    char *cfg = model_keras_config(&m);
    CHECK_STR_CONTAINS(cfg, "\"class_name\":\"BatchNormalization\"");
    model_t back;
    CHECK(parse(&back, cfg) == 0);
    CHECK_INT_EQ(back.nparams, m.nparams);
    CHECK(back.layers[0].momentum == 0.95 && back.layers[0].epsilon == 0.002);
    free(cfg);
    model_free(&back);
    model_free(&m);
    static const char *const bad[][2] = {
        /* json-c keeps the last of a repeated key: the bad value replaces the good one. */
        {KERAS_BN(", \"synchronized\": true"), "\"synchronized\" is true; it must be false"},
        {KERAS_BN(", \"gamma_regularizer\": \"l2\""), "\"gamma_regularizer\""},
        {KERAS_BN(", \"virtual_batch_size\": 8"), "\"virtual_batch_size\""},
        {KERAS_BN(", \"gamma_initializer\": {\"class_name\": \"GlorotUniform\"}"),
         "\"gamma_initializer\" is {\"class_name\":\"GlorotUniform\"}; it must be Zeros or Ones"},
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(bad); i++) {
        char err[PS_ERRLEN] = "";
        CHECK(model_parse(&m, bad[i][0], err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, "layer \"bn\" (BatchNormalization)");
        CHECK_STR_CONTAINS(err, bad[i][1]);
    }
}

/* Gamma, beta and every layer below against finite differences. */
void test_model_grad_batch_norm(void) {
    check_gradients_loss(conv_bn, "auto", 5);
    /* On vectors, without gamma, and with a starting beta of one. */
    check_gradients_loss("{\"input\": [7], \"layers\": [{\"type\": \"dense\", \"units\": 6}, "
                         "{\"type\": \"batch_normalization\", \"scale\": false, "
                         "\"beta_initializer\": \"ones\"}, {\"type\": \"dense\", \"units\": 3, "
                         "\"activation\": \"softmax\"}]}",
                         "auto", 6);
    /* A residual block: the normalised branch added to its input. */
    check_gradients_loss(
        "{\"input\": [5, 5, 3], \"layers\": [{\"type\": \"conv2d\", \"filters\": 3, "
        "\"kernel_size\": 3, \"padding\": \"same\", \"name\": \"c\"}, {\"type\": "
        "\"batch_normalization\", \"name\": \"b\"}, {\"type\": \"add\", \"inputs\": [\"b\", "
        "\"@input\"]}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3, "
        "\"activation\": \"softmax\"}]}",
        "auto", 4);
}

/* One batch through an exec: the slab's moving places hold the batch's mean
 * and biased variance; inference on moving statistics equal to them gives
 * the training output, on others another one. */
void test_model_bn_batch_statistics(void) {
    model_t m;
    CHECK(parse(&m, "{\"input\": [3, 3, 2], \"layers\": [{\"type\": \"batch_normalization\"}, "
                    "{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3, "
                    "\"activation\": \"softmax\"}]}") == 0);
    size_t n = 4, in = 18;
    model_exec_t *e = model_exec_create(&m, cpu_backend(), n);
    float *x = model_exec_input(e);
    for (size_t i = 0; i < n * in; i++)
        x[i] = 3.0f * rng_uniform(11, i) + (float)(i % 2); /* channel 1 is shifted */
    float *p = xmalloc(m.nparams * sizeof(float)), *g = xmalloc(m.nparams * sizeof(float));
    model_init_params(&m, 2, p);
    float *train = xmalloc(n * 3 * sizeof(float));
    memcpy(train, model_forward(e, p, n, true, 1, 0), n * 3 * sizeof(float));
    model_backward(e, p, n, 1.0f, g);
    const var_t *mm = &m.vars[2], *mv = &m.vars[3];
    for (size_t c = 0; c < 2; c++) {
        double s = 0, q = 0;
        for (size_t r = 0; r < n * 9; r++)
            s += x[r * 2 + c];
        double mean = s / (double)(n * 9);
        for (size_t r = 0; r < n * 9; r++)
            q += (x[r * 2 + c] - mean) * (x[r * 2 + c] - mean);
        CHECK_NEAR(g[mm->offset + c], mean, 1e-5);
        CHECK_NEAR(g[mv->offset + c], q / (double)(n * 9), 1e-5);
    }
    memcpy(p + mm->offset, g + mm->offset, 2 * sizeof(float));
    memcpy(p + mv->offset, g + mv->offset, 2 * sizeof(float));
    CHECK_ARRAY_NEAR("inference on the batch's statistics", model_forward(e, p, n, false, 1, 0),
                     train, n * 3, 1e-5);
    p[mm->offset] += 1.0f;
    const float *other = model_forward(e, p, n, false, 1, 0);
    CHECK(fabsf(other[0] - train[0]) > 1e-3f);
    free(train);
    free(p);
    free(g);
    model_exec_free(e);
    model_free(&m);
}

/* A batch split over 3 threads gives the gradient and the statistics of the
 * whole batch; also when a thread has no example. */
void test_model_bn_threads(void) {
    check_threads_same_gradient(conv_bn, 7);
    check_threads_same_gradient(conv_bn, 2);
}

/* A standalone worker's store: Adam on gamma and the rest, the moving
 * average on the moving statistics, whose slots stay untouched. */
void test_model_bn_store_apply(void) {
    model_t m;
    CHECK(parse(&m, conv_bn) == 0);
    optim_cfg_t oc;
    optim_defaults(&oc, OPTIM_ADAM);
    store_t s;
    store_init_full(&s, &m, &oc, 1);
    float *g = xmalloc(m.nparams * sizeof(float));
    for (size_t i = 0; i < m.nparams; i++)
        g[i] = 1.0f;
    const var_t *gamma = &m.vars[2], *mm = &m.vars[4], *mv = &m.vars[5];
    for (size_t j = 0; j < 4; j++) {
        g[mm->offset + j] = 2.0f;
        g[mv->offset + j] = 3.0f;
    }
    store_apply(&s, g);
    for (size_t j = 0; j < 4; j++) {
        CHECK_NEAR(s.w[mm->offset + j], 0.9 * 0.0 + 0.1 * 2.0, 1e-6);
        CHECK_NEAR(s.w[mv->offset + j], 0.9 * 1.0 + 0.1 * 3.0, 1e-6);
        CHECK_NEAR(s.w[gamma->offset + j], 1.0 - 0.001, 1e-5); /* Adam's first step: lr */
        CHECK(s.slots[0][mm->offset + j] == 0.0f && s.slots[1][mv->offset + j] == 0.0f);
        CHECK(s.slots[0][gamma->offset + j] != 0.0f);
    }
    store_free(&s);
    free(g);
    model_free(&m);
}

/* A vector of 1024 channels: large enough for bfloat16 on the wire. */
static const char wide_bn[] =
    "{\"input\": [1024], \"layers\": [{\"type\": \"batch_normalization\", \"momentum\": 0.9}, "
    "{\"type\": \"dense\", \"units\": 2, \"activation\": \"softmax\"}]}";

/* A PS of wide_bn (SGD at 0.1) for two workers: async with the inverse
 * staleness rule, or sync averaging both with the linear scaling rule. */
static int start_wide_bn(test_ps_t *e, bool sync) {
    ps_shard_opts_t o = {.index = 0,
                         .nps = 1,
                         .sync = sync,
                         .replicas = sync ? 2 : 1,
                         .max_workers = 2,
                         .seed = 1,
                         .staleness_lr = PS_STALENESS_LR_INVERSE,
                         .lr_linear = sync};
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.1;
    return test_ps_start_model(e, wide_bn, &o, NULL);
}

static psclient_t *client(const test_ps_t *e, Pstrain__Caller *caller, uint32_t index, bool bf16) {
    static const char *addrs[1];
    addrs[0] = e->addr;
    Pstrain__Caller init = PSTRAIN__CALLER__INIT;
    *caller = init;
    caller->role = "worker";
    caller->index = index;
    psclient_options_t o = {
        .addrs = addrs, .nps = 1, .deadline_secs = 10.0, .retry_max_secs = 0.05, .wire_bf16 = bf16};
    char err[PS_ERRLEN];
    psclient_t *p = psclient_create(&o, &e->m, caller, NULL, NULL, err, sizeof err);
    if (!p)
        fprintf(stderr, "%s\n", err);
    return p;
}

/* A gradient slab: `grad` for the trainable variables, the statistics
 * mean + j * 1e-5 and var for channel j (not bfloat16 numbers). */
static void bn_push_slab(const model_t *m, float *g, float grad, float mean, float var) {
    for (size_t v = 0; v < m->nvars; v++)
        for (size_t j = 0; j < m->vars[v].size; j++)
            g[m->vars[v].offset + j] = grad;
    for (size_t j = 0; j < 1024; j++) {
        g[m->vars[2].offset + j] = mean + (float)j * 1e-5f; /* moving_mean */
        g[m->vars[3].offset + j] = var;
    }
}

/* Async: four pushes, the last three from one pull (staleness 0, 1, 2 with
 * the inverse rule: the last moves gamma by lr / 2), move the statistics by
 * four full moving averages, exactly as float32 pushes would (bfloat16 leaves them). */
static void async_moving(void) {
    test_ps_t e;
    CHECK(start_wide_bn(&e, false) == 0);
    Pstrain__Caller caller;
    psclient_t *p = client(&e, &caller, 0, true);
    CHECK(p != NULL);
    float *w = xcalloc(e.m.nparams, sizeof *w), *g = xmalloc(e.m.nparams * sizeof *g);
    char err[PS_ERRLEN] = "";
    size_t stale;
    bn_push_slab(&e.m, g, 1.0f, 0.123456789f, 3.14159f);
    /* A push tagged with step 0 counts as fresh: one first, then three from step 1. */
    CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(psclient_push(p, g, &stale, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_OK);
    for (int k = 0; k < 3; k++)
        CHECK_INT_EQ(psclient_push(p, g, &stale, err, sizeof err), PSCLIENT_OK);
    /* Read back in float32 (a bfloat16 pull would round what it shows). */
    Pstrain__Caller reader;
    psclient_t *r = client(&e, &reader, 1, false);
    CHECK_INT_EQ(psclient_pull(r, w, false, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(psclient_step(r, 0), 4);
    psclient_free(r);
    for (size_t j = 0; j < 1024; j += 97) {
        double mean = 0.0, var = 1.0, stat = 0.123456789f + (float)j * 1e-5f;
        for (int k = 0; k < 4; k++) {
            mean = 0.9 * mean + 0.1 * stat;
            var = 0.9 * var + 0.1 * 3.14159f;
        }
        CHECK_NEAR(w[e.m.vars[2].offset + j], mean, 1e-6);
        CHECK_NEAR(w[e.m.vars[3].offset + j], var, 1e-6);
        CHECK_NEAR(w[e.m.vars[0].offset + j], 1.0 - 0.1 * (1.0 + 1.0 + 1.0 + 0.5), 1e-6);
    }
    psclient_free(p);
    free(w);
    free(g);
    test_ps_stop(&e);
}

/* Sync: two workers' statistics are averaged like their gradients, and the
 * linear scaling of the learning rate leaves them alone. */
static void sync_moving(void) {
    test_ps_t e;
    CHECK(start_wide_bn(&e, true) == 0);
    Pstrain__Caller c0, c1;
    psclient_t *p[2] = {client(&e, &c0, 0, false), client(&e, &c1, 1, false)};
    CHECK(p[0] && p[1]);
    float *w = xcalloc(e.m.nparams, sizeof *w), *g = xmalloc(e.m.nparams * sizeof *g);
    char err[PS_ERRLEN] = "";
    size_t stale;
    for (int k = 0; k < 2; k++) {
        CHECK_INT_EQ(psclient_pull(p[k], w, false, err, sizeof err), PSCLIENT_OK);
        bn_push_slab(&e.m, g, k ? 3.0f : 1.0f, k ? 0.5f : 0.25f, k ? 4.0f : 2.0f);
        CHECK_INT_EQ(psclient_push(p[k], g, &stale, err, sizeof err), PSCLIENT_OK);
    }
    CHECK_INT_EQ(psclient_pull(p[0], w, false, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(psclient_step(p[0], 0), 1);
    for (size_t j = 0; j < 1024; j += 97) {
        CHECK_NEAR(w[e.m.vars[2].offset + j], 0.1 * (0.375 + (float)j * 1e-5f), 1e-6);
        CHECK_NEAR(w[e.m.vars[3].offset + j], 0.9 + 0.1 * 3.0, 1e-6);
        CHECK_NEAR(w[e.m.vars[0].offset + j], 1.0 - 0.1 * 2.0 * 2.0, 1e-6); /* 2 x lr, mean 2 */
    }
    for (int k = 0; k < 2; k++)
        psclient_free(p[k]);
    free(w);
    free(g);
    test_ps_stop(&e);
}

void test_ps_bn_moving_average(void) {
    async_moving();
    sync_moving();
}

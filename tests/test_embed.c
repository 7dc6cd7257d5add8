/* Embedding: the CPU ops against a naive reference, the layer's gradient
 * against finite differences, Keras JSON, the token-id check; the sparse
 * update (untouched rows and their slots stay as they were); and rows
 * pulled and pushed one by one: the PS's encoder and decoder against
 * protobuf-c, and a PS over real gRPC through psclient. */
#include "test.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "common/peers/psclient.h"
#include "common/rpc/msg.h"
#include "common/train/optim_sparse.h"
#include "common/train/store.h"
#include "common/train/trainer.h"
#include "kernels/cpu/ops_embed.h"
#include "ps/pull.h"
#include "ps/push.h"
#include "ps/shard.h"
#include "test_helpers.h"

/* 8 token ids, a table of 40 rows of 3, a softmax head of 4. */
static const char embed_spec[] =
    "{\"input\": [8], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 40, "
    "\"output_dim\": 3}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 4, "
    "\"activation\": \"softmax\"}]}";

static const char pool_spec[] =
    "{\"input\": [6], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 9, \"output_dim\": "
    "5}, {\"type\": \"global_avg_pool1d\"}, {\"type\": \"dense\", \"units\": 3, \"activation\": "
    "\"softmax\"}]}";

void test_embed_ops_reference(void) {
    size_t n = 7, dim = 5, rows = 6;
    float ids[7] = {0, 5, 2, 5, 6, -1, 2.5f}; /* the last three read nothing */
    float table[30], y[35], want[35], dy[35], dt[30], dt_want[30];
    for (size_t i = 0; i < rows * dim; i++)
        table[i] = (float)i * 0.5f - 3.0f;
    for (size_t i = 0; i < n * dim; i++)
        dy[i] = (float)(i % 7) - 2.0f;
    memset(want, 0, sizeof want);
    memset(dt_want, 0, sizeof dt_want);
    for (size_t i = 0; i < 4; i++) /* the first four ids are rows */
        for (size_t j = 0; j < dim; j++) {
            size_t r = (size_t)ids[i];
            want[i * dim + j] = table[r * dim + j];
            dt_want[r * dim + j] += dy[i * dim + j];
        }
    memset(y, 0xff, sizeof y);
    cpu_embed_forward(y, ids, table, n, dim, rows);
    CHECK_ARRAY_NEAR("embed_forward", y, want, n * dim, 0.0);
    memset(dt, 0, sizeof dt);
    cpu_embed_backward(dt, dy, ids, n, dim, rows);
    CHECK_ARRAY_NEAR("embed_backward", dt, dt_want, rows * dim, 1e-6);
}

/* The gradient of every table row and of the head against central
 * differences, with integer ids as input. */
static void check_embed_gradients(const char *spec, size_t n) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m, spec, err, sizeof err) == 0);
    model_exec_t *e = model_exec_create(&m, cpu_backend(), n);
    const layer_t *emb = &m.layers[0];
    for (size_t i = 0; i < n * emb->in_size; i++)
        model_exec_input(e)[i] = (float)(rng_mix(7, i) % emb->input_dim);
    for (size_t i = 0; i < n; i++)
        model_exec_labels(e)[i] = (int32_t)(rng_mix(8, i) % m.nclasses);
    float *params = xmalloc(m.nparams * sizeof(float)), *grads = xmalloc(m.nparams * sizeof(float));
    model_init_params(&m, 5, params);
    fixed_batch_loss(e, params, n);
    model_backward(e, params, n, 1.0f, grads);
    size_t bad = 0;
    for (size_t idx = 0; idx < m.nparams; idx++) {
        double numeric = central_difference(e, params, idx, 1e-2f, n);
        if (fabs(numeric - grads[idx]) > 2e-2 * fmax(1e-2, fabs(numeric)) && bad++ < 5)
            fprintf(stderr, "  param %zu: backward %.6g, finite difference %.6g\n", idx,
                    (double)grads[idx], numeric);
    }
    free(params);
    free(grads);
    model_exec_free(e);
    model_free(&m);
    CHECK_INT_EQ(bad, 0);
}

void test_embed_gradients(void) {
    check_embed_gradients(embed_spec, 5);
    check_embed_gradients(pool_spec, 4);
}

void test_embed_spec_and_shapes(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m, pool_spec, err, sizeof err) == 0);
    CHECK_INT_EQ(m.nvars, 3);
    CHECK(strcmp(m.vars[0].name, "embedding/embeddings") == 0);
    CHECK_INT_EQ(m.vars[0].shape[0], 9);
    CHECK_INT_EQ(m.vars[0].shape[1], 5);
    CHECK(m.vars[0].sparse);
    CHECK(model_has_sparse(&m));
    CHECK(m.layers[0].seq_out);
    CHECK_INT_EQ(m.layers[1].out_size, 5);
    /* Keras's RandomUniform(-0.05, 0.05), not zeros. */
    float w[45];
    model_init_var(&m.vars[0], 3, 0, 45, w);
    float lo = 1, hi = -1;
    for (size_t i = 0; i < 45; i++) {
        lo = fminf(lo, w[i]);
        hi = fmaxf(hi, w[i]);
    }
    CHECK(lo >= -0.05f && hi <= 0.05f && hi - lo > 0.05f);
    char *keras = model_keras_config(&m);
    CHECK_STR_CONTAINS(keras, "\"class_name\":\"Embedding\"");
    CHECK_STR_CONTAINS(keras, "\"input_dim\":9");
    free(keras);
    model_free(&m);
    /* A dense layer straight after the sequence is refused, naming the fix. */
    CHECK(model_parse(&m,
                      "{\"input\": [4], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 3, "
                      "\"output_dim\": 2}, {\"type\": \"dense\", \"units\": 2, \"activation\": "
                      "\"softmax\"}]}",
                      err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "global_avg_pool1d");
}

/* Keras 3's to_json() of Sequential([Input((6,)), Embedding(9, 5),
 * GlobalAveragePooling1D(), Dense(3, softmax)]), trimmed of the Dense's
 * defaults. */
static const char keras_json[] =
    "{\"class_name\": \"Sequential\", \"config\": {\"name\": \"s\", \"layers\": ["
    "{\"class_name\": \"InputLayer\", \"config\": {\"batch_shape\": [null, 6], \"dtype\": "
    "\"float32\", \"sparse\": false, \"name\": \"input_layer\"}},"
    "{\"module\": \"keras.layers\", \"class_name\": \"Embedding\", \"config\": {\"name\": "
    "\"embedding\", \"trainable\": true, \"dtype\": \"float32\", \"input_dim\": 9, "
    "\"output_dim\": 5, \"embeddings_initializer\": {\"module\": \"keras.initializers\", "
    "\"class_name\": \"RandomUniform\", \"config\": {\"minval\": -0.05, \"maxval\": 0.05, "
    "\"seed\": null}}, \"embeddings_regularizer\": null, \"activity_regularizer\": null, "
    "\"embeddings_constraint\": null, \"mask_zero\": %s}},"
    "{\"class_name\": \"GlobalAveragePooling1D\", \"config\": {\"name\": \"gap\", "
    "\"data_format\": \"channels_last\", \"keepdims\": false}},"
    "{\"class_name\": \"Dense\", \"config\": {\"name\": \"dense\", \"units\": 3, "
    "\"activation\": \"softmax\"}}]}}";

void test_embed_keras_json(void) {
    char text[sizeof keras_json + 16], err[PS_ERRLEN];
    model_t m;
    snprintf(text, sizeof text, keras_json, "false");
    CHECK(model_parse(&m, text, err, sizeof err) == 0);
    CHECK_INT_EQ(m.layers[0].kind, LAYER_EMBEDDING);
    CHECK_INT_EQ(m.layers[1].kind, LAYER_GLOBAL_AVG_POOL1D);
    CHECK_INT_EQ(m.nparams, 9 * 5 + 5 * 3 + 3);
    model_free(&m);
    snprintf(text, sizeof text, keras_json, "true");
    CHECK(model_parse(&m, text, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "mask_zero");
}

void test_embed_check_ids(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m, pool_spec, err, sizeof err) == 0);
    float x[12] = {0, 1, 2, 3, 4, 8, 0, 1, 2, 9, 4, 5};
    CHECK(model_check_ids(&m, x, 1, 0, err, sizeof err) == 0);
    CHECK(model_check_ids(&m, x, 2, 10, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "layer \"embedding\" (Embedding): example 11, position 3: token id 9 "
                            "is not an integer in [0, 9)");
    x[9] = 1.5f;
    CHECK(model_check_ids(&m, x, 2, 0, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "token id 1.5");
    uint64_t rows[12];
    uint8_t mark[9] = {0};
    x[9] = 9; /* skipped */
    CHECK_INT_EQ(model_sparse_rows(&m, 0, x, 2, rows, mark), 7);
    uint64_t want[7] = {0, 1, 2, 3, 4, 5, 8};
    for (size_t k = 0; k < 7; k++)
        CHECK_INT_EQ(rows[k], want[k]);
    for (size_t k = 0; k < 9; k++)
        CHECK_INT_EQ(mark[k], 0);
    model_free(&m);
}

/* Adam on rows 2 and 7: those rows move as optim_apply moves them; every
 * other row's weights and both moments stay as they were. */
void test_embed_sparse_apply_keeps_untouched_slots(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m, pool_spec, err, sizeof err) == 0);
    optim_cfg_t o;
    optim_defaults(&o, OPTIM_ADAM);
    store_t s, ref;
    store_init_full(&s, &m, &o, 1);
    store_init_full(&ref, &m, &o, 1);
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < s.size; i++)
            s.slots[k][i] = ref.slots[k][i] = 0.01f * (float)(i % 5) + 0.001f * (float)k;
    float g[5] = {0.5f, -1, 0.25f, 2, -0.125f};
    CHECK(store_apply_row(&s, 0, 2, g, 1.0) == 0);
    CHECK(store_apply_row(&s, 0, 7, g, 1.0) == 0);
    CHECK(store_apply_row(&s, 0, 9, g, 1.0) != 0); /* not a row of the table */
    for (size_t r = 0; r < 9; r++) {
        float *slots[2] = {ref.slots[0] + r * 5, ref.slots[1] + r * 5};
        if (r == 2 || r == 7)
            optim_apply(&o, 0, ref.w + r * 5, slots, g, 5);
    }
    CHECK_ARRAY_NEAR("weights", s.w, ref.w, s.size, 0.0);
    CHECK_ARRAY_NEAR("m", s.slots[0], ref.slots[0], s.size, 0.0);
    CHECK_ARRAY_NEAR("v", s.slots[1], ref.slots[1], s.size, 0.0);
    CHECK(s.w[2 * 5] != ref.w[0] || s.w[2 * 5 + 1] != ref.w[1]);
    store_free(&s);
    store_free(&ref);
    model_free(&m);
}

/* The PS's hand encoder writes rows with their ids as protobuf-c reads
 * them; its decoder reads a protobuf-c push with ids as protobuf-c does. */
void test_embed_wire_row_ids(void) {
    uint64_t ids[3] = {3, 300, 70000};
    float data[6] = {1, 2, 3, 4, 5, 6};
    Pstrain__Tensor t = PSTRAIN__TENSOR__INIT;
    t.name = "embedding/embeddings";
    t.n_row_ids = 3;
    t.row_ids = ids;
    t.data = (ProtobufCBinaryData){sizeof data, (uint8_t *)data};
    Pstrain__Tensor *tp = &t;
    Pstrain__PullResponse resp = PSTRAIN__PULL_RESPONSE__INIT;
    resp.step = 9;
    resp.n_tensors = 1;
    resp.tensors = &tp;
    ps_pull_t p;
    ps_pull_init(&p);
    ps_pull_encode(&p, &resp, NULL);
    size_t len = 0;
    for (size_t i = 0; i < p.npiece; i++)
        len += p.piece[i].len;
    uint8_t *buf = xmalloc(len), *at = buf;
    for (size_t i = 0; i < p.npiece; i++, at += p.piece[i - 1].len)
        memcpy(at, p.piece[i].data, p.piece[i].len);
    CHECK_INT_EQ(len, protobuf_c_message_get_packed_size(&resp.base));
    Pstrain__PullResponse *r = pstrain__pull_response__unpack(NULL, len, buf);
    CHECK(r != NULL);
    CHECK_INT_EQ(r->n_tensors, 1);
    CHECK_INT_EQ(r->tensors[0]->n_row_ids, 3);
    CHECK_INT_EQ(r->tensors[0]->row_ids[2], 70000);
    CHECK(memcmp(r->tensors[0]->data.data, data, sizeof data) == 0);
    pstrain__pull_response__free_unpacked(r, NULL);
    free(buf);
    ps_pull_free(&p);

    Pstrain__PushRequest req = PSTRAIN__PUSH_REQUEST__INIT;
    req.n_grads = 1;
    req.grads = &tp;
    rpc_buf_t packed = {0};
    msg_pack(&packed, &req.base);
    rpc_seg_t seg = {packed.data, packed.len};
    rpc_msg_t msg = {&seg, 1, packed.len};
    ps_push_t d;
    ps_push_init(&d);
    CHECK(ps_push_decode(&d, &msg) == 0);
    CHECK_INT_EQ(d.n_grads, 1);
    CHECK_INT_EQ(d.grads[0].n_row_ids, 3);
    CHECK_INT_EQ(d.grads[0].row_ids[1], 300);
    CHECK_INT_EQ(d.grads[0].data.len, sizeof data);
    ps_push_free(&d);
    rpc_buf_free(&packed);
}

/* A PS of pool_spec (SGD) served in this process over loopback gRPC. 0, or
 * -1. */
static int start_embed_ps(test_ps_t *e, bool sync) {
    ps_shard_opts_t o = {
        .index = 0, .nps = 1, .sync = sync, .replicas = 1, .max_workers = 2, .seed = 1};
    optim_defaults(&o.optim, OPTIM_SGD);
    return test_ps_start_model(e, pool_spec, &o, NULL);
}

/* A worker's step through psclient against a PS over real gRPC: the pull
 * brings exactly the rows the batch reads (the others of the slab stay
 * untouched), the push changes exactly those rows on the PS, with momentum
 * slots elsewhere untouched, and a push of a row the PS does not hold is
 * refused. */
void test_embed_rows_over_grpc(void) {
    test_ps_t ps;
    CHECK(start_embed_ps(&ps, false) == 0);
    const model_t *m = &ps.m;
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    const char *addrs[] = {ps.addr};
    psclient_options_t o = {.addrs = addrs, .nps = 1, .deadline_secs = 5, .retry_max_secs = 0.05};
    char err[PS_ERRLEN];
    psclient_t *c = psclient_create(&o, m, &caller, NULL, NULL, err, sizeof err);
    CHECK(c != NULL);
    float *params = xmalloc(m->nparams * sizeof(float)),
          *init = xmalloc(m->nparams * sizeof(float));
    float *grads = xcalloc(m->nparams, sizeof(float));
    model_init_params(m, 1, init);
    for (size_t i = 0; i < m->nparams; i++)
        params[i] = 1234.0f;
    float x[6] = {4, 1, 4, 7, 1, 1}; /* rows 1, 4, 7 */
    CHECK_INT_EQ(psclient_set_batch(c, x, 1), 3);
    CHECK(psclient_pull(c, params, false, err, sizeof err) == PSCLIENT_OK);
    for (size_t r = 0; r < 9; r++)
        for (size_t j = 0; j < 5; j++) {
            bool touched = r == 1 || r == 4 || r == 7;
            CHECK_NEAR(params[r * 5 + j], touched ? init[r * 5 + j] : 1234.0f, 0.0);
        }
    CHECK_ARRAY_NEAR("dense variables", params + 45, init + 45, m->nparams - 45, 0.0);
    uint64_t pulled, pushed;
    psclient_bytes(c, &pulled, &pushed);
    CHECK(pulled < (3 * 5 + 5 * 3 + 3) * 4 + 120); /* the rows and the head, plus framing */
    for (size_t i = 0; i < m->nparams; i++)
        grads[i] = 1.0f; /* rows not asked for must not be sent */
    size_t stale;
    CHECK(psclient_push(c, grads, &stale, err, sizeof err) == PSCLIENT_OK);
    psclient_bytes(c, &pulled, &pushed);
    CHECK(pushed < (3 * 5 + 5 * 3 + 3) * 4 + 160);
    const store_t *st = &ps.svc.shard.store;
    for (size_t r = 0; r < 9; r++) {
        bool touched = r == 1 || r == 4 || r == 7;
        CHECK_NEAR(st->w[r * 5], init[r * 5] - (touched ? 0.01f : 0.0f), 1e-6);
    }
    /* A row outside the table in a hand-made push: INVALID_ARGUMENT, nothing applied. */
    uint64_t bad = 9;
    float row[5] = {0};
    Pstrain__Tensor t = PSTRAIN__TENSOR__INIT, *tp = &t;
    t.name = "embedding/embeddings";
    t.n_row_ids = 1;
    t.row_ids = &bad;
    t.data = (ProtobufCBinaryData){sizeof row, (uint8_t *)row};
    Pstrain__PushRequest req = PSTRAIN__PUSH_REQUEST__INIT;
    req.caller = &caller;
    req.n_grads = 1;
    req.grads = &tp;
    bool was_stale;
    CHECK(ps_shard_push(&ps.svc.shard, &req, &was_stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "holds no row 9 of embedding/embeddings");
    psclient_free(c);
    free(params);
    free(init);
    free(grads);
    test_ps_stop(&ps);
}

/* A standalone worker's step (trainer_step) with momentum: the rows its
 * batch reads move, every other row of the table and its velocity stay as
 * they were, and the dense variables all move. */
void test_embed_standalone_step(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m, pool_spec, err, sizeof err) == 0);
    optim_cfg_t o;
    optim_defaults(&o, OPTIM_SGD);
    o.momentum = 0.9;
    store_t s;
    store_init_full(&s, &m, &o, 1);
    for (size_t i = 0; i < s.size; i++)
        s.slots[0][i] = 0.01f;
    float *w0 = xmalloc(s.size * sizeof(float));
    memcpy(w0, s.w, s.size * sizeof(float));
    trainer_t *t = trainer_create(&m, cpu_backend(), 2, 2);
    trainer_attach_store(t, &s);
    float x[12] = {1, 2, 1, 2, 2, 1, 2, 2, 2, 1, 1, 1};
    int32_t y[2] = {0, 2};
    step_metrics_t sm;
    trainer_step(t, x, y, 2, 1, &sm);
    for (size_t r = 0; r < 9; r++) {
        bool touched = r == 1 || r == 2;
        CHECK(touched == (s.w[r * 5] != w0[r * 5]));
        CHECK(touched == (s.slots[0][r * 5] != 0.01f));
    }
    for (size_t i = 45; i < s.size; i++)
        CHECK(s.slots[0][i] != 0.01f);
    CHECK_INT_EQ(s.iterations, 1);
    trainer_free(t);
    free(w0);
    store_free(&s);
    model_free(&m);
}

/* A sync pull of rows that waits for the next step. */
typedef struct {
    test_ps_t *e;
    int code;
    Pstrain__PullResponse *resp;
} rows_pull_t;

static void *pull_rows_waiting(void *arg) {
    rows_pull_t *a = arg;
    uint64_t ids[2] = {1, 5};
    Pstrain__RowSelect sel = PSTRAIN__ROW_SELECT__INIT, *selp = &sel;
    sel.name = "embedding/embeddings";
    sel.n_row_ids = 2;
    sel.row_ids = ids;
    char *names[] = {"dense/kernel"};
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
    req.caller = &caller;
    req.min_step = 1;
    req.n_names = 1;
    req.names = names;
    req.n_rows = 1;
    req.rows = &selp;
    rpc_buf_t b = {0}, resp = {0};
    msg_pack(&b, &req.base);
    char err[PS_ERRLEN];
    a->code = rpc_call(a->e->ch, "/pstrain.ParameterServer/Pull", b.data, b.len, 10.0, &resp, err,
                       sizeof err);
    a->resp = pstrain__pull_response__unpack(NULL, resp.len, resp.data);
    rpc_buf_free(&b);
    rpc_buf_free(&resp);
    return NULL;
}

/* Sync mode: a pull of rows for the next step waits like a whole pull, and
 * is answered with every partition (a sync worker moves tables whole). */
void test_embed_sync_pull_of_rows_waits(void) {
    test_ps_t e;
    CHECK(start_embed_ps(&e, true) == 0);
    rows_pull_t a = {.e = &e, .code = -1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, pull_rows_waiting, &a) == 0);
    for (int i = 0; i < 300 && e.svc.nwaits == 0; i++)
        usleep(10000);
    CHECK_INT_EQ(e.svc.nwaits, 1);
    /* The step's one push (a replica): every variable, whole. */
    const model_t *m = &e.m;
    float *g = xcalloc(m->nparams, sizeof(float));
    Pstrain__Tensor ts[3], *tp[3];
    for (size_t v = 0; v < 3; v++) {
        Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
        ts[v] = init;
        ts[v].name = (char *)m->vars[v].name;
        ts[v].rows = m->vars[v].shape[0];
        ts[v].data = (ProtobufCBinaryData){m->vars[v].size * 4, (uint8_t *)(g + m->vars[v].offset)};
        tp[v] = &ts[v];
    }
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    Pstrain__PushRequest push = PSTRAIN__PUSH_REQUEST__INIT;
    push.caller = &caller;
    push.n_grads = 3;
    push.grads = tp;
    rpc_buf_t b = {0}, resp = {0};
    msg_pack(&b, &push.base);
    char err[PS_ERRLEN];
    CHECK_INT_EQ(rpc_call(e.ch, "/pstrain.ParameterServer/Push", b.data, b.len, 10.0, &resp, err,
                          sizeof err),
                 RPC_OK);
    pthread_join(t, NULL);
    CHECK_INT_EQ(a.code, RPC_OK);
    CHECK(a.resp != NULL);
    CHECK_INT_EQ(a.resp->step, 1);
    CHECK_INT_EQ(a.resp->n_tensors, 3);
    for (size_t i = 0; i < 3; i++)
        CHECK_INT_EQ(a.resp->tensors[i]->n_row_ids, 0);
    pstrain__pull_response__free_unpacked(a.resp, NULL);
    rpc_buf_free(&b);
    rpc_buf_free(&resp);
    free(g);
    test_ps_stop(&e);
}

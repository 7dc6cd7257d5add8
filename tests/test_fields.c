/* common/peers/fields.h: every field number the hand-written readers and
 * writers use (ps/push.c, ps/pull.c, common/peers/pull_read.c), checked
 * against protobuf-c's generated descriptors; and psclient's pushes, whose
 * tensors point into the caller's gradient slab, caught by a PS stand-in and
 * unpacked by protobuf-c, to the same values. */
#include "test.h"

#include <math.h>
#include <stdlib.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "common/peers/codec.h"
#include "common/peers/fields.h"
#include "common/peers/psclient.h"
#include "common/rpc/wire.h"
#include "common/train/store.h"

/* ---- Field numbers ------------------------------------------------------------- */

typedef struct {
    const ProtobufCMessageDescriptor *msg;
    const char *name;
    unsigned number;
    int wire; /* the wire type the hand-written code reads and writes */
} field_case_t;

static const field_case_t field_cases[] = {
    {&pstrain__tensor__descriptor, "name", FIELD_TENSOR_NAME, WIRE_LEN},
    {&pstrain__tensor__descriptor, "row_begin", FIELD_TENSOR_ROW_BEGIN, WIRE_VARINT},
    {&pstrain__tensor__descriptor, "rows", FIELD_TENSOR_ROWS, WIRE_VARINT},
    {&pstrain__tensor__descriptor, "data", FIELD_TENSOR_DATA, WIRE_LEN},
    {&pstrain__tensor__descriptor, "dtype", FIELD_TENSOR_DTYPE, WIRE_VARINT},
    {&pstrain__tensor__descriptor, "row_ids", FIELD_TENSOR_ROW_IDS, WIRE_VARINT},
    /* packed: the PS reads runs (WIRE_LEN) and single varints */
    {&pstrain__tensor__descriptor, "indices", FIELD_TENSOR_INDICES, WIRE_VARINT},
    {&pstrain__caller__descriptor, "role", FIELD_CALLER_ROLE, WIRE_LEN},
    {&pstrain__caller__descriptor, "index", FIELD_CALLER_INDEX, WIRE_VARINT},
    {&pstrain__caller__descriptor, "incarnation", FIELD_CALLER_INCARNATION, WIRE_VARINT},
    {&pstrain__pull_response__descriptor, "step", FIELD_PULL_STEP, WIRE_VARINT},
    {&pstrain__pull_response__descriptor, "tensors", FIELD_PULL_TENSORS, WIRE_LEN},
    {&pstrain__pull_response__descriptor, "lineage", FIELD_PULL_LINEAGE, WIRE_VARINT},
    {&pstrain__push_request__descriptor, "caller", FIELD_PUSH_CALLER, WIRE_LEN},
    {&pstrain__push_request__descriptor, "step", FIELD_PUSH_STEP, WIRE_VARINT},
    {&pstrain__push_request__descriptor, "grads", FIELD_PUSH_GRADS, WIRE_LEN},
    {&pstrain__push_request__descriptor, "partial", FIELD_PUSH_PARTIAL, WIRE_VARINT},
    {&pstrain__push_request__descriptor, "seq", FIELD_PUSH_SEQ, WIRE_VARINT},
};

/* The wire type protobuf-c writes a field of this type with (unpacked). */
static int wire_type_of(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return WIRE_LEN;
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return WIRE_FIXED32;
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return WIRE_FIXED64;
    default:
        return WIRE_VARINT;
    }
}

/* Every constant has the number and wire type of its field, and every field
 * of the four messages has a constant (a field added to the .proto fails
 * here until the hand-written code knows of it). */
void test_fields_match_descriptors(void) {
    for (size_t i = 0; i < PS_ARRAY_LEN(field_cases); i++) {
        const field_case_t *c = &field_cases[i];
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(c->msg, c->name);
        if (!f)
            fprintf(stderr, "%s has no field %s\n", c->msg->name, c->name);
        CHECK(f != NULL);
        CHECK_INT_EQ(f->id, c->number);
        CHECK_INT_EQ(wire_type_of(f->type), c->wire);
        size_t known = 0;
        for (size_t j = 0; j < PS_ARRAY_LEN(field_cases); j++)
            known += field_cases[j].msg == c->msg;
        CHECK_INT_EQ(c->msg->n_fields, known);
    }
    /* WireDtype: every value has its constant, with its number. */
    static const struct {
        const char *name;
        int value;
    } dtypes[] = {{"FLOAT32", WIRE_DTYPE_FLOAT32},
                  {"BFLOAT16", WIRE_DTYPE_BFLOAT16},
                  {"FLOAT16", WIRE_DTYPE_FLOAT16}};
    CHECK_INT_EQ(pstrain__wire_dtype__descriptor.n_values, PS_ARRAY_LEN(dtypes));
    for (size_t i = 0; i < PS_ARRAY_LEN(dtypes); i++) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value_by_name(
            &pstrain__wire_dtype__descriptor, dtypes[i].name);
        CHECK(v != NULL);
        if (v)
            CHECK_INT_EQ(v->value, dtypes[i].value);
    }
}

/* ---- Pushes as protobuf-c reads them --------------------------------------------- */

/* A PS stand-in that keeps the last push it was sent and answers it. */
typedef struct {
    rpc_server_t *server;
    char addr[64];
    uint8_t *req;
    size_t len;
} catcher_t;

static void catch_push(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    catcher_t *c = ctx;
    free(c->req);
    c->req = xmalloc(len ? len : 1);
    memcpy(c->req, req, len);
    c->len = len;
    rpc_call_reply(call, RPC_OK, NULL, NULL, 0);
}

static const rpc_method_t catcher_methods[] = {{"/pstrain.ParameterServer/Push", catch_push}};

static int catcher_start(catcher_t *c) {
    memset(c, 0, sizeof *c);
    rpc_server_config_t sc = {.addr = "127.0.0.1:0",
                              .methods = catcher_methods,
                              .n_methods = PS_ARRAY_LEN(catcher_methods),
                              .ctx = c};
    char err[PS_ERRLEN];
    if (rpc_server_start(&c->server, &sc, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    snprintf(c->addr, sizeof c->addr, "127.0.0.1:%d", rpc_server_port(c->server));
    return 0;
}

static void catcher_stop(catcher_t *c) {
    rpc_server_stop(c->server);
    free(c->req);
}

static const var_t *var_named(const model_t *m, const char *name) {
    for (size_t v = 0; v < m->nvars; v++)
        if (strcmp(m->vars[v].name, name) == 0)
            return &m->vars[v];
    return NULL;
}

/* Checks one PS's push against the gradient slab: its header, and every
 * tensor's rows equal to the slab's; counts in seen[] each element sent. */
static void check_push(const catcher_t *c, const model_t *m, const float *grads, uint64_t seq,
                       bool partial, unsigned *seen) {
    Pstrain__PushRequest *r = pstrain__push_request__unpack(NULL, c->len, c->req);
    CHECK(r != NULL);
    if (!r)
        return;
    CHECK(r->caller && strcmp(r->caller->role, "worker") == 0);
    CHECK_INT_EQ(r->caller ? r->caller->index : 0, 3);
    CHECK_INT_EQ(r->caller ? r->caller->incarnation : 0, 1ull << 40);
    CHECK_INT_EQ(r->seq, seq);
    CHECK_INT_EQ(r->partial, partial);
    CHECK_INT_EQ(r->step, 0);
    for (size_t i = 0; i < r->n_grads; i++) {
        const Pstrain__Tensor *t = r->grads[i];
        const var_t *v = var_named(m, t->name);
        CHECK(v != NULL);
        if (!v)
            continue;
        size_t row = store_row_size(v), at = v->offset + t->row_begin * row;
        CHECK_INT_EQ(t->data.len, t->rows * row * sizeof(float));
        CHECK(at + t->data.len / sizeof(float) <= v->offset + v->size);
        if (t->data.len != t->rows * row * sizeof(float) ||
            at + t->data.len / sizeof(float) > v->offset + v->size)
            continue;
        CHECK(memcmp(t->data.data, grads + at, t->data.len) == 0);
        for (size_t k = 0; k < t->data.len / sizeof(float); k++)
            seen[at + k]++;
    }
    pstrain__push_request__free_unpacked(r, NULL);
}

/* Pushes a slab to two stand-ins and reads both pushes back with protobuf-c:
 * every element arrives exactly once, from the right place of the slab.
 * Then a partial push of the first variable only: nothing else is sent. */
void test_fields_push_unpacked_by_protobuf_c(void) {
    catcher_t c[2];
    CHECK(catcher_start(&c[0]) == 0);
    CHECK(catcher_start(&c[1]) == 0);
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    caller.index = 3;
    caller.incarnation = 1ull << 40;
    const char *addrs[] = {c[0].addr, c[1].addr};
    psclient_options_t o = {.addrs = addrs, .nps = 2, .deadline_secs = 5.0};
    psclient_t *p = psclient_create(&o, &m, &caller, NULL, NULL, err, sizeof err);
    CHECK(p != NULL);
    float *g = xmalloc(m.nparams * sizeof *g);
    for (size_t i = 0; i < m.nparams; i++)
        g[i] = (float)i * 0.5f - 7.0f;
    unsigned *seen = xcalloc(m.nparams, sizeof *seen);
    size_t stale = 9;
    CHECK_INT_EQ(psclient_push(p, g, &stale, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(stale, 0);
    for (int k = 0; k < 2; k++) {
        CHECK(c[k].len > 0); /* the placement gives each PS some of the model */
        check_push(&c[k], &m, g, 1, false, seen);
    }
    size_t once = 0;
    for (size_t i = 0; i < m.nparams; i++)
        once += seen[i] == 1;
    CHECK_INT_EQ(once, m.nparams);

    uint8_t *mask = xcalloc(m.nvars, 1);
    mask[0] = 1;
    memset(seen, 0, m.nparams * sizeof *seen);
    CHECK_INT_EQ(psclient_push_vars(p, g, mask, true, &stale, err, sizeof err), PSCLIENT_OK);
    for (int k = 0; k < 2; k++)
        check_push(&c[k], &m, g, 2, true, seen);
    size_t sent = 0;
    for (size_t i = 0; i < m.nparams; i++)
        sent += seen[i];
    CHECK_INT_EQ(sent, m.vars[0].size);
    free(mask);
    free(seen);
    free(g);
    psclient_free(p);
    model_free(&m);
    catcher_stop(&c[0]);
    catcher_stop(&c[1]);
}

/* Adds what psclient's pushes in one catcher carry to sums[] (a model
 * slab), dense or sparse; counts the tensors of each dtype ([3]) and the
 * sparse ones. Tensors of WIRE_BF16_MIN_VALUES or more must be of dtype
 * `large` and, with topk, sparse with ascending indices; smaller ones
 * dense float32. */
static void add_pushed(const catcher_t *c, const model_t *m, double *sums, size_t *by_dtype,
                       size_t *n_sparse, double topk, uint64_t large) {
    Pstrain__PushRequest *r = pstrain__push_request__unpack(NULL, c->len, c->req);
    CHECK(r != NULL);
    for (size_t i = 0; r && i < r->n_grads; i++) {
        const Pstrain__Tensor *t = r->grads[i];
        const var_t *v = var_named(m, t->name);
        size_t row = store_row_size(v), first = v->offset + t->row_begin * row, n = t->rows * row;
        size_t bytes = codec_value_bytes(t->dtype), k = t->n_indices ? t->n_indices : n;
        CHECK_INT_EQ(t->dtype, n >= WIRE_BF16_MIN_VALUES ? large : WIRE_DTYPE_FLOAT32);
        by_dtype[t->dtype <= 2 ? t->dtype : 0]++;
        CHECK_INT_EQ(t->data.len, k * bytes);
        CHECK_INT_EQ(t->n_indices,
                     n >= WIRE_BF16_MIN_VALUES && topk > 0 ? codec_topk_count(n, topk) : 0);
        *n_sparse += t->n_indices > 0;
        float *x = xmalloc(k * sizeof *x);
        codec_decode(t->dtype, x, t->data.data, k);
        for (size_t j = 0; j < k; j++) {
            size_t e = t->n_indices ? t->indices[j] : j;
            CHECK(e < n && (j == 0 || !t->n_indices || t->indices[j] > t->indices[j - 1]));
            if (e < n)
                sums[first + e] += x[j];
        }
        free(x);
    }
    if (r)
        pstrain__push_request__free_unpacked(r, NULL);
}

/* rpc.wire_dtype bf16: large tensors go as bfloat16 (half the bytes), small
 * ones as float32, and error feedback keeps what rounding leaves out: a
 * gradient of 1 + 2^-9 + 2^-11, which bfloat16 rounds to 1, pushed 4 times
 * arrives as a sum within half a bfloat16 step (2^-8) of 4 times its value,
 * where rounding alone would lose 4 * 0.00244. */
void test_fields_push_bf16_error_feedback(void) {
    catcher_t c[2];
    CHECK(catcher_start(&c[0]) == 0);
    CHECK(catcher_start(&c[1]) == 0);
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    const char *addrs[] = {c[0].addr, c[1].addr};
    psclient_options_t o = {.addrs = addrs, .nps = 2, .deadline_secs = 5.0, .wire_bf16 = true};
    psclient_t *p = psclient_create(&o, &m, &caller, NULL, NULL, err, sizeof err);
    CHECK(p != NULL);
    const float value = 1.0f + 0x1p-9f + 0x1p-11f;
    float *g = xmalloc(m.nparams * sizeof *g);
    for (size_t i = 0; i < m.nparams; i++)
        g[i] = value;
    size_t at = m.vars[0].offset + 5, stale, by_dtype[3] = {0}, n_sparse = 0; /* first kernel */
    CHECK(m.vars[0].size >= WIRE_BF16_MIN_VALUES);
    double *sums = xcalloc(m.nparams, sizeof *sums);
    size_t bytes = 0;
    for (int k = 0; k < 4; k++) {
        CHECK_INT_EQ(psclient_push(p, g, &stale, err, sizeof err), PSCLIENT_OK);
        for (int ps = 0; ps < 2; ps++) {
            add_pushed(&c[ps], &m, sums, by_dtype, &n_sparse, 0, WIRE_DTYPE_BFLOAT16);
            bytes += c[ps].len;
        }
    }
    CHECK(by_dtype[WIRE_DTYPE_BFLOAT16] > 0 && by_dtype[WIRE_DTYPE_FLOAT32] > 0);
    CHECK(fabs(sums[at] - 4.0 * value) <= 0x1p-8);
    free(sums);
    CHECK(fabs(4.0 - 4.0 * value) > 0x1p-8); /* what rounding alone would send */
    /* The pushes are little over half the float32 bytes. */
    CHECK(bytes < 4 * (m.nparams * 2 + m.nparams / 10));
    free(g);
    psclient_free(p);
    model_free(&m);
    catcher_stop(&c[0]);
    catcher_stop(&c[1]);
}

/* rpc.wire_dtype fp16 and rpc.push_topk through psclient, as protobuf-c
 * reads the pushes: fp16 with error feedback delivers a gradient that fp16
 * rounds (1 + 2^-12 + 2^-14, to 1) over 4 pushes within half an fp16 step;
 * a value over 65504 is clamped and counted. Top-k (1%) pushes carry
 * ceil(n / 100) values of each large partition, ascending indices, small
 * ones dense, and what they leave stays for the next pushes: 50 pushes
 * of a gradient, then 101 of zeros, deliver all of it. */
void test_fields_push_fp16_topk(void) {
    catcher_t c[2];
    CHECK(catcher_start(&c[0]) == 0);
    CHECK(catcher_start(&c[1]) == 0);
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    const char *addrs[] = {c[0].addr, c[1].addr};
    psclient_options_t o = {.addrs = addrs, .nps = 2, .deadline_secs = 5.0, .wire_fp16 = true};
    psclient_t *p = psclient_create(&o, &m, &caller, NULL, NULL, err, sizeof err);
    CHECK(p != NULL);
    const float value = 1.0f + 0x1p-12f + 0x1p-14f;
    float *g = xmalloc(m.nparams * sizeof *g);
    double *sums = xcalloc(m.nparams, sizeof *sums);
    for (size_t i = 0; i < m.nparams; i++)
        g[i] = value;
    size_t at = m.vars[0].offset + 5, stale, by_dtype[3] = {0}, n_sparse = 0;
    for (int k = 0; k < 4; k++) {
        CHECK_INT_EQ(psclient_push(p, g, &stale, err, sizeof err), PSCLIENT_OK);
        for (int ps = 0; ps < 2; ps++)
            add_pushed(&c[ps], &m, sums, by_dtype, &n_sparse, 0, WIRE_DTYPE_FLOAT16);
    }
    CHECK(by_dtype[WIRE_DTYPE_FLOAT16] > 0 && by_dtype[WIRE_DTYPE_FLOAT32] > 0);
    CHECK_INT_EQ(by_dtype[WIRE_DTYPE_BFLOAT16], 0);
    CHECK(fabs(sums[at] - 4.0 * value) <= 0x1p-11);
    CHECK(fabs(4.0 - 4.0 * value) > 0x1p-11); /* what rounding alone would send */
    CHECK_INT_EQ(psclient_fp16_clamped(p), 0);
    g[at] = 1e5f;
    CHECK_INT_EQ(psclient_push(p, g, &stale, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(psclient_fp16_clamped(p), 1);
    psclient_free(p);

    o.wire_fp16 = false;
    o.push_topk = 0.01;
    p = psclient_create(&o, &m, &caller, NULL, NULL, err, sizeof err);
    CHECK(p != NULL);
    memset(sums, 0, m.nparams * sizeof *sums);
    for (size_t i = 0; i < m.nparams; i++)
        g[i] = 0.001f * (float)(1 + i % 97);
    memset(by_dtype, 0, sizeof by_dtype);
    size_t bytes = 0;
    for (int k = 0; k < 151; k++) {
        if (k == 50) /* then nothing new: the residual drains, 1% a push */
            memset(g, 0, m.nparams * sizeof *g);
        CHECK_INT_EQ(psclient_push(p, g, &stale, err, sizeof err), PSCLIENT_OK);
        for (int ps = 0; ps < 2; ps++) {
            add_pushed(&c[ps], &m, sums, by_dtype, &n_sparse, 0.01, WIRE_DTYPE_FLOAT32);
            bytes += c[ps].len;
        }
    }
    CHECK(n_sparse > 0);
    CHECK(bytes / 151 < m.nparams * 4 / 20); /* a twentieth of a dense push, or less */
    size_t off = 0;
    for (size_t i = 0; i < m.nparams; i++) {
        double want = 50.0 * 0.001 * (double)(1 + i % 97);
        off += fabs(sums[i] - want) > 1e-4 * want;
    }
    CHECK_INT_EQ(off, 0);
    free(sums);
    free(g);
    psclient_free(p);
    model_free(&m);
    catcher_stop(&c[0]);
    catcher_stop(&c[1]);
}

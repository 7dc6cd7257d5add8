/* common/peers/: the client's reader of pull answers against protobuf-c's unpack on the same bytes
 * (unknown fields, fields out of order, repeated scalars, every truncation);
 * and psclient's statuses against a real PS service on loopback. */
#include "test.h"

#include <stdlib.h>

#include "common/base/util.h"
#include "common/peers/fields.h"
#include "common/peers/psclient.h"
#include "common/peers/pull_read.h"
#include "common/rpc/wire.h"
#include "ps/service.h"
#include "test_helpers.h"

/* ---- The client's reader of pull answers ----------------------------------------- */

/* What pull_read reported. */
typedef struct {
    pull_tensor_t t[8];
    float data[8][16];
    size_t n;
} pulled_t;

static int collect(void *arg, const pull_tensor_t *t) {
    pulled_t *p = arg;
    if (p->n == PS_ARRAY_LEN(p->t) || t->data.len > sizeof p->data[0])
        return 5;
    p->t[p->n] = *t;
    wire_copy(&t->data, p->data[p->n]);
    p->n++;
    return 0;
}

/* Whether the hand reader's view of msg equals protobuf-c's unpacked ref. */
static int same_pull(const pulled_t *got, uint64_t step, uint64_t lineage,
                     const Pstrain__PullResponse *ref) {
    if (step != ref->step || lineage != ref->lineage || got->n != ref->n_tensors)
        return 0;
    for (size_t i = 0; i < got->n; i++) {
        const pull_tensor_t *g = &got->t[i];
        const Pstrain__Tensor *r = ref->tensors[i];
        if (strcmp(g->name, r->name) || g->row_begin != r->row_begin || g->rows != r->rows ||
            g->data.len != r->data.len ||
            (r->data.len && memcmp(got->data[i], r->data.data, r->data.len)))
            return 0;
    }
    return 1;
}

typedef struct {
    uint8_t b[1024];
    size_t n;
} bytes_t;

static void put(bytes_t *o, const void *p, size_t n) {
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put_packed(bytes_t *o, const ProtobufCMessage *m) {
    o->n += protobuf_c_message_pack(m, o->b + o->n);
}

static void put_key(bytes_t *o, uint32_t field, int type) {
    o->n = (size_t)(wire_put_key(o->b + o->n, field, type) - o->b);
}

static void put_varint(bytes_t *o, uint64_t v) {
    o->n = (size_t)(wire_put_varint(o->b + o->n, v) - o->b);
}

/* Unknown fields of every wire type (numbers no message here uses). */
static void put_unknown(bytes_t *o) {
    put_key(o, 15, WIRE_VARINT);
    put_varint(o, 1ull << 60);
    put_key(o, 100, WIRE_FIXED32);
    put(o, "abcd", 4);
    put_key(o, 2000, WIRE_FIXED64);
    put(o, "abcdefgh", 8);
    put_key(o, 9, WIRE_LEN);
    put_varint(o, 3);
    put(o, "xyz", 3);
}

/* A PullResponse as protobuf-c would never write one but must read: lineage
 * before step and twice (the later one stands), unknown fields around and
 * inside tensors, a tensor whose data comes before its name and whose name
 * is given twice, an empty tensor, and tensors protobuf-c packed. */
static void odd_pull(bytes_t *o, const float *a, const float *b) {
    o->n = 0;
    Pstrain__PullResponse lin = PSTRAIN__PULL_RESPONSE__INIT;
    lin.lineage = 5;
    put_packed(o, &lin.base);
    put_unknown(o);
    bytes_t t = {.n = 0};
    Pstrain__Tensor part = PSTRAIN__TENSOR__INIT;
    part.data = (ProtobufCBinaryData){3 * sizeof(float), (uint8_t *)a};
    put_packed(&t, &part.base);
    put_unknown(&t);
    part = (Pstrain__Tensor)PSTRAIN__TENSOR__INIT;
    part.name = "first/name";
    put_packed(&t, &part.base);
    part.name = "dense/kernel";
    part.row_begin = 300;
    part.rows = 1ull << 35;
    put_packed(&t, &part.base);
    put_key(o, FIELD_PULL_TENSORS, WIRE_LEN);
    put_varint(o, t.n);
    put(o, t.b, t.n);
    Pstrain__Tensor t1 = PSTRAIN__TENSOR__INIT, t2 = PSTRAIN__TENSOR__INIT;
    t1.name = "dense/bias";
    t1.rows = 2;
    t1.data = (ProtobufCBinaryData){2 * sizeof(float), (uint8_t *)b};
    Pstrain__Tensor *tp[] = {&t2, &t1};
    Pstrain__PullResponse rest = PSTRAIN__PULL_RESPONSE__INIT;
    rest.step = 77;
    rest.n_tensors = 2;
    rest.tensors = tp;
    rest.lineage = 1ull << 50;
    put_packed(o, &rest.base);
    put_unknown(o);
}

/* A message cut into segments of `size` bytes (0: whole). */
typedef struct {
    rpc_seg_t seg[1024];
    rpc_msg_t msg;
} cut_t;

static void cut(cut_t *c, const uint8_t *data, size_t len, size_t size) {
    size_t n = 0;
    for (size_t at = 0; at < len; at += size ? size : len)
        c->seg[n++] = (rpc_seg_t){data + at, PS_MIN(size ? size : len, len - at)};
    c->msg = (rpc_msg_t){c->seg, n, len};
}

/* Reads msg whole and cut every way; 1 when every reading agrees with ref
 * (NULL: protobuf-c refused it, and so must pull_read). */
static int read_agrees(const uint8_t *msg, size_t len, const Pstrain__PullResponse *ref) {
    static const size_t sizes[] = {0, 1, 3, 7};
    for (size_t s = 0; s < PS_ARRAY_LEN(sizes); s++) {
        cut_t *c = xmalloc(sizeof *c);
        cut(c, msg, len, sizes[s]);
        pulled_t *got = xcalloc(1, sizeof *got);
        uint64_t step, lineage;
        int rc = pull_read(&c->msg, &step, &lineage, collect, got);
        int ok = ref ? rc == 0 && same_pull(got, step, lineage, ref) : rc == -1;
        free(got);
        free(c);
        if (!ok) {
            fprintf(stderr, "len %zu cut %zu: pull_read %d, protobuf-c %s\n", len, sizes[s], rc,
                    ref ? "accepts" : "refuses");
            return 0;
        }
    }
    return 1;
}

void test_pull_read_matches_protobuf_c(void) {
    float a[3] = {1.0f, -2.5f, 3e-20f}, b[2] = {7.0f, 0.125f};
    bytes_t o;
    odd_pull(&o, a, b);
    Pstrain__PullResponse *ref = pstrain__pull_response__unpack(NULL, o.n, o.b);
    CHECK(ref != NULL);
    /* The reference is what the message means: a guard against a test
     * whose odd message protobuf-c reads some other way. */
    CHECK_INT_EQ(ref->step, 77);
    CHECK_INT_EQ(ref->lineage, 1ull << 50);
    CHECK_INT_EQ(ref->n_tensors, 3);
    CHECK(strcmp(ref->tensors[0]->name, "dense/kernel") == 0);
    CHECK_INT_EQ(ref->tensors[0]->rows, 1ull << 35);
    CHECK_INT_EQ(ref->tensors[0]->data.len, sizeof a);
    int ok = read_agrees(o.b, o.n, ref);
    pstrain__pull_response__free_unpacked(ref, NULL);
    CHECK(ok);
    /* And a plain answer as protobuf-c packs it. */
    Pstrain__Tensor t = PSTRAIN__TENSOR__INIT;
    t.name = "w";
    t.rows = 1;
    t.data = (ProtobufCBinaryData){sizeof b, (uint8_t *)b};
    Pstrain__Tensor *tp[] = {&t};
    Pstrain__PullResponse plain = PSTRAIN__PULL_RESPONSE__INIT;
    plain.step = 3;
    plain.n_tensors = 1;
    plain.tensors = tp;
    o.n = 0;
    put_packed(&o, &plain.base);
    CHECK(read_agrees(o.b, o.n, &plain));
}

/* Every truncation of the odd answer, and known fields of the wrong wire
 * type: pull_read refuses exactly what protobuf-c refuses. */
void test_pull_read_truncated_and_malformed(void) {
    float a[3] = {1.0f, 2.0f, 3.0f}, b[2] = {4.0f, 5.0f};
    bytes_t o;
    odd_pull(&o, a, b);
    size_t refused = 0;
    for (size_t len = 0; len < o.n; len++) {
        Pstrain__PullResponse *ref = pstrain__pull_response__unpack(NULL, len, o.b);
        refused += ref == NULL;
        int ok = read_agrees(o.b, len, ref);
        if (ref)
            pstrain__pull_response__free_unpacked(ref, NULL);
        CHECK(ok);
    }
    CHECK(refused > 0);
    static const struct {
        uint32_t field;
        int type;
    } wrong[] = {{FIELD_PULL_STEP, WIRE_LEN},
                 {FIELD_PULL_LINEAGE, WIRE_FIXED64},
                 {FIELD_PULL_TENSORS, WIRE_VARINT}};
    for (size_t i = 0; i < PS_ARRAY_LEN(wrong); i++) {
        bytes_t m = {.n = 0};
        put_key(&m, wrong[i].field, wrong[i].type);
        put(&m, "\x01\x00\x00\x00\x00\x00\x00\x00", wrong[i].type == WIRE_FIXED64 ? 8 : 1);
        if (wrong[i].type == WIRE_LEN)
            put(&m, "z", 1);
        Pstrain__PullResponse *ref = pstrain__pull_response__unpack(NULL, m.n, m.b);
        CHECK(ref == NULL);
        CHECK(read_agrees(m.b, m.n, NULL));
    }
    /* A tensor's name given as a varint. */
    bytes_t m = {.n = 0}, t = {.n = 0};
    put_key(&t, FIELD_TENSOR_NAME, WIRE_VARINT);
    put_varint(&t, 1);
    put_key(&m, FIELD_PULL_TENSORS, WIRE_LEN);
    put_varint(&m, t.n);
    put(&m, t.b, t.n);
    CHECK(pstrain__pull_response__unpack(NULL, m.n, m.b) == NULL);
    CHECK(read_agrees(m.b, m.n, NULL));
}

/* ---- psclient's statuses ------------------------------------------------------------ */

typedef struct {
    int retrying, recovered;
} events_seen_t;

static void saw_retrying(void *arg, const char *err, double max_sleep_s) {
    ((events_seen_t *)arg)->retrying++;
}

static void saw_recovered(void *arg, const char *method) {
    ((events_seen_t *)arg)->recovered++;
}

static psclient_t *client_of(const char *addr, const model_t *m, double max_total_s,
                             const volatile sig_atomic_t *stop, events_seen_t *seen) {
    static Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    const char *addrs[] = {addr};
    psclient_options_t o = {.addrs = addrs,
                            .nps = 1,
                            .deadline_secs = 5.0,
                            .retry_max_secs = 0.05,
                            .retry_max_total_secs = max_total_s,
                            .stop_flag = stop};
    char err[PS_ERRLEN];
    psclient_t *p = psclient_create(&o, m, &caller, NULL, NULL, err, sizeof err);
    if (!p)
        fprintf(stderr, "%s\n", err);
    psclient_events_t ev = {.retrying = saw_retrying, .recovered = saw_recovered, .arg = seen};
    if (p)
        psclient_set_events(p, &ev);
    return p;
}

/* A pull and push of the PS's own model are OK; a client of another model
 * gets PSCLIENT_INVALID for both (the answer does not fit its placement;
 * the PS refuses its push), with the reason in err. */
void test_psclient_status_ok_and_invalid(void) {
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    events_seen_t seen = {0};
    psclient_t *p = client_of(e.addr, &e.m, 0, NULL, &seen);
    CHECK(p != NULL);
    float *w = xcalloc(e.m.nparams, sizeof *w);
    char err[PS_ERRLEN] = "";
    size_t stale = 9;
    CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(psclient_push(p, w, &stale, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(stale, 0);
    CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_OK);
    CHECK_INT_EQ(psclient_step(p, 0), 1);
    CHECK_INT_EQ(seen.retrying + seen.recovered, 0);
    psclient_free(p);
    free(w);

    model_t other;
    CHECK(model_load(&other, "cnn", err, sizeof err) == 0);
    p = client_of(e.addr, &other, 0, NULL, &seen);
    CHECK(p != NULL);
    w = xcalloc(other.nparams, sizeof *w);
    err[0] = '\0';
    CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_INVALID);
    CHECK_STR_CONTAINS(err, "ps0");
    err[0] = '\0';
    CHECK_INT_EQ(psclient_push(p, w, &stale, err, sizeof err), PSCLIENT_INVALID);
    CHECK_STR_CONTAINS(err, "INVALID_ARGUMENT");
    CHECK_INT_EQ(seen.retrying, 0);
    psclient_free(p);
    free(w);
    model_free(&other);
    test_ps_stop(&e);
}

/* A PS that is not there: with a time limit the pull gives up
 * PSCLIENT_UNREACHABLE, saying so, after telling of its retries once; with
 * the stop flag raised it ends PSCLIENT_STOPPED instead. */
void test_psclient_status_unreachable_and_stopped(void) {
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    char addr[64];
    snprintf(addr, sizeof addr, "%s", e.addr);
    test_ps_stop(&e); /* the port is free again: connections to it are refused */
    model_t m;
    char err[PS_ERRLEN] = "";
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    float *w = xcalloc(m.nparams, sizeof *w);
    events_seen_t seen = {0};
    psclient_t *p = client_of(addr, &m, 0.3, NULL, &seen);
    CHECK(p != NULL);
    CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_UNREACHABLE);
    CHECK_STR_CONTAINS(err, "gave up");
    CHECK_INT_EQ(seen.retrying, 1);
    CHECK_INT_EQ(seen.recovered, 0);
    psclient_free(p);

    static volatile sig_atomic_t stop = 1;
    p = client_of(addr, &m, 0, &stop, &seen);
    CHECK(p != NULL);
    size_t stale;
    CHECK_INT_EQ(psclient_push(p, w, &stale, err, sizeof err), PSCLIENT_STOPPED);
    CHECK_STR_CONTAINS(err, "stopped");
    CHECK(strcmp(psclient_status_name(PSCLIENT_STOPPED), "stopped") == 0);
    psclient_free(p);
    free(w);
    model_free(&m);
}

/* Pushes tagged with the pull before the last (the pipeline's gradients):
 * pull, push, pull, push, ... against a real PS, where nobody else pushes.
 * Tagged with the last pull every push is fresh (staleness 0); tagged with
 * the one before, pushes 3 and 4 are one update stale (pushes 1 and 2 carry
 * step 0, which counts as fresh). */
void test_psclient_tags_previous_pull(void) {
    for (int previous = 0; previous <= 1; previous++) {
        test_ps_t e;
        CHECK(test_ps_start(&e, false, NULL) == 0);
        events_seen_t seen = {0};
        psclient_t *p = client_of(e.addr, &e.m, 0, NULL, &seen);
        CHECK(p != NULL);
        psclient_tag_previous_pull(p, previous);
        float *w = xcalloc(e.m.nparams, sizeof *w);
        char err[PS_ERRLEN] = "";
        size_t stale;
        for (int k = 0; k < 4; k++) {
            CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_OK);
            CHECK_INT_EQ(psclient_push(p, w, &stale, err, sizeof err), PSCLIENT_OK);
        }
        CHECK_INT_EQ(psclient_pull(p, w, false, err, sizeof err), PSCLIENT_OK);
        CHECK_INT_EQ(psclient_step(p, 0), 4);
        /* Every push was answered: the PS is done with them. */
        CHECK_INT_EQ(e.svc.shard.staleness_sum, (previous ? 2 : 0));
        CHECK_INT_EQ(e.svc.shard.staleness_max, (previous ? 1 : 0));
        psclient_free(p);
        test_ps_stop(&e);
        free(w);
    }
}

/* The parameter server's messages read and written in place: the wire
 * reader over segments, the PushRequest decoder and the PullResponse
 * encoder, each against protobuf-c on the same messages, cut into segments
 * every way that matters; and the lending of the weights to pull answers. */
#include "test.h"

#include <math.h>
#include <stdlib.h>

#include "common/base/util.h"
#include "common/rpc/wire.h"
#include "ps/pull.h"
#include "ps/push.h"
#include "ps/shard.h"

/* A message cut into segments whose sizes cycle through sizes[]. */
typedef struct {
    rpc_seg_t seg[4096];
    rpc_msg_t msg;
} cut_t;

static void cut(cut_t *c, const uint8_t *data, size_t len, const size_t *sizes, size_t nsizes) {
    size_t n = 0, at = 0;
    for (size_t k = 0; at < len && n < PS_ARRAY_LEN(c->seg) - 1; k++) {
        size_t take = PS_MIN(sizes[k % nsizes], len - at);
        c->seg[n++] = (rpc_seg_t){data + at, take};
        at += take;
    }
    if (at < len)
        c->seg[n++] = (rpc_seg_t){data + at, len - at};
    c->msg = (rpc_msg_t){c->seg, n, len};
}

/* Ways to cut: whole, every byte alone, odd sizes that split every field
 * and float somewhere, empty segments between. */
static const size_t cut_whole[] = {SIZE_MAX};
static const size_t cut_bytes[] = {1};
static const size_t cut_odd[] = {7, 1, 3, 64};
static const size_t cut_empty[] = {5, 0, 2};
static const struct {
    const size_t *sizes;
    size_t n;
} cuts[] = {{cut_whole, 1}, {cut_bytes, 1}, {cut_odd, 4}, {cut_empty, 3}};

typedef struct {
    float got[64];
    size_t next;
    int bad;
} floats_seen_t;

static int see_floats(void *ctx, size_t first, const uint8_t *bytes, size_t n) {
    floats_seen_t *s = ctx;
    if (first != s->next || first + n > PS_ARRAY_LEN(s->got))
        s->bad = 1;
    else
        memcpy(s->got + first, bytes, n * sizeof(float));
    s->next = first + n;
    return 0;
}

/* A field of 64 floats (3 bytes in, so unaligned), cut every way: the reader
 * finds it, and walking or copying it gives every value once, in order. */
void test_wire_floats_pieces(void) {
    float want[64];
    for (size_t i = 0; i < 64; i++)
        want[i] = (float)i * 1.5f - 7.0f;
    uint8_t buf[3 + sizeof want + 2], *at = buf;
    at = wire_put_key(at, 1, WIRE_LEN);
    at = wire_put_varint(at, sizeof want);
    CHECK_INT_EQ(at - buf, 3);
    memcpy(at, want, sizeof want);
    at += sizeof want;
    at = wire_put_key(at, 2, WIRE_VARINT);
    at = wire_put_varint(at, 5);
    for (size_t c = 0; c < PS_ARRAY_LEN(cuts); c++) {
        cut_t k;
        cut(&k, buf, sizeof buf, cuts[c].sizes, cuts[c].n);
        wire_reader_t r;
        wire_reader_init(&r, &k.msg);
        uint32_t field;
        int type;
        wire_bytes_t fl;
        CHECK_INT_EQ(wire_next(&r, &field, &type), 1);
        CHECK(field == 1 && type == WIRE_LEN && wire_bytes(&r, &fl) == 0);
        CHECK_INT_EQ(fl.len, sizeof want);
        floats_seen_t s = {0};
        CHECK(wire_floats(&fl, see_floats, &s) == 0);
        CHECK(!s.bad);
        CHECK_INT_EQ(s.next, 64);
        CHECK(memcmp(s.got, want, sizeof want) == 0);
        float copy[64];
        wire_copy(&fl, copy);
        CHECK(memcmp(copy, want, sizeof want) == 0);
        uint64_t v;
        CHECK_INT_EQ(wire_next(&r, &field, &type), 1);
        CHECK(field == 2 && type == WIRE_VARINT && wire_varint(&r, &v) == 0 && v == 5);
        CHECK_INT_EQ(wire_next(&r, &field, &type), 0);
    }
}

/* ---- PushRequest --------------------------------------------------------------- */

typedef struct {
    float a[15], b[2];
    Pstrain__Tensor t[3];
    Pstrain__Tensor *tp[3];
    Pstrain__Caller caller;
    Pstrain__PushRequest req;
    uint8_t *packed;
    size_t len;
} push_msg_t;

/* A push with every field set, a tensor with no fields at all, and unknown
 * fields (a varint, a fixed32, a fixed64 and a string) at the end. */
static void push_msg(push_msg_t *m) {
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < 15; i++)
        m->a[i] = (float)i / 3.0f;
    m->b[0] = -1.0f;
    m->b[1] = 2.5e-30f;
    for (int i = 0; i < 3; i++) {
        Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
        m->t[i] = init;
        m->tp[i] = &m->t[i];
    }
    m->t[0].name = "conv2d/kernel";
    m->t[0].rows = 3;
    m->t[0].data = (ProtobufCBinaryData){sizeof m->a, (uint8_t *)m->a};
    m->t[1].name = "dense/bias";
    m->t[1].row_begin = 1000;
    m->t[1].rows = 2;
    m->t[1].data = (ProtobufCBinaryData){sizeof m->b, (uint8_t *)m->b};
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    m->caller = c;
    m->caller.role = "worker";
    m->caller.index = 3;
    m->caller.incarnation = 99;
    Pstrain__PushRequest r = PSTRAIN__PUSH_REQUEST__INIT;
    m->req = r;
    m->req.caller = &m->caller;
    m->req.step = 12345678901ull;
    m->req.partial = true;
    m->req.seq = 4242;
    m->req.n_grads = 3;
    m->req.grads = m->tp;
    size_t len = pstrain__push_request__get_packed_size(&m->req);
    m->packed = xmalloc(len + 64);
    pstrain__push_request__pack(&m->req, m->packed);
    uint8_t *at = m->packed + len;
    at = wire_put_varint(wire_put_key(at, 15, WIRE_VARINT), 1ull << 40);
    at = wire_put_key(at, 16, WIRE_FIXED32);
    memset(at, 0xab, 4);
    at += 4;
    at = wire_put_key(at, 17, WIRE_FIXED64);
    memset(at, 0xcd, 8);
    at += 8;
    at = wire_put_varint(wire_put_key(at, 18, WIRE_LEN), 3);
    memcpy(at, "xyz", 3);
    at += 3;
    m->len = (size_t)(at - m->packed);
}

/* 0 when the decoded push p is the one protobuf-c unpacked. */
static int same_push(const ps_push_t *p, const Pstrain__PushRequest *r) {
    if (p->has_caller != (r->caller != NULL) || p->step != r->step || p->partial != r->partial ||
        p->seq != r->seq || p->n_grads != r->n_grads ||
        (r->caller &&
         (p->caller_index != r->caller->index || p->caller_incarnation != r->caller->incarnation)))
        return -1;
    for (size_t i = 0; i < r->n_grads; i++) {
        const ps_grad_t *g = &p->grads[i];
        const Pstrain__Tensor *t = r->grads[i];
        if (strcmp(g->name, t->name) || g->row_begin != t->row_begin || g->rows != t->rows ||
            g->data.len != t->data.len)
            return -1;
        uint8_t *copy = xmalloc(g->data.len + 1);
        wire_copy(&g->data, copy);
        int differ = g->data.len && memcmp(copy, t->data.data, g->data.len);
        free(copy);
        if (differ)
            return -1;
    }
    return 0;
}

void test_ps_push_decode_matches_protobuf_c(void) {
    push_msg_t m;
    push_msg(&m);
    Pstrain__PushRequest *want = pstrain__push_request__unpack(NULL, m.len, m.packed);
    CHECK(want != NULL);
    CHECK_INT_EQ(want->n_grads, 3);
    ps_push_t p;
    ps_push_init(&p);
    for (size_t c = 0; c < PS_ARRAY_LEN(cuts); c++) {
        cut_t k;
        cut(&k, m.packed, m.len, cuts[c].sizes, cuts[c].n);
        CHECK(ps_push_decode(&p, &k.msg) == 0);
        CHECK(same_push(&p, want) == 0);
    }
    /* A push with no fields at all: no caller, no tensors. */
    rpc_msg_t empty = {NULL, 0, 0};
    CHECK(ps_push_decode(&p, &empty) == 0);
    CHECK(!p.has_caller && p.n_grads == 0 && p.step == 0);
    /* And from protobuf-c's own struct. */
    ps_push_from_pb(&p, want);
    CHECK(same_push(&p, want) == 0);
    pstrain__push_request__free_unpacked(want, NULL);
    ps_push_free(&p);
    free(m.packed);
}

/* The decoder refuses what protobuf-c refuses and takes what it takes, with
 * the same values: every truncation of a push, and thousands of pushes with
 * a few bytes changed (a million passed once; 20,000 here keep it quick). */
void test_ps_push_decode_malformed(void) {
    push_msg_t m;
    push_msg(&m);
    uint8_t *buf = xmalloc(m.len);
    ps_push_t p;
    ps_push_init(&p);
    size_t mismatches = 0, refused = 0;
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (size_t trial = 0; trial < m.len + 20000; trial++) {
        size_t len = m.len;
        memcpy(buf, m.packed, len);
        if (trial < m.len) {
            len = trial;
        } else {
            for (int k = 0; k < 1 + (int)(trial % 3); k++) {
                state = state * 6364136223846793005ull + 1442695040888963407ull;
                buf[(state >> 33) % len] = (uint8_t)(state >> 25);
            }
        }
        Pstrain__PushRequest *want = pstrain__push_request__unpack(NULL, len, buf);
        cut_t k;
        cut(&k, buf, len, cut_odd, PS_ARRAY_LEN(cut_odd));
        int got = ps_push_decode(&p, &k.msg);
        refused += want == NULL;
        if ((want != NULL) != (got == 0) || (want && same_push(&p, want))) {
            if (mismatches++ < 5) {
                fprintf(stderr, "  trial %zu (%zu bytes): protobuf-c %s, ps_push_decode %s\n",
                        trial, len, want ? "accepts" : "refuses", got == 0 ? "accepts" : "refuses");
                for (size_t i = 0; i < len; i++)
                    if (i >= m.len || buf[i] != m.packed[i])
                        fprintf(stderr, "    byte %zu: %02x (was %02x)\n", i, buf[i], m.packed[i]);
            }
        }
        if (want)
            pstrain__push_request__free_unpacked(want, NULL);
    }
    CHECK_INT_EQ(mismatches, 0);
    CHECK(refused > 100); /* the trials did test refusals */
    ps_push_free(&p);
    free(buf);
    free(m.packed);
}

/* ---- PullResponse and the lent weights ------------------------------------------- */

/* A shard of the MLP: ps `index` of nps, SGD at learning rate 0.5. */
static int shard_of(ps_shard_t *s, model_t *m, int index, int nps) {
    char err[PS_ERRLEN];
    if (model_load(m, "mlp", err, sizeof err))
        return -1;
    ps_shard_opts_t o = {.index = index, .nps = nps, .max_workers = 2, .seed = 42};
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.5;
    return ps_shard_init(s, m, &o, err, sizeof err);
}

/* The pieces of an encoded answer, joined. */
static uint8_t *join(const ps_pull_t *p, size_t *len) {
    *len = 0;
    for (size_t i = 0; i < p->npiece; i++)
        *len += p->piece[i].len;
    uint8_t *out = xmalloc(*len + 1), *at = out;
    for (size_t i = 0; i < p->npiece; i++) {
        memcpy(at, p->piece[i].data, p->piece[i].len);
        at += p->piece[i].len;
    }
    return out;
}

/* The encoder writes protobuf-c's bytes, for every partition or some, with
 * step and lineage 0 (left out) or not, and lends every tensor's data from
 * the weights instead of copying it. */
void test_ps_pull_encode_matches_protobuf_c(void) {
    ps_shard_t s;
    model_t m;
    CHECK(shard_of(&s, &m, 1, 2) == 0);
    ps_pull_t p;
    ps_pull_init(&p);
    char *names[] = {(char *)s.tensors[0].name};
    char err[PS_ERRLEN];
    for (int round = 0; round < 4; round++) {
        Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
        if (round & 1) {
            req.n_names = 1;
            req.names = names;
        }
        Pstrain__PullResponse resp = PSTRAIN__PULL_RESPONSE__INIT;
        CHECK(ps_shard_pull(&s, &req, &resp, err, sizeof err) == 0);
        resp.step = round & 2 ? 300 : 0;
        resp.lineage = round & 2 ? 1ull << 50 : 0;
        rpc_blob_t *w = ps_shard_weights(&s);
        ps_pull_encode(&p, &resp, w);
        size_t len, want_len = pstrain__pull_response__get_packed_size(&resp);
        uint8_t *got = join(&p, &len), *want = xmalloc(want_len);
        pstrain__pull_response__pack(&resp, want);
        CHECK_INT_EQ(len, want_len);
        CHECK(memcmp(got, want, len) == 0);
        size_t lent = 0;
        for (size_t i = 0; i < p.npiece; i++)
            if (p.piece[i].blob == w)
                lent += p.piece[i].len;
        size_t data = 0;
        for (size_t i = 0; i < resp.n_tensors; i++)
            data += resp.tensors[i]->data.len;
        CHECK_INT_EQ(lent, data);
        free(got);
        free(want);
    }
    ps_pull_free(&p);
    ps_shard_free(&s);
    model_free(&m);
}

/* A push takes the lent weights back: in place once no send holds them, on a
 * copy while one does (the send's bytes stay as they were). */
void test_ps_shard_lends_weights(void) {
    ps_shard_t s;
    model_t m;
    CHECK(shard_of(&s, &m, 0, 1) == 0);
    size_t n = s.store.size;
    float *g = xmalloc(n * sizeof(float)), *before = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        g[i] = 0.25f;
    Pstrain__Tensor *t = xcalloc(s.store.nparts, sizeof *t);
    Pstrain__Tensor **tp = xcalloc(s.store.nparts, sizeof *tp);
    for (size_t i = 0; i < s.store.nparts; i++) {
        t[i] = s.tensors[i];
        t[i].data.data = (uint8_t *)(g + s.store.parts[i].offset);
        tp[i] = &t[i];
    }
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    Pstrain__PushRequest req = PSTRAIN__PUSH_REQUEST__INIT;
    req.caller = &caller;
    req.n_grads = s.store.nparts;
    req.grads = tp;
    bool stale;
    char err[PS_ERRLEN];
    /* Lent, but every send is done: the push updates in place. */
    float *w = s.store.w;
    CHECK(ps_shard_weights(&s) != NULL);
    CHECK(ps_shard_push(&s, &req, &stale, err, sizeof err) == 0);
    CHECK(s.store.w == w);
    /* A send still holds them: the push goes to a copy. */
    rpc_blob_t *send = rpc_blob_ref(ps_shard_weights(&s));
    memcpy(before, w, n * sizeof(float));
    CHECK(ps_shard_push(&s, &req, &stale, err, sizeof err) == 0);
    CHECK(s.store.w != w);
    CHECK(memcmp(before, rpc_blob_data(send), n * sizeof(float)) == 0);
    CHECK_NEAR(s.store.w[0], before[0] - 0.125f, 1e-6);
    CHECK(s.tensors[0].data.data == (uint8_t *)s.store.w);
    rpc_blob_unref(send); /* frees the old weights (ASan checks) */
    /* A restore and freeing the shard while a send holds the weights. */
    send = rpc_blob_ref(ps_shard_weights(&s));
    ps_shard_reset(&s);
    CHECK(s.store.w != (float *)(void *)rpc_blob_data(send));
    rpc_blob_unref(send);
    send = rpc_blob_ref(ps_shard_weights(&s));
    ps_shard_free(&s);
    rpc_blob_unref(send);
    free(t);
    free(tp);
    free(g);
    free(before);
    model_free(&m);
}

/* A bfloat16 answer (rpc.wire_dtype bf16): protobuf-c's own bytes for the
 * tensors as sent; protobuf-c reads back large tensors as bfloat16 within
 * half a bfloat16 step of the weights, small ones as the float32 weights;
 * the buffer is the answer's own, not the lent weights. */
void test_ps_pull_encode_bf16(void) {
    ps_shard_t s;
    model_t m;
    CHECK(shard_of(&s, &m, 0, 1) == 0);
    ps_pull_t p;
    ps_pull_init(&p);
    char err[PS_ERRLEN];
    Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
    Pstrain__PullResponse resp = PSTRAIN__PULL_RESPONSE__INIT;
    CHECK(ps_shard_pull(&s, &req, &resp, err, sizeof err) == 0);
    resp.step = 7;
    rpc_blob_t *blob = ps_pull_encode_bf16(&p, &resp);
    Pstrain__PullResponse sent = resp;
    sent.tensors = p.conv_ptrs;
    size_t len, want_len = pstrain__pull_response__get_packed_size(&sent);
    uint8_t *got = join(&p, &len), *want = xmalloc(want_len);
    pstrain__pull_response__pack(&sent, want);
    CHECK_INT_EQ(len, want_len);
    CHECK(memcmp(got, want, len) == 0);
    Pstrain__PullResponse *r = pstrain__pull_response__unpack(NULL, len, got);
    CHECK(r != NULL && r->n_tensors == resp.n_tensors);
    size_t n_bf16 = 0, bytes = 0;
    for (size_t i = 0; r && i < r->n_tensors; i++) {
        const Pstrain__Tensor *t = r->tensors[i];
        const float *w = (const float *)(const void *)resp.tensors[i]->data.data;
        size_t n = resp.tensors[i]->data.len / sizeof(float);
        bool bf16 = t->dtype == PSTRAIN__WIRE_DTYPE__BFLOAT16;
        CHECK_INT_EQ(bf16, n >= WIRE_BF16_MIN_VALUES);
        CHECK_INT_EQ(t->data.len, n * (bf16 ? 2 : 4));
        n_bf16 += bf16;
        bytes += t->data.len;
        for (size_t k = 0; k < n && t->data.len == n * (bf16 ? 2 : 4); k++) {
            float x;
            if (bf16)
                wire_bf16_to_floats(&x, t->data.data + 2 * k, 1);
            else
                memcpy(&x, t->data.data + 4 * k, sizeof x);
            CHECK(fabsf(x - w[k]) <= fabsf(w[k]) * 0x1p-8f);
            if (fabsf(x - w[k]) > fabsf(w[k]) * 0x1p-8f)
                break;
        }
    }
    CHECK(n_bf16 > 0);
    CHECK(bytes < s.store.size * 2 + s.store.size / 10);
    size_t lent = 0;
    for (size_t i = 0; i < p.npiece; i++)
        lent += p.piece[i].blob == blob ? p.piece[i].len : 0;
    CHECK_INT_EQ(lent, bytes);
    if (r)
        pstrain__pull_response__free_unpacked(r, NULL);
    rpc_blob_unref(blob);
    free(got);
    free(want);
    ps_pull_free(&p);
    ps_shard_free(&s);
    model_free(&m);
}

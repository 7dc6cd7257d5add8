/* Fewer bytes on the wire: IEEE half conversion (rpc.wire_dtype fp16, both
 * the F16C and the portable path), top-k selection with error feedback
 * (rpc.push_topk), the PS's reading of a sparse tensor's indices, and its
 * sparse update against the dense one it stands for. */
#include "test.h"

#include <math.h>
#include <stdlib.h>

#include "common/base/util.h"
#include "common/peers/codec.h"
#include "common/peers/fields.h"
#include "common/rpc/wire.h"
#include "common/rpc/wire_fp16.h"
#include "ps/pull.h"
#include "ps/push.h"
#include "ps/shard.h"
#include "shard_tensors.h"
#include "ps/sparse.h"
#include "ps/staleness.h"

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bfloat16 a block at a time (common/rpc/wire.c): known values (ties to
 * even, the largest float rounding to Inf, NaN kept NaN), at every length
 * around the 256-value block and at an odd address; the finiteness check
 * (and fp16's) finds a NaN or Inf wherever it lies; error feedback keeps exactly what
 * rounding left out. */
void test_wire_bf16_blocks(void) {
    static const struct {
        uint32_t in;
        uint16_t out;
    } known[] = {
        {0x3f800000u, 0x3f80u}, /* 1 */
        {0x3f808000u, 0x3f80u}, /* 1 + 2^-8: a tie, to the even 1 */
        {0x3f818000u, 0x3f82u}, /* 1 + 3 * 2^-8: a tie, to the even 1 + 2^-6 */
        {0x3f808001u, 0x3f81u}, /* just past the tie: up */
        {0xbf818000u, 0xbf82u}, /* the sign kept */
        {0x7f7fffffu, 0x7f80u}, /* the largest float: Inf */
        {0x7f800000u, 0x7f80u}, /* Inf */
        {0x00000001u, 0x0000u}, /* the smallest subnormal: 0 */
    };
    const size_t lengths[] = {0, 1, 7, 255, 256, 257, 700};
    uint8_t *buf = xmalloc(2 * 700 + 1), *at = buf + 1; /* an odd address */
    float *src = xmalloc(700 * sizeof(float)), *back = xmalloc(700 * sizeof(float));
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        size_t n = lengths[li];
        for (size_t i = 0; i < n; i++)
            src[i] = from_bits(known[i % 8].in);
        wire_bf16_from_floats(at, src, n);
        for (size_t i = 0; i < n; i++)
            CHECK_INT_EQ(at[2 * i] | at[2 * i + 1] << 8, known[i % 8].out);
        wire_bf16_to_floats(back, at, n);
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &back[i], sizeof u);
            CHECK_INT_EQ(u, (uint32_t)known[i % 8].out << 16);
        }
        CHECK_INT_EQ(wire_bf16_check_finite(at, n), n > 5 ? -1 : 0); /* Inf from the 6th */
        for (size_t i = 0; i < n; i++) /* finite everywhere but one place */
            src[i] = 1.0f + (float)i;
        for (size_t bad = 0; bad < n; bad += n / 3 + 1) {
            for (int kind = 0; kind < 2; kind++) {
                float keep = src[bad];
                src[bad] = kind ? NAN : -HUGE_VALF;
                wire_bf16_from_floats(at, src, n);
                CHECK_INT_EQ(wire_bf16_check_finite(at, n), -1);
                uint16_t h = (uint16_t)(at[2 * bad] | at[2 * bad + 1] << 8);
                CHECK(kind ? (h & 0x7fffu) > 0x7f80u : h == 0xff80u);
                wire_fp16_from_floats(at, src, n); /* and the fp16 check, likewise */
                CHECK_INT_EQ(wire_fp16_check_finite(at, n), -1);
                src[bad] = keep;
            }
        }
        wire_bf16_from_floats(at, src, n);
        CHECK_INT_EQ(wire_bf16_check_finite(at, n), 0);
        wire_fp16_from_floats(at, src, n);
        CHECK_INT_EQ(wire_fp16_check_finite(at, n), 0);
    }
    /* Error feedback: 1 + 2^-9 rounds to 1; the residual keeps 2^-9, and
     * the next push of the same value carries 1 + 2^-8 (a tie, to the even
     * 1 again) with 2^-8 left: exactly what was not sent. */
    float g[300], r[300] = {0};
    for (size_t i = 0; i < 300; i++)
        g[i] = 1.0f + 0x1p-9f;
    wire_bf16_feedback(at, g, r, 300);
    for (size_t i = 0; i < 300; i++) {
        CHECK_INT_EQ(at[2 * i] | at[2 * i + 1] << 8, 0x3f80u);
        CHECK(r[i] == 0x1p-9f);
    }
    wire_bf16_feedback(at, g, r, 300);
    for (size_t i = 0; i < 300; i++)
        CHECK(r[i] == 0x1p-8f);
    free(buf);
    free(src);
    free(back);
}

/* Known values, rounding to nearest even at the ties, the edges of the
 * range and of the subnormals; and every half but NaN reads back to its
 * own bits. */
void test_wire_fp16_portable(void) {
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {65504.0f, 0x7bff},
        {65519.0f, 0x7bff},        /* under the tie: down to the largest half */
        {65520.0f, 0x7c00},        /* the tie: to the even Inf */
        {1.0f + 0x1p-11f, 0x3c00}, /* tie, 1.0's mantissa is even */
        {1.0f + 0x3p-11f, 0x3c02}, /* tie, rounds up to the even one */
        {1.0f + 0x1p-10f, 0x3c01},
        {0x1p-14f, 0x0400},     /* the smallest normal */
        {0x1p-24f, 0x0001},     /* the smallest subnormal */
        {0x1p-25f, 0x0000},     /* tie between 0 and 2^-24: to 0 */
        {0x3p-26f, 0x0001},     /* 0.75 * 2^-24: up */
        {0x3p-25f, 0x0002},     /* 1.5 * 2^-24: tie, to even 2 */
        {0x1.ff8p-15f, 0x03ff}, /* the largest subnormal */
        {0x1.ffcp-15f, 0x0400}, /* past it, the tie rounds into the normals */
        {HUGE_VALF, 0x7c00},
        {-HUGE_VALF, 0xfc00},
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(cases); i++) {
        if (wire_fp16_of(cases[i].f) != cases[i].h)
            fprintf(stderr, "case %zu: %a -> %04x, want %04x\n", i, (double)cases[i].f,
                    wire_fp16_of(cases[i].f), cases[i].h);
        CHECK_INT_EQ(wire_fp16_of(cases[i].f), cases[i].h);
    }
    CHECK(isnan(wire_fp16_value(wire_fp16_of(from_bits(0x7fc00001u)))));
    size_t bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (!nan && wire_fp16_of(wire_fp16_value((uint16_t)h)) != h)
            bad++;
    }
    CHECK_INT_EQ(bad, 0);
    CHECK(wire_fp16_value(0x0001) == 0x1p-24f);
    CHECK(wire_fp16_value(0x7bff) == 65504.0f);
}

/* The F16C path (where this CPU has it) gives the portable path's bits for
 * floats across the whole range, subnormals and ties included. */
void test_wire_fp16_hw_matches_portable(void) {
    if (!wire_fp16_hw()) {
        test_skip("no F16C on this CPU: the portable path alone is used");
        return;
    }
    enum { N = 1 << 16 };
    float *x = xmalloc(N * sizeof *x), *back = xmalloc(N * sizeof *back),
          *back_sw = xmalloc(N * sizeof *back_sw);
    uint8_t *hw = xmalloc(2 * N), *sw = xmalloc(2 * N);
    uint64_t r = 12345;
    for (size_t i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        /* exponents around half's range: from 2^-30 to 2^17 */
        uint32_t e = 97 + (uint32_t)(r >> 58) % 48, m = (uint32_t)(r >> 20) & 0x7fffffu;
        if (i % 4 == 0)
            m &= ~0x1fffu, m |= 0x1000u; /* exact ties */
        x[i] = from_bits((uint32_t)(r >> 63) << 31 | e << 23 | m);
    }
    size_t c_hw = wire_fp16_from_floats(hw, x, N);
    wire_fp16_to_floats(back, hw, N);
    wire_fp16_force_portable(true);
    size_t c_sw = wire_fp16_from_floats(sw, x, N);
    wire_fp16_to_floats(back_sw, sw, N);
    wire_fp16_force_portable(false);
    CHECK_INT_EQ(c_hw, c_sw);
    CHECK(c_hw > 0); /* some were over 65504 */
    CHECK(memcmp(hw, sw, 2 * N) == 0);
    CHECK(memcmp(back, back_sw, N * sizeof *back) == 0);
    free(x);
    free(back);
    free(back_sw);
    free(hw);
    free(sw);
}

/* Out of range: clamped to +-65504 and counted; NaN and Inf pass as they
 * are, and the check finds them. */
void test_wire_fp16_clamp(void) {
    const float x[6] = {1e5f, -70000.0f, 65504.0f, 0.5f, NAN, HUGE_VALF};
    uint8_t h[12];
    float back[6];
    CHECK_INT_EQ(wire_fp16_from_floats(h, x, 4), 2);
    wire_fp16_to_floats(back, h, 4);
    CHECK(back[0] == 65504.0f && back[1] == -65504.0f && back[2] == 65504.0f && back[3] == 0.5f);
    CHECK_INT_EQ(wire_fp16_check_finite(h, 4), 0);
    CHECK_INT_EQ(wire_fp16_from_floats(h, x, 6), 2);
    CHECK_INT_EQ(wire_fp16_check_finite(h + 8, 1), -1);
    CHECK_INT_EQ(wire_fp16_check_finite(h + 10, 1), -1);
}

/* Top-k against a sort: the k largest magnitudes, ascending indices, the
 * lower indices among ties; NaN first of all. */
void test_codec_topk_select(void) {
    enum { N = 5000 };
    float *x = xmalloc(N * sizeof *x), *scratch = xmalloc(N * sizeof *scratch);
    uint32_t *idx = xmalloc(N * sizeof *idx);
    uint64_t r = 99;
    for (size_t i = 0; i < N; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(r >> 54) - 512) / 64.0f; /* many ties */
    }
    const size_t ks[] = {1, 7, 50, 499, 2500, N};
    for (size_t c = 0; c < PS_ARRAY_LEN(ks); c++) {
        size_t k = ks[c];
        codec_topk_select(x, N, k, idx, scratch);
        /* the smallest magnitude taken is at least the largest left out */
        uint8_t *taken = xcalloc(N, 1);
        float min_in = HUGE_VALF, max_out = 0;
        for (size_t j = 0; j < k; j++) {
            CHECK(idx[j] < N);
            if (j)
                CHECK(idx[j] > idx[j - 1]);
            taken[idx[j]] = 1;
            min_in = fminf(min_in, fabsf(x[idx[j]]));
        }
        int ties_ok = 1;
        for (size_t i = 0; i < N; i++) {
            if (taken[i])
                continue;
            max_out = fmaxf(max_out, fabsf(x[i]));
            /* a tie left out comes after every tie taken */
            if (fabsf(x[i]) == min_in && k > 0 && i < idx[k - 1])
                for (size_t j = 0; j < k; j++)
                    ties_ok &= !(fabsf(x[idx[j]]) == min_in && idx[j] > i);
        }
        CHECK(k == N || min_in >= max_out);
        CHECK(ties_ok);
        free(taken);
    }
    x[17] = NAN;
    codec_topk_select(x, N, 1, idx, scratch);
    CHECK_INT_EQ(idx[0], 17);
    free(x);
    free(scratch);
    free(idx);
}

/* Error feedback: over many pushes, what was sent plus what is still kept
 * adds up to the gradients' sum (fp32 values: exactly what e held; fp16:
 * to its rounding), so nothing is lost, only delayed. */
void test_codec_topk_feedback(void) {
    enum { N = 2048, STEPS = 50 };
    const uint64_t dtypes[] = {WIRE_DTYPE_FLOAT32, WIRE_DTYPE_FLOAT16, WIRE_DTYPE_BFLOAT16};
    for (size_t d = 0; d < PS_ARRAY_LEN(dtypes); d++) {
        float *g = xmalloc(N * sizeof *g), *res = xcalloc(N, sizeof *res),
              *scratch = xmalloc(N * sizeof *scratch), *vals = xmalloc(N * sizeof *vals);
        double *sent = xcalloc(N, sizeof *sent), *want = xcalloc(N, sizeof *want);
        uint32_t *idx = xmalloc(N * sizeof *idx);
        uint8_t *wire = xmalloc(N * 4);
        size_t k = codec_topk_count(N, 0.01);
        CHECK_INT_EQ(k, 21);
        uint64_t r = 7;
        for (int s = 0; s < STEPS; s++) {
            for (size_t i = 0; i < N; i++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                g[i] = (float)((double)(r >> 11) / 9007199254740992.0 - 0.5) * 0.01f;
                want[i] += g[i];
            }
            CHECK_INT_EQ(
                codec_topk_feedback(dtypes[d], g, res, N, k, idx, wire, scratch, NULL, 0.0f), 0);
            codec_decode(dtypes[d], vals, wire, k);
            for (size_t j = 0; j < k; j++)
                sent[idx[j]] += vals[j];
        }
        double worst = 0, total = 0;
        for (size_t i = 0; i < N; i++) {
            worst = fmax(worst, fabs(sent[i] + res[i] - want[i]));
            total += fabs(sent[i]);
        }
        CHECK(total > 0.1);
        CHECK(worst < 1e-5);
        free(g);
        free(res);
        free(scratch);
        free(vals);
        free(sent);
        free(want);
        free(idx);
        free(wire);
    }
    CHECK_INT_EQ(codec_topk_count(100, 1e-9), 1);
    CHECK_INT_EQ(codec_topk_count(100, 1.0), 100);
    CHECK_INT_EQ(codec_topk_count(1000, 0.0105), 11);
}

/* The PS's push decoder reads a tensor's indices as protobuf-c does:
 * packed (what protobuf-c writes), and one varint at a time. */
void test_ps_push_decode_indices(void) {
    uint32_t want[5] = {0, 3, 200, 70000, 4000000000u};
    float v[5] = {1, 2, 3, 4, 5};
    Pstrain__Tensor t = PSTRAIN__TENSOR__INIT, *tp = &t;
    t.name = "dense/kernel";
    t.rows = 3;
    t.data = (ProtobufCBinaryData){sizeof v, (uint8_t *)v};
    t.n_indices = 5;
    t.indices = want;
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    c.role = "worker";
    Pstrain__PushRequest req = PSTRAIN__PUSH_REQUEST__INIT;
    req.caller = &c;
    req.n_grads = 1;
    req.grads = &tp;
    size_t len = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *buf = xmalloc(len + 64);
    protobuf_c_message_pack(&req.base, buf);
    ps_push_t p;
    ps_push_init(&p);
    rpc_seg_t seg = {buf, len};
    rpc_msg_t m = {.seg = &seg, .nseg = 1, .len = len};
    CHECK_INT_EQ(ps_push_decode(&p, &m), 0);
    CHECK_INT_EQ(p.n_grads, 1);
    CHECK_INT_EQ(p.grads[0].n_indices, 5);
    for (size_t j = 0; j < 5 && p.grads[0].n_indices == 5; j++)
        CHECK_INT_EQ(p.grads[0].indices[j], want[j]);
    CHECK_INT_EQ(p.grads[0].data.len, sizeof v);

    /* The same indices unpacked: key 7 varint, five times, after the data. */
    t.n_indices = 0;
    size_t tlen = protobuf_c_message_get_packed_size(&t.base);
    uint8_t *tb = xmalloc(tlen + 64), *at = tb + tlen;
    protobuf_c_message_pack(&t.base, tb);
    for (size_t j = 0; j < 5; j++) {
        *at++ = 7 << 3 | 0;
        for (uint64_t x = want[j];; x >>= 7) {
            *at++ = (uint8_t)(x >= 0x80 ? (x & 0x7f) | 0x80 : x);
            if (x < 0x80)
                break;
        }
    }
    size_t tfull = (size_t)(at - tb);
    uint8_t *msg = xmalloc(tfull + 16), *w = msg;
    *w++ = 3 << 3 | 2; /* PushRequest.grads */
    for (uint64_t x = tfull;; x >>= 7) {
        *w++ = (uint8_t)(x >= 0x80 ? (x & 0x7f) | 0x80 : x);
        if (x < 0x80)
            break;
    }
    memcpy(w, tb, tfull);
    w += tfull;
    seg = (rpc_seg_t){msg, (size_t)(w - msg)};
    m = (rpc_msg_t){.seg = &seg, .nseg = 1, .len = seg.len};
    Pstrain__PushRequest *pb = pstrain__push_request__unpack(NULL, seg.len, msg);
    CHECK(pb != NULL && pb->n_grads == 1 && pb->grads[0]->n_indices == 5);
    if (pb)
        pstrain__push_request__free_unpacked(pb, NULL);
    CHECK_INT_EQ(ps_push_decode(&p, &m), 0);
    CHECK_INT_EQ(p.grads[0].n_indices, 5);
    for (size_t j = 0; j < 5 && p.grads[0].n_indices == 5; j++)
        CHECK_INT_EQ(p.grads[0].indices[j], want[j]);
    /* A truncated packed run is malformed. */
    seg = (rpc_seg_t){buf, len - 1};
    m = (rpc_msg_t){.seg = &seg, .nseg = 1, .len = len - 1};
    CHECK_INT_EQ(ps_push_decode(&p, &m), -1);
    ps_push_free(&p);
    free(buf);
    free(tb);
    free(msg);
}

/* ---- The PS's sparse update ----------------------------------------------------- */

typedef struct {
    model_t m;
    ps_shard_t s;
    Pstrain__Tensor *t;
    Pstrain__Tensor **tp;
    Pstrain__Caller caller;
    Pstrain__PushRequest req;
} shard_fx_t;

static int shard_fx(shard_fx_t *f, optim_kind_t kind, double momentum, bool sync) {
    char err[PS_ERRLEN];
    memset(f, 0, sizeof *f);
    if (model_load(&f->m, "mlp", err, sizeof err))
        return -1;
    ps_shard_opts_t o = {
        .index = 0, .nps = 1, .sync = sync, .replicas = 1, .max_workers = 2, .seed = 42};
    optim_defaults(&o.optim, kind);
    o.optim.learning_rate = 0.5;
    o.optim.momentum = momentum;
    if (ps_shard_init(&f->s, &f->m, &o, err, sizeof err))
        return -1;
    size_t n = f->s.store.nparts;
    shard_tensors(&f->s, NULL, &f->t, &f->tp);
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    f->caller = c;
    f->caller.role = "worker";
    Pstrain__PushRequest r = PSTRAIN__PUSH_REQUEST__INIT;
    f->req = r;
    f->req.caller = &f->caller;
    f->req.n_grads = n;
    f->req.grads = f->tp;
    return 0;
}

static void shard_fx_free(shard_fx_t *f) {
    ps_shard_free(&f->s);
    model_free(&f->m);
    free(f->t);
    free(f->tp);
}

/* The gradient of a test: every 10th element of each partition nonzero. */
static float grad_at(size_t i) {
    return i % 10 == 3 ? 0.01f * (float)(i % 7) - 0.03f : 0.0f;
}

/* Points f's tensors at g (dense), or at the nonzero values of g and their
 * indices (vals, idx: room for the store's size). */
static void point(shard_fx_t *f, const float *g, bool sparse, float *vals, uint32_t *idx) {
    size_t at = 0;
    for (size_t i = 0; i < f->s.store.nparts; i++) {
        const store_part_t *p = &f->s.store.parts[i];
        Pstrain__Tensor *t = &f->t[i];
        t->dtype = PSTRAIN__WIRE_DTYPE__FLOAT32;
        if (!sparse) {
            t->n_indices = 0;
            t->indices = NULL;
            t->data = (ProtobufCBinaryData){p->size * 4, (uint8_t *)(g + p->offset)};
            continue;
        }
        size_t k = 0;
        for (size_t e = 0; e < p->size; e++)
            if (g[p->offset + e] != 0.0f) {
                idx[at + k] = (uint32_t)e;
                vals[at + k++] = g[p->offset + e];
            }
        t->n_indices = k;
        t->indices = idx + at;
        t->data = (ProtobufCBinaryData){k * 4, (uint8_t *)(vals + at)};
        at += k;
    }
}

/* A sparse push of grad_at's values on f's tensors, and the weights before it. */
typedef struct {
    float *g, *vals, *w0;
    uint32_t *idx;
} sparse_push_t;

static void sparse_push_init(sparse_push_t *p, shard_fx_t *f) {
    size_t n = f->s.store.size;
    p->g = xmalloc(n * sizeof *p->g);
    p->vals = xmalloc(n * sizeof *p->vals);
    p->idx = xmalloc(n * sizeof *p->idx);
    for (size_t i = 0; i < n; i++)
        p->g[i] = grad_at(i);
    point(f, p->g, true, p->vals, p->idx);
    p->w0 = xmalloc(n * sizeof *p->w0);
    memcpy(p->w0, f->s.store.w, n * sizeof *p->w0);
}

static void sparse_push_free(sparse_push_t *p) {
    free(p->g);
    free(p->vals);
    free(p->idx);
    free(p->w0);
}

/* A sparse push gives the weights (and slots) the dense push of the same
 * gradient with zeros elsewhere gives: plain SGD (only the named elements
 * touched), SGD with momentum and Adam (the dense pass), over 3 pushes so
 * that momentum carries; and sync mode's sum. */
void test_ps_shard_sparse_push_as_dense(void) {
    const struct {
        optim_kind_t kind;
        double momentum;
        bool sync;
    } cases[] = {{OPTIM_SGD, 0.0, false},
                 {OPTIM_SGD, 0.9, false},
                 {OPTIM_ADAM, 0.0, false},
                 {OPTIM_SGD, 0.9, true}};
    for (size_t c = 0; c < PS_ARRAY_LEN(cases); c++) {
        shard_fx_t d, s;
        CHECK(shard_fx(&d, cases[c].kind, cases[c].momentum, cases[c].sync) == 0);
        CHECK(shard_fx(&s, cases[c].kind, cases[c].momentum, cases[c].sync) == 0);
        size_t n = d.s.store.size;
        float *g = xmalloc(n * sizeof *g), *vals = xmalloc(n * sizeof *vals);
        uint32_t *idx = xmalloc(n * sizeof *idx);
        for (size_t i = 0; i < n; i++)
            g[i] = grad_at(i);
        point(&d, g, false, NULL, NULL);
        point(&s, g, true, vals, idx);
        CHECK(s.t[0].n_indices > 0 && s.t[0].n_indices < d.s.store.parts[0].size / 5);
        char err[PS_ERRLEN] = "";
        bool stale;
        for (uint64_t step = 0; step < 3; step++) {
            d.req.step = s.req.step = step;
            CHECK_INT_EQ(ps_shard_push(&d.s, &d.req, &stale, err, sizeof err), 0);
            CHECK_INT_EQ(ps_shard_push(&s.s, &s.req, &stale, err, sizeof err), 0);
            if (err[0])
                fprintf(stderr, "%s\n", err);
        }
        CHECK_INT_EQ(ps_shard_step(&s.s), 3);
        CHECK(memcmp(d.s.store.w, s.s.store.w, n * sizeof(float)) == 0);
        for (size_t k = 0; k < optim_nslots(&d.s.store.opt); k++)
            CHECK(memcmp(d.s.store.slots[k], s.s.store.slots[k], n * sizeof(float)) == 0);
        /* the weights did move */
        shard_fx_t fresh;
        CHECK(shard_fx(&fresh, cases[c].kind, cases[c].momentum, cases[c].sync) == 0);
        CHECK(memcmp(fresh.s.store.w, s.s.store.w, n * sizeof(float)) != 0);
        shard_fx_free(&fresh);
        free(g);
        free(vals);
        free(idx);
        shard_fx_free(&d);
        shard_fx_free(&s);
    }
}

/* Bad sparse tensors are refused with a message and change nothing:
 * indices out of order, out of range, more of them than values, and data
 * of another length than the indices say. A 16-bit sparse tensor is read
 * in its dtype. */
void test_ps_shard_sparse_push_refused(void) {
    shard_fx_t f;
    CHECK(shard_fx(&f, OPTIM_SGD, 0.0, false) == 0);
    size_t n = f.s.store.size;
    sparse_push_t sp;
    sparse_push_init(&sp, &f);
    float *w0 = sp.w0;
    char err[PS_ERRLEN];
    bool stale;
    Pstrain__Tensor *t = &f.t[0];
    uint32_t *ix = (uint32_t *)t->indices;
    uint32_t keep = ix[1];
    ix[1] = ix[0]; /* not strictly ascending */
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "out of order or out of range");
    ix[1] = keep;
    keep = ix[t->n_indices - 1];
    ix[t->n_indices - 1] = (uint32_t)f.s.store.parts[0].size; /* past the partition */
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "out of order or out of range");
    ix[t->n_indices - 1] = keep;
    t->data.len -= 4;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "bytes");
    t->data.len += 4;
    /* row ids (an embedding's rows, ps/sparse.c) and indices in one tensor */
    uint64_t rows[1] = {0};
    t->row_ids = rows;
    t->n_row_ids = 1;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "both row ids and indices");
    t->row_ids = NULL;
    t->n_row_ids = 0;
    CHECK(memcmp(w0, f.s.store.w, n * sizeof *w0) == 0);
    /* fp16 values: half the bytes, applied as their decoded values */
    uint8_t *h = xmalloc(2 * t->n_indices);
    float *back = xmalloc(t->n_indices * sizeof *back);
    wire_fp16_from_floats(h, (const float *)(const void *)t->data.data, t->n_indices);
    wire_fp16_to_floats(back, h, t->n_indices);
    t->data = (ProtobufCBinaryData){2 * t->n_indices, h};
    t->dtype = PSTRAIN__WIRE_DTYPE__FLOAT16;
    CHECK_INT_EQ(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err), 0);
    size_t e = t->indices[2];
    CHECK_NEAR(f.s.store.w[f.s.store.parts[0].offset + e],
               w0[f.s.store.parts[0].offset + e] - 0.5f * back[2], 1e-7);
    CHECK(f.s.store.w[f.s.store.parts[0].offset + e + 1] == w0[f.s.store.parts[0].offset + e + 1]);
    free(h);
    free(back);
    sparse_push_free(&sp);
    shard_fx_free(&f);
}

/* ---- train.staleness_lr momentum ------------------------------------------------- */

/* The rule's numbers (ps/staleness.h), worked by hand, and its mean. */
void test_ps_staleness_momentum_rule(void) {
    const struct {
        double mu, s, momentum, scale;
    } cases[] = {{0.9, 0.0, 0.9, 1.0}, {0.9, 0.27, 0.873, 1.0}, {0.9, 6.5, 0.25, 1.0},
                 {0.9, 9.0, 0.0, 1.0}, {0.9, 19.0, 0.0, 0.5},   {0.0, 3.0, 0.0, 0.25},
                 {0.5, 0.5, 0.25, 1.0}};
    for (size_t i = 0; i < PS_ARRAY_LEN(cases); i++) {
        double mu, scale;
        ps_staleness_momentum(cases[i].mu, cases[i].s, &mu, &scale);
        CHECK_NEAR(mu, cases[i].momentum, 1e-12);
        CHECK_NEAR(scale, cases[i].scale, 1e-12);
    }
    ps_stale_mean_t m = {0};
    ps_stale_mean_add(&m, 0);
    ps_stale_mean_add(&m, 2);
    ps_stale_mean_add(&m, 4);
    CHECK_NEAR(m.mean, 2.0, 1e-12);
    for (int i = 0; i < 2000; i++)
        ps_stale_mean_add(&m, 10);
    CHECK_NEAR(m.mean, 10.0, 1e-6);
}

/* At the shard: SGD, lr 0.5, momentum 0.9, gradient 0.25. Two fresh
 * pushes (mean staleness 0) take momentum 0.9: v = -0.125, then -0.2375.
 * A push 1 update stale makes the mean 1/3: momentum 1 - 0.1 * 4/3,
 * v = 0.8667 v - 0.125; the configured momentum is kept for later pushes. */
void test_ps_shard_staleness_momentum(void) {
    shard_fx_t f;
    CHECK(shard_fx(&f, OPTIM_SGD, 0.9, false) == 0);
    f.s.staleness_lr = PS_STALENESS_LR_MOMENTUM;
    size_t n = f.s.store.size;
    float *g = xmalloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++)
        g[i] = 0.25f;
    point(&f, g, false, NULL, NULL);
    char err[PS_ERRLEN];
    bool stale;
    float w0 = f.s.store.w[3];
    f.req.step = 0;
    CHECK_INT_EQ(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err), 0);
    CHECK_NEAR(f.s.store.w[3], w0 - 0.125f, 1e-6);
    f.req.step = 1;
    CHECK_INT_EQ(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err), 0); /* at 1: fresh */
    float w2 = f.s.store.w[3];
    CHECK_NEAR(w2, w0 - 0.125f - 0.2375f, 1e-6);
    CHECK_INT_EQ(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err), 0); /* at 2: 1 stale */
    double mu = 1.0 - 0.1 * (4.0 / 3.0);
    CHECK_NEAR(f.s.store.w[3], w2 - (mu * 0.2375 + 0.125), 1e-6);
    CHECK_NEAR(f.s.stale_mean.mean, 1.0 / 3.0, 1e-12);
    CHECK_NEAR(f.s.store.opt.momentum, 0.9, 1e-12);
    free(g);
    shard_fx_free(&f);
}

/* Momentum correction: u = m u + g, e = u + residual. An element never
 * sent holds residual g, then g + (1 + m) g; the one sent (the largest)
 * sends u each time, its residual 0, its u kept. And a shard with
 * sparse_sgd applies sparse values as plain SGD steps on the named elements,
 * its momentum slot left at 0. */
void test_codec_topk_momentum_correction(void) {
    float g[4] = {0.1f, 0.2f, 0.3f, 1.0f}, res[4] = {0}, u[4] = {0}, scratch[4];
    uint32_t idx[1];
    uint8_t wire[4];
    for (int step = 0; step < 2; step++)
        codec_topk_feedback(WIRE_DTYPE_FLOAT32, g, res, 4, 1, idx, wire, scratch, u, 0.5f);
    CHECK_INT_EQ(idx[0], 3);
    CHECK_NEAR(res[0], 0.1f * 2.5f, 1e-7);
    CHECK_NEAR(u[0], 0.1f * 1.5f, 1e-7);
    CHECK(res[3] == 0.0f);
    CHECK_NEAR(u[3], 1.5f, 1e-7);
    float sent;
    memcpy(&sent, wire, sizeof sent);
    CHECK_NEAR(sent, 1.5f, 1e-7); /* 0.5 * 1 + 1 */

    shard_fx_t f;
    CHECK(shard_fx(&f, OPTIM_SGD, 0.9, false) == 0);
    f.s.sparse_sgd = true;
    sparse_push_t sp;
    sparse_push_init(&sp, &f);
    float *w0 = sp.w0, *gr = sp.g;
    char err[PS_ERRLEN];
    bool stale;
    CHECK_INT_EQ(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err), 0);
    const store_part_t *p0 = &f.s.store.parts[0];
    size_t e = f.t[0].indices[1];
    CHECK_NEAR(f.s.store.w[p0->offset + e], w0[p0->offset + e] - 0.5f * gr[p0->offset + e], 1e-7);
    CHECK(f.s.store.w[p0->offset + e + 1] == w0[p0->offset + e + 1]);
    size_t moved = 0;
    for (size_t i = 0; i < p0->size; i++)
        moved += f.s.store.slots[0][p0->offset + i] != 0.0f;
    CHECK_INT_EQ(moved, 0);
    sparse_push_free(&sp);
    shard_fx_free(&f);
}

/* A pull answer in fp16 (ps_pull_encode_16): the large tensor as halves,
 * a weight beyond 65504 sent as 65504 and counted, the small tensor as
 * float32; protobuf-c reads the pieces back as one message. */
void test_ps_pull_encode_fp16(void) {
    enum { BIG = 2048, SMALL = 10 };
    float *big = xmalloc(BIG * sizeof *big), small[SMALL];
    for (size_t i = 0; i < BIG; i++)
        big[i] = (float)i * 0.25f - 100.0f;
    big[7] = 1e5f;
    for (size_t i = 0; i < SMALL; i++)
        small[i] = 1.0f / 3.0f + (float)i;
    Pstrain__Tensor t[2] = {PSTRAIN__TENSOR__INIT, PSTRAIN__TENSOR__INIT}, *tp[2] = {&t[0], &t[1]};
    t[0].name = "big";
    t[0].rows = 2;
    t[0].data = (ProtobufCBinaryData){BIG * 4, (uint8_t *)big};
    t[1].name = "small";
    t[1].rows = 1;
    t[1].data = (ProtobufCBinaryData){SMALL * 4, (uint8_t *)small};
    Pstrain__PullResponse resp = PSTRAIN__PULL_RESPONSE__INIT;
    resp.step = 5;
    resp.n_tensors = 2;
    resp.tensors = tp;
    ps_pull_t p;
    ps_pull_init(&p);
    rpc_blob_t *blob = ps_pull_encode_16(&p, &resp, PSTRAIN__WIRE_DTYPE__FLOAT16);
    CHECK_INT_EQ(p.fp16_clamped, 1);
    size_t len = 0;
    for (size_t i = 0; i < p.npiece; i++)
        len += p.piece[i].len;
    uint8_t *msg = xmalloc(len), *at = msg;
    for (size_t i = 0; i < p.npiece; i++) {
        memcpy(at, p.piece[i].data, p.piece[i].len);
        at += p.piece[i].len;
    }
    Pstrain__PullResponse *r = pstrain__pull_response__unpack(NULL, len, msg);
    CHECK(r != NULL && r->n_tensors == 2 && r->step == 5);
    if (r && r->n_tensors == 2) {
        CHECK_INT_EQ(r->tensors[0]->dtype, PSTRAIN__WIRE_DTYPE__FLOAT16);
        CHECK_INT_EQ(r->tensors[0]->data.len, 2 * BIG);
        CHECK_INT_EQ(r->tensors[1]->dtype, PSTRAIN__WIRE_DTYPE__FLOAT32);
        CHECK(r->tensors[1]->data.len == sizeof small &&
              memcmp(r->tensors[1]->data.data, small, sizeof small) == 0);
        float *back = xmalloc(BIG * sizeof *back);
        wire_fp16_to_floats(back, r->tensors[0]->data.data, BIG);
        CHECK(back[7] == 65504.0f);
        CHECK(back[0] == -100.0f && back[BIG - 1] == big[BIG - 1]); /* exact in fp16 */
        free(back);
    }
    if (r)
        pstrain__pull_response__free_unpacked(r, NULL);
    rpc_blob_unref(blob);
    ps_pull_free(&p);
    free(msg);
    free(big);
}

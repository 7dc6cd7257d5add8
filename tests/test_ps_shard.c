/* The parameter server's shard: placement into a store, Pull, Push in async
 * and sync mode, and the refusal of bad pushes without changing anything. */
#include "test.h"

#include <math.h>
#include <stdlib.h>

#include "common/base/util.h"
#include "common/rpc/wire.h"
#include "ps/shard.h"
#include "ps/ssp.h"
#include "shard_tensors.h"

typedef struct {
    model_t m;
    ps_shard_t s;
    Pstrain__Tensor *t;
    Pstrain__Tensor **tp;
    Pstrain__Caller caller;
    Pstrain__PushRequest req;
    float *g;
} fixture_t;

/* A shard of the MLP (ps `index` of nps) and a push that carries a
 * gradient of `value` for each of its partitions. */
static int setup_with(fixture_t *f, const ps_shard_opts_t *o, float value) {
    char err[PS_ERRLEN];
    memset(f, 0, sizeof *f);
    if (model_load(&f->m, "mlp", err, sizeof err))
        return -1;
    if (ps_shard_init(&f->s, &f->m, o, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    size_t n = f->s.store.nparts;
    f->g = xmalloc(f->s.store.size * sizeof(float));
    for (size_t i = 0; i < f->s.store.size; i++)
        f->g[i] = value;
    shard_tensors(&f->s, f->g, &f->t, &f->tp);
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

/* setup_with for plain SGD at lr 0.5. */
static int setup(fixture_t *f, int index, int nps, bool sync, size_t replicas, float value) {
    ps_shard_opts_t o = {.index = index,
                         .nps = nps,
                         .sync = sync,
                         .replicas = replicas,
                         .max_workers = 4,
                         .seed = 42};
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.5;
    o.optim.momentum = 0.0;
    return setup_with(f, &o, value);
}

static void teardown(fixture_t *f) {
    ps_shard_free(&f->s);
    model_free(&f->m);
    free(f->t);
    free(f->tp);
    free(f->g);
}

void test_ps_shard_partitions_cover_model(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "cnn", err, sizeof err) == 0);
    float *want = xmalloc(m.nparams * sizeof(float));
    float *got = xcalloc(m.nparams, sizeof(float));
    model_init_params(&m, 42, want);
    size_t total = 0;
    for (int ps = 0; ps < 3; ps++) {
        ps_shard_t s;
        ps_shard_opts_t o = {.index = ps, .nps = 3, .max_workers = 2, .seed = 42};
        optim_defaults(&o.optim, OPTIM_SGD);
        CHECK(ps_shard_init(&s, &m, &o, err, sizeof err) == 0);
        for (size_t i = 0; i < s.store.nparts; i++) {
            const store_part_t *p = &s.store.parts[i];
            const var_t *v = &m.vars[p->var];
            memcpy(got + v->offset + p->row_begin * store_row_size(v), s.store.w + p->offset,
                   p->size * sizeof(float));
        }
        total += s.store.size;
        ps_shard_free(&s);
    }
    CHECK_INT_EQ(total, m.nparams);
    /* Three PS start with exactly the model one process would start with. */
    CHECK(memcmp(got, want, m.nparams * sizeof(float)) == 0);
    free(want);
    free(got);
    model_free(&m);
}

void test_ps_shard_async_push(void) {
    fixture_t f;
    CHECK(setup(&f, 1, 2, false, 0, 0.25f) == 0);
    float before = f.s.store.w[0];
    bool stale;
    char err[PS_ERRLEN];
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK(!stale);
    CHECK_INT_EQ(ps_shard_step(&f.s), 1);
    CHECK_NEAR(f.s.store.w[0], before - 0.5f * 0.25f, 1e-7);
    /* A push of a subset of partitions applies to those only. */
    f.req.n_grads = 1;
    float last = f.s.store.w[f.s.store.size - 1];
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 2);
    CHECK(f.s.store.w[f.s.store.size - 1] == last || f.s.store.nparts == 1);
    teardown(&f);
}

/* An async push marked partial applies without counting a step; sync refuses it. */
void test_ps_shard_partial_push(void) {
    fixture_t f;
    CHECK(setup(&f, 0, 1, false, 0, 0.5f) == 0);
    float w = f.s.store.w[3];
    bool stale;
    char err[PS_ERRLEN];
    f.req.partial = true;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 0);
    CHECK_NEAR(f.s.store.w[3], w - 0.25f, 1e-6);
    f.req.partial = false;
    f.req.n_grads = 0;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 1);
    teardown(&f);
    CHECK(setup(&f, 0, 1, true, 1, 0.5f) == 0);
    f.req.partial = true;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "partial");
    CHECK_INT_EQ(ps_shard_step(&f.s), 0);
    teardown(&f);
}

/* A retried push (same incarnation, same number: its answer was lost) is
 * answered without being applied again; a new number, or the same number
 * from a new incarnation of the worker, is applied. Sync mode too. */
void test_ps_shard_push_retry_once(void) {
    for (int sync = 0; sync <= 1; sync++) {
        fixture_t f;
        CHECK(setup(&f, 0, 1, sync, 1, 0.5f) == 0);
        float w = f.s.store.w[3];
        bool stale;
        char err[PS_ERRLEN];
        f.caller.incarnation = 7;
        f.req.seq = 1;
        CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
        CHECK_INT_EQ(ps_shard_step(&f.s), 1);
        CHECK_NEAR(f.s.store.w[3], w - 0.25f, 1e-6);
        f.req.step = 0; /* the retry carries what the first try carried */
        CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
        CHECK(!stale);
        CHECK_INT_EQ(ps_shard_step(&f.s), 1);
        CHECK_NEAR(f.s.store.w[3], w - 0.25f, 1e-6);
        CHECK_INT_EQ(f.s.replayed, 1);
        f.req.seq = 2;
        f.req.step = 1;
        CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
        CHECK_INT_EQ(ps_shard_step(&f.s), 2);
        CHECK_NEAR(f.s.store.w[3], w - 0.5f, 1e-6);
        f.caller.incarnation = 8; /* the worker restarted: its numbers start again */
        f.req.seq = 1;
        f.req.step = 2;
        CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
        CHECK_INT_EQ(ps_shard_step(&f.s), 3);
        CHECK_NEAR(f.s.store.w[3], w - 0.75f, 1e-6);
        f.req.seq = 0; /* unnumbered pushes are always applied */
        f.req.step = 3;
        CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
        f.req.step = 4;
        CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
        CHECK_INT_EQ(ps_shard_step(&f.s), 5);
        CHECK_INT_EQ(f.s.replayed, 1);
        teardown(&f);
    }
}

/* Each bad push is refused with a message naming the problem, and nothing changes. */
void test_ps_shard_rejects_bad_push(void) {
    fixture_t f;
    CHECK(setup(&f, 0, 2, false, 0, 0.1f) == 0);
    size_t bytes = f.s.store.size * sizeof(float);
    float *w0 = xmalloc(bytes);
    memcpy(w0, f.s.store.w, bytes);
    bool stale;
    char err[PS_ERRLEN];
    char *name = f.t[0].name;
    f.t[0].name = "dense_9/kernel";
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "dense_9/kernel");
    f.t[0].name = name;
    f.t[0].data.len -= 4;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "bytes");
    f.t[0].data.len += 4;
    f.t[0].rows += 1;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    f.t[0].rows -= 1;
    /* NaN in the last tensor: the earlier ones must not have been applied. */
    size_t last = f.req.n_grads - 1;
    ((float *)f.t[last].data.data)[1] = NAN;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "NaN or Inf");
    ((float *)f.t[last].data.data)[1] = INFINITY;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    ((float *)f.t[last].data.data)[1] = 0.1f;
    f.tp[1] = f.tp[0];
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "twice");
    f.tp[1] = &f.t[1];
    f.caller.index = 4;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "worker index 4");
    CHECK(memcmp(w0, f.s.store.w, bytes) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 0);
    f.caller.index = 0;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK(memcmp(w0, f.s.store.w, bytes) != 0);
    free(w0);
    teardown(&f);
}

void test_ps_shard_sync_aggregation(void) {
    fixture_t f;
    CHECK(setup(&f, 0, 1, true, 2, 0.0f) == 0);
    float w = f.s.store.w[5];
    bool stale;
    char err[PS_ERRLEN];
    for (size_t i = 0; i < f.s.store.size; i++)
        f.g[i] = 0.2f;
    f.caller.index = 0;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 0); /* waits for a second replica */
    /* The same worker again (a retried push) is not counted twice. */
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 0);
    CHECK_INT_EQ(f.s.duplicates, 1);
    for (size_t i = 0; i < f.s.store.size; i++)
        f.g[i] = 0.6f;
    f.caller.index = 1;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 1);
    /* One update with the mean gradient (0.2 + 0.6) / 2 at lr 0.5. */
    CHECK_NEAR(f.s.store.w[5], w - 0.5f * 0.4f, 1e-6);
    /* A gradient computed at step 0 is now stale: dropped and counted. */
    f.caller.index = 2;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK(stale);
    CHECK_INT_EQ(f.s.stale_dropped, 1);
    CHECK_INT_EQ(ps_shard_step(&f.s), 1);
    /* A partial push is refused in sync mode. */
    f.req.step = 1;
    f.req.n_grads = 1;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "every partition");
    f.req.n_grads = f.s.store.nparts;
    /* With one live worker the step applies with what has arrived. */
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 1);
    ps_shard_set_replicas(&f.s, 1);
    CHECK_INT_EQ(ps_shard_step(&f.s), 2);
    teardown(&f);
}

void test_ps_shard_pull(void) {
    fixture_t f;
    CHECK(setup(&f, 0, 1, false, 0, 0.0f) == 0);
    Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
    Pstrain__PullResponse resp = PSTRAIN__PULL_RESPONSE__INIT;
    char err[PS_ERRLEN];
    CHECK(ps_shard_pull(&f.s, &req, &resp, err, sizeof err) == 0);
    CHECK_INT_EQ(resp.n_tensors, f.s.store.nparts);
    size_t bytes = 0;
    for (size_t i = 0; i < resp.n_tensors; i++)
        bytes += resp.tensors[i]->data.len;
    CHECK_INT_EQ(bytes, f.m.nparams * sizeof(float));
    char *names[] = {"dense_1/bias", "dense/kernel"};
    req.n_names = 2;
    req.names = names;
    CHECK(ps_shard_pull(&f.s, &req, &resp, err, sizeof err) == 0);
    CHECK_INT_EQ(resp.n_tensors, 2);
    CHECK(strcmp(resp.tensors[0]->name, "dense/kernel") == 0);
    names[1] = "nope/kernel";
    CHECK(ps_shard_pull(&f.s, &req, &resp, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "nope/kernel");
    /* Packed and unpacked, a pull carries the weights bit for bit. */
    req.n_names = 0;
    CHECK(ps_shard_pull(&f.s, &req, &resp, err, sizeof err) == 0);
    size_t len = pstrain__pull_response__get_packed_size(&resp);
    uint8_t *buf = xmalloc(len);
    pstrain__pull_response__pack(&resp, buf);
    Pstrain__PullResponse *back = pstrain__pull_response__unpack(NULL, len, buf);
    CHECK(back != NULL);
    CHECK_INT_EQ(back->n_tensors, resp.n_tensors);
    CHECK(memcmp(back->tensors[0]->data.data, f.s.store.w, back->tensors[0]->data.len) == 0);
    pstrain__pull_response__free_unpacked(back, NULL);
    /* Garbage does not unpack. */
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(0xff - i);
    CHECK(pstrain__push_request__unpack(NULL, 64, buf) == NULL);
    free(buf);
    teardown(&f);
}

/* Bounded staleness: a worker more than `staleness` pushes ahead of the
 * slowest live worker may not pull; a worker not heard of for dead_after
 * seconds stops holding the others, while one whose pull is held (seen)
 * stays live; a worker that joins late or comes back (new incarnation)
 * starts level with the slowest live worker; nobody waits for a worker that
 * never pushed. */
void test_ps_ssp_bound_death_rejoin(void) {
    ps_ssp_t p;
    ps_ssp_init(&p, 3, 2, 5.0);
    CHECK(ps_ssp_may_pull(&p, 0, 0.0));
    for (int i = 0; i < 3; i++)
        ps_ssp_pushed(&p, 0, 7, 0.1 * i);
    CHECK_INT_EQ(p.clock[0], 3);
    CHECK(ps_ssp_may_pull(&p, 0, 0.5)); /* nobody else pushed yet */
    ps_ssp_pushed(&p, 1, 8, 0.5);       /* joins level with worker 0 */
    CHECK_INT_EQ(p.clock[1], 4);
    for (int i = 0; i < 3; i++)
        ps_ssp_pushed(&p, 0, 7, 0.6 + 0.1 * i);
    CHECK_INT_EQ(p.clock[0], 6);
    CHECK(ps_ssp_may_pull(&p, 0, 0.85)); /* 6 <= 4 + 2 */
    ps_ssp_pushed(&p, 0, 7, 0.9);
    CHECK(!ps_ssp_may_pull(&p, 0, 0.95)); /* 7 > 4 + 2 */
    CHECK(ps_ssp_may_pull(&p, 1, 0.95));  /* the slowest always may */
    ps_ssp_pushed(&p, 1, 8, 1.0);
    CHECK(ps_ssp_may_pull(&p, 0, 1.05)); /* 7 <= 5 + 2 */
    ps_ssp_pushed(&p, 0, 7, 1.1);
    CHECK(!ps_ssp_may_pull(&p, 0, 1.2));
    /* Worker 1 falls silent after 1.0; worker 0's held pull keeps it live. */
    ps_ssp_seen(&p, 0, 5.9);
    CHECK(!ps_ssp_may_pull(&p, 0, 5.95));
    ps_ssp_seen(&p, 0, 6.05);
    CHECK(ps_ssp_may_pull(&p, 0, 6.05));
    /* Worker 2 joins late, level with the slowest live worker (0, clock 8). */
    ps_ssp_pushed(&p, 2, 9, 6.1);
    CHECK_INT_EQ(p.clock[2], 9);
    CHECK(ps_ssp_may_pull(&p, 0, 6.1));
    /* Worker 1 restarts (new incarnation): level with the slowest live one. */
    ps_ssp_pushed(&p, 1, 10, 6.2);
    CHECK_INT_EQ(p.clock[1], 9);
    CHECK_INT_EQ(p.incarnation[1], 10);
    /* An index past the cluster's workers is ignored, never held. */
    ps_ssp_pushed(&p, 3, 1, 6.3);
    ps_ssp_seen(&p, 3, 6.3);
    CHECK(ps_ssp_may_pull(&p, 3, 6.3));
    ps_ssp_free(&p);
}

/* One push of the fixture's gradient, tagged with the step it was computed at. */
static void push_at(fixture_t *f, uint64_t step) {
    bool stale;
    char err[PS_ERRLEN];
    f->req.step = step;
    CHECK(ps_shard_push(&f->s, &f->req, &stale, err, sizeof err) == 0);
    CHECK(!stale);
}

/* Worked by hand: SGD, lr 0.5, momentum 0.9, gradient 0.25, staleness_lr
 * inverse. Fresh pushes (staleness 0, and an untagged push, step 0, of an
 * older worker) take the full rate; a push 2 updates stale takes half of it,
 * into the velocity as well (v = 0.9 v - lr / 2 * g). */
void test_ps_shard_staleness_lr_momentum(void) {
    ps_shard_opts_t o = {.index = 0, .nps = 1, .max_workers = 4, .seed = 42};
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.5;
    o.optim.momentum = 0.9;
    for (int inverse = 0; inverse <= 1; inverse++) {
        o.staleness_lr = inverse ? PS_STALENESS_LR_INVERSE : PS_STALENESS_LR_OFF;
        fixture_t f;
        CHECK(setup_with(&f, &o, 0.25f) == 0);
        float w0 = f.s.store.w[3];
        push_at(&f, 0); /* at step 0: v = -0.125 */
        push_at(&f, 1); /* at step 1: v = -0.2375 */
        push_at(&f, 0); /* at step 2, untagged: fresh, v = -0.33875 */
        push_at(&f, 1); /* at step 3: 2 stale */
        double v4 = inverse ? 0.9 * -0.33875 - 0.0625 : 0.9 * -0.33875 - 0.125;
        CHECK_NEAR(f.s.store.slots[0][3], v4, 1e-6);
        CHECK_NEAR(f.s.store.w[3], w0 - 0.125 - 0.2375 - 0.33875 + v4, 1e-5);
        CHECK_INT_EQ(ps_shard_step(&f.s), 4);
        CHECK_INT_EQ(f.s.staleness_sum, 2);
        CHECK_INT_EQ(f.s.staleness_max, 2);
        teardown(&f);
    }
}

/* Adam under staleness_lr inverse: a push 4 updates stale moves the weights
 * a quarter as far as the same push would at the full rate, and leaves the
 * moments exactly as the full-rate push leaves them (the gradient itself is
 * not scaled: Adam would cancel that and its moments would lie). */
void test_ps_shard_staleness_lr_adam(void) {
    ps_shard_opts_t o = {.index = 0, .nps = 1, .max_workers = 4, .seed = 42};
    optim_defaults(&o.optim, OPTIM_ADAM);
    o.optim.learning_rate = 0.01;
    fixture_t off, inv;
    CHECK(setup_with(&off, &o, 0.25f) == 0);
    o.staleness_lr = PS_STALENESS_LR_INVERSE;
    CHECK(setup_with(&inv, &o, 0.25f) == 0);
    for (uint64_t k = 0; k < 5; k++) {
        push_at(&off, k);
        push_at(&inv, k);
    }
    CHECK(memcmp(off.s.store.w, inv.s.store.w, off.s.store.size * sizeof(float)) == 0);
    float before = inv.s.store.w[3];
    push_at(&off, 1); /* at step 5: 4 stale */
    push_at(&inv, 1);
    CHECK_NEAR(inv.s.store.w[3] - before, 0.25 * (off.s.store.w[3] - before), 1e-6);
    CHECK(fabsf(off.s.store.w[3] - before) > 1e-4f);
    for (size_t k = 0; k < 2; k++)
        CHECK(memcmp(off.s.store.slots[k], inv.s.store.slots[k],
                     off.s.store.size * sizeof(float)) == 0);
    teardown(&off);
    teardown(&inv);
}

/* Sync with the linear scaling rule: 2 replicas, lr 0.5, warm-up over 2
 * steps: the steps move the weights by 1x, 1.5x and then 2x of lr * mean g. */
void test_ps_shard_sync_linear_lr(void) {
    ps_shard_opts_t o = {.index = 0,
                         .nps = 1,
                         .sync = true,
                         .replicas = 2,
                         .max_workers = 4,
                         .seed = 42,
                         .lr_linear = true,
                         .warmup_steps = 2};
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.5;
    o.optim.momentum = 0.0;
    fixture_t f;
    CHECK(setup_with(&f, &o, 0.25f) == 0);
    const double want[3] = {0.125, 0.1875, 0.25};
    for (uint64_t step = 0; step < 3; step++) {
        float w = f.s.store.w[3];
        for (uint32_t worker = 0; worker < 2; worker++) {
            f.caller.index = worker;
            push_at(&f, step);
        }
        CHECK_INT_EQ(ps_shard_step(&f.s), step + 1);
        CHECK_NEAR(w - f.s.store.w[3], want[step], 1e-6);
    }
    teardown(&f);
}

/* A push of bfloat16 tensors (2 bytes a value) moves the weights as its
 * float32 values would; a bfloat16 tensor of float32's length, an unknown
 * dtype or a bfloat16 Inf is refused and changes nothing. */
void test_ps_shard_bf16_push(void) {
    fixture_t f;
    CHECK(setup(&f, 0, 1, false, 0, 0.25f) == 0);
    size_t n = f.s.store.size;
    uint8_t *b = xmalloc(2 * n);
    wire_bf16_from_floats(b, f.g, n);
    for (size_t i = 0; i < f.s.store.nparts; i++) {
        const store_part_t *p = &f.s.store.parts[i];
        f.t[i].data = (ProtobufCBinaryData){2 * p->size, b + 2 * p->offset};
        f.t[i].dtype = PSTRAIN__WIRE_DTYPE__BFLOAT16;
    }
    float w = f.s.store.w[3], last = f.s.store.w[n - 1];
    push_at(&f, 0);
    CHECK_NEAR(f.s.store.w[3], w - 0.125f, 1e-7);
    CHECK_NEAR(f.s.store.w[n - 1], last - 0.125f, 1e-7);
    float *w1 = xmalloc(n * sizeof(float));
    memcpy(w1, f.s.store.w, n * sizeof(float));
    bool stale;
    char err[PS_ERRLEN];
    f.t[0].data.len *= 2;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "bytes");
    f.t[0].data.len /= 2;
    f.t[0].dtype = 7;
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "dtype");
    f.t[0].dtype = PSTRAIN__WIRE_DTYPE__BFLOAT16;
    size_t last_part = f.s.store.nparts - 1;
    uint8_t *inf = b + 2 * (f.s.store.parts[last_part].offset + 1);
    inf[0] = 0x80, inf[1] = 0x7f; /* bfloat16 +Inf */
    CHECK(ps_shard_push(&f.s, &f.req, &stale, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "NaN or Inf");
    CHECK(memcmp(w1, f.s.store.w, n * sizeof(float)) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.s), 1);
    free(w1);
    free(b);
    teardown(&f);
}

/* Sync mode sums bfloat16 pushes like float32 ones: two workers' pushes of
 * 0.25 and 0.75 (both exact in bfloat16) make one step of lr * 0.5. */
void test_ps_shard_sync_bf16_push(void) {
    fixture_t f;
    CHECK(setup(&f, 0, 1, true, 2, 0.0f) == 0);
    size_t n = f.s.store.size;
    uint8_t *b = xmalloc(2 * n);
    float w = f.s.store.w[3];
    for (uint32_t worker = 0; worker < 2; worker++) {
        for (size_t i = 0; i < n; i++)
            f.g[i] = worker ? 0.75f : 0.25f;
        wire_bf16_from_floats(b, f.g, n);
        for (size_t i = 0; i < f.s.store.nparts; i++) {
            const store_part_t *p = &f.s.store.parts[i];
            f.t[i].data = (ProtobufCBinaryData){2 * p->size, b + 2 * p->offset};
            f.t[i].dtype = PSTRAIN__WIRE_DTYPE__BFLOAT16;
        }
        f.caller.index = worker;
        push_at(&f, 0);
    }
    CHECK_INT_EQ(ps_shard_step(&f.s), 1);
    CHECK_NEAR(f.s.store.w[3], w - 0.5f * 0.5f, 1e-6);
    free(b);
    teardown(&f);
}

/* ---- The apply split over threads (train.apply_threads) ------------------------ */

/* The fixture's push packed and cut into segments of odd sizes (values
 * split between segments, runs not 4-byte aligned), decoded in place. */
typedef struct {
    uint8_t *packed;
    rpc_seg_t seg[64];
    rpc_msg_t msg;
    ps_push_t push;
} cut_push_t;

static void cut_push(cut_push_t *c, fixture_t *f, uint64_t step) {
    f->req.step = step;
    size_t len = pstrain__push_request__get_packed_size(&f->req), at = 0, n = 0;
    static const size_t sizes[] = {4093, 7, 65539, 1, 150001};
    c->packed = xmalloc(len);
    pstrain__push_request__pack(&f->req, c->packed);
    for (size_t k = 0; at < len && n < PS_ARRAY_LEN(c->seg) - 1; k++) {
        size_t take = PS_MIN(sizes[k % PS_ARRAY_LEN(sizes)], len - at);
        c->seg[n++] = (rpc_seg_t){c->packed + at, take};
        at += take;
    }
    if (at < len)
        c->seg[n++] = (rpc_seg_t){c->packed + at, len - at};
    c->msg = (rpc_msg_t){c->seg, n, len};
    ps_push_init(&c->push);
    if (ps_push_decode(&c->push, &c->msg) != 0)
        test_fail(__FILE__, __LINE__, "ps_push_decode");
}

static void cut_free(cut_push_t *c) {
    ps_push_free(&c->push);
    free(c->packed);
}

/* Gradient k of a run: values of both signs and many magnitudes. */
static void vary_grads(fixture_t *f, int k, uint8_t *b16, uint64_t dtype) {
    for (size_t i = 0; i < f->s.store.size; i++)
        f->g[i] = (float)(sin(0.37 * (double)i + k) * pow(10.0, (double)(i % 5) - 3.0));
    if (!b16)
        return;
    wire_bf16_from_floats(b16, f->g, f->s.store.size);
    for (size_t i = 0; i < f->s.store.nparts; i++) {
        const store_part_t *p = &f->s.store.parts[i];
        f->t[i].data = (ProtobufCBinaryData){2 * p->size, b16 + 2 * p->offset};
        f->t[i].dtype = dtype;
    }
}

/* Pushes k of a run to a shard, as the service gets them: cut into pieces. */
static void push_cut(fixture_t *f, uint64_t step) {
    cut_push_t c;
    cut_push(&c, f, step);
    bool stale;
    char err[PS_ERRLEN];
    CHECK(ps_shard_push_view(&f->s, &c.push, &stale, err, sizeof err) == 0);
    CHECK(!stale);
    cut_free(&c);
}

/* Whether two shards hold the same weights and slots, bit for bit. */
static bool same_store(const fixture_t *a, const fixture_t *b) {
    size_t bytes = a->s.store.size * sizeof(float);
    if (memcmp(a->s.store.w, b->s.store.w, bytes) != 0)
        return false;
    for (size_t k = 0; k < optim_nslots(&a->s.store.opt); k++)
        if (memcmp(a->s.store.slots[k], b->s.store.slots[k], bytes) != 0)
            return false;
    return true;
}

/* Five pushes (two workers' each in sync mode) to a serial shard and to
 * one with 3 apply threads leave the same store, bit for bit. */
static void split_matches_serial(ps_shard_opts_t o, int sync, int bf16) {
    fixture_t a, b;
    o.sync = sync;
    o.replicas = sync ? 2 : 0;
    o.apply_threads = 1;
    CHECK(setup_with(&a, &o, 0.0f) == 0);
    o.apply_threads = 3;
    CHECK(setup_with(&b, &o, 0.0f) == 0);
    CHECK(a.s.pool == NULL && b.s.pool != NULL);
    size_t n = a.s.store.size;
    uint8_t *b16a = bf16 ? xmalloc(2 * n) : NULL, *b16b = bf16 ? xmalloc(2 * n) : NULL;
    for (int k = 0; k < 5; k++) {
        for (uint32_t worker = 0; worker < (sync ? 2u : 1u); worker++) {
            vary_grads(&a, 2 * k + (int)worker, b16a, PSTRAIN__WIRE_DTYPE__BFLOAT16);
            vary_grads(&b, 2 * k + (int)worker, b16b, PSTRAIN__WIRE_DTYPE__BFLOAT16);
            a.caller.index = b.caller.index = worker;
            push_cut(&a, sync ? (uint64_t)k : 0);
            push_cut(&b, sync ? (uint64_t)k : 0);
        }
    }
    CHECK_INT_EQ(ps_shard_step(&b.s), 5);
    CHECK(same_store(&a, &b));
    free(b16a);
    free(b16b);
    teardown(&a);
    teardown(&b);
}

void test_ps_shard_split_apply_bit_identical(void) {
    ps_shard_opts_t o = {.index = 0, .nps = 1, .max_workers = 4, .seed = 42};
    /* The MLP holds a partition large enough to split. */
    fixture_t f;
    CHECK(setup_with(&f, &o, 0.0f) == 0);
    size_t largest = 0;
    for (size_t i = 0; i < f.s.store.nparts; i++)
        largest = PS_MAX(largest, f.s.store.parts[i].size);
    CHECK(largest >= PS_SHARD_SPLIT_MIN * 3 / 2); /* 3 ranges of >= SPLIT_MIN / 2 */
    teardown(&f);
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.1;
    o.optim.momentum = 0.9;
    o.optim.nesterov = true;
    for (int sync = 0; sync < 2; sync++)
        for (int bf16 = 0; bf16 < 2; bf16++)
            split_matches_serial(o, sync, bf16);
    optim_defaults(&o.optim, OPTIM_ADAM);
    o.optim.learning_rate = 0.01;
    for (int bf16 = 0; bf16 < 2; bf16++)
        split_matches_serial(o, 0, bf16);
}

/* A NaN anywhere in a split tensor (in the last thread's range too) is
 * found, and the push changes nothing. */
void test_ps_shard_split_check_finds_nan(void) {
    ps_shard_opts_t o = {.index = 0, .nps = 1, .max_workers = 4, .seed = 42, .apply_threads = 3};
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.5;
    fixture_t f;
    CHECK(setup_with(&f, &o, 0.25f) == 0);
    size_t big = 0;
    for (size_t i = 0; i < f.s.store.nparts; i++)
        if (f.s.store.parts[i].size > f.s.store.parts[big].size)
            big = i;
    const store_part_t *p = &f.s.store.parts[big];
    CHECK(p->size >= PS_SHARD_SPLIT_MIN);
    float *w0 = xmalloc(f.s.store.size * sizeof(float));
    memcpy(w0, f.s.store.w, f.s.store.size * sizeof(float));
    const size_t at[] = {0, p->size / 2 + 1, p->size - 1};
    for (size_t i = 0; i < PS_ARRAY_LEN(at); i++) {
        f.g[p->offset + at[i]] = NAN;
        cut_push_t c;
        cut_push(&c, &f, 0);
        bool stale;
        char err[PS_ERRLEN] = "";
        CHECK(ps_shard_push_view(&f.s, &c.push, &stale, err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, "NaN or Inf");
        cut_free(&c);
        f.g[p->offset + at[i]] = 0.25f;
    }
    CHECK(memcmp(w0, f.s.store.w, f.s.store.size * sizeof(float)) == 0);
    push_cut(&f, 0);
    CHECK_NEAR(f.s.store.w[p->offset + p->size - 1], w0[p->offset + p->size - 1] - 0.125f, 1e-6);
    free(w0);
    teardown(&f);
}

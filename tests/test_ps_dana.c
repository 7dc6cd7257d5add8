/* train.async_momentum=dana on a real shard of the MLP (ps/dana.h): the
 * update rule and the look-ahead pull worked out by hand, the refusals, and
 * a checkpoint's round trip. */
#include "test.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "common/base/util.h"
#include "ps/shard.h"
#include "shard_tensors.h"

/* A one-PS shard of the MLP and a push of every partition, all values one
 * gradient. */
typedef struct {
    model_t m;
    ps_shard_t s;
    float *g;
    Pstrain__Tensor *t;
    Pstrain__Tensor **tp;
} dana_fixture_t;

/* SGD, lr 0.1, momentum 0.9, dana, 2 workers. */
static ps_shard_opts_t dana_opts(ps_staleness_lr_t staleness_lr) {
    ps_shard_opts_t o = {.index = 0,
                         .nps = 1,
                         .max_workers = 2,
                         .seed = 42,
                         .staleness_lr = staleness_lr,
                         .dana = true};
    optim_defaults(&o.optim, OPTIM_SGD);
    o.optim.learning_rate = 0.1;
    o.optim.momentum = 0.9;
    return o;
}

static int dana_setup(dana_fixture_t *f, const ps_shard_opts_t *o) {
    char err[PS_ERRLEN];
    memset(f, 0, sizeof *f);
    if (model_load(&f->m, "mlp", err, sizeof err))
        return -1;
    if (ps_shard_init(&f->s, &f->m, o, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        model_free(&f->m);
        return -1;
    }
    f->g = xmalloc(f->s.store.size * sizeof(float));
    shard_tensors(&f->s, f->g, &f->t, &f->tp);
    return 0;
}

static void dana_teardown(dana_fixture_t *f) {
    ps_shard_free(&f->s);
    model_free(&f->m);
    free(f->g);
    free(f->t);
    free(f->tp);
}

/* Worker `worker` pushes gradient `value` everywhere, computed at `step`. */
static int dana_push(dana_fixture_t *f, uint32_t worker, float value, uint64_t step) {
    for (size_t i = 0; i < f->s.store.size; i++)
        f->g[i] = value;
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    c.role = "worker";
    c.index = worker;
    Pstrain__PushRequest r = PSTRAIN__PUSH_REQUEST__INIT;
    r.caller = &c;
    r.step = step;
    r.n_grads = f->s.store.nparts;
    r.grads = f->tp;
    char err[PS_ERRLEN];
    bool stale;
    int rc = ps_shard_push(&f->s, &r, &stale, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    return rc;
}

/* Value k of the first tensor of a pull by `role`. */
static float pulled(dana_fixture_t *f, const char *role, size_t k) {
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    c.role = (char *)role;
    Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
    req.caller = role ? &c : NULL;
    Pstrain__PullResponse resp = PSTRAIN__PULL_RESPONSE__INIT;
    char err[PS_ERRLEN];
    if (ps_shard_pull(&f->s, &req, &resp, err, sizeof err) || resp.n_tensors == 0)
        return NAN;
    const float *x = (const float *)(const void *)resp.tensors[0]->data.data;
    return x[k];
}

/* By hand, in Keras's form (v = mu v - lr g; w += v; V = sum of the v;
 * a worker pulls w + mu V), lr 0.1, mu 0.9:
 *   worker 0, g 1, fresh:    v0 = -0.1               V = -0.1   w = w0 - 0.1
 *   worker 1, g 2, fresh:    v1 = -0.2               V = -0.3   w = w0 - 0.3
 *   worker 0, g 1, fresh:    v0 = -0.09 - 0.1 = -0.19  V = -0.39  w = w0 - 0.49
 *   worker 1, g 2, 2 stale:  v1 = -0.18 - 0.2 = -0.38 (off) or -0.18 - 0.1 =
 *                            -0.28 (inverse: lr / 2)
 *                            V = -0.57 or -0.47,    w = w0 - 0.87 or w0 - 0.77
 * and the look-ahead w + 0.9 V: w0 - 1.383 or w0 - 1.193. The master (and
 * any caller not a worker) pulls w itself. */
void test_ps_shard_dana_rule(void) {
    for (int inverse = 0; inverse <= 1; inverse++) {
        ps_shard_opts_t o = dana_opts(inverse ? PS_STALENESS_LR_INVERSE : PS_STALENESS_LR_OFF);
        dana_fixture_t f;
        CHECK(dana_setup(&f, &o) == 0);
        const size_t k = 3, size = f.s.store.size;
        float w0 = f.s.store.w[k];
        CHECK_NEAR(pulled(&f, "worker", k), w0, 0); /* V = 0: the look-ahead is w */
        CHECK(dana_push(&f, 0, 1.0f, 0) == 0);
        CHECK_NEAR(f.s.store.w[k], w0 - 0.1, 1e-6);
        CHECK_NEAR(pulled(&f, "worker", k), w0 - 0.1 - 0.09, 1e-6);
        CHECK(dana_push(&f, 1, 2.0f, 1) == 0);
        CHECK(dana_push(&f, 0, 1.0f, 2) == 0);
        CHECK_NEAR(f.s.store.w[k], w0 - 0.49, 1e-6);
        CHECK_NEAR(f.s.store.slots[0][k], -0.39, 1e-6);
        CHECK(dana_push(&f, 1, 2.0f, 1) == 0); /* at step 3: 2 stale */
        double v1 = inverse ? -0.28 : -0.38, sum = -0.19 + v1, w = w0 - 0.49 + v1;
        CHECK_NEAR(f.s.dana->v[k], -0.19, 1e-6);
        CHECK_NEAR(f.s.dana->v[size + k], v1, 1e-6);
        CHECK_NEAR(f.s.store.slots[0][k], sum, 1e-6);
        CHECK_NEAR(f.s.store.w[k], w, 1e-6);
        CHECK_NEAR(pulled(&f, "worker", k), w + 0.9 * sum, 1e-6);
        CHECK_NEAR(pulled(&f, "worker", k), inverse ? w0 - 1.193 : w0 - 1.383, 1e-5);
        CHECK_NEAR(pulled(&f, "master", k), w, 1e-6);
        CHECK_NEAR(pulled(&f, NULL, k), w, 1e-6);
        CHECK_INT_EQ(ps_shard_step(&f.s), 4);
        dana_teardown(&f);
    }
}

/* Each setting DANA cannot take is refused at the start with one line that
 * names it, and leaves no shard behind (ASan sees the leaks). */
void test_ps_shard_dana_refused(void) {
    static const char *const want[] = {
        "train.async_momentum=dana is for train.mode async and ssp, not sync",
        "train.async_momentum=dana needs train.optimizer sgd with train.momentum > 0",
        "train.async_momentum=dana needs train.optimizer sgd with train.momentum > 0",
        "train.async_momentum=dana takes train.nesterov=false",
        "cannot take train.staleness_lr=momentum",
        "cannot take rpc.push_topk_momentum",
        "set train.sparse_embeddings=false",
        "over the limit of 4 GiB",
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(want); i++) {
        ps_shard_opts_t o = dana_opts(PS_STALENESS_LR_OFF);
        switch (i) {
        case 0:
            o.sync = true;
            break;
        case 1:
            optim_defaults(&o.optim, OPTIM_ADAM);
            break;
        case 2:
            o.optim.momentum = 0;
            break;
        case 3:
            o.optim.nesterov = true;
            break;
        case 4:
            o.staleness_lr = PS_STALENESS_LR_MOMENTUM;
            break;
        case 5:
            o.sparse_sgd = true;
            break;
        case 6:
            o.sparse_rows = true;
            break;
        case 7:
            o.max_workers = 100000;
            break; /* x ~100k weights x 4 bytes: 40 GB */
        }
        model_t m;
        ps_shard_t s;
        char err[PS_ERRLEN] = "";
        CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
        CHECK(ps_shard_init(&s, &m, &o, err, sizeof err) != 0);
        CHECK_STR_CONTAINS(err, want[i]);
        CHECK(strchr(err, '\n') == NULL);
        model_free(&m);
    }
}

/* A checkpoint holds the weights and V (slot "momentum"); a restore gives
 * each of the 2 workers V / 2, so that the look-ahead is where it was. */
void test_ps_shard_dana_restore(void) {
    ps_shard_opts_t o = dana_opts(PS_STALENESS_LR_OFF);
    dana_fixture_t a, b;
    CHECK(dana_setup(&a, &o) == 0);
    CHECK(dana_setup(&b, &o) == 0);
    CHECK(dana_push(&a, 0, 1.0f, 0) == 0);
    CHECK(dana_push(&a, 1, 2.0f, 1) == 0);
    char path[PATH_MAX], err[PS_ERRLEN];
    const char *dir = test_path("ckpt-2");
    CHECK(ps_shard_save(&a.s, dir, 1, 2, path, sizeof path, err, sizeof err) == 0);
    CHECK(ps_shard_restore(&b.s, dir, NULL, err, sizeof err) == 0);
    const size_t k = 3, size = b.s.store.size;
    CHECK_NEAR(b.s.store.w[k], a.s.store.w[k], 0);
    CHECK_NEAR(b.s.store.slots[0][k], -0.3, 1e-6);
    CHECK_NEAR(b.s.dana->v[k], -0.15, 1e-6);
    CHECK_NEAR(b.s.dana->v[size + k], -0.15, 1e-6);
    CHECK_NEAR(pulled(&b, "worker", k), pulled(&a, "worker", k), 1e-6);
    /* and the next push goes on from there: v0 = 0.9 * -0.15 - 0.1 */
    CHECK(dana_push(&b, 0, 1.0f, 2) == 0);
    CHECK_NEAR(b.s.store.slots[0][k], -0.3 - 0.135 - 0.1 + 0.15, 1e-6);
    ps_shard_reset(&b.s);
    CHECK_NEAR(b.s.dana->v[k], 0, 0);
    CHECK_NEAR(pulled(&b, "worker", k), b.s.store.w[k], 0);
    dana_teardown(&a);
    dana_teardown(&b);
}

/* train.async_momentum auto: dana with 2 workers or more and SGD momentum,
 * staleness_lr auto then off; one momentum with one worker or Adam (and a
 * setting dana cannot take is no error), staleness_lr auto then inverse. */
void test_ps_shard_dana_auto(void) {
    for (int i = 0; i < 4; i++) {
        ps_shard_opts_t o = dana_opts(PS_STALENESS_LR_AUTO);
        o.dana = false;
        o.dana_auto = true;
        if (i == 1)
            o.max_workers = 1;
        if (i == 2)
            optim_defaults(&o.optim, OPTIM_ADAM);
        if (i == 3)
            o.optim.nesterov = true;
        dana_fixture_t f;
        CHECK(dana_setup(&f, &o) == 0);
        CHECK((f.s.dana != NULL) == (i == 0));
        CHECK_INT_EQ(f.s.staleness_lr, i == 0 ? PS_STALENESS_LR_OFF : PS_STALENESS_LR_INVERSE);
        dana_teardown(&f);
    }
}

/* A sparse push (rpc.push_topk: values at some indices of a partition) is
 * the dense gradient with zeros elsewhere under dana too: the same weights,
 * V and look-ahead over the whole partition. */
void test_ps_shard_dana_sparse_push(void) {
    ps_shard_opts_t o = dana_opts(PS_STALENESS_LR_OFF);
    dana_fixture_t a, b;
    CHECK(dana_setup(&a, &o) == 0);
    CHECK(dana_setup(&b, &o) == 0);
    CHECK(dana_push(&a, 0, 1.0f, 0) == 0); /* a velocity to decay */
    CHECK(dana_push(&b, 0, 1.0f, 0) == 0);
    uint32_t idx[] = {3, 7};
    float vals[] = {0.5f, -2.0f};
    Pstrain__Tensor sparse = a.t[0];
    sparse.indices = idx;
    sparse.n_indices = 2;
    sparse.data.data = (uint8_t *)vals;
    sparse.data.len = sizeof vals;
    Pstrain__Tensor *one = &sparse;
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    c.role = "worker";
    c.index = 1;
    Pstrain__PushRequest r = PSTRAIN__PUSH_REQUEST__INIT;
    r.caller = &c;
    r.step = 1;
    r.n_grads = 1;
    r.grads = &one;
    char err[PS_ERRLEN];
    bool stale;
    CHECK(ps_shard_push(&a.s, &r, &stale, err, sizeof err) == 0);
    size_t n = b.s.store.parts[0].size;
    memset(b.g, 0, b.s.store.size * sizeof(float));
    b.g[3] = 0.5f;
    b.g[7] = -2.0f;
    Pstrain__Tensor *dense = &b.t[0];
    r.grads = &dense;
    CHECK(ps_shard_push(&b.s, &r, &stale, err, sizeof err) == 0);
    CHECK_ARRAY_NEAR("w", a.s.store.w, b.s.store.w, n, 0);
    CHECK_ARRAY_NEAR("V", a.s.store.slots[0], b.s.store.slots[0], n, 0);
    CHECK_ARRAY_NEAR("ahead", a.s.dana->ahead, b.s.dana->ahead, n, 0);
    CHECK_NEAR(a.s.dana->v[a.s.store.size + 7], -0.1 * -2.0, 1e-7);
    CHECK_NEAR(a.s.dana->v[a.s.store.size + 5], 0, 0);
    CHECK_NEAR(a.s.store.slots[0][5], -0.1, 1e-7); /* worker 0's velocity, untouched */
    for (size_t j = 0; j < n; j++) /* the dense room is zero again for the next push */
        CHECK_NEAR(a.s.accum[j], 0, 0);
    dana_teardown(&a);
    dana_teardown(&b);
}

/* A moving statistic (BatchNormalization's moving mean and variance) moves
 * under dana as without it, by its moving average, with no velocity: the
 * look-ahead a worker pulls is the statistic itself. */
void test_ps_shard_dana_moving(void) {
    static const char spec[] =
        "{\"input\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 3}, {\"type\": "
        "\"batch_normalization\", \"momentum\": 0.9}, {\"type\": \"dense\", \"units\": 2, "
        "\"activation\": \"softmax\"}]}";
    ps_shard_opts_t o = dana_opts(PS_STALENESS_LR_OFF);
    dana_fixture_t f;
    char err[PS_ERRLEN];
    memset(&f, 0, sizeof f);
    CHECK(model_parse(&f.m, spec, err, sizeof err) == 0);
    CHECK(ps_shard_init(&f.s, &f.m, &o, err, sizeof err) == 0);
    f.g = xmalloc(f.s.store.size * sizeof(float));
    shard_tensors(&f.s, f.g, &f.t, &f.tp);
    size_t moving = f.s.store.nparts;
    for (size_t i = 0; i < f.s.store.nparts; i++)
        if (f.m.vars[f.s.store.parts[i].var].moving && moving == f.s.store.nparts)
            moving = i;
    CHECK(moving < f.s.store.nparts);
    size_t at = f.s.store.parts[moving].offset;
    float m0 = f.s.store.w[at];
    CHECK(dana_push(&f, 0, 1.0f, 0) == 0);
    CHECK_NEAR(f.s.store.w[at], 0.9 * m0 + 0.1, 1e-6);
    CHECK_NEAR(f.s.dana->v[at], 0, 0);
    CHECK_NEAR(f.s.dana->ahead[at], f.s.store.w[at], 0);
    CHECK_NEAR(f.s.dana->v[0], -0.1, 1e-6); /* the dense kernel's velocity, for contrast */
    dana_teardown(&f);
}

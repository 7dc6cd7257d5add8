/* The parameter server's service over real gRPC on loopback (the daemon's
 * handlers, in this process): malformed and invalid requests get
 * INVALID_ARGUMENT and change nothing, the server keeps serving, and a sync
 * pull for a step not reached yet waits until a push makes it. */
#include "test.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/rpc/rpc.h"
#include "common/base/util.h"
#include "ps/service.h"
#include "test_helpers.h"

/* A full push of gradient `value` from worker `index` at `step`, packed. */
static size_t pack_push(test_ps_t *e, uint32_t index, uint64_t step, float value, uint8_t **out) {
    store_t *st = &e->svc.shard.store;
    float *g = xmalloc(st->size * sizeof(float));
    for (size_t i = 0; i < st->size; i++)
        g[i] = value;
    Pstrain__Tensor *t = xcalloc(st->nparts, sizeof *t);
    Pstrain__Tensor **tp = xcalloc(st->nparts, sizeof *tp);
    for (size_t i = 0; i < st->nparts; i++) {
        Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
        t[i] = init;
        t[i].name = (char *)e->m.vars[st->parts[i].var].name;
        t[i].row_begin = st->parts[i].row_begin;
        t[i].rows = st->parts[i].rows;
        t[i].data.data = (uint8_t *)(g + st->parts[i].offset);
        t[i].data.len = st->parts[i].size * sizeof(float);
        tp[i] = &t[i];
    }
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    c.role = "worker";
    c.index = index;
    Pstrain__PushRequest r = PSTRAIN__PUSH_REQUEST__INIT;
    r.caller = &c;
    r.step = step;
    r.n_grads = st->nparts;
    r.grads = tp;
    size_t len = pstrain__push_request__get_packed_size(&r);
    *out = xmalloc(len);
    pstrain__push_request__pack(&r, *out);
    free(g);
    free(t);
    free(tp);
    return len;
}

void test_ps_service_bad_requests(void) {
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN];
    uint8_t garbage[64];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)(0xfe - 3 * i);
    int code = rpc_call(e.ch, "/pstrain.ParameterServer/Push", garbage, sizeof garbage, 10.0, &resp,
                        err, sizeof err);
    CHECK_INT_EQ(code, RPC_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(err, "malformed");
    code = rpc_call(e.ch, "/pstrain.ParameterServer/Pull", garbage, sizeof garbage, 10.0, &resp,
                    err, sizeof err);
    CHECK_INT_EQ(code, RPC_INVALID_ARGUMENT);
    /* A push with a NaN: refused whole, nothing applied. */
    size_t bytes = e.svc.shard.store.size * sizeof(float);
    float *w0 = xmalloc(bytes);
    memcpy(w0, e.svc.shard.store.w, bytes);
    uint8_t *push;
    size_t len = pack_push(&e, 0, 0, NAN, &push);
    code = rpc_call(e.ch, "/pstrain.ParameterServer/Push", push, len, 10.0, &resp, err, sizeof err);
    CHECK_INT_EQ(code, RPC_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(err, "NaN");
    free(push);
    CHECK(memcmp(w0, e.svc.shard.store.w, bytes) == 0);
    /* An unknown method, then a good push: the server still serves. */
    code = rpc_call(e.ch, "/pstrain.ParameterServer/Nope", NULL, 0, 10.0, &resp, err, sizeof err);
    CHECK_INT_EQ(code, RPC_UNIMPLEMENTED);
    len = pack_push(&e, 1, 0, 0.5f, &push);
    code = rpc_call(e.ch, "/pstrain.ParameterServer/Push", push, len, 10.0, &resp, err, sizeof err);
    free(push);
    CHECK_INT_EQ(code, RPC_OK);
    Pstrain__PushResponse *pr = pstrain__push_response__unpack(NULL, resp.len, resp.data);
    CHECK(pr != NULL);
    CHECK_INT_EQ(pr->step, 1);
    pstrain__push_response__free_unpacked(pr, NULL);
    CHECK(memcmp(w0, e.svc.shard.store.w, bytes) != 0);
    CHECK_INT_EQ(e.svc.bad_requests, 3);
    free(w0);
    rpc_buf_free(&resp);
    test_ps_stop(&e);
}

typedef struct {
    test_ps_t *e;
    int code;
    uint64_t step;
    uint64_t lineage; /* of the pull; 0: none */
} pull_arg_t;

static void *waiting_pull(void *p) {
    pull_arg_t *a = p;
    Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
    req.min_step = 1;
    req.lineage = a->lineage;
    uint8_t buf[32];
    size_t len = pstrain__pull_request__pack(&req, buf);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN];
    a->code =
        rpc_call(a->e->ch, "/pstrain.ParameterServer/Pull", buf, len, 20.0, &resp, err, sizeof err);
    if (a->code == RPC_OK) {
        Pstrain__PullResponse *r = pstrain__pull_response__unpack(NULL, resp.len, resp.data);
        a->step = r ? r->step : 0;
        if (r)
            pstrain__pull_response__free_unpacked(r, NULL);
    }
    rpc_buf_free(&resp);
    return NULL;
}

void test_ps_service_sync_pull_waits(void) {
    test_ps_t e;
    CHECK(test_ps_start(&e, true, NULL) == 0);
    pull_arg_t a = {.e = &e, .code = -1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, waiting_pull, &a) == 0);
    /* The pull is parked until step 1 exists. */
    for (int i = 0; i < 200 && e.svc.nwaits == 0; i++)
        usleep(10000);
    CHECK_INT_EQ(e.svc.nwaits, 1);
    CHECK_INT_EQ(a.code, -1);
    uint8_t *push;
    size_t len = pack_push(&e, 0, 0, 0.1f, &push);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN];
    CHECK_INT_EQ(
        rpc_call(e.ch, "/pstrain.ParameterServer/Push", push, len, 10.0, &resp, err, sizeof err),
        RPC_OK);
    free(push);
    pthread_join(t, NULL);
    CHECK_INT_EQ(a.code, RPC_OK);
    CHECK_INT_EQ(a.step, 1);
    /* The server thread drops the answered wait just after answering it. */
    for (int i = 0; i < 200 && e.svc.nwaits != 0; i++)
        usleep(10000);
    CHECK_INT_EQ(e.svc.nwaits, 0);
    rpc_buf_free(&resp);
    test_ps_stop(&e);
}

/* The master giving the PS the cluster's lineage (an adoption: same model,
 * same step) must not answer a sync pull that waits for the next step:
 * its worker would get the step it has already pushed, compute it again
 * and push it again, stale (the sync run's stale push in cluster_local). */
void test_ps_service_adopt_keeps_waits(void) {
    test_ps_t e;
    CHECK(test_ps_start(&e, true, NULL) == 0);
    pull_arg_t a = {.e = &e, .code = -1, .lineage = e.svc.lineage};
    CHECK(a.lineage != 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, waiting_pull, &a) == 0);
    for (int i = 0; i < 200 && e.svc.nwaits == 0; i++)
        usleep(10000);
    CHECK_INT_EQ(e.svc.nwaits, 1);
    Pstrain__RestoreRequest rq = PSTRAIN__RESTORE_REQUEST__INIT;
    rq.adopt = true;
    rq.lineage = a.lineage + 12345;
    uint8_t buf[64];
    size_t len = pstrain__restore_request__pack(&rq, buf);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN];
    CHECK_INT_EQ(
        rpc_call(e.ch, "/pstrain.ParameterServer/Restore", buf, len, 10.0, &resp, err, sizeof err),
        RPC_OK);
    CHECK(e.svc.lineage == rq.lineage);
    usleep(100000);
    CHECK_INT_EQ(e.svc.nwaits, 1); /* still waiting for step 1 */
    CHECK_INT_EQ(a.code, -1);
    uint8_t *push;
    len = pack_push(&e, 0, 0, 0.1f, &push);
    CHECK_INT_EQ(
        rpc_call(e.ch, "/pstrain.ParameterServer/Push", push, len, 10.0, &resp, err, sizeof err),
        RPC_OK);
    free(push);
    pthread_join(t, NULL);
    CHECK_INT_EQ(a.code, RPC_OK);
    CHECK_INT_EQ(a.step, 1);
    rpc_buf_free(&resp);
    test_ps_stop(&e);
}

/* Every float of a pull's tensors, in the order they come. */
static size_t pulled_floats(const rpc_buf_t *resp, float *out, size_t cap) {
    Pstrain__PullResponse *r = pstrain__pull_response__unpack(NULL, resp->len, resp->data);
    if (!r)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < r->n_tensors; i++) {
        size_t k = r->tensors[i]->data.len / sizeof(float);
        if (n + k > cap)
            break;
        memcpy(out + n, r->tensors[i]->data.data, k * sizeof(float));
        n += k;
    }
    pstrain__pull_response__free_unpacked(r, NULL);
    return n;
}

typedef struct {
    test_ps_t *e;
    const rpc_options_t *opt;
    const float *w0;
    size_t n;
    int bad, failed;
    char err[PS_ERRLEN];
} hammer_t;

/* Pushes gradients of 1 and pulls, over and over, on a channel of its own:
 * every pull must see the same update count in every weight (each push
 * moves all of them by the same step), whatever the other thread does. */
static void *hammer(void *arg) {
    hammer_t *h = arg;
    rpc_channel_t *ch = NULL;
    if (rpc_channel_create(&ch, h->e->addr, h->opt, h->err, sizeof h->err)) {
        h->failed++;
        return NULL;
    }
    uint8_t *push;
    size_t len = pack_push(h->e, 0, 0, 1.0f, &push);
    Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
    uint8_t pull[32];
    size_t plen = pstrain__pull_request__pack(&req, pull);
    float *w = xmalloc(h->n * sizeof(float));
    rpc_buf_t resp = {0};
    for (int i = 0; i < 150 && !h->failed; i++) {
        if (rpc_call(ch, "/pstrain.ParameterServer/Push", push, len, 10.0, &resp, h->err,
                     sizeof h->err) != RPC_OK ||
            rpc_call(ch, "/pstrain.ParameterServer/Pull", pull, plen, 10.0, &resp, h->err,
                     sizeof h->err) != RPC_OK ||
            pulled_floats(&resp, w, h->n) != h->n) {
            h->failed++;
            break;
        }
        float d0 = h->w0[0] - w[0];
        for (size_t j = 1; j < h->n; j++)
            if (fabsf((h->w0[j] - w[j]) - d0) > 1e-3f) {
                if (!h->bad)
                    fprintf(stderr, "pull %d: weight 0 moved %g, weight %zu moved %g\n", i, d0, j,
                            h->w0[j] - w[j]);
                h->bad++;
                break;
            }
    }
    free(push);
    free(w);
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    return NULL;
}

/* Two clients push and pull at once over each transport: no pull ever sees
 * a model torn between two updates, and every push is applied once. */
static void concurrent_over(const rpc_options_t *opt) {
    test_ps_t e;
    CHECK(test_ps_start(&e, false, opt) == 0);
    size_t n = e.svc.shard.store.size;
    float *w0 = xmalloc(n * sizeof(float));
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN];
    Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
    uint8_t pull[32];
    size_t plen = pstrain__pull_request__pack(&req, pull);
    CHECK_INT_EQ(
        rpc_call(e.ch, "/pstrain.ParameterServer/Pull", pull, plen, 10.0, &resp, err, sizeof err),
        RPC_OK);
    CHECK_INT_EQ(pulled_floats(&resp, w0, n), n);
    hammer_t h[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        h[i] = (hammer_t){.e = &e, .opt = opt, .w0 = w0, .n = n};
        CHECK(pthread_create(&t[i], NULL, hammer, &h[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        if (h[i].failed || h[i].bad)
            fprintf(stderr, "over %s, client %d: %d torn pulls; %s\n", rpc_channel_transport(e.ch),
                    i, h[i].bad, h[i].failed ? h[i].err : "");
        CHECK_INT_EQ(h[i].failed, 0);
        CHECK_INT_EQ(h[i].bad, 0);
    }
    CHECK_INT_EQ(e.svc.shard.pushes, 300);
    free(w0);
    rpc_buf_free(&resp);
    test_ps_stop(&e);
}

void test_ps_service_concurrent(void) {
    rpc_options_t grpc = {0}, tcp = {.stream = 1}, shm = {.stream = 1, .shm = 1};
    concurrent_over(&grpc);
    concurrent_over(&tcp);
    concurrent_over(&shm);
}

/* The gRPC layer: servers and clients in this process over loopback, on free
 * ports. Threads meet through a mutex and condition variable, never by
 * sleeping; every wait is bounded so that a bug fails instead of hanging. */
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/rpc/rpc.h"
#include "common/base/util.h"

#define ECHO "/pstrain.Test/Echo"
#define FAIL "/pstrain.Test/Fail"
#define WAIT "/pstrain.Test/Wait"
#define RELEASE "/pstrain.Test/Release"
#define BIG "/pstrain.Test/Big"
#define PORT "/pstrain.Test/Port"
#define SHARD "/pstrain.Test/Shard"

/* A generous bound on every wait in these tests, also under ASan. */
#define WAIT_S 10.0

/* Set while a test runs again over the tensor stream (rpc_stream_*): its
 * servers offer one and its channels use it. */
static int g_stream;
/* And through shared memory (rpc_shm_*). */
static int g_shm;

/* ---- The test service --------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_call_t *waiting[64]; /* deferred calls of Wait */
    int n_waiting;
    int waits;   /* Wait calls its handler saw */
    int cancels; /* on_cancel calls */
    int ticks;
    int releases; /* zero-copy buffers given back */
    int port;
    char shard[64]; /* what Shard answers, without a copy */
} service_t;

static void service_init(service_t *sv) {
    memset(sv, 0, sizeof *sv);
    pthread_mutex_init(&sv->mu, NULL);
    pthread_cond_init(&sv->cv, NULL);
}

static void service_free(service_t *sv) {
    pthread_mutex_destroy(&sv->mu);
    pthread_cond_destroy(&sv->cv);
}

static void on_echo(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    rpc_call_reply(call, RPC_OK, NULL, req, len);
}

static void on_fail(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    rpc_call_reply(call, RPC_INVALID_ARGUMENT, "variable dense/kernel: wrong shape", NULL, 0);
}

/* Keeps the call unanswered until Release, another thread, or a cancel. */
static void on_wait(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    service_t *sv = ctx;
    pthread_mutex_lock(&sv->mu);
    sv->waiting[sv->n_waiting++] = call;
    sv->waits++;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
}

/* Answers every waiting call with this request's bytes, then itself. */
static void on_release(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    service_t *sv = ctx;
    pthread_mutex_lock(&sv->mu);
    for (int i = 0; i < sv->n_waiting; i++)
        rpc_call_reply(sv->waiting[i], RPC_OK, NULL, req, len);
    int n = sv->n_waiting;
    sv->n_waiting = 0;
    pthread_mutex_unlock(&sv->mu);
    char msg[32];
    snprintf(msg, sizeof msg, "%d", n);
    rpc_call_reply(call, RPC_OK, NULL, msg, strlen(msg));
}

/* Replies with as many bytes as the request's decimal number says. */
static void on_big(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    char text[32];
    snprintf(text, sizeof text, "%.*s", (int)PS_MIN(len, sizeof text - 1), (const char *)req);
    size_t n = strtoull(text, NULL, 10);
    uint8_t *body = xcalloc(1, n);
    rpc_call_reply(call, RPC_OK, NULL, body, n);
    free(body);
}

static void on_port(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    service_t *sv = ctx;
    char text[16];
    snprintf(text, sizeof text, "%d", sv->port);
    rpc_call_reply(call, RPC_OK, NULL, text, strlen(text));
}

static void count_release(void *arg) {
    service_t *sv = arg;
    pthread_mutex_lock(&sv->mu);
    sv->releases++;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
}

/* Answers with the service's shard, lent to gRPC; an error when asked "fail". */
static void on_shard(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    service_t *sv = ctx;
    int fail = len == 4 && memcmp(req, "fail", 4) == 0;
    rpc_call_reply_zc(call, fail ? RPC_NOT_FOUND : RPC_OK, fail ? "no such shard" : NULL, sv->shard,
                      strlen(sv->shard), count_release, sv);
}

static void on_cancel(void *ctx, rpc_call_t *call) {
    service_t *sv = ctx;
    pthread_mutex_lock(&sv->mu);
    for (int i = 0; i < sv->n_waiting; i++)
        if (sv->waiting[i] == call)
            sv->waiting[i--] = sv->waiting[--sv->n_waiting];
    sv->cancels++;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
    if (!rpc_call_is_cancelled(call))
        test_fail(__FILE__, __LINE__, "on_cancel for a call not marked cancelled");
    rpc_call_reply(call, RPC_CANCELLED, "client gone", NULL, 0);
}

static void on_tick(void *ctx) {
    service_t *sv = ctx;
    pthread_mutex_lock(&sv->mu);
    sv->ticks++;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
}

static const rpc_method_t methods[] = {
    {ECHO, on_echo}, {FAIL, on_fail}, {WAIT, on_wait},   {RELEASE, on_release},
    {BIG, on_big},   {PORT, on_port}, {SHARD, on_shard},
};

static rpc_server_config_t config(service_t *sv, const char *addr) {
    rpc_server_config_t c;
    memset(&c, 0, sizeof c);
    c.addr = addr;
    c.methods = methods;
    c.n_methods = PS_ARRAY_LEN(methods);
    c.ctx = sv;
    c.on_cancel = on_cancel;
    c.opt.stream = g_stream;
    c.opt.shm = g_shm;
    return c;
}

/* Starts the test service on a free loopback port; returns the port, 0 on error. */
static int start(rpc_server_t **srv, service_t *sv, const rpc_options_t *opt) {
    rpc_server_config_t c = config(sv, "127.0.0.1:0");
    if (opt)
        c.opt = *opt;
    c.opt.stream = g_stream;
    c.opt.shm = g_shm;
    char err[PS_ERRLEN];
    if (rpc_server_start(srv, &c, err, sizeof err) < 0) {
        test_fail(__FILE__, __LINE__, "rpc_server_start: %s", err);
        return 0;
    }
    sv->port = rpc_server_port(*srv);
    return sv->port;
}

static rpc_channel_t *connect_to(int port, const rpc_options_t *given) {
    rpc_options_t opt = given ? *given : (rpc_options_t){0};
    opt.stream = g_stream;
    opt.shm = g_shm;
    char target[64], err[PS_ERRLEN];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel_t *ch = NULL;
    if (rpc_channel_create(&ch, target, &opt, err, sizeof err) < 0)
        test_fail(__FILE__, __LINE__, "rpc_channel_create: %s", err);
    return ch;
}

/* A port that nothing listens on (it just did, so it is not reserved). */
/* A loopback port nobody listens on, held so that no other test (ctest -j)
 * can take it meanwhile: bound, never listening, so that a connect is
 * refused. *holder: close it when done, or just before a server of this
 * test binds the port (pstrain's servers turn SO_REUSEPORT off). */
static int dead_port(int *holder) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *holder = fd;
    return ntohs(a.sin_port);
}

/* Waits until *counter >= want, for at most WAIT_S; returns -1 on timeout. */
static int wait_for(service_t *sv, const int *counter, int want) {
    double until = ps_now() + WAIT_S;
    pthread_mutex_lock(&sv->mu);
    while (*counter < want && ps_now() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&sv->cv, &sv->mu, &ts);
    }
    int ok = *counter >= want;
    pthread_mutex_unlock(&sv->mu);
    return ok ? 0 : -1;
}

/* After a Wait call came back DEADLINE_EXCEEDED: its handler's owner hears
 * of the cancel, if the handler saw the call at all. On a loaded machine
 * (ctest -j16 on 2 cores) the request can reach the server after its
 * deadline, which then answers it without a handler (a valid path, said on
 * stderr); a handler that did see it is cancelled within WAIT_S. */
static int wait_cancelled(service_t *sv, int want) {
    double until = ps_now() + 1.0; /* a handler still to run on the late request */
    pthread_mutex_lock(&sv->mu);
    while (sv->waits < want && ps_now() < until) {
        pthread_mutex_unlock(&sv->mu);
        ps_sleep(0.01);
        pthread_mutex_lock(&sv->mu);
    }
    int seen = sv->waits >= want;
    pthread_mutex_unlock(&sv->mu);
    if (!seen) {
        fprintf(stderr, "note: the Wait call arrived after its deadline; no handler, no cancel\n");
        return 0;
    }
    return wait_for(sv, &sv->cancels, want);
}

/* A client call on its own thread. */
typedef struct {
    rpc_channel_t *ch;
    const char *method;
    const void *req;
    size_t len;
    double deadline_s;
    int code;
    rpc_buf_t resp;
    char err[PS_ERRLEN];
    pthread_t thread;
} bg_call_t;

static void *bg_run(void *arg) {
    bg_call_t *b = arg;
    b->code =
        rpc_call(b->ch, b->method, b->req, b->len, b->deadline_s, &b->resp, b->err, sizeof b->err);
    return NULL;
}

static void bg_start(bg_call_t *b, rpc_channel_t *ch, const char *method, const char *req,
                     double deadline_s) {
    memset(b, 0, sizeof *b);
    b->ch = ch;
    b->method = method;
    b->req = req;
    b->len = strlen(req);
    b->deadline_s = deadline_s;
    pthread_create(&b->thread, NULL, bg_run, b);
}

static int resp_is(const rpc_buf_t *b, const char *want) {
    return b->len == strlen(want) && memcmp(b->data, want, b->len) == 0;
}

/* ---- Tests -------------------------------------------------------------------- */

void test_rpc_echo(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    CHECK(ch);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    const char *msg = "hello, parameter server";
    CHECK_INT_EQ(rpc_call(ch, ECHO, msg, strlen(msg), WAIT_S, &resp, err, sizeof err), RPC_OK);
    CHECK(resp_is(&resp, msg));
    /* An empty message is a message too. */
    CHECK_INT_EQ(rpc_call(ch, ECHO, "", 0, WAIT_S, &resp, err, sizeof err), RPC_OK);
    CHECK_INT_EQ(resp.len, 0);
    /* Sizes across the send pool's threshold, with the buffers reused. */
    size_t sizes[] = {1, 65535, 65536, 1 << 20, 3000, 2 << 20};
    for (size_t i = 0; i < PS_ARRAY_LEN(sizes); i++) {
        uint8_t *req = xmalloc(sizes[i]);
        for (size_t k = 0; k < sizes[i]; k++)
            req[k] = (uint8_t)(k * 31 + i);
        CHECK_INT_EQ(rpc_call(ch, ECHO, req, sizes[i], WAIT_S, &resp, err, sizeof err), RPC_OK);
        CHECK_INT_EQ(resp.len, sizes[i]);
        CHECK(memcmp(resp.data, req, sizes[i]) == 0);
        free(req);
    }
    CHECK(strcmp(rpc_channel_target(ch), "") != 0);
    /* Over the transport asked for. */
    CHECK_INT_EQ(rpc_server_stream_port(srv) > 0, g_stream);
    CHECK_INT_EQ(rpc_channel_stream_port(ch), rpc_server_stream_port(srv));
    CHECK(strcmp(rpc_channel_transport(ch), g_shm ? "shm" : g_stream ? "stream" : "grpc") == 0);
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

typedef struct {
    rpc_channel_t *ch;
    int id, bad;
} worker_t;

static void *echo_many(void *arg) {
    worker_t *w = arg;
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN];
    for (int i = 0; i < 100; i++) {
        char req[64];
        int n = snprintf(req, sizeof req, "worker %d call %d", w->id, i);
        if (rpc_call(w->ch, ECHO, req, (size_t)n, WAIT_S, &resp, err, sizeof err) != RPC_OK ||
            !resp_is(&resp, req)) {
            fprintf(stderr, "worker %d call %d: %s\n", w->id, i, err);
            w->bad++;
        }
    }
    rpc_buf_free(&resp);
    return NULL;
}

void test_rpc_concurrent(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *shared = connect_to(port, NULL);
    rpc_channel_t *own[4];
    worker_t w[8];
    pthread_t th[8];
    /* Eight threads: four have their own channel, four share one. */
    for (int i = 0; i < 4; i++)
        own[i] = connect_to(port, NULL);
    for (int i = 0; i < 8; i++) {
        w[i] = (worker_t){i < 4 ? own[i] : shared, i, 0};
        pthread_create(&th[i], NULL, echo_many, &w[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++)
        CHECK_INT_EQ(w[i].bad, 0);
    /* 32 calls in flight on one channel at once. */
    rpc_fanout_t f[32];
    rpc_buf_t resp[32];
    char req[32][16];
    memset(resp, 0, sizeof resp);
    for (int i = 0; i < 32; i++) {
        snprintf(req[i], sizeof req[i], "call %d", i);
        f[i] = (rpc_fanout_t){.ch = shared, .req = req[i], .len = strlen(req[i]), .resp = &resp[i]};
    }
    CHECK_INT_EQ(rpc_fanout(f, 32, ECHO, WAIT_S), 0);
    for (int i = 0; i < 32; i++) {
        CHECK(resp_is(&resp[i], req[i]));
        rpc_buf_free(&resp[i]);
    }
    for (int i = 0; i < 4; i++)
        rpc_channel_destroy(own[i]);
    rpc_channel_destroy(shared);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_large(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    size_t n = (size_t)48 << 20;
    uint8_t *req = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        req[i] = (uint8_t)(i ^ (i >> 13));
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    for (int round = 0; round < 2; round++) {
        CHECK_INT_EQ(rpc_call(ch, ECHO, req, n, 60, &resp, err, sizeof err), RPC_OK);
        CHECK_INT_EQ(resp.len, n);
        CHECK(memcmp(resp.data, req, n) == 0);
    }
    /* The default limit is 64 MiB of payload plus 1 MiB. */
    char big[32];
    snprintf(big, sizeof big, "%zu", RPC_DEFAULT_MAX_MESSAGE);
    CHECK_INT_EQ(rpc_call(ch, BIG, big, strlen(big), 60, &resp, err, sizeof err), RPC_OK);
    CHECK_INT_EQ(resp.len, RPC_DEFAULT_MAX_MESSAGE);
    free(req);
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_too_large(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    rpc_options_t small = {.max_recv = 1 << 20, .max_send = 1 << 20};
    int port = start(&srv, &sv, &small);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    size_t n = (size_t)2 << 20;
    uint8_t *req = xcalloc(1, n);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    /* The server refuses a request over its receive limit... */
    CHECK_INT_EQ(rpc_call(ch, ECHO, req, n, WAIT_S, &resp, err, sizeof err),
                 RPC_RESOURCE_EXHAUSTED);
    CHECK_STR_CONTAINS(err, "RESOURCE_EXHAUSTED");
    /* ...and will not send a response over its send limit. */
    CHECK_INT_EQ(rpc_call(ch, BIG, "2000000", 7, WAIT_S, &resp, err, sizeof err),
                 RPC_RESOURCE_EXHAUSTED);
    /* A client over its own limits, both ways. */
    rpc_channel_t *tight = connect_to(port, &small);
    CHECK_INT_EQ(rpc_call(tight, ECHO, req, n, WAIT_S, &resp, err, sizeof err),
                 RPC_RESOURCE_EXHAUSTED);
    rpc_server_t *srv2 = NULL;
    service_t sv2;
    service_init(&sv2);
    int port2 = start(&srv2, &sv2, NULL);
    rpc_channel_t *tight2 = connect_to(port2, &small);
    CHECK_INT_EQ(rpc_call(tight2, BIG, "2000000", 7, WAIT_S, &resp, err, sizeof err),
                 RPC_RESOURCE_EXHAUSTED);
    /* Within the limits all is well, on the same channels. */
    CHECK_INT_EQ(rpc_call(ch, ECHO, req, 1000, WAIT_S, &resp, err, sizeof err), RPC_OK);
    CHECK_INT_EQ(rpc_call(tight2, BIG, "1000000", 7, WAIT_S, &resp, err, sizeof err), RPC_OK);
    CHECK_INT_EQ(resp.len, 1000000);
    /* A limit gRPC cannot take is an error, not a silent wrap. */
    rpc_options_t huge = {.max_recv = (size_t)3 << 30};
    rpc_channel_t *bad = NULL;
    CHECK(rpc_channel_create(&bad, "127.0.0.1:1", &huge, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "max_recv");
    free(req);
    rpc_buf_free(&resp);
    rpc_channel_destroy(tight2);
    rpc_channel_destroy(tight);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv2);
    rpc_server_stop(srv);
    service_free(&sv2);
    service_free(&sv);
}

void test_rpc_unimplemented(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch, "/pstrain.Test/Nope", "x", 1, WAIT_S, &resp, err, sizeof err),
                 RPC_UNIMPLEMENTED);
    CHECK_STR_CONTAINS(err, "UNIMPLEMENTED");
    CHECK_STR_CONTAINS(err, "/pstrain.Test/Nope");
    CHECK_INT_EQ(rpc_call(ch, ECHO, "x", 1, WAIT_S, &resp, err, sizeof err), RPC_OK);
    CHECK(strcmp(rpc_status_name(RPC_UNAVAILABLE), "UNAVAILABLE") == 0);
    CHECK(strcmp(rpc_status_name(99), "UNKNOWN_STATUS") == 0);
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_handler_error(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch, FAIL, "x", 1, WAIT_S, &resp, err, sizeof err), RPC_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(err, "INVALID_ARGUMENT");
    CHECK_STR_CONTAINS(err, "variable dense/kernel: wrong shape");
    CHECK_STR_CONTAINS(err, FAIL);
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_deadline(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    double t0 = ps_now();
    CHECK_INT_EQ(rpc_call(ch, WAIT, "x", 1, 0.2, &resp, err, sizeof err), RPC_DEADLINE_EXCEEDED);
    double took = ps_now() - t0;
    CHECK(took >= 0.19 && took < 5.0);
    CHECK_STR_CONTAINS(err, "DEADLINE_EXCEEDED");
    /* The owner of the deferred call hears that its client is gone. */
    CHECK(wait_cancelled(&sv, 1) == 0);
    CHECK_INT_EQ(sv.n_waiting, 0);
    /* The channel is still good. */
    CHECK_INT_EQ(rpc_call(ch, ECHO, "again", 5, WAIT_S, &resp, err, sizeof err), RPC_OK);
    CHECK(resp_is(&resp, "again"));
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

/* Waits for the next deferred call and answers it from this thread. */
static void *answer_from_thread(void *arg) {
    service_t *sv = arg;
    if (wait_for(sv, &sv->n_waiting, 1) < 0)
        return NULL;
    pthread_mutex_lock(&sv->mu);
    rpc_call_t *call = sv->waiting[--sv->n_waiting];
    pthread_mutex_unlock(&sv->mu);
    rpc_call_reply(call, RPC_OK, NULL, "from a thread", 13);
    return NULL;
}

void test_rpc_deferred(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    /* Answered by another thread of the server's owner. */
    pthread_t th;
    pthread_create(&th, NULL, answer_from_thread, &sv);
    CHECK_INT_EQ(rpc_call(ch, WAIT, "x", 1, WAIT_S, &resp, err, sizeof err), RPC_OK);
    pthread_join(th, NULL);
    CHECK(resp_is(&resp, "from a thread"));
    /* Answered by a later call's handler: three waits, released by one call. */
    bg_call_t b[3];
    for (int i = 0; i < 3; i++)
        bg_start(&b[i], ch, WAIT, "w", WAIT_S);
    CHECK(wait_for(&sv, &sv.n_waiting, 3) == 0);
    CHECK_INT_EQ(rpc_call(ch, RELEASE, "step 7", 6, WAIT_S, &resp, err, sizeof err), RPC_OK);
    CHECK(resp_is(&resp, "3"));
    for (int i = 0; i < 3; i++) {
        pthread_join(b[i].thread, NULL);
        CHECK_INT_EQ(b[i].code, RPC_OK);
        CHECK(resp_is(&b[i].resp, "step 7"));
        rpc_buf_free(&b[i].resp);
    }
    CHECK_INT_EQ(sv.cancels, 0);
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_cancel_and_tick(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_config_t c = config(&sv, "127.0.0.1:0");
    c.on_tick = on_tick;
    c.tick_s = 0.01;
    rpc_server_t *srv = NULL;
    char err[PS_ERRLEN] = "";
    CHECK(rpc_server_start(&srv, &c, err, sizeof err) == 0);
    CHECK(wait_for(&sv, &sv.ticks, 3) == 0);
    rpc_channel_t *ch = connect_to(rpc_server_port(srv), NULL);
    /* A deadline passing reports the deferred call... */
    bg_call_t b;
    bg_start(&b, ch, WAIT, "w", 0.3);
    pthread_join(b.thread, NULL);
    CHECK_INT_EQ(b.code, RPC_DEADLINE_EXCEEDED);
    CHECK(wait_cancelled(&sv, 1) == 0);
    int before = sv.cancels;
    rpc_buf_free(&b.resp);
    /* ...and so does stopping the server with one outstanding. */
    bg_start(&b, ch, WAIT, "w", WAIT_S);
    CHECK(wait_for(&sv, &sv.n_waiting, 1) == 0);
    rpc_server_stop(srv);
    CHECK_INT_EQ(sv.cancels, before + 1);
    CHECK_INT_EQ(sv.n_waiting, 0);
    pthread_join(b.thread, NULL);
    CHECK(b.code != RPC_OK);
    rpc_buf_free(&b.resp);
    rpc_channel_destroy(ch);
    service_free(&sv);
}

typedef struct {
    service_t *sv; /* on_retry counts in sv->ticks */
    rpc_channel_t *ch;
    rpc_retry_t policy;
    int code;
    char err[PS_ERRLEN];
    rpc_buf_t resp;
} retry_run_t;

static void count_retry(void *arg, int attempt, double sleep_s, const char *err) {
    on_tick(arg);
}

static void *retry_thread(void *arg) {
    retry_run_t *r = arg;
    r->code =
        rpc_call_retry(r->ch, ECHO, "late", 4, WAIT_S, &r->policy, &r->resp, r->err, sizeof r->err);
    return NULL;
}

void test_rpc_retry(void) {
    service_t sv;
    service_init(&sv);
    int holder = -1, port = dead_port(&holder);
    CHECK(port > 0);
    retry_run_t r;
    memset(&r, 0, sizeof r);
    r.sv = &sv;
    r.ch = connect_to(port, NULL);
    r.policy = rpc_retry_default();
    r.policy.initial_s = 0.02;
    r.policy.max_s = 0.2;
    r.policy.max_attempts = 0;
    r.policy.max_total_s = 15;
    r.policy.on_retry = count_retry;
    r.policy.arg = &sv;
    double t0 = ps_now();
    pthread_t th;
    pthread_create(&th, NULL, retry_thread, &r);
    /* The server comes up only after the client has failed twice. */
    CHECK(wait_for(&sv, &sv.ticks, 2) == 0);
    rpc_server_config_t c = config(&sv, NULL);
    char addr[64], err[PS_ERRLEN] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    c.addr = addr;
    rpc_server_t *srv = NULL;
    close(holder); /* the server binds it at once */
    CHECK(rpc_server_start(&srv, &c, err, sizeof err) == 0);
    pthread_join(th, NULL);
    CHECK_INT_EQ(r.code, RPC_OK);
    CHECK(resp_is(&r.resp, "late"));
    CHECK(sv.ticks >= 2);
    /* The channel reconnects within its capped backoff, plus ours. */
    CHECK(ps_now() - t0 < 2 * (RPC_RECONNECT_MAX_S + r.policy.max_s) + 2.0);
    rpc_buf_free(&r.resp);
    rpc_channel_destroy(r.ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_retry_gives_up(void) {
    int holder = -1, port = dead_port(&holder);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    rpc_retry_t p = rpc_retry_default();
    p.initial_s = 0.01;
    p.max_attempts = 3;
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call_retry(ch, ECHO, "x", 1, WAIT_S, &p, &resp, err, sizeof err),
                 RPC_UNAVAILABLE);
    CHECK_STR_CONTAINS(err, "UNAVAILABLE");
    CHECK_STR_CONTAINS(err, "gave up after 3 attempts");
    /* A limit on time instead of attempts. */
    p.max_attempts = 0;
    p.max_total_s = 0.3;
    double t0 = ps_now();
    CHECK_INT_EQ(rpc_call_retry(ch, ECHO, "x", 1, WAIT_S, &p, &resp, err, sizeof err),
                 RPC_UNAVAILABLE);
    CHECK(ps_now() - t0 < 3.0);
    CHECK_STR_CONTAINS(err, "gave up after");
    /* A stop flag ends it at once. */
    volatile sig_atomic_t stop = 1;
    p.max_total_s = 0;
    p.stop = &stop;
    CHECK_INT_EQ(rpc_call_retry(ch, ECHO, "x", 1, WAIT_S, &p, &resp, err, sizeof err),
                 RPC_UNAVAILABLE);
    CHECK_STR_CONTAINS(err, "gave up after 1 attempt in");
    /* Errors other than UNAVAILABLE are not retried. */
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int live = start(&srv, &sv, NULL);
    rpc_channel_t *up = connect_to(live, NULL);
    p.stop = NULL;
    p.max_attempts = 5;
    CHECK_INT_EQ(rpc_call_retry(up, FAIL, "x", 1, WAIT_S, &p, &resp, err, sizeof err),
                 RPC_INVALID_ARGUMENT);
    CHECK(!strstr(err, "gave up"));
    rpc_buf_free(&resp);
    rpc_channel_destroy(up);
    rpc_channel_destroy(ch);
    close(holder);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_busy_port(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    char addr[64], err[PS_ERRLEN] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rpc_server_config_t c = config(&sv, addr);
    rpc_server_t *second = NULL;
    CHECK(rpc_server_start(&second, &c, err, sizeof err) < 0);
    CHECK(second == NULL);
    CHECK_STR_CONTAINS(err, addr);
    CHECK_STR_CONTAINS(err, "Address already in use");
    /* Not a local address. */
    c.addr = "192.0.2.1:0";
    CHECK(rpc_server_start(&second, &c, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "192.0.2.1:0");
    /* The first server still answers. */
    rpc_channel_t *ch = connect_to(port, NULL);
    rpc_buf_t resp = {0};
    CHECK_INT_EQ(rpc_call(ch, ECHO, "x", 1, WAIT_S, &resp, err, sizeof err), RPC_OK);
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
}

typedef struct {
    service_t *sv;
    int servers;
} releaser_t;

/* Releases the waits only once every server holds one: the calls of a fan-out
 * must all be in flight together for this to happen. */
static void *release_all(void *arg) {
    releaser_t *r = arg;
    for (int i = 0; i < r->servers; i++)
        if (wait_for(&r->sv[i], &r->sv[i].n_waiting, 1) < 0)
            return NULL;
    for (int i = 0; i < r->servers; i++) {
        service_t *sv = &r->sv[i];
        pthread_mutex_lock(&sv->mu);
        rpc_call_t *call = sv->waiting[--sv->n_waiting];
        pthread_mutex_unlock(&sv->mu);
        char text[16];
        snprintf(text, sizeof text, "%d", sv->port);
        rpc_call_reply(call, RPC_OK, NULL, text, strlen(text));
    }
    return NULL;
}

void test_rpc_fanout(void) {
    service_t sv[2];
    rpc_server_t *srv[2] = {NULL, NULL};
    rpc_channel_t *ch[3];
    for (int i = 0; i < 2; i++) {
        service_init(&sv[i]);
        CHECK(start(&srv[i], &sv[i], NULL) > 0);
        ch[i] = connect_to(sv[i].port, NULL);
    }
    int holder = -1, down = dead_port(&holder);
    ch[2] = connect_to(down, NULL);
    rpc_buf_t resp[3];
    memset(resp, 0, sizeof resp);
    rpc_fanout_t f[3];
    /* One request for all: each server names itself. */
    for (int i = 0; i < 3; i++)
        f[i] = (rpc_fanout_t){.ch = ch[i], .req = "?", .len = 1, .resp = &resp[i]};
    CHECK_INT_EQ(rpc_fanout(f, 3, PORT, WAIT_S), 1);
    for (int i = 0; i < 2; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", sv[i].port);
        CHECK_INT_EQ(f[i].code, RPC_OK);
        CHECK(resp_is(&resp[i], want));
    }
    CHECK_INT_EQ(f[2].code, RPC_UNAVAILABLE);
    CHECK_STR_CONTAINS(f[2].err, rpc_channel_target(ch[2]));
    /* One request per target. */
    const char *reqs[3] = {"to ps0", "to ps1", "to ps2"};
    for (int i = 0; i < 3; i++)
        f[i] = (rpc_fanout_t){.ch = ch[i], .req = reqs[i], .len = 6, .resp = &resp[i]};
    CHECK_INT_EQ(rpc_fanout(f, 3, ECHO, WAIT_S), 1);
    CHECK(resp_is(&resp[0], "to ps0") && resp_is(&resp[1], "to ps1"));
    CHECK_INT_EQ(f[2].code, RPC_UNAVAILABLE);
    /* Both live calls in flight at once: each is answered only when both wait. */
    releaser_t r = {sv, 2};
    pthread_t th;
    pthread_create(&th, NULL, release_all, &r);
    CHECK_INT_EQ(rpc_fanout(f, 2, WAIT, WAIT_S), 0);
    pthread_join(th, NULL);
    for (int i = 0; i < 3; i++) {
        rpc_buf_free(&resp[i]);
        rpc_channel_destroy(ch[i]);
    }
    close(holder);
    for (int i = 0; i < 2; i++) {
        rpc_server_stop(srv[i]);
        service_free(&sv[i]);
    }
}

void test_rpc_zero_copy(void) {
    service_t sv[2];
    rpc_server_t *srv[2] = {NULL, NULL};
    rpc_channel_t *ch[2];
    for (int i = 0; i < 2; i++) {
        service_init(&sv[i]);
        snprintf(sv[i].shard, sizeof sv[i].shard, "shard of server %d", i);
        CHECK(start(&srv[i], &sv[i], NULL) > 0);
        ch[i] = connect_to(sv[i].port, NULL);
    }
    /* The servers lend their shards and get each back exactly once, also
     * when the reply is an error. */
    rpc_buf_t resp[2];
    memset(resp, 0, sizeof resp);
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch[0], SHARD, "x", 1, WAIT_S, &resp[0], err, sizeof err), RPC_OK);
    CHECK(resp_is(&resp[0], "shard of server 0"));
    CHECK(wait_for(&sv[0], &sv[0].releases, 1) == 0);
    CHECK_INT_EQ(rpc_call(ch[0], SHARD, "fail", 4, WAIT_S, &resp[0], err, sizeof err),
                 RPC_NOT_FOUND);
    CHECK_STR_CONTAINS(err, "no such shard");
    CHECK(wait_for(&sv[0], &sv[0].releases, 2) == 0);
    /* A request lent to a fan-out of two (100 KiB, past the copy threshold)
     * comes back once, after both calls are done with it. */
    size_t n = 100 << 10;
    uint8_t *req = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        req[i] = (uint8_t)(i * 7);
    service_t lender;
    service_init(&lender);
    rpc_fanout_t f[2];
    for (int i = 0; i < 2; i++)
        f[i] = (rpc_fanout_t){.ch = ch[i],
                              .req = req,
                              .len = n,
                              .resp = &resp[i],
                              .release = count_release,
                              .release_arg = &lender};
    CHECK_INT_EQ(rpc_fanout(f, 2, ECHO, WAIT_S), 0);
    for (int i = 0; i < 2; i++) {
        CHECK_INT_EQ(resp[i].len, n);
        CHECK(memcmp(resp[i].data, req, n) == 0);
    }
    CHECK(wait_for(&lender, &lender.releases, 1) == 0);
    for (int i = 0; i < 2; i++) {
        rpc_buf_free(&resp[i]);
        rpc_channel_destroy(ch[i]);
        rpc_server_stop(srv[i]);
        service_free(&sv[i]);
    }
    CHECK_INT_EQ(lender.releases, 1);
    service_free(&lender);
    free(req);
}

/* ---- Mutual TLS --------------------------------------------------------------- */

static int run(const char *cmd) {
    char line[2048];
    snprintf(line, sizeof line, "cd '%s' && (%s) >openssl.log 2>&1", test_tmpdir(), cmd);
    int rc = system(line);
    if (rc != 0)
        fprintf(stderr, "failed (%d): %s\n  see %s/openssl.log\n", rc, cmd, test_tmpdir());
    return rc;
}

#define NEWKEY "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

/* A CA (and another one), a server certificate for 127.0.0.1 and client
 * certificates signed by each CA, in test_tmpdir(). */
static int make_certs(void) {
    static const char cnf[] = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = x\n"
                              "[ca]\nbasicConstraints = critical,CA:TRUE\n"
                              "keyUsage = critical,keyCertSign,cRLSign\n"
                              "[server]\nsubjectAltName = IP:127.0.0.1\n"
                              "extendedKeyUsage = serverAuth\n"
                              "[client]\nextendedKeyUsage = clientAuth\n";
    char path[512];
    snprintf(path, sizeof path, "%s/x.cnf", test_tmpdir());
    char err[PS_ERRLEN];
    if (ps_write_file_atomic(path, cnf, strlen(cnf), err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    const char *cmds[] = {
        "openssl req -x509 -new " NEWKEY " -keyout ca.key -out ca.pem -days 2 -config x.cnf "
        "-extensions ca -subj /CN=pstrain-test-ca",
        "openssl req -x509 -new " NEWKEY " -keyout other.key -out other.pem -days 2 -config "
        "x.cnf -extensions ca -subj /CN=some-other-ca",
        "openssl req -new " NEWKEY " -keyout server.key -out server.csr -config x.cnf "
        "-subj /CN=ps0",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile x.cnf -extensions server -out server.pem",
        "openssl req -new " NEWKEY " -keyout client.key -out client.csr -config x.cnf "
        "-subj /CN=worker0",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile x.cnf -extensions client -out client.pem",
        "openssl req -new " NEWKEY " -keyout rogue.key -out rogue.csr -config x.cnf "
        "-subj /CN=rogue",
        "openssl x509 -req -in rogue.csr -CA other.pem -CAkey other.key -CAcreateserial -days 2 "
        "-extfile x.cnf -extensions client -out rogue.pem",
    };
    for (size_t i = 0; i < PS_ARRAY_LEN(cmds); i++)
        if (run(cmds[i]) != 0)
            return -1;
    return 0;
}

/* The status of one echo over a fresh channel with opt. */
static int echo_with(int port, const rpc_options_t *opt, char *err, size_t errlen) {
    rpc_channel_t *ch = connect_to(port, opt);
    if (!ch)
        return -1;
    rpc_buf_t resp = {0};
    int code = rpc_call(ch, ECHO, "secret", 6, WAIT_S, &resp, err, errlen);
    if (code == RPC_OK && !resp_is(&resp, "secret"))
        code = -2;
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    return code;
}

void test_rpc_tls(void) {
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        printf("SKIP rpc_tls: openssl is not installed (scripts/setup.sh installs it)\n");
        return;
    }
    CHECK(make_certs() == 0);
    service_t sv;
    service_init(&sv);
    rpc_options_t server_opt = {.tls_ca = test_path("ca.pem"),
                                .tls_cert = test_path("server.pem"),
                                .tls_key = test_path("server.key")};
    rpc_server_t *srv = NULL;
    /* Asked for a tensor stream: none with TLS (it would be plaintext). */
    g_stream = 1;
    int port = start(&srv, &sv, &server_opt);
    g_stream = 0;
    CHECK(port > 0);
    CHECK_INT_EQ(rpc_server_stream_port(srv), 0);
    char err[PS_ERRLEN] = "";
    /* A client with a certificate from the cluster CA gets in. */
    rpc_options_t good = {.tls_ca = test_path("ca.pem"),
                          .tls_cert = test_path("client.pem"),
                          .tls_key = test_path("client.key")};
    CHECK_INT_EQ(echo_with(port, &good, err, sizeof err), RPC_OK);
    /* Without a certificate, with one from another CA, or in plaintext: refused. */
    rpc_options_t no_cert = {.tls_ca = test_path("ca.pem")};
    CHECK_INT_EQ(echo_with(port, &no_cert, err, sizeof err), RPC_UNAVAILABLE);
    printf("refused as it should be: %s\n", err);
    rpc_options_t rogue = {.tls_ca = test_path("ca.pem"),
                           .tls_cert = test_path("rogue.pem"),
                           .tls_key = test_path("rogue.key")};
    CHECK_INT_EQ(echo_with(port, &rogue, err, sizeof err), RPC_UNAVAILABLE);
    CHECK_INT_EQ(echo_with(port, NULL, err, sizeof err), RPC_UNAVAILABLE);
    /* A client that trusts another CA does not accept this server. */
    rpc_options_t distrust = {.tls_ca = test_path("other.pem"),
                              .tls_cert = test_path("rogue.pem"),
                              .tls_key = test_path("rogue.key")};
    CHECK_INT_EQ(echo_with(port, &distrust, err, sizeof err), RPC_UNAVAILABLE);
    /* And the good client still gets in after all that. */
    CHECK_INT_EQ(echo_with(port, &good, err, sizeof err), RPC_OK);
    rpc_server_stop(srv);
    service_free(&sv);
}

void test_rpc_tls_errors(void) {
    service_t sv;
    service_init(&sv);
    rpc_server_config_t c = config(&sv, "127.0.0.1:0");
    rpc_server_t *srv = NULL;
    char err[PS_ERRLEN] = "";
    c.opt.tls_ca = "/nonexistent/ca.pem";
    c.opt.tls_cert = "/nonexistent/cert.pem";
    c.opt.tls_key = "/nonexistent/key.pem";
    CHECK(rpc_server_start(&srv, &c, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "tls_ca");
    CHECK_STR_CONTAINS(err, "/nonexistent/ca.pem");
    /* A file that is not PEM. */
    const char *junk = test_path("junk.pem");
    CHECK(ps_write_file_atomic(junk, "hello\n", 6, err, sizeof err) == 0);
    c.opt.tls_ca = junk;
    CHECK(rpc_server_start(&srv, &c, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, junk);
    /* A server without its key. */
    c.opt.tls_key = NULL;
    CHECK(rpc_server_start(&srv, &c, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "tls_key");
    rpc_options_t half = {.tls_ca = junk, .tls_cert = junk};
    rpc_channel_t *ch = NULL;
    CHECK(rpc_channel_create(&ch, "127.0.0.1:1", &half, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "tls_key");
    CHECK(rpc_channel_create(&ch, "no-port", NULL, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "no-port");
    service_free(&sv);
}

/* ---- The tensor stream -------------------------------------------------------- */

/* The tests above again, their servers offering a tensor stream and their
 * channels using it (test_rpc_echo checks that they do). */
#define OVER_STREAM(name)                                                                          \
    void test_rpc_stream_##name(void) {                                                            \
        g_stream = 1;                                                                              \
        test_rpc_##name();                                                                         \
        g_stream = 0;                                                                              \
    }
OVER_STREAM(echo)
OVER_STREAM(concurrent)
OVER_STREAM(large)
OVER_STREAM(too_large)
OVER_STREAM(unimplemented)
OVER_STREAM(handler_error)
OVER_STREAM(deadline)
OVER_STREAM(deferred)
OVER_STREAM(cancel_and_tick)
OVER_STREAM(retry)
OVER_STREAM(fanout)
OVER_STREAM(zero_copy)

/* And between processes of one host, through shared memory. */
#define OVER_SHM(name)                                                                             \
    void test_rpc_shm_##name(void) {                                                               \
        g_stream = g_shm = 1;                                                                      \
        test_rpc_##name();                                                                         \
        g_stream = g_shm = 0;                                                                      \
    }
OVER_SHM(echo)
OVER_SHM(concurrent)
OVER_SHM(large)
OVER_SHM(too_large)
OVER_SHM(deadline)
OVER_SHM(deferred)
OVER_SHM(cancel_and_tick)
OVER_SHM(fanout)
OVER_SHM(zero_copy)

/* Shared memory without a TCP stream (the daemons' default). */
void test_rpc_shm_only(void) {
    g_shm = 1;
    test_rpc_echo();
    test_rpc_deadline();
    test_rpc_zero_copy();
    g_shm = 0;
}

/* A plain TCP connection to the loopback port; -1 on an error. */
static int raw_connect(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Bytes that are not a request close that connection, and only that one:
 * the server answers the next client. A frame announcing more than the
 * receive limit is answered RESOURCE_EXHAUSTED without its body being read. */
void test_rpc_stream_garbage(void) {
    g_stream = 1;
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    rpc_options_t small = {.max_recv = 1 << 20};
    CHECK(start(&srv, &sv, &small) > 0);
    int sport = rpc_server_stream_port(srv);
    CHECK(sport > 0);
    /* Garbage: the connection is closed. */
    int fd = raw_connect(sport);
    CHECK(fd >= 0);
    const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(write(fd, junk, sizeof junk - 1) == (ssize_t)(sizeof junk - 1));
    char buf[64];
    CHECK(read(fd, buf, sizeof buf) <= 0); /* closed, or reset for the unread junk */
    close(fd);
    /* A header announcing 2 GiB: answered, then closed. */
    fd = raw_connect(sport);
    CHECK(fd >= 0);
    uint8_t h[24] = {'P', 'S', 'R', '1', 5, 0, 0, 0,    0, 0, 0, 0,
                     0,   0,   0,   0,   0, 0, 0, 0x80, 0, 0, 0, 0};
    CHECK(write(fd, h, sizeof h) == (ssize_t)sizeof h);
    uint8_t resp[24];
    CHECK(read(fd, resp, sizeof resp) == (ssize_t)sizeof resp);
    CHECK(memcmp(resp, "PSA1", 4) == 0);
    CHECK_INT_EQ(resp[4], RPC_RESOURCE_EXHAUSTED);
    close(fd);
    /* A client that hangs up halfway through its request. */
    fd = raw_connect(sport);
    CHECK(fd >= 0);
    CHECK(write(fd, h, 10) == 10);
    close(fd);
    /* The server goes on. */
    rpc_channel_t *ch = connect_to(sv.port, NULL);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch, ECHO, "still here", 10, WAIT_S, &r, err, sizeof err), RPC_OK);
    CHECK(resp_is(&r, "still here"));
    CHECK(rpc_channel_stream_port(ch) == sport);
    rpc_buf_free(&r);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
    g_stream = 0;
}

/* A server restarted on the same gRPC port gets a new stream port: the
 * channel's next call fails over to it after one UNAVAILABLE. */
void test_rpc_stream_restart(void) {
    g_stream = 1;
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, NULL);
    CHECK(port > 0);
    rpc_channel_t *ch = connect_to(port, NULL);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch, ECHO, "one", 3, WAIT_S, &r, err, sizeof err), RPC_OK);
    int first = rpc_channel_stream_port(ch);
    CHECK(first > 0);
    rpc_server_stop(srv);
    int code = rpc_call(ch, ECHO, "two", 3, WAIT_S, &r, err, sizeof err);
    CHECK_INT_EQ(code, RPC_UNAVAILABLE);
    CHECK_STR_CONTAINS(err, "UNAVAILABLE");
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rpc_server_config_t c = config(&sv, addr);
    CHECK(rpc_server_start(&srv, &c, err, sizeof err) == 0);
    rpc_retry_t p = rpc_retry_default();
    p.initial_s = 0.02;
    p.max_total_s = WAIT_S;
    p.max_attempts = 0;
    CHECK_INT_EQ(rpc_call_retry(ch, ECHO, "three", 5, WAIT_S, &p, &r, err, sizeof err), RPC_OK);
    CHECK(resp_is(&r, "three"));
    CHECK_INT_EQ(rpc_channel_stream_port(ch), rpc_server_stream_port(srv));
    rpc_buf_free(&r);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    service_free(&sv);
    g_stream = 0;
}

/* A busy stream port is one error naming it, and the server does not start
 * (its gRPC port, bound after, is not left behind). */
void test_rpc_stream_busy_port(void) {
    g_stream = 1;
    service_t sv;
    service_init(&sv);
    rpc_server_t *srv = NULL;
    CHECK(start(&srv, &sv, NULL) > 0);
    int busy = rpc_server_stream_port(srv);
    CHECK(busy > 0);
    rpc_server_config_t c = config(&sv, "127.0.0.1:0");
    c.opt.stream_port = busy;
    rpc_server_t *second = NULL;
    char err[PS_ERRLEN] = "", want[32];
    CHECK(rpc_server_start(&second, &c, err, sizeof err) < 0);
    CHECK(second == NULL);
    snprintf(want, sizeof want, "port %d", busy);
    CHECK_STR_CONTAINS(err, want);
    CHECK_STR_CONTAINS(err, "Address already in use");
    rpc_server_stop(srv);
    service_free(&sv);
    g_stream = 0;
}

/* Issue 17, item 7: one warning per failed TLS handshake, unlimited. Now
 * 30 clients that speak plaintext to a TLS server leave at most
 * LOG_LIMIT_BURST lines, and a good client still gets in. */
void test_rpc_tls_flood(void) {
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        test_skip("openssl is not installed (scripts/setup.sh installs it)");
        return;
    }
    CHECK(make_certs() == 0);
    service_t sv;
    service_init(&sv);
    rpc_options_t server_opt = {.tls_ca = test_path("ca.pem"),
                                .tls_cert = test_path("server.pem"),
                                .tls_key = test_path("server.key")};
    rpc_server_t *srv = NULL;
    int port = start(&srv, &sv, &server_opt);
    CHECK(port > 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *log = fopen(test_path("stderr.log"), "w+");
    CHECK(log != NULL);
    dup2(fileno(log), STDERR_FILENO);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int closed = 0;
    for (int i = 0; i < 30; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct timeval tv = {(time_t)WAIT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        char buf[256];
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
            send(fd, junk, sizeof junk - 1, MSG_NOSIGNAL) > 0) {
            /* The server closes once the handshake has failed (and was logged). */
            while (read(fd, buf, sizeof buf) > 0) {
            }
            closed++;
        }
        close(fd);
    }
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char text[65536];
    rewind(log);
    text[fread(text, 1, sizeof text - 1, log)] = '\0';
    fclose(log);
    fputs(text, stderr);
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "Handshake failed")); p++)
        lines++;
    CHECK_INT_EQ(closed, 30);
    CHECK(lines >= 1 && lines <= LOG_LIMIT_BURST);
    rpc_options_t good = {.tls_ca = test_path("ca.pem"),
                          .tls_cert = test_path("client.pem"),
                          .tls_key = test_path("client.key")};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(echo_with(port, &good, err, sizeof err), RPC_OK);
    rpc_server_stop(srv);
    service_free(&sv);
}

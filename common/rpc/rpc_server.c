/* The server: one completion queue served by one thread, which accepts calls,
 * reads each request, flattens it into a reused buffer and runs the handler
 * of its method.
 *
 * A call's life: grpc_server_request_call completes (the call object was
 * made for that request); the thread starts two receive batches at once, the
 * request message and RECV_CLOSE_ON_SERVER (which completes when the call
 * ends and says whether it was cancelled); the handler gets the call when the
 * message is in; rpc_call_reply, from any thread, starts the one send batch.
 * A reference count keeps the call until the receive batches, the owner (the
 * handler, until it replies) and the send batch are all done with it; since
 * every batch ends in an event, the call is normally freed on the thread.
 *
 * The tensor stream, when offered, is a server of its own beside this one
 * (stream_server.c), started and stopped with it; handlers of both
 * transports take one mutex, so they still run one at a time. */
#include "common/rpc/stream_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"

/* Requests kept outstanding, so that a burst of calls finds one waiting. */
#define REQUEST_SLOTS 8

typedef enum { TAG_REQUEST, TAG_RECV, TAG_CLOSE, TAG_SEND } tag_kind_t;

typedef struct {
    tag_kind_t kind;
    rpc_call_t *call;
} tag_t;

enum { F_REPLIED = RPC_CALL_REPLIED, F_CANCELLED = RPC_CALL_CANCELLED };

struct rpc_call {
    rpc_call_head_t head; /* first: what a stream call has too */
    rpc_server_t *srv;
    grpc_call *call; /* set when the request completes */
    grpc_call_details details;
    grpc_metadata_array request_md;
    grpc_byte_buffer *req;
    int close_cancelled;
    atomic_int refs;
    /* The reply batch's inputs, kept until the call is freed. */
    grpc_byte_buffer *resp;
    grpc_slice status_details;
    tag_t t_request, t_recv, t_close, t_send;
};

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int port;
    char addr[256];
    const rpc_method_t *methods;
    size_t n_methods;
    const rpc_msg_method_t *msg_methods;
    size_t n_msg_methods;
    void *ctx;
    void (*on_cancel)(void *ctx, rpc_call_t *call);
    void (*on_tick)(void *ctx);
    double tick_s;
    rpc_buf_t flat;      /* the request being handled; server thread only */
    rpc_segs_t segs;     /* its segments, for msg_methods; server thread only */
    rpc_pool_t *pool;    /* copies of replies */
    pthread_mutex_t hmu; /* held while a handler, on_cancel or on_tick runs */
    size_t max_recv, max_send;
    stream_server_t *stream; /* its tensor stream; NULL when not offered */
    pthread_mutex_t mu;
    pthread_cond_t done; /* signalled when live drops to 0 while stopping */
    size_t live;         /* call objects, requested or in flight */
    int stopping;        /* no more requests */
    int server_down;     /* grpc_server_shutdown_and_notify has completed */
};

/* ---- Call objects ------------------------------------------------------------- */

static rpc_call_t *call_new(rpc_server_t *s) {
    rpc_call_t *c = xcalloc(1, sizeof *c);
    c->srv = s;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->request_md);
    c->status_details = grpc_empty_slice();
    c->t_request = (tag_t){TAG_REQUEST, c};
    c->t_recv = (tag_t){TAG_RECV, c};
    c->t_close = (tag_t){TAG_CLOSE, c};
    c->t_send = (tag_t){TAG_SEND, c};
    pthread_mutex_lock(&s->mu);
    s->live++;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* The queue may shut down once the server has and no call object is left:
 * nothing can then add an event to it. Called with s->mu held. */
static void maybe_finish_locked(rpc_server_t *s) {
    if (s->stopping && s->live == 0)
        pthread_cond_broadcast(&s->done);
    if (s->stopping && s->server_down && s->live == 0)
        grpc_completion_queue_shutdown(s->cq);
}

static void call_free(rpc_call_t *c) {
    rpc_server_t *s = c->srv;
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->request_md);
    if (c->req)
        grpc_byte_buffer_destroy(c->req);
    if (c->resp)
        grpc_byte_buffer_destroy(c->resp);
    grpc_slice_unref(c->status_details);
    free(c);
    pthread_mutex_lock(&s->mu);
    s->live--;
    maybe_finish_locked(s);
    pthread_mutex_unlock(&s->mu);
}

static void call_unref(rpc_call_t *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        call_free(c);
}

static void request_call(rpc_server_t *s) {
    rpc_call_t *c = call_new(s);
    grpc_call_error e = grpc_server_request_call(s->server, &c->call, &c->details, &c->request_md,
                                                 s->cq, s->cq, &c->t_request);
    if (RPC_CHECK(e, "grpc_server_request_call", NULL, 0) < 0)
        call_free(c);
}

/* ---- Replies ------------------------------------------------------------------ */

/* Starts the send batch; consumes resp (the message when code is RPC_OK,
 * else NULL) and the owner's reference, which the batch's event then drops. */
static int reply_buffer(rpc_call_t *c, int code, const char *message, grpc_byte_buffer *resp) {
    if (atomic_fetch_or(&c->head.flags, F_REPLIED) & F_REPLIED) {
        if (resp)
            grpc_byte_buffer_destroy(resp);
        log_error("rpc: a call to %s was answered twice", rpc_call_method(c));
        return -1;
    }
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (resp) {
        c->resp = resp;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->resp;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    if (message && message[0]) {
        c->status_details = grpc_slice_from_copied_string(message);
        ops[n].data.send_status_from_server.status_details = &c->status_details;
    }
    n++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_send, NULL);
    if (RPC_CHECK(e, "grpc_call_start_batch (reply)", NULL, 0) < 0) {
        call_unref(c);
        return -1;
    }
    return 0;
}

/* reply_buffer with a message of one slice, which it consumes. */
static int reply(rpc_call_t *c, int code, const char *message, grpc_slice body) {
    grpc_byte_buffer *resp = code == RPC_OK ? grpc_raw_byte_buffer_create(&body, 1) : NULL;
    grpc_slice_unref(body);
    return reply_buffer(c, code, message, resp);
}

int rpc_call_reply(rpc_call_t *c, int code, const char *message, const void *data, size_t len) {
    if (c->head.is_stream) {
        rpc_piece_t one = {data, len, NULL};
        return stream__reply(c, code, message, &one, len ? 1 : 0, 0, NULL, NULL);
    }
    grpc_slice body =
        code == RPC_OK && len ? rpc__pool_copy(c->srv->pool, data, len) : grpc_empty_slice();
    return reply(c, code, message, body);
}

int rpc_call_reply_zc(rpc_call_t *c, int code, const char *message, const void *data, size_t len,
                      void (*release)(void *arg), void *arg) {
    if (c->head.is_stream) {
        rpc_piece_t one = {data, len, NULL};
        return stream__reply(c, code, message, &one, len ? 1 : 0, 1, release, arg);
    }
    grpc_slice body = release ? grpc_slice_new_with_user_data((void *)data, len, release, arg)
                              : grpc_slice_from_static_buffer(data, len);
    return reply(c, code, message, body);
}

int rpc_call_reply_pieces(rpc_call_t *c, const rpc_piece_t *pieces, size_t n) {
    if (c->head.is_stream)
        return stream__reply(c, RPC_OK, NULL, pieces, n, 0, NULL, NULL);
    return reply_buffer(c, RPC_OK, NULL, rpc__pieces_buffer(pieces, n));
}

int rpc_call_is_cancelled(const rpc_call_t *c) {
    return (atomic_load(&c->head.flags) & F_CANCELLED) != 0;
}

void rpc_call_set_user(rpc_call_t *c, void *user) {
    c->head.user = user;
}

void *rpc_call_user(const rpc_call_t *c) {
    return c->head.user;
}

const char *rpc_call_method(const rpc_call_t *c) {
    if (c->head.msg_method)
        return c->head.msg_method->method;
    return c->head.method ? c->head.method->method : "(unknown method)";
}

void rpc_call_peer(rpc_call_t *c, char *buf, size_t len) {
    if (c->head.is_stream) {
        stream__peer(c, buf, len);
        return;
    }
    char *peer = grpc_call_get_peer(c->call);
    snprintf(buf, len, "%s", peer ? peer : "?");
    gpr_free(peer);
}

/* ---- Events ------------------------------------------------------------------- */

/* Sets c->head.method or c->head.msg_method; 0 when the method is known. */
static int find_method(const rpc_server_t *s, rpc_call_t *c) {
    grpc_slice name = c->details.method;
    for (size_t i = 0; i < s->n_methods; i++)
        if (grpc_slice_str_cmp(name, s->methods[i].method) == 0)
            c->head.method = &s->methods[i];
    for (size_t i = 0; i < s->n_msg_methods; i++)
        if (grpc_slice_str_cmp(name, s->msg_methods[i].method) == 0)
            c->head.msg_method = &s->msg_methods[i];
    return c->head.method || c->head.msg_method ? 0 : -1;
}

/* Has the call's handler take the request, flattened or in place. */
static int run_handler(rpc_server_t *s, rpc_call_t *c) {
    if (c->head.method) {
        if (rpc__flatten(c->req, &s->flat) < 0)
            return -1;
        c->head.method->fn(s->ctx, c, s->flat.data, s->flat.len);
        return 0;
    }
    rpc_msg_t m;
    if (rpc__segments(c->req, &s->segs, &s->flat, &m) < 0)
        return -1;
    c->head.msg_method->fn(s->ctx, c, &m);
    return 0;
}

/* A new call: ask for the next one, then start reading this one. */
static void on_request(rpc_server_t *s, rpc_call_t *c, int ok) {
    if (!ok) { /* the server is shutting down */
        call_free(c);
        return;
    }
    pthread_mutex_lock(&s->mu);
    int stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (!stopping)
        request_call(s);
    atomic_store(&c->refs, 2);
    grpc_op recv;
    memset(&recv, 0, sizeof recv);
    recv.op = GRPC_OP_RECV_MESSAGE;
    recv.data.recv_message.recv_message = &c->req;
    grpc_op close;
    memset(&close, 0, sizeof close);
    close.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (RPC_CHECK(grpc_call_start_batch(c->call, &recv, 1, &c->t_recv, NULL),
                  "grpc_call_start_batch (receive)", NULL, 0) < 0)
        call_unref(c);
    if (RPC_CHECK(grpc_call_start_batch(c->call, &close, 1, &c->t_close, NULL),
                  "grpc_call_start_batch (close)", NULL, 0) < 0)
        call_unref(c);
}

/* The request is in: run its handler. The receive batch's reference becomes
 * the owner's, which rpc_call_reply hands on. */
static void on_recv(rpc_server_t *s, rpc_call_t *c, int ok) {
    if (!ok || !c->req) { /* the client went away before its message arrived */
        call_unref(c);
        return;
    }
    if (grpc_slice_str_cmp(c->details.method, RPC_STREAM_PORT_METHOD) == 0) {
        char port[160];
        const char *name = stream__server_unix_name(s->stream);
        snprintf(port, sizeof port, "%d%s%s", stream__server_tcp_port(s->stream),
                 name[0] ? " " : "", name);
        rpc_call_reply(c, RPC_OK, NULL, port, strlen(port));
        return;
    }
    if (find_method(s, c) < 0) {
        char msg[PS_ERRLEN];
        snprintf(msg, sizeof msg, "unknown method %.*s", (int)GRPC_SLICE_LENGTH(c->details.method),
                 (const char *)GRPC_SLICE_START_PTR(c->details.method));
        rpc_call_reply(c, RPC_UNIMPLEMENTED, msg, NULL, 0);
        return;
    }
    /* Our own reference, so that c outlives a reply made and completed on
     * another thread while the handler still runs. */
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&s->hmu);
    int readable = run_handler(s, c) == 0;
    grpc_byte_buffer_destroy(c->req);
    c->req = NULL;
    if (!readable)
        rpc_call_reply(c, RPC_INVALID_ARGUMENT, "cannot read the request message", NULL, 0);
    /* Cancelled before it was handed over, and kept: the owner must hear of it. */
    else if (atomic_load(&c->head.flags) == F_CANCELLED && s->on_cancel)
        s->on_cancel(s->ctx, c);
    pthread_mutex_unlock(&s->hmu);
    call_unref(c);
}

/* The call is over on the wire. */
static void on_close(rpc_server_t *s, rpc_call_t *c, int ok) {
    if (!ok || c->close_cancelled) {
        pthread_mutex_lock(&s->hmu);
        int old = atomic_fetch_or(&c->head.flags, F_CANCELLED);
        /* Tell the owner, if the handler has had the call and not answered. */
        if (!(old & F_REPLIED) && (c->head.method || c->head.msg_method) && s->on_cancel)
            s->on_cancel(s->ctx, c);
        pthread_mutex_unlock(&s->hmu);
    }
    call_unref(c);
}

static void dispatch(rpc_server_t *s, tag_t *t, int ok) {
    switch (t->kind) {
    case TAG_REQUEST:
        on_request(s, t->call, ok);
        break;
    case TAG_RECV:
        on_recv(s, t->call, ok);
        break;
    case TAG_CLOSE:
        on_close(s, t->call, ok);
        break;
    case TAG_SEND:
        call_unref(t->call);
        break;
    }
}

static void *serve(void *arg) {
    rpc_server_t *s = arg;
    double next_tick = s->on_tick && s->tick_s > 0 ? ps_now() + s->tick_s : 0;
    for (;;) {
        gpr_timespec until = gpr_inf_future(GPR_CLOCK_MONOTONIC);
        if (next_tick > 0)
            until = rpc__deadline(PS_MAX(next_tick - ps_now(), 1e-6));
        grpc_event ev = grpc_completion_queue_next(s->cq, until, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            dispatch(s, ev.tag, ev.success);
        if (next_tick > 0 && ps_now() >= next_tick) {
            pthread_mutex_lock(&s->hmu);
            s->on_tick(s->ctx);
            pthread_mutex_unlock(&s->hmu);
            next_tick = ps_now() + s->tick_s;
        }
    }
    return NULL;
}

/* ---- Start and stop ----------------------------------------------------------- */

/* A short reason for a failed bind, from what gRPC logged about it. */
static const char *bind_reason(void) {
    static const char *const known[] = {
        "Address already in use",    "Cannot assign requested address",      "Permission denied",
        "Name or service not known", "Temporary failure in name resolution",
    };
    const char *logged = rpc__log_last();
    for (size_t i = 0; i < PS_ARRAY_LEN(known); i++)
        if (strstr(logged, known[i]))
            return known[i];
    return logged[0] ? logged : "gRPC gave no reason";
}

static int check_config(const rpc_server_config_t *cfg, char *err, size_t errlen) {
    if (!cfg->addr || !cfg->addr[0])
        return ps_errf(err, errlen, "rpc: server address is empty");
    if (strlen(cfg->addr) >= sizeof(((rpc_server_t *)0)->addr))
        return ps_errf(err, errlen, "rpc: server address too long: %s", cfg->addr);
    for (size_t i = 0; i < cfg->n_methods; i++)
        if (!cfg->methods[i].method || cfg->methods[i].method[0] != '/' || !cfg->methods[i].fn)
            return ps_errf(err, errlen,
                           "rpc: method %zu: want \"/package.Service/Method\" and a "
                           "handler",
                           i);
    for (size_t i = 0; i < cfg->n_msg_methods; i++)
        if (!cfg->msg_methods[i].method || cfg->msg_methods[i].method[0] != '/' ||
            !cfg->msg_methods[i].fn)
            return ps_errf(err, errlen,
                           "rpc: msg method %zu: want \"/package.Service/Method\" and a "
                           "handler",
                           i);
    return 0;
}

/* Creates the gRPC server and binds; the thread is not running yet. */
static int server_bind(rpc_server_t *s, const rpc_server_config_t *cfg, char *err, size_t errlen) {
    grpc_arg args[RPC_MAX_ARGS];
    size_t n_args = 0;
    grpc_server_credentials *creds = NULL;
    if (rpc__args(args, &n_args, &cfg->opt, 1, err, errlen) < 0 ||
        rpc__server_creds(&cfg->opt, &creds, err, errlen) < 0)
        return -1;
    grpc_channel_args chargs = {n_args, args};
    s->server = grpc_server_create(&chargs, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    rpc__log_capture(1);
    s->port = grpc_server_add_http2_port(s->server, cfg->addr, creds);
    rpc__log_capture(0);
    grpc_server_credentials_release(creds);
    if (s->port <= 0)
        return ps_errf(err, errlen, "rpc: cannot listen on %s: %s", cfg->addr, bind_reason());
    return 0;
}

/* Undoes a server_bind whose server never started. */
static void server_unbind(rpc_server_t *s) {
    if (s->server)
        grpc_server_destroy(s->server);
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
    }
}

/* The tensor stream's server, when opt asks for one (never with TLS: a Unix
 * socket would let a local process past the certificate check). */
static int stream_start(rpc_server_t *s, const rpc_server_config_t *cfg, char *err, size_t errlen) {
    const rpc_options_t *o = &cfg->opt;
    int tls = o->tls_ca || o->tls_cert || o->tls_key;
    if (tls || (!o->stream && !o->shm))
        return 0;
    stream_server_config_t sc = {
        .addr = cfg->addr,
        .tcp = o->stream,
        .tcp_port = o->stream_port,
        .shm = o->shm,
        .max_conns =
            o->stream_max_connections > 0 ? o->stream_max_connections : RPC_STREAM_MAX_CONNECTIONS,
        .lanes = rpc_stream_threads(o->stream_threads),
        .handshake_s = o->stream_handshake_s > 0 ? o->stream_handshake_s : RPC_STREAM_HANDSHAKE_S,
        .max_recv = s->max_recv,
        .max_send = s->max_send,
        .methods = cfg->methods,
        .n_methods = cfg->n_methods,
        .msg_methods = cfg->msg_methods,
        .n_msg_methods = cfg->n_msg_methods,
        .ctx = cfg->ctx,
        .on_cancel = cfg->on_cancel,
        .hmu = &s->hmu,
        .max_wait_s = o->stream_max_wait_s > 0 ? o->stream_max_wait_s : RPC_STREAM_MAX_WAIT_S,
    };
    int n = rpc_parse_uids(o->stream_allowed_uids, sc.allowed_uids, err, errlen);
    if (n < 0)
        return -1;
    sc.n_allowed_uids = (size_t)n;
    return stream__server_start(&s->stream, &sc, err, errlen);
}

static void server_free(rpc_server_t *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->hmu);
    pthread_cond_destroy(&s->done);
    free(s);
}

int rpc_server_start(rpc_server_t **out, const rpc_server_config_t *cfg, char *err, size_t errlen) {
    *out = NULL;
    if (check_config(cfg, err, errlen) < 0)
        return -1;
    rpc__init();
    rpc_server_t *s = xcalloc(1, sizeof *s);
    snprintf(s->addr, sizeof s->addr, "%s", cfg->addr);
    s->methods = cfg->methods;
    s->n_methods = cfg->n_methods;
    s->msg_methods = cfg->msg_methods;
    s->n_msg_methods = cfg->n_msg_methods;
    s->ctx = cfg->ctx;
    s->on_cancel = cfg->on_cancel;
    s->on_tick = cfg->on_tick;
    s->tick_s = cfg->tick_s;
    s->max_recv = cfg->opt.max_recv ? cfg->opt.max_recv : RPC_DEFAULT_MAX_MESSAGE;
    s->max_send = cfg->opt.max_send ? cfg->opt.max_send : RPC_DEFAULT_MAX_MESSAGE;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    pthread_cond_init(&s->done, NULL);
    /* The stream first: a gRPC server that has bound its port cannot be
     * destroyed without having started. Its thread too, before gRPC starts,
     * so that a process out of threads is an error, not an abort. */
    int rc = stream_start(s, cfg, err, errlen);
    if (rc == 0)
        rc = server_bind(s, cfg, err, errlen);
    if (rc == 0 && (rc = pthread_create(&s->thread, NULL, serve, s)) != 0)
        rc = ps_errf(err, errlen, "rpc: cannot start the server thread: %s", strerror(rc));
    if (rc != 0) {
        if (s->stream) {
            stream__server_stop_accepting(s->stream);
            stream__server_stop(s->stream);
        }
        server_unbind(s);
        server_free(s);
        grpc_shutdown();
        return -1;
    }
    /* Name the port bound in log lines, not 0. */
    const char *colon = strrchr(cfg->addr, ':');
    if (colon && strcmp(colon, ":0") == 0)
        snprintf(s->addr, sizeof s->addr, "%.*s:%d", (int)(colon - cfg->addr), cfg->addr, s->port);
    s->pool = rpc__pool_new();
    grpc_server_start(s->server);
    for (int i = 0; i < REQUEST_SLOTS; i++)
        request_call(s);
    *out = s;
    return 0;
}

int rpc_server_port(const rpc_server_t *s) {
    return s->port;
}

int rpc_server_stream_port(const rpc_server_t *s) {
    return stream__server_tcp_port(s->stream);
}

int rpc_server_stream_lanes(const rpc_server_t *s, int *conns, int max) {
    return stream__server_lanes(s->stream, conns, max);
}

void rpc_server_stop(rpc_server_t *s) {
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_mutex_unlock(&s->mu);
    /* Stop listening and fail the outstanding requests; give the calls in
     * flight RPC_STOP_GRACE_S to finish, then cancel the rest (a deferred
     * call's owner hears of it through on_cancel and releases it). */
    double t0 = ps_now();
    stream__server_stop_accepting(s->stream);
    grpc_completion_queue *pq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_server_shutdown_and_notify(s->server, pq, s);
    if (grpc_completion_queue_pluck(pq, s, rpc__deadline(RPC_STOP_GRACE_S), NULL).type !=
        GRPC_OP_COMPLETE) {
        grpc_server_cancel_all_calls(s->server);
        while (grpc_completion_queue_pluck(pq, s, rpc__deadline(5.0), NULL).type !=
               GRPC_OP_COMPLETE)
            log_warn("rpc: server %s still waits, after %.0f s, for calls to end", s->addr,
                     ps_now() - t0);
    }
    grpc_completion_queue_shutdown(pq);
    grpc_completion_queue_destroy(pq);
    stream__server_stop(s->stream);
    pthread_mutex_lock(&s->mu);
    s->server_down = 1;
    maybe_finish_locked(s);
    /* Calls their owners hold until they answer them. */
    while (s->live > 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        if (pthread_cond_timedwait(&s->done, &s->mu, &until) != 0 && s->live > 0)
            log_warn("rpc: server %s still waits, after %.0f s, for %zu calls to be answered",
                     s->addr, ps_now() - t0, s->live);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    grpc_server_destroy(s->server);
    grpc_completion_queue_destroy(s->cq);
    rpc__pool_release(s->pool);
    rpc_buf_free(&s->flat);
    free(s->segs.seg);
    server_free(s);
    grpc_shutdown();
}

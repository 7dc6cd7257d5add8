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
 * The tensor stream (rpc_internal.h), when offered: an accept thread and a
 * thread per connection, which reads a request into the connection's buffer,
 * runs the handler, waits for the reply if it was deferred (and cancels the
 * call when its deadline passes, the client goes away or the server stops)
 * and writes the reply from where it lies. Handlers of both transports take
 * one mutex, so they still run one at a time. */
#include "common/rpc/rpc_internal.h"

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

enum { F_REPLIED = 1, F_CANCELLED = 2 };

typedef struct stream_conn stream_conn_t;

struct rpc_call {
    rpc_server_t *srv;
    stream_conn_t *conn; /* a call over the tensor stream; NULL over gRPC */
    grpc_call *call;     /* set when the request completes */
    grpc_call_details details;
    grpc_metadata_array request_md;
    grpc_byte_buffer *req;
    int close_cancelled;
    const rpc_method_t *method;
    const rpc_msg_method_t *msg_method; /* instead of method */
    atomic_int refs;
    atomic_int flags;
    void *user;
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
    /* The tensor stream: stream_fd < 0 when not offered. */
    int stream_fd, stream_port;
    int unix_fd;   /* same host: < 0 when not offered */
    int streaming; /* either is offered: the accept thread runs */
    char unix_name[108];
    pthread_t stream_thread;
    stream_conn_t *conns;     /* under mu */
    atomic_int stream_cancel; /* stopping: cancel what still waits */
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
    if (atomic_fetch_or(&c->flags, F_REPLIED) & F_REPLIED) {
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

static int stream_reply(rpc_call_t *c, int code, const char *message, const rpc_piece_t *pieces,
                        size_t n, int borrowed, void (*release)(void *arg), void *arg);

int rpc_call_reply(rpc_call_t *c, int code, const char *message, const void *data, size_t len) {
    if (c->conn) {
        rpc_piece_t one = {data, len, NULL};
        return stream_reply(c, code, message, &one, len ? 1 : 0, 0, NULL, NULL);
    }
    grpc_slice body =
        code == RPC_OK && len ? rpc__pool_copy(c->srv->pool, data, len) : grpc_empty_slice();
    return reply(c, code, message, body);
}

int rpc_call_reply_zc(rpc_call_t *c, int code, const char *message, const void *data, size_t len,
                      void (*release)(void *arg), void *arg) {
    if (c->conn) {
        rpc_piece_t one = {data, len, NULL};
        return stream_reply(c, code, message, &one, len ? 1 : 0, 1, release, arg);
    }
    grpc_slice body = release ? grpc_slice_new_with_user_data((void *)data, len, release, arg)
                              : grpc_slice_from_static_buffer(data, len);
    return reply(c, code, message, body);
}

int rpc_call_reply_pieces(rpc_call_t *c, const rpc_piece_t *pieces, size_t n) {
    if (c->conn)
        return stream_reply(c, RPC_OK, NULL, pieces, n, 0, NULL, NULL);
    return reply_buffer(c, RPC_OK, NULL, rpc__pieces_buffer(pieces, n));
}

int rpc_call_is_cancelled(const rpc_call_t *c) {
    return (atomic_load(&c->flags) & F_CANCELLED) != 0;
}

void rpc_call_set_user(rpc_call_t *c, void *user) {
    c->user = user;
}

void *rpc_call_user(const rpc_call_t *c) {
    return c->user;
}

const char *rpc_call_method(const rpc_call_t *c) {
    if (c->msg_method)
        return c->msg_method->method;
    return c->method ? c->method->method : "(unknown method)";
}

static void stream_peer(stream_conn_t *k, char *buf, size_t len);

void rpc_call_peer(rpc_call_t *c, char *buf, size_t len) {
    if (c->conn) {
        stream_peer(c->conn, buf, len);
        return;
    }
    char *peer = grpc_call_get_peer(c->call);
    snprintf(buf, len, "%s", peer ? peer : "?");
    gpr_free(peer);
}

/* ---- Events ------------------------------------------------------------------- */

/* Sets c->method or c->msg_method; 0 when the method is known. */
static int find_method(const rpc_server_t *s, rpc_call_t *c) {
    grpc_slice name = c->details.method;
    for (size_t i = 0; i < s->n_methods; i++)
        if (grpc_slice_str_cmp(name, s->methods[i].method) == 0)
            c->method = &s->methods[i];
    for (size_t i = 0; i < s->n_msg_methods; i++)
        if (grpc_slice_str_cmp(name, s->msg_methods[i].method) == 0)
            c->msg_method = &s->msg_methods[i];
    return c->method || c->msg_method ? 0 : -1;
}

/* Has the call's handler take the request, flattened or in place. */
static int run_handler(rpc_server_t *s, rpc_call_t *c) {
    if (c->method) {
        if (rpc__flatten(c->req, &s->flat) < 0)
            return -1;
        c->method->fn(s->ctx, c, s->flat.data, s->flat.len);
        return 0;
    }
    rpc_msg_t m;
    if (rpc__segments(c->req, &s->segs, &s->flat, &m) < 0)
        return -1;
    c->msg_method->fn(s->ctx, c, &m);
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
        snprintf(port, sizeof port, "%d%s%s", s->stream_fd >= 0 ? s->stream_port : 0,
                 s->unix_fd >= 0 ? " " : "", s->unix_fd >= 0 ? s->unix_name : "");
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
    else if (atomic_load(&c->flags) == F_CANCELLED && s->on_cancel)
        s->on_cancel(s->ctx, c);
    pthread_mutex_unlock(&s->hmu);
    call_unref(c);
}

/* The call is over on the wire. */
static void on_close(rpc_server_t *s, rpc_call_t *c, int ok) {
    if (!ok || c->close_cancelled) {
        pthread_mutex_lock(&s->hmu);
        int old = atomic_fetch_or(&c->flags, F_CANCELLED);
        /* Tell the owner, if the handler has had the call and not answered. */
        if (!(old & F_REPLIED) && (c->method || c->msg_method) && s->on_cancel)
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

/* ---- The tensor stream -------------------------------------------------------- */

struct stream_conn {
    rpc_server_t *srv;
    int fd;   /* -1 once closed; under srv->mu */
    int busy; /* between a request's header and its reply; under srv->mu */
    int done; /* the thread has finished; under srv->mu */
    pthread_t thread;
    stream_conn_t *next;
    rpc_buf_t in;        /* the request's body, over TCP */
    const uint8_t *body; /* where the request's body lies */
    int is_unix;         /* a same-host connection: bodies in shm */
    uint8_t *shm;        /* its areas: requests, then responses */
    size_t req_cap, resp_cap;
    char method[RPC_STREAM_METHOD_MAX + 1];
    /* The reply of the call in hand, from rpc_call_reply on any thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int replied;
    int code;
    char msg[RPC_STREAM_MSG_MAX];
    rpc_buf_t out;     /* the copied pieces of the body */
    struct iovec *iov; /* the body: copied pieces point into out */
    size_t niov, capiov;
    rpc_blob_t **blobs; /* references the body holds */
    size_t nblobs, capblobs;
    void (*release)(void *arg); /* a zero-copy body's owner */
    void *release_arg;
};

static int stream_reply(rpc_call_t *c, int code, const char *message, const rpc_piece_t *pieces,
                        size_t n, int borrowed, void (*release)(void *arg), void *arg) {
    stream_conn_t *k = c->conn;
    if (atomic_fetch_or(&c->flags, F_REPLIED) & F_REPLIED) {
        log_error("rpc: a call to %s was answered twice", rpc_call_method(c));
        if (release)
            release(arg);
        return -1;
    }
    size_t total = 0;
    for (size_t i = 0; code == RPC_OK && i < n; i++)
        total += pieces[i].len;
    char over[128];
    if (total > k->srv->max_send) { /* as gRPC refuses it */
        snprintf(over, sizeof over, "response of %zu bytes is over the send limit of %zu", total,
                 k->srv->max_send);
        code = RPC_RESOURCE_EXHAUSTED;
        message = over;
    }
    pthread_mutex_lock(&k->mu);
    k->code = code;
    snprintf(k->msg, sizeof k->msg, "%s", message ? message : "");
    k->niov = k->nblobs = 0;
    k->out.len = 0;
    if (code == RPC_OK) {
        size_t copied = 0;
        for (size_t i = 0; i < n; i++)
            copied += pieces[i].blob || borrowed ? 0 : pieces[i].len;
        rpc_buf_reserve(&k->out, copied); /* fixed from here: the iov point into it */
        if (n > k->capiov) {
            k->capiov = n;
            k->iov = xrealloc(k->iov, n * sizeof *k->iov);
            k->blobs = xrealloc(k->blobs, n * sizeof *k->blobs);
        }
        for (size_t i = 0; i < n; i++) {
            const rpc_piece_t *p = &pieces[i];
            void *at = (void *)p->data;
            if (p->blob) {
                k->blobs[k->nblobs++] = rpc_blob_ref(p->blob);
            } else if (!borrowed && p->len) {
                at = k->out.data + k->out.len;
                memcpy(at, p->data, p->len);
                k->out.len += p->len;
            }
            k->iov[k->niov++] = (struct iovec){at, p->len};
        }
        k->release = release;
        k->release_arg = arg;
        release = NULL;
    }
    k->replied = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    if (release) /* an error carries no body */
        release(arg);
    return 0;
}

/* Drops what the sent (or abandoned) reply held. */
static void stream_reply_done(stream_conn_t *k) {
    for (size_t i = 0; i < k->nblobs; i++)
        rpc_blob_unref(k->blobs[i]);
    k->nblobs = k->niov = 0;
    if (k->release)
        k->release(k->release_arg);
    k->release = NULL;
}

/* Writes the reply frame: header, status message, body (into the response
 * area on a same-host connection). */
static int stream_write_reply(stream_conn_t *k) {
    size_t body = 0;
    for (size_t i = 0; i < k->niov; i++)
        body += k->iov[i].iov_len;
    if (k->shm && k->code == RPC_OK) {
        if (body > k->resp_cap) {
            k->code = RPC_RESOURCE_EXHAUSTED;
            snprintf(k->msg, sizeof k->msg,
                     "response of %zu bytes is over the client's limit of %zu", body, k->resp_cap);
        } else {
            uint8_t *at = k->shm + k->req_cap;
            for (size_t i = 0; i < k->niov; i++) {
                if (k->iov[i].iov_len)
                    memcpy(at, k->iov[i].iov_base, k->iov[i].iov_len);
                at += k->iov[i].iov_len;
            }
        }
    }
    size_t msg_len = strlen(k->msg);
    uint8_t h[RPC_STREAM_HDR];
    rpc__stream_resp_put(h, k->code, msg_len, k->code == RPC_OK ? body : 0, 0);
    struct iovec head[2] = {{h, sizeof h}, {k->msg, msg_len}};
    if (rpc__write_iov(k->fd, head, 2) < 0)
        return -1;
    return k->code == RPC_OK && k->niov && !k->shm ? rpc__write_iov(k->fd, k->iov, (int)k->niov)
                                                   : 0;
}

/* An answer made here, not by a handler: the stream port, an unknown
 * method, an oversized request (flags RPC_STREAM_CLOSING). */
static int stream_answer(stream_conn_t *k, int code, const char *msg, const char *body,
                         uint32_t flags) {
    snprintf(k->msg, sizeof k->msg, "%s", msg);
    k->code = code;
    struct iovec one = {(void *)body, body ? strlen(body) : 0};
    if (k->shm) {
        if (one.iov_len > k->resp_cap)
            one.iov_len = 0;
        if (one.iov_len)
            memcpy(k->shm + k->req_cap, one.iov_base, one.iov_len);
    }
    uint8_t h[RPC_STREAM_HDR];
    rpc__stream_resp_put(h, code, strlen(k->msg), one.iov_len, flags);
    struct iovec all[3] = {{h, sizeof h}, {k->msg, strlen(k->msg)}, one};
    return rpc__write_iov(k->fd, all, k->shm ? 2 : 3);
}

static void stream_peer(stream_conn_t *k, char *buf, size_t len) {
    if (k->is_unix) {
        struct ucred cred = {0};
        socklen_t cl = sizeof cred;
        getsockopt(k->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
        snprintf(buf, len, "local pid %d (stream, shared memory)", (int)cred.pid);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[128] = "?";
    int port = 0;
    memset(&ss, 0, sizeof ss);
    if (getpeername(k->fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            port = ntohs(a->sin6_port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
            port = ntohs(a->sin_port);
        }
    }
    snprintf(buf, len, "%s:%s:%d (stream)", ss.ss_family == AF_INET6 ? "ipv6" : "ipv4", host, port);
}

/* Closes our side and reads what the client still sends, for a while: a
 * close with unread bytes would reset the connection, and the client could
 * lose the answer it has not read yet. */
static void stream_linger(stream_conn_t *k) {
    shutdown(k->fd, SHUT_WR);
    double until = ps_now() + 1.0;
    uint8_t sink[65536];
    struct pollfd p = {.fd = k->fd, .events = POLLIN};
    while (ps_now() < until && poll(&p, 1, 100) >= 0 && !atomic_load(&k->srv->stream_cancel)) {
        if ((p.revents & POLLIN) && recv(k->fd, sink, sizeof sink, MSG_DONTWAIT) <= 0)
            break;
        if (p.revents & (POLLHUP | POLLERR))
            break;
    }
}

/* Whether a deferred call must be given up: its deadline passed, the client
 * hung up (or sent more while waiting, which it must not), or the server
 * stops. */
static int stream_gone(stream_conn_t *k, double deadline) {
    if (atomic_load(&k->srv->stream_cancel) || (deadline > 0 && ps_now() >= deadline))
        return 1;
    struct pollfd p = {.fd = k->fd, .events = POLLIN | POLLRDHUP};
    return poll(&p, 1, 0) > 0;
}

/* Runs one request (in k->in) through its handler and sends the reply.
 * -1 when the connection must close. */
static int stream_call(stream_conn_t *k, size_t len, double deadline) {
    rpc_server_t *s = k->srv;
    if (strcmp(k->method, RPC_STREAM_PORT_METHOD) == 0) {
        char port[160];
        snprintf(port, sizeof port, "%d%s%s", s->stream_port, s->unix_fd >= 0 ? " " : "",
                 s->unix_fd >= 0 ? s->unix_name : "");
        return stream_answer(k, RPC_OK, "", port, 0);
    }
    rpc_call_t *c = xcalloc(1, sizeof *c);
    c->srv = s;
    c->conn = k;
    for (size_t i = 0; i < s->n_methods; i++)
        if (strcmp(k->method, s->methods[i].method) == 0)
            c->method = &s->methods[i];
    for (size_t i = 0; i < s->n_msg_methods; i++)
        if (strcmp(k->method, s->msg_methods[i].method) == 0)
            c->msg_method = &s->msg_methods[i];
    if (!c->method && !c->msg_method) {
        free(c);
        char msg[RPC_STREAM_MSG_MAX];
        snprintf(msg, sizeof msg, "unknown method %s", k->method);
        return stream_answer(k, RPC_UNIMPLEMENTED, msg, NULL, 0);
    }
    k->replied = 0;
    pthread_mutex_lock(&s->hmu);
    if (c->method) {
        c->method->fn(s->ctx, c, k->body, len);
    } else {
        rpc_seg_t seg = {k->body, len};
        rpc_msg_t m = {&seg, 1, len};
        c->msg_method->fn(s->ctx, c, &m);
    }
    pthread_mutex_unlock(&s->hmu);
    /* A deferred reply comes from another thread; until then, watch for a
     * reason to give the call up. */
    int gone = 0;
    pthread_mutex_lock(&k->mu);
    while (!k->replied && !(gone = stream_gone(k, deadline))) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 20 * 1000 * 1000;
        until.tv_sec += until.tv_nsec / 1000000000;
        until.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&k->cv, &k->mu, &until);
    }
    pthread_mutex_unlock(&k->mu);
    if (gone) {
        /* The owner releases it; under the handler lock, so that no handler
         * answers it meanwhile. */
        pthread_mutex_lock(&s->hmu);
        int old = atomic_fetch_or(&c->flags, F_CANCELLED);
        if (!(old & F_REPLIED) && s->on_cancel)
            s->on_cancel(s->ctx, c);
        pthread_mutex_unlock(&s->hmu);
        pthread_mutex_lock(&k->mu);
        while (!k->replied)
            pthread_cond_wait(&k->cv, &k->mu);
        pthread_mutex_unlock(&k->mu);
    }
    /* A cancelled call's answer goes nowhere: the client has gone, or its
     * deadline has passed and it has closed the connection. */
    int rc = gone ? -1 : stream_write_reply(k);
    stream_reply_done(k);
    free(c);
    return rc;
}

static void stream_set_busy(stream_conn_t *k, int busy) {
    pthread_mutex_lock(&k->srv->mu);
    k->busy = busy;
    pthread_mutex_unlock(&k->srv->mu);
}

/* A same-host connection starts with the client's hello and memory. */
static int stream_hello(stream_conn_t *k, const char *peer) {
    uint8_t h[RPC_STREAM_HDR];
    int fd;
    uint64_t rq = 0, rs = 0;
    struct stat st;
    const char *why = NULL;
    if (rpc__recv_fd(k->fd, h, sizeof h, &fd) < 0 || rpc__stream_hello_get(h, &rq, &rs) < 0)
        why = "did not open with a hello and its memory";
    else if (rq > ((uint64_t)1 << 40) || rs > ((uint64_t)1 << 40) || fstat(fd, &st) < 0 ||
             (uint64_t)st.st_size < rq + rs)
        why = "sent memory smaller than its hello says";
    else if (!(fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK))
        why = "sent memory that can shrink";
    if (!why) {
        void *m = mmap(NULL, rq + rs, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            why = "sent memory that cannot be mapped";
        } else {
            k->shm = m;
            k->req_cap = rq;
            k->resp_cap = rs;
        }
    }
    if (fd >= 0)
        close(fd);
    if (why)
        log_warn("rpc: %s %s; connection closed", peer, why);
    return why ? -1 : 0;
}

/* Reads and answers requests until the client closes the connection, sends
 * something that is not a request, or the server stops. */
static void *stream_serve(void *arg) {
    stream_conn_t *k = arg;
    rpc_server_t *s = k->srv;
    char peer[160];
    stream_peer(k, peer, sizeof peer);
    for (int ok = !k->is_unix || stream_hello(k, peer) == 0; ok;) {
        uint8_t h[RPC_STREAM_HDR];
        if (rpc__read_full(k->fd, h, sizeof h) != 0)
            break; /* closed between calls, or stopping */
        stream_set_busy(k, 1);
        size_t method_len;
        double deadline_s;
        uint64_t body_len;
        if (rpc__stream_req_get(h, &method_len, &deadline_s, &body_len) < 0 || method_len == 0 ||
            method_len > RPC_STREAM_METHOD_MAX) {
            log_warn("rpc: %s sent bytes that are not a pstrain stream request; connection "
                     "closed",
                     peer);
            break;
        }
        if (body_len > s->max_recv || (k->shm && body_len > k->req_cap)) {
            char msg[RPC_STREAM_MSG_MAX];
            snprintf(msg, sizeof msg,
                     "request of %llu bytes is over the limit of %zu (rpc.max_message_mb)",
                     (unsigned long long)body_len, s->max_recv);
            log_warn("rpc: %s: %s; connection closed", peer, msg);
            stream_answer(k, RPC_RESOURCE_EXHAUSTED, msg, NULL, RPC_STREAM_CLOSING);
            stream_linger(k);
            break;
        }
        double deadline = deadline_s > 0 ? ps_now() + deadline_s : 0;
        if (!k->shm)
            rpc_buf_reserve(&k->in, body_len);
        k->body = k->shm ? k->shm : k->in.data;
        if (rpc__read_full(k->fd, k->method, method_len) != 0 ||
            (!k->shm && rpc__read_full(k->fd, k->in.data, body_len) != 0))
            break; /* the client went away mid-request */
        k->method[method_len] = '\0';
        if (stream_call(k, body_len, deadline) < 0)
            break;
        stream_set_busy(k, 0);
    }
    pthread_mutex_lock(&s->mu);
    close(k->fd);
    k->fd = -1;
    k->busy = 0;
    k->done = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void stream_conn_free(stream_conn_t *k) {
    pthread_join(k->thread, NULL);
    if (k->shm)
        munmap(k->shm, k->req_cap + k->resp_cap);
    rpc_buf_free(&k->in);
    rpc_buf_free(&k->out);
    free(k->iov);
    free(k->blobs);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
}

/* Joins and frees the connections whose threads have finished. Under s->mu. */
static void stream_reap_locked(rpc_server_t *s) {
    for (stream_conn_t **at = &s->conns; *at;) {
        stream_conn_t *k = *at;
        if (k->done) {
            *at = k->next;
            stream_conn_free(k);
        } else {
            at = &k->next;
        }
    }
}

static void *stream_accept(void *arg) {
    rpc_server_t *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->stream_fd, .events = POLLIN},
                              {.fd = s->unix_fd, .events = POLLIN}};
        int n = poll(p, 2, -1); /* a descriptor of -1 is not polled */
        int is_unix = n > 0 && s->unix_fd >= 0 && (p[1].revents & POLLIN);
        int fd = n < 0 ? -1
                       : accept4(is_unix ? s->unix_fd : s->stream_fd, NULL, NULL,
                                 SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            fcntl(fd, F_SETFL, 0); /* blocking, but the accept above must not wait */
        if (fd < 0 && errno == EAGAIN)
            continue;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            pthread_mutex_lock(&s->mu);
            int stopping = s->stopping;
            pthread_mutex_unlock(&s->mu);
            if (stopping)
                break;
            /* Out of descriptors or memory: keep serving the connections
             * there are, and try again shortly. */
            log_warn("rpc: tensor stream on port %d: accept: %s", s->stream_port, strerror(errno));
            ps_sleep(0.1);
            continue;
        }
        if (!is_unix)
            rpc__stream_tune(fd);
        stream_conn_t *k = xcalloc(1, sizeof *k);
        k->srv = s;
        k->fd = fd;
        k->is_unix = is_unix;
        pthread_mutex_init(&k->mu, NULL);
        pthread_cond_init(&k->cv, NULL);
        pthread_mutex_lock(&s->mu);
        stream_reap_locked(s);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            pthread_mutex_destroy(&k->mu);
            pthread_cond_destroy(&k->cv);
            free(k);
            break;
        }
        k->next = s->conns;
        s->conns = k;
        int rc = pthread_create(&k->thread, NULL, stream_serve, k);
        pthread_mutex_unlock(&s->mu);
        if (rc != 0) {
            log_error("rpc: cannot start a tensor stream thread: %s", strerror(rc));
            abort();
        }
    }
    return NULL;
}

/* Stops accepting and closes idle connections; busy ones get the grace
 * (until t0 + RPC_STOP_GRACE_S) to finish, then whatever still waits is
 * cancelled, and every connection thread is joined. */
static void stream_stop_accepting(rpc_server_t *s) {
    if (!s->streaming)
        return;
    if (s->stream_fd >= 0)
        shutdown(s->stream_fd, SHUT_RDWR);
    if (s->unix_fd >= 0)
        shutdown(s->unix_fd, SHUT_RDWR);
    pthread_join(s->stream_thread, NULL);
    if (s->stream_fd >= 0)
        close(s->stream_fd);
    if (s->unix_fd >= 0)
        close(s->unix_fd);
}

static void stream_stop(rpc_server_t *s, double t0) {
    if (!s->streaming)
        return;
    for (;;) {
        int busy = 0;
        pthread_mutex_lock(&s->mu);
        for (stream_conn_t *k = s->conns; k; k = k->next) {
            if (k->fd >= 0 && !k->busy)
                shutdown(k->fd, SHUT_RDWR);
            busy += k->fd >= 0 && k->busy;
        }
        pthread_mutex_unlock(&s->mu);
        if (!busy || ps_now() - t0 >= RPC_STOP_GRACE_S)
            break;
        ps_sleep(0.01);
    }
    atomic_store(&s->stream_cancel, 1);
    pthread_mutex_lock(&s->mu);
    for (stream_conn_t *k = s->conns; k; k = k->next)
        if (k->fd >= 0)
            shutdown(k->fd, SHUT_RDWR);
    stream_conn_t *all = s->conns;
    s->conns = NULL;
    pthread_mutex_unlock(&s->mu);
    while (all) {
        stream_conn_t *next = all->next;
        stream_conn_free(all);
        all = next;
    }
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
    s->stream_fd = s->unix_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    pthread_cond_init(&s->done, NULL);
    int tls = cfg->opt.tls_ca || cfg->opt.tls_cert || cfg->opt.tls_key;
    /* The streams first: a gRPC server that has bound its port cannot be
     * destroyed without having started. */
    if ((cfg->opt.stream && !tls &&
         rpc__stream_listen(cfg->addr, cfg->opt.stream_port, &s->stream_fd, &s->stream_port, err,
                            errlen) < 0) ||
        (cfg->opt.shm && !tls &&
         rpc__stream_unix_listen(s->unix_name, sizeof s->unix_name, &s->unix_fd, err, errlen) <
             0) ||
        server_bind(s, cfg, err, errlen) < 0) {
        if (s->stream_fd >= 0)
            close(s->stream_fd);
        if (s->unix_fd >= 0)
            close(s->unix_fd);
        server_unbind(s);
        pthread_mutex_destroy(&s->mu);
        pthread_mutex_destroy(&s->hmu);
        pthread_cond_destroy(&s->done);
        free(s);
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
    int rc = pthread_create(&s->thread, NULL, serve, s);
    s->streaming = s->stream_fd >= 0 || s->unix_fd >= 0;
    if (rc == 0 && s->streaming)
        rc = pthread_create(&s->stream_thread, NULL, stream_accept, s);
    if (rc != 0) {
        /* Like an allocation failure: the process is out of resources. */
        log_error("rpc: cannot start the server thread: %s", strerror(rc));
        abort();
    }
    *out = s;
    return 0;
}

int rpc_server_port(const rpc_server_t *s) {
    return s->port;
}

int rpc_server_stream_port(const rpc_server_t *s) {
    return s->stream_fd >= 0 ? s->stream_port : 0;
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
    stream_stop_accepting(s);
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
    stream_stop(s, t0);
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
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->hmu);
    pthread_cond_destroy(&s->done);
    free(s);
    grpc_shutdown();
}

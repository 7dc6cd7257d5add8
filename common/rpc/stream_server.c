/* The tensor stream's server: one libuv loop thread serves every stream
 * connection of a server, Unix socket and TCP, and one handler thread runs
 * the handlers.
 *
 * The loop accepts (answering RESOURCE_EXHAUSTED past the connection
 * limit), waits for each connection's handshake (the hello and its memory
 * on the Unix socket, the first request's header over TCP) for at most the
 * handshake timeout, reads requests without blocking, and hands each to the
 * handler thread. The handler answers with rpc_call_reply, then or later
 * from any thread; the reply is queued for the loop, which writes it once
 * the handler has returned (until then the handler may read the request
 * where it lies, and the client must not overwrite it). A deadline that
 * passes first is answered DEADLINE_EXCEEDED and the owner hears of it
 * through on_cancel; a client that hangs up cancels its call the same way.
 *
 * Ownership: a connection's libuv handles live inside it and it is freed
 * after both close callbacks and after a handler still reading its request
 * has returned (a reference each). A call is held by the loop until it has
 * seen both the reply and the handler's return, and by a queued on_cancel. */
#include "common/rpc/stream_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "common/base/log.h"
#include "common/base/util.h"

/* How long a connection answered with RPC_STREAM_CLOSING is drained before
 * it is closed: a close with unread bytes would reset it, and the client
 * could lose the answer. */
#define LINGER_S 1.0
/* Seconds between two warnings about refused connections. */
#define REFUSAL_LOG_S 10.0
/* Connections accepted per wake-up of a listener, so that a flood cannot
 * starve the connections already served. */
#define ACCEPT_BATCH 64

typedef enum { K_HELLO, K_HEAD, K_METHOD, K_BODY, K_CALL, K_WRITE, K_LINGER } kstate_t;

typedef struct stream_conn stream_conn_t;
typedef struct stream_call stream_call_t;

struct stream_call {
    rpc_call_head_t head; /* first: what the rpc_call_* functions read */
    stream_server_t *srv;
    stream_conn_t *conn; /* the connection waiting for it; loop only */
    atomic_int refs;
    int handled; /* the handler has returned; loop only */
    int replied; /* the reply is in; loop only */
    char peer[96];
    /* The reply, written by rpc_call_reply (any thread), then read by the loop. */
    int code;
    char msg[RPC_STREAM_MSG_MAX];
    rpc_buf_t out;     /* copied pieces */
    struct iovec *iov; /* the body: copied pieces point into out */
    size_t niov;
    rpc_blob_t **blobs; /* references the body holds */
    size_t nblobs;
    void (*release)(void *arg); /* a zero-copy body's owner */
    void *release_arg;
    /* In the server's queues: a reply can be queued while its handler's
     * return is, so a link each. */
    stream_call_t *next_reply, *next_handled;
};

struct stream_conn {
    uv_poll_t poll; /* the handles first; freed after both close callbacks */
    uv_timer_t timer;
    stream_server_t *srv;
    int fd;
    int is_unix;
    atomic_int refs; /* the loop's, and a handler's reading the request */
    int closing;
    int open_handles;
    int events; /* polled now */
    int handshaken;
    kstate_t state, after; /* after: what follows the write */
    char peer[96];
    uint8_t head[RPC_STREAM_HDR];
    uint8_t *at; /* where the phase's bytes go, and how many are left */
    size_t left;
    char method[RPC_STREAM_METHOD_MAX + 1];
    uint64_t body_len;
    double deadline; /* of the request in hand, absolute; 0: none */
    int late;        /* its deadline passed while the handler ran */
    int memfd;       /* the hello's memory, until it is mapped */
    rpc_buf_t in;    /* a TCP request's body */
    uint8_t *shm;    /* same host: requests, then responses */
    size_t req_cap, resp_cap;
    stream_call_t *call;  /* the call in hand */
    stream_call_t *wcall; /* the call whose reply is being written */
    uint8_t whead[RPC_STREAM_HDR];
    char wmsg[RPC_STREAM_MSG_MAX];
    char wbody[160];
    struct iovec *wv, *wcur;
    int nwcur;
    size_t capwv;
    stream_conn_t *prev, *next; /* the server's open connections; loop only */
};

typedef struct job {
    int cancel; /* on_cancel, else the handler */
    stream_call_t *call;
    stream_conn_t *conn;
    struct job *next;
} job_t;

struct stream_server {
    uv_loop_t loop;
    uv_async_t wake;
    uv_poll_t tcp_poll, unix_poll;
    uv_timer_t grace, retry;
    int tcp_fd, unix_fd, tcp_port;
    char unix_name[108];
    stream_server_config_t cfg;
    pthread_t loop_thread, handler_thread;
    /* Loop only. */
    stream_conn_t *conns;
    int nconns;       /* open, counted against the limit */
    int conn_structs; /* not yet past their close callbacks */
    int listeners;    /* listener handles not yet closed */
    int stopping;
    size_t refused;
    double refusal_logged;
    /* From any thread, under mu. */
    pthread_mutex_t mu;
    stream_call_t *replies, *handled;
    size_t live; /* calls not yet freed */
    int stop_asked;
    double t0;
    /* The handler thread's queue. */
    pthread_mutex_t jmu;
    pthread_cond_t jcv;
    job_t *jhead, *jtail;
    int jstop;
};

static void conn_close(stream_conn_t *k);
static void conn_unref(stream_conn_t *k);
static void conn_progress(stream_conn_t *k);
static void conn_write(stream_conn_t *k);
static void maybe_finish(stream_server_t *s);

/* ---- Calls ---------------------------------------------------------------------- */

static void call_unref(stream_call_t *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    stream_server_t *s = c->srv;
    rpc_buf_free(&c->out);
    free(c->iov);
    free(c->blobs);
    free(c);
    pthread_mutex_lock(&s->mu);
    if (--s->live == 0 && s->stop_asked)
        uv_async_send(&s->wake); /* under mu: the loop closes wake only with live 0 */
    pthread_mutex_unlock(&s->mu);
}

/* Drops what the sent (or abandoned) reply held. */
static void reply_done(stream_call_t *c) {
    for (size_t i = 0; i < c->nblobs; i++)
        rpc_blob_unref(c->blobs[i]);
    c->nblobs = c->niov = 0;
    if (c->release)
        c->release(c->release_arg);
    c->release = NULL;
}

static void post(stream_server_t *s, int reply, stream_call_t *c) {
    pthread_mutex_lock(&s->mu);
    if (reply) {
        c->next_reply = s->replies;
        s->replies = c;
    } else {
        c->next_handled = s->handled;
        s->handled = c;
    }
    uv_async_send(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

static void job_push(stream_server_t *s, int cancel, stream_call_t *c, stream_conn_t *k) {
    job_t *j = xcalloc(1, sizeof *j);
    j->cancel = cancel;
    j->call = c;
    j->conn = k;
    pthread_mutex_lock(&s->jmu);
    if (s->jtail)
        s->jtail->next = j;
    else
        s->jhead = j;
    s->jtail = j;
    pthread_cond_signal(&s->jcv);
    pthread_mutex_unlock(&s->jmu);
}

/* Marks the call cancelled; unless a reply has already claimed it, its
 * owner hears of it (on the handler thread, after the handler). Whether
 * the cancel won. Loop only. */
static int call_cancel(stream_call_t *c) {
    int old = atomic_fetch_or(&c->head.flags, RPC_CALL_CANCELLED);
    if (old & (RPC_CALL_REPLIED | RPC_CALL_CANCELLED))
        return 0;
    atomic_fetch_add(&c->refs, 1);
    job_push(c->srv, 1, c, NULL);
    return 1;
}

/* A call no connection waits for any more: dropped once its reply is in
 * and its handler has returned. Loop only. */
static void call_settle(stream_call_t *c) {
    if (c->conn) {
        conn_progress(c->conn);
        return;
    }
    if (c->replied && c->handled) {
        reply_done(c);
        call_unref(c);
    }
}

/* Fills the call's reply; copies what is not lent. */
static void reply_fill(stream_call_t *c, int code, const char *message, const rpc_piece_t *pieces,
                       size_t n, int borrowed) {
    c->code = code;
    snprintf(c->msg, sizeof c->msg, "%s", message ? message : "");
    if (code != RPC_OK)
        return;
    size_t copied = 0;
    for (size_t i = 0; i < n; i++)
        copied += pieces[i].blob || borrowed ? 0 : pieces[i].len;
    rpc_buf_reserve(&c->out, copied); /* fixed from here: the iov point into it */
    c->iov = xrealloc(c->iov, (n ? n : 1) * sizeof *c->iov);
    c->blobs = xrealloc(c->blobs, (n ? n : 1) * sizeof *c->blobs);
    for (size_t i = 0; i < n; i++) {
        const rpc_piece_t *p = &pieces[i];
        void *at = (void *)p->data;
        if (p->blob) {
            c->blobs[c->nblobs++] = rpc_blob_ref(p->blob);
        } else if (!borrowed && p->len) {
            at = c->out.data + c->out.len;
            memcpy(at, p->data, p->len);
            c->out.len += p->len;
        }
        c->iov[c->niov++] = (struct iovec){at, p->len};
    }
}

int stream__reply(rpc_call_t *call, int code, const char *message, const rpc_piece_t *pieces,
                  size_t n, int borrowed, void (*release)(void *arg), void *arg) {
    stream_call_t *c = (stream_call_t *)call;
    int old = atomic_fetch_or(&c->head.flags, RPC_CALL_REPLIED);
    if (old & RPC_CALL_REPLIED) {
        log_error("rpc: a call to %s was answered twice", rpc_call_method(call));
        if (release)
            release(arg);
        return -1;
    }
    size_t total = 0;
    for (size_t i = 0; code == RPC_OK && i < n; i++)
        total += pieces[i].len;
    char over[128];
    if (total > c->srv->cfg.max_send) { /* as gRPC refuses it */
        snprintf(over, sizeof over, "response of %zu bytes is over the send limit of %zu", total,
                 c->srv->cfg.max_send);
        code = RPC_RESOURCE_EXHAUSTED;
        message = over;
    }
    if (!(old & RPC_CALL_CANCELLED)) /* a cancelled call's answer goes nowhere */
        reply_fill(c, code, message, pieces, n, borrowed);
    if (code == RPC_OK && !(old & RPC_CALL_CANCELLED)) {
        c->release = release;
        c->release_arg = arg;
    } else if (release) {
        release(arg);
    }
    post(c->srv, 1, c);
    return 0;
}

void stream__peer(const rpc_call_t *call, char *buf, size_t len) {
    snprintf(buf, len, "%s", ((const stream_call_t *)call)->peer);
}

/* ---- The handler thread ------------------------------------------------------------ */

static void run_job(stream_server_t *s, job_t *j) {
    stream_call_t *c = j->call;
    stream_conn_t *k = j->conn;
    const uint8_t *body = k->shm ? k->shm : k->in.data;
    size_t len = (size_t)k->body_len;
    pthread_mutex_lock(s->cfg.hmu);
    if (c->head.method) {
        c->head.method->fn(s->cfg.ctx, (rpc_call_t *)c, body, len);
    } else {
        rpc_seg_t seg = {body, len};
        rpc_msg_t m = {&seg, 1, len};
        c->head.msg_method->fn(s->cfg.ctx, (rpc_call_t *)c, &m);
    }
    pthread_mutex_unlock(s->cfg.hmu);
    conn_unref(k);
    post(s, 0, c);
}

/* The owner hears that its call was cancelled, unless it answered it
 * meanwhile; under the handler lock, so that no handler answers it while. */
static void cancel_job(stream_server_t *s, job_t *j) {
    stream_call_t *c = j->call;
    pthread_mutex_lock(s->cfg.hmu);
    if (!(atomic_load(&c->head.flags) & RPC_CALL_REPLIED) && s->cfg.on_cancel)
        s->cfg.on_cancel(s->cfg.ctx, (rpc_call_t *)c);
    pthread_mutex_unlock(s->cfg.hmu);
    call_unref(c);
}

static void *handler_main(void *arg) {
    stream_server_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->jmu);
        while (!s->jhead && !s->jstop)
            pthread_cond_wait(&s->jcv, &s->jmu);
        job_t *j = s->jhead;
        if (j && !(s->jhead = j->next))
            s->jtail = NULL;
        pthread_mutex_unlock(&s->jmu);
        if (!j)
            return NULL;
        if (j->cancel)
            cancel_job(s, j);
        else
            run_job(s, j);
        free(j);
    }
}

/* ---- Connections: life ------------------------------------------------------------- */

static void conn_unref(stream_conn_t *k) {
    if (atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    if (k->shm)
        munmap(k->shm, k->req_cap + k->resp_cap);
    rpc_buf_free(&k->in);
    free(k->wv);
    free(k);
}

static void on_conn_closed(uv_handle_t *h) {
    stream_conn_t *k = h->data;
    if (--k->open_handles > 0)
        return;
    stream_server_t *s = k->srv;
    close(k->fd);
    if (k->memfd >= 0)
        close(k->memfd);
    s->conn_structs--;
    conn_unref(k);
    maybe_finish(s);
}

/* Closes the connection; a call it waits for is cancelled. Loop only. */
static void conn_close(stream_conn_t *k) {
    if (k->closing)
        return;
    k->closing = 1;
    stream_server_t *s = k->srv;
    if (k->prev)
        k->prev->next = k->next;
    else
        s->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    s->nconns--;
    stream_call_t *c = k->call;
    k->call = k->wcall = NULL;
    if (c) { /* dropped once its reply is in and its handler has returned */
        call_cancel(c);
        c->conn = NULL;
        call_settle(c);
    }
    k->open_handles = 2;
    uv_close((uv_handle_t *)&k->poll, on_conn_closed);
    uv_close((uv_handle_t *)&k->timer, on_conn_closed);
}

static void conn_poll(stream_conn_t *k, int events);

/* Starts the connection's timer (seconds; <= 0 stops it). */
static void conn_timer(stream_conn_t *k, double seconds, uv_timer_cb cb) {
    uv_timer_stop(&k->timer);
    if (seconds > 0)
        uv_timer_start(&k->timer, cb, (uint64_t)(seconds * 1e3) + 1, 0);
}

/* The peer, for log lines and rpc_call_peer. */
static void conn_peer(stream_conn_t *k) {
    if (k->is_unix) {
        struct ucred cred = {0};
        socklen_t cl = sizeof cred;
        getsockopt(k->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
        snprintf(k->peer, sizeof k->peer, "local pid %d (stream, shared memory)", (int)cred.pid);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[64] = "?";
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
    snprintf(k->peer, sizeof k->peer, "%s:%s:%d (stream)",
             ss.ss_family == AF_INET6 ? "ipv6" : "ipv4", host, port);
}

/* ---- Connections: writing ------------------------------------------------------- */

static void wv_reserve(stream_conn_t *k, size_t n) {
    if (n > k->capwv) {
        k->capwv = n;
        k->wv = xrealloc(k->wv, n * sizeof *k->wv);
    }
}

static void write_start(stream_conn_t *k, size_t n, kstate_t after) {
    k->wcur = k->wv;
    k->nwcur = (int)n;
    k->state = K_WRITE;
    k->after = after;
    conn_write(k);
}

/* An answer made here, not by a handler: the stream port, an unknown
 * method, a late or oversized request (after K_LINGER: closing). */
static void conn_answer(stream_conn_t *k, int code, const char *msg, const char *body,
                        kstate_t after) {
    snprintf(k->wmsg, sizeof k->wmsg, "%s", msg);
    snprintf(k->wbody, sizeof k->wbody, "%s", body ? body : "");
    size_t blen = strlen(k->wbody), mlen = strlen(k->wmsg);
    if (k->shm && blen > k->resp_cap)
        blen = 0;
    if (k->shm && blen)
        memcpy(k->shm + k->req_cap, k->wbody, blen);
    rpc__stream_resp_put(k->whead, code, mlen, blen, after == K_LINGER ? RPC_STREAM_CLOSING : 0);
    wv_reserve(k, 3);
    k->wv[0] = (struct iovec){k->whead, sizeof k->whead};
    k->wv[1] = (struct iovec){k->wmsg, mlen};
    k->wv[2] = (struct iovec){k->wbody, blen};
    write_start(k, k->shm ? 2 : 3, after);
}

/* The reply of the call in hand: header, message, body (into the response
 * area on a same-host connection). */
static void conn_reply(stream_conn_t *k) {
    stream_call_t *c = k->call;
    k->wcall = c;
    size_t body = 0;
    for (size_t i = 0; i < c->niov; i++)
        body += c->iov[i].iov_len;
    if (k->shm && c->code == RPC_OK && body > k->resp_cap) {
        c->code = RPC_RESOURCE_EXHAUSTED;
        snprintf(c->msg, sizeof c->msg, "response of %zu bytes is over the client's limit of %zu",
                 body, k->resp_cap);
    } else if (k->shm && c->code == RPC_OK) {
        uint8_t *at = k->shm + k->req_cap;
        for (size_t i = 0; i < c->niov; i++) {
            if (c->iov[i].iov_len)
                memcpy(at, c->iov[i].iov_base, c->iov[i].iov_len);
            at += c->iov[i].iov_len;
        }
    }
    size_t mlen = strlen(c->msg);
    int ok = c->code == RPC_OK;
    rpc__stream_resp_put(k->whead, c->code, mlen, ok ? body : 0, 0);
    size_t n = 2 + (ok && !k->shm ? c->niov : 0);
    wv_reserve(k, n);
    k->wv[0] = (struct iovec){k->whead, sizeof k->whead};
    k->wv[1] = (struct iovec){c->msg, mlen};
    for (size_t i = 2; i < n; i++)
        k->wv[i] = c->iov[i - 2];
    write_start(k, n, K_HEAD);
}

static void on_linger(uv_timer_t *t) {
    conn_close(t->data);
}

/* The frame is out: the call is done, and the connection reads the next
 * request (or lingers, or closes while the server stops). */
static void write_done(stream_conn_t *k) {
    stream_call_t *c = k->wcall;
    if (c) {
        k->wcall = k->call = NULL;
        c->conn = NULL;
        reply_done(c);
        call_unref(c);
    }
    k->state = k->after;
    if (k->state == K_LINGER) {
        shutdown(k->fd, SHUT_WR);
        conn_timer(k, LINGER_S, on_linger);
    } else if (k->srv->stopping) {
        conn_close(k);
        return;
    } else {
        k->at = k->head;
        k->left = sizeof k->head;
    }
    conn_poll(k, UV_READABLE | UV_DISCONNECT);
}

static void conn_write(stream_conn_t *k) {
    while (k->nwcur > 0) {
        struct msghdr mh = {.msg_iov = k->wcur, .msg_iovlen = (size_t)PS_MIN(k->nwcur, 1024)};
        ssize_t w = sendmsg(k->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            conn_poll(k, UV_WRITABLE); /* reading waits: the client must read first */
            return;
        }
        if (w < 0) {
            conn_close(k);
            return;
        }
        rpc__iov_advance(&k->wcur, &k->nwcur, (size_t)w);
    }
    write_done(k);
}

/* ---- Connections: reading ---------------------------------------------------------- */

static void on_handshake_timeout(uv_timer_t *t) {
    stream_conn_t *k = t->data;
    log_debug("rpc: %s sent no %s within %.1f s; connection closed", k->peer,
              k->is_unix ? "hello" : "request", k->srv->cfg.handshake_s);
    conn_close(k);
}

/* The request's deadline passed: answered DEADLINE_EXCEEDED, unless its
 * reply has already claimed it, once its handler has returned. */
static void conn_late(stream_conn_t *k) {
    stream_call_t *c = k->call;
    if (!c->handled) {
        k->late = 1;
        return;
    }
    if (!call_cancel(c))
        return;
    k->call = NULL;
    c->conn = NULL;
    call_settle(c);
    conn_answer(k, RPC_DEADLINE_EXCEEDED, "deadline exceeded", NULL, K_HEAD);
}

static void on_deadline(uv_timer_t *t) {
    stream_conn_t *k = t->data;
    if (k->state == K_CALL && k->call)
        conn_late(k);
}

/* Moves the call in hand on: its reply is written once it is in and the
 * handler has returned. Loop only. */
static void conn_progress(stream_conn_t *k) {
    stream_call_t *c = k->call;
    if (k->state != K_CALL || !c || !c->handled)
        return;
    if (c->replied)
        conn_reply(k);
    else if (k->late)
        conn_late(k);
}

/* The request is whole: answered here, or handed to the handler thread. */
static void conn_dispatch(stream_conn_t *k) {
    stream_server_t *s = k->srv;
    if (strcmp(k->method, RPC_STREAM_PORT_METHOD) == 0) {
        char port[160];
        snprintf(port, sizeof port, "%d%s%s", s->tcp_port, s->unix_fd >= 0 ? " " : "",
                 s->unix_name);
        conn_answer(k, RPC_OK, "", port, K_HEAD);
        return;
    }
    stream_call_t *c = xcalloc(1, sizeof *c);
    c->head.is_stream = 1;
    for (size_t i = 0; i < s->cfg.n_methods; i++)
        if (strcmp(k->method, s->cfg.methods[i].method) == 0)
            c->head.method = &s->cfg.methods[i];
    for (size_t i = 0; i < s->cfg.n_msg_methods; i++)
        if (strcmp(k->method, s->cfg.msg_methods[i].method) == 0)
            c->head.msg_method = &s->cfg.msg_methods[i];
    if (!c->head.method && !c->head.msg_method) {
        free(c);
        char msg[RPC_STREAM_MSG_MAX];
        snprintf(msg, sizeof msg, "unknown method %s", k->method);
        conn_answer(k, RPC_UNIMPLEMENTED, msg, NULL, K_HEAD);
        return;
    }
    if (k->deadline > 0 && ps_now() >= k->deadline) { /* late before it could start */
        free(c);
        conn_answer(k, RPC_DEADLINE_EXCEEDED, "deadline exceeded", NULL, K_HEAD);
        return;
    }
    c->srv = s;
    c->conn = k;
    atomic_init(&c->refs, 1);
    snprintf(c->peer, sizeof c->peer, "%s", k->peer);
    pthread_mutex_lock(&s->mu);
    s->live++;
    pthread_mutex_unlock(&s->mu);
    k->call = c;
    k->late = 0;
    k->state = K_CALL;
    atomic_fetch_add(&k->refs, 1);
    job_push(s, 0, c, k);
}

/* The header is in: checks it and sets up the method and body reads. */
static void conn_header(stream_conn_t *k) {
    stream_server_t *s = k->srv;
    size_t method_len;
    double deadline_s;
    if (rpc__stream_req_get(k->head, &method_len, &deadline_s, &k->body_len) < 0 ||
        method_len == 0 || method_len > RPC_STREAM_METHOD_MAX) {
        log_warn("rpc: %s sent bytes that are not a pstrain stream request; connection closed",
                 k->peer);
        conn_close(k);
        return;
    }
    if (!k->handshaken) {
        k->handshaken = 1;
        uv_timer_stop(&k->timer);
    }
    if (k->body_len > s->cfg.max_recv || (k->shm && k->body_len > k->req_cap)) {
        char msg[RPC_STREAM_MSG_MAX];
        snprintf(msg, sizeof msg,
                 "request of %llu bytes is over the limit of %zu (rpc.max_message_mb)",
                 (unsigned long long)k->body_len, s->cfg.max_recv);
        log_warn("rpc: %s: %s; connection closed", k->peer, msg);
        conn_answer(k, RPC_RESOURCE_EXHAUSTED, msg, NULL, K_LINGER);
        return;
    }
    k->deadline = deadline_s > 0 ? ps_now() + deadline_s : 0;
    conn_timer(k, deadline_s, on_deadline);
    k->method[method_len] = '\0';
    k->state = K_METHOD;
    k->at = (uint8_t *)k->method;
    k->left = method_len;
}

/* The phase's bytes are all in: on to the next. */
static void conn_phase_done(stream_conn_t *k) {
    if (k->state == K_HEAD) {
        conn_header(k);
    } else if (k->state == K_METHOD && !k->shm && k->body_len > 0) {
        rpc_buf_reserve(&k->in, k->body_len);
        k->state = K_BODY;
        k->at = k->in.data;
        k->left = k->body_len;
    } else {
        conn_dispatch(k);
    }
}

/* A same-host connection opens with the client's hello and its memory,
 * sealed against shrinking (the server would fault on a cut mapping). */
static int conn_map(stream_conn_t *k) {
    uint64_t rq = 0, rs = 0;
    struct stat st;
    const char *why = NULL;
    if (k->memfd < 0 || rpc__stream_hello_get(k->head, &rq, &rs) < 0)
        why = "did not open with a hello and its memory";
    else if (rq > ((uint64_t)1 << 40) || rs > ((uint64_t)1 << 40) || fstat(k->memfd, &st) < 0 ||
             (uint64_t)st.st_size < rq + rs)
        why = "sent memory smaller than its hello says";
    else if (!(fcntl(k->memfd, F_GET_SEALS) & F_SEAL_SHRINK))
        why = "sent memory that can shrink";
    if (!why) {
        void *m = mmap(NULL, rq + rs, PROT_READ | PROT_WRITE, MAP_SHARED, k->memfd, 0);
        if (m == MAP_FAILED) {
            why = "sent memory that cannot be mapped";
        } else {
            k->shm = m;
            k->req_cap = rq;
            k->resp_cap = rs;
        }
    }
    if (k->memfd >= 0)
        close(k->memfd);
    k->memfd = -1;
    if (why)
        log_warn("rpc: %s %s; connection closed", k->peer, why);
    return why ? -1 : 0;
}

/* Reads what the phase still needs, without blocking: 1 when whole, 0 to
 * wait, -1 at an end of stream or an error. The hello's bytes may bring its
 * descriptor. */
static int conn_recv(stream_conn_t *k) {
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    while (k->left > 0) {
        struct iovec iov = {k->at, k->left};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (k->state == K_HELLO) {
            mh.msg_control = ctl.space;
            mh.msg_controllen = sizeof ctl.space;
        }
        ssize_t r = recvmsg(k->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return 0;
        if (r <= 0)
            return -1;
        for (struct cmsghdr *c = k->state == K_HELLO ? CMSG_FIRSTHDR(&mh) : NULL; c;
             c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && k->memfd < 0 &&
                c->cmsg_len == CMSG_LEN(sizeof(int)))
                memcpy(&k->memfd, CMSG_DATA(c), sizeof k->memfd);
        k->at += r;
        k->left -= (size_t)r;
    }
    return 1;
}

/* Bytes while no request is expected: an end of stream (the client hung
 * up), or bytes it must not send (closed too), or, lingering, bytes
 * drained. */
static void conn_drain(stream_conn_t *k) {
    uint8_t sink[65536];
    ssize_t r = recv(k->fd, sink, sizeof sink, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r > 0 && k->state == K_LINGER)
        return;
    if (r > 0)
        log_warn("rpc: %s sent bytes while its call was in hand; connection closed", k->peer);
    conn_close(k);
}

static void conn_read(stream_conn_t *k) {
    while (!k->closing && k->state <= K_BODY) {
        int hello = k->state == K_HELLO;
        int rc = conn_recv(k);
        if (rc < 0 && k->state == K_HEAD && k->left == sizeof k->head)
            log_debug("rpc: %s closed its connection", k->peer);
        if (rc < 0)
            conn_close(k);
        if (rc <= 0)
            return;
        if (hello && conn_map(k) < 0) {
            conn_close(k);
            return;
        }
        if (hello) {
            uv_timer_stop(&k->timer);
            k->handshaken = 1;
            k->state = K_HEAD;
            k->at = k->head;
            k->left = sizeof k->head;
            continue;
        }
        conn_phase_done(k);
    }
    if (!k->closing && k->state != K_WRITE)
        conn_drain(k);
}

static void on_conn_io(uv_poll_t *h, int status, int events) {
    stream_conn_t *k = h->data;
    if (status < 0) {
        conn_close(k);
        return;
    }
    if ((events & UV_WRITABLE) && k->state == K_WRITE)
        conn_write(k);
    if (!k->closing && k->state != K_WRITE && (events & (UV_READABLE | UV_DISCONNECT)))
        conn_read(k);
}

static void conn_poll(stream_conn_t *k, int events) {
    if (k->closing || events == k->events)
        return;
    k->events = events;
    if (uv_poll_start(&k->poll, events, on_conn_io) < 0)
        conn_close(k);
}

/* ---- Accepting ------------------------------------------------------------------ */

/* Past the limit: answered RESOURCE_EXHAUSTED and closed, with a warning at
 * most every REFUSAL_LOG_S. */
static void refuse(stream_server_t *s, int fd) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "the server holds %d tensor stream connections, its limit "
             "(rpc.stream_max_connections)",
             s->nconns);
    uint8_t h[RPC_STREAM_HDR];
    rpc__stream_resp_put(h, RPC_RESOURCE_EXHAUSTED, strlen(msg), 0, RPC_STREAM_CLOSING);
    struct iovec v[2] = {{h, sizeof h}, {msg, strlen(msg)}};
    struct msghdr mh = {.msg_iov = v, .msg_iovlen = 2};
    if (sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("rpc: tensor stream: cannot answer a refused connection: %s", strerror(errno));
    shutdown(fd, SHUT_WR);
    uint8_t sink[4096];
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    close(fd);
    s->refused++;
    if (ps_now() - s->refusal_logged < REFUSAL_LOG_S)
        return;
    log_warn("rpc: tensor stream: %s; %zu connection%s refused since the last warning", msg,
             s->refused, s->refused == 1 ? "" : "s");
    s->refusal_logged = ps_now();
    s->refused = 0;
}

static void conn_open(stream_server_t *s, int fd, int is_unix) {
    stream_conn_t *k = xcalloc(1, sizeof *k);
    k->srv = s;
    k->fd = fd;
    k->is_unix = is_unix;
    k->memfd = -1;
    atomic_init(&k->refs, 1);
    int rc = uv_poll_init(&s->loop, &k->poll, fd);
    if (rc < 0) {
        log_warn("rpc: tensor stream: cannot watch a new connection: %s", uv_strerror(rc));
        close(fd);
        free(k);
        return;
    }
    uv_timer_init(&s->loop, &k->timer);
    k->poll.data = k->timer.data = k;
    if (!is_unix)
        rpc__stream_tune(fd);
    conn_peer(k);
    k->state = is_unix ? K_HELLO : K_HEAD;
    k->at = k->head;
    k->left = sizeof k->head;
    k->next = s->conns;
    if (s->conns)
        s->conns->prev = k;
    s->conns = k;
    s->nconns++;
    s->conn_structs++;
    conn_timer(k, s->cfg.handshake_s, on_handshake_timeout);
    conn_poll(k, UV_READABLE | UV_DISCONNECT);
}

static void on_retry(uv_timer_t *t);

static void on_accept(uv_poll_t *h, int status, int events) {
    stream_server_t *s = h->data;
    int is_unix = h == &s->unix_poll;
    int lfd = is_unix ? s->unix_fd : s->tcp_fd;
    for (int i = 0; i < ACCEPT_BATCH && !s->stopping; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0 && errno == EAGAIN)
            return;
        if (fd < 0) {
            /* Out of descriptors or memory: keep serving the connections
             * there are, and listen again shortly. */
            log_warn("rpc: tensor stream: accept: %s; accepting again in 0.1 s", strerror(errno));
            uv_poll_stop(&s->tcp_poll);
            uv_poll_stop(&s->unix_poll);
            uv_timer_start(&s->retry, on_retry, 100, 0);
            return;
        }
        if (s->nconns >= s->cfg.max_conns)
            refuse(s, fd);
        else
            conn_open(s, fd, is_unix);
    }
}

static void on_retry(uv_timer_t *t) {
    stream_server_t *s = t->data;
    if (s->stopping)
        return;
    if (s->tcp_fd >= 0)
        uv_poll_start(&s->tcp_poll, UV_READABLE, on_accept);
    if (s->unix_fd >= 0)
        uv_poll_start(&s->unix_poll, UV_READABLE, on_accept);
}

/* ---- Stopping ---------------------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h) {
    stream_server_t *s = h->data;
    close(h == (uv_handle_t *)&s->unix_poll ? s->unix_fd : s->tcp_fd);
    s->listeners--;
    maybe_finish(s);
}

/* The last step: every connection closed and every call released; closing
 * the remaining handles ends uv_run. */
static void maybe_finish(stream_server_t *s) {
    if (!s->stopping || s->conn_structs > 0 || s->listeners > 0 ||
        uv_is_closing((uv_handle_t *)&s->wake))
        return;
    pthread_mutex_lock(&s->mu);
    int idle = s->live == 0;
    if (idle)
        uv_close((uv_handle_t *)&s->wake, NULL);
    pthread_mutex_unlock(&s->mu);
    if (!idle)
        return;
    uv_close((uv_handle_t *)&s->grace, NULL);
    uv_close((uv_handle_t *)&s->retry, NULL);
}

/* The grace is over: what still waits is cancelled and closed. */
static void on_grace(uv_timer_t *t) {
    stream_server_t *s = t->data;
    while (s->conns)
        conn_close(s->conns);
    maybe_finish(s);
}

static void begin_stop(stream_server_t *s, double t0) {
    s->stopping = 1;
    if (s->tcp_fd >= 0)
        uv_close((uv_handle_t *)&s->tcp_poll, on_listener_closed);
    if (s->unix_fd >= 0)
        uv_close((uv_handle_t *)&s->unix_poll, on_listener_closed);
    uv_timer_stop(&s->retry);
    for (stream_conn_t *k = s->conns, *next; k; k = next) {
        next = k->next;
        if (k->state < K_METHOD || k->state == K_LINGER) /* idle: no request in hand */
            conn_close(k);
    }
    double left = t0 + RPC_STOP_GRACE_S - ps_now();
    uv_timer_start(&s->grace, on_grace, left > 0 ? (uint64_t)(left * 1e3) + 1 : 0, 0);
    maybe_finish(s);
}

static void on_wake(uv_async_t *a) {
    stream_server_t *s = a->data;
    pthread_mutex_lock(&s->mu);
    stream_call_t *replies = s->replies, *handled = s->handled;
    s->replies = s->handled = NULL;
    int stop = s->stop_asked;
    double t0 = s->t0;
    pthread_mutex_unlock(&s->mu);
    for (stream_call_t *c = handled, *next; c; c = next) {
        next = c->next_handled;
        c->handled = 1;
        call_settle(c);
    }
    for (stream_call_t *c = replies, *next; c; c = next) {
        next = c->next_reply;
        c->replied = 1;
        call_settle(c);
    }
    if (stop && !s->stopping)
        begin_stop(s, t0);
    maybe_finish(s);
}

/* ---- Start and stop ------------------------------------------------------------- */

static void *loop_main(void *arg) {
    stream_server_t *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int listen_all(stream_server_t *s, const stream_server_config_t *cfg, char *err,
                      size_t errlen) {
    if (cfg->tcp &&
        rpc__stream_listen(cfg->addr, cfg->tcp_port, &s->tcp_fd, &s->tcp_port, err, errlen) < 0)
        return -1;
    if (cfg->shm &&
        rpc__stream_unix_listen(s->unix_name, sizeof s->unix_name, &s->unix_fd, err, errlen) < 0)
        return -1;
    int rc = uv_loop_init(&s->loop);
    if (rc < 0)
        return ps_errf(err, errlen, "rpc: tensor stream: cannot start its loop: %s",
                       uv_strerror(rc));
    return 0;
}

/* Handles on the loop; on an error the caller closes what was made. */
static int handles_init(stream_server_t *s, char *err, size_t errlen) {
    int rc = uv_async_init(&s->loop, &s->wake, on_wake);
    s->wake.data = s->grace.data = s->retry.data = s->tcp_poll.data = s->unix_poll.data = s;
    uv_timer_init(&s->loop, &s->grace);
    uv_timer_init(&s->loop, &s->retry);
    if (rc == 0 && s->tcp_fd >= 0 && (rc = uv_poll_init(&s->loop, &s->tcp_poll, s->tcp_fd)) == 0) {
        s->listeners++;
        rc = uv_poll_start(&s->tcp_poll, UV_READABLE, on_accept);
    }
    if (rc == 0 && s->unix_fd >= 0 &&
        (rc = uv_poll_init(&s->loop, &s->unix_poll, s->unix_fd)) == 0) {
        s->listeners++;
        rc = uv_poll_start(&s->unix_poll, UV_READABLE, on_accept);
    }
    if (rc < 0)
        return ps_errf(err, errlen, "rpc: tensor stream: cannot watch its sockets: %s",
                       uv_strerror(rc));
    return 0;
}

/* Undoes a start that failed: closes the handles made, runs the loop until
 * their callbacks have run, then closes it. */
static void close_any(uv_handle_t *h, void *arg) {
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void start_undo(stream_server_t *s, int loop_made) {
    if (loop_made) {
        s->stopping = 1;
        uv_walk(&s->loop, close_any, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    if (s->tcp_fd >= 0)
        close(s->tcp_fd);
    if (s->unix_fd >= 0)
        close(s->unix_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->jmu);
    pthread_cond_destroy(&s->jcv);
    free(s);
}

static void handler_stop(stream_server_t *s) {
    pthread_mutex_lock(&s->jmu);
    s->jstop = 1;
    pthread_cond_signal(&s->jcv);
    pthread_mutex_unlock(&s->jmu);
    pthread_join(s->handler_thread, NULL);
}

int stream__server_start(stream_server_t **out, const stream_server_config_t *cfg, char *err,
                         size_t errlen) {
    *out = NULL;
    stream_server_t *s = xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    s->tcp_fd = s->unix_fd = -1;
    s->refusal_logged = -REFUSAL_LOG_S;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->jmu, NULL);
    pthread_cond_init(&s->jcv, NULL);
    if (listen_all(s, cfg, err, errlen) < 0) {
        start_undo(s, 0);
        return -1;
    }
    /* The handles' fields are zero until made: a failure part way closes
     * only what uv_walk finds on the loop. */
    int rc = handles_init(s, err, errlen);
    if (rc == 0 && (rc = pthread_create(&s->handler_thread, NULL, handler_main, s)) != 0)
        rc = ps_errf(err, errlen, "rpc: tensor stream: cannot start a thread: %s", strerror(rc));
    else if (rc == 0 && (rc = pthread_create(&s->loop_thread, NULL, loop_main, s)) != 0) {
        handler_stop(s);
        rc = ps_errf(err, errlen, "rpc: tensor stream: cannot start a thread: %s", strerror(rc));
    }
    if (rc != 0) {
        /* The listeners' descriptors close with their handles' walk. */
        start_undo(s, 1);
        return -1;
    }
    *out = s;
    return 0;
}

int stream__server_tcp_port(const stream_server_t *s) {
    return s && s->tcp_fd >= 0 ? s->tcp_port : 0;
}

const char *stream__server_unix_name(const stream_server_t *s) {
    return s && s->unix_fd >= 0 ? s->unix_name : "";
}

void stream__server_stop_accepting(stream_server_t *s) {
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    if (!s->stop_asked) {
        s->stop_asked = 1;
        s->t0 = ps_now();
        uv_async_send(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
}

void stream__server_stop(stream_server_t *s) {
    if (!s)
        return;
    stream__server_stop_accepting(s);
    pthread_join(s->loop_thread, NULL);
    handler_stop(s);
    uv_loop_close(&s->loop);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->jmu);
    pthread_cond_destroy(&s->jcv);
    free(s);
}

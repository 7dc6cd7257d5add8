/* A tensor stream connection on the server's loop: its handshake, its
 * requests read without blocking, its replies written from where they lie,
 * its deadline, and its close (stream_server.c has the rest). */
#include "common/rpc/stream_server_internal.h"

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
static void conn_write(stream_conn_t *k);
static void conn_poll(stream_conn_t *k, int events);

/* ---- Connections: life ------------------------------------------------------------- */

void stream__conn_unref(stream_conn_t *k) {
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
    stream_lane_t *l = k->lane;
    close(k->fd);
    if (k->memfd >= 0)
        close(k->memfd);
    l->conn_structs--;
    stream__conn_unref(k);
    stream__maybe_finish(l);
}

/* Closes the connection; a call it waits for is cancelled. Loop only. */
void stream__conn_close(stream_conn_t *k) {
    if (k->closing)
        return;
    k->closing = 1;
    stream_lane_t *l = k->lane;
    if (k->prev)
        k->prev->next = k->next;
    else
        l->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    atomic_fetch_sub(&l->nconns, 1);
    atomic_fetch_sub(&k->srv->nconns, 1);
    stream_call_t *c = k->call;
    k->call = k->wcall = NULL;
    if (c) { /* dropped once its reply is in and its handler has returned */
        stream__call_cancel(c);
        c->conn = NULL;
        stream__call_settle(c);
    }
    k->open_handles = 2;
    uv_close((uv_handle_t *)&k->poll, on_conn_closed);
    uv_close((uv_handle_t *)&k->timer, on_conn_closed);
}

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
    stream__conn_close(t->data);
}

/* The frame is out: the call is done, and the connection reads the next
 * request (or lingers, or closes while the server stops). */
static void write_done(stream_conn_t *k) {
    stream_call_t *c = k->wcall;
    if (c) {
        k->wcall = k->call = NULL;
        c->conn = NULL;
        stream__reply_done(c);
        stream__call_unref(c);
    }
    k->state = k->after;
    if (k->state == K_LINGER) {
        shutdown(k->fd, SHUT_WR);
        conn_timer(k, LINGER_S, on_linger);
    } else if (k->lane->stopping) {
        stream__conn_close(k);
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
            stream__conn_close(k);
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
    stream__conn_close(k);
}

/* The request's deadline passed: answered DEADLINE_EXCEEDED, unless its
 * reply has already claimed it, once its handler has returned. */
static void conn_late(stream_conn_t *k) {
    stream_call_t *c = k->call;
    if (!c->handled) {
        k->late = 1;
        return;
    }
    if (!stream__call_cancel(c))
        return;
    k->call = NULL;
    c->conn = NULL;
    stream__call_settle(c);
    conn_answer(k, RPC_DEADLINE_EXCEEDED, "deadline exceeded", NULL, K_HEAD);
}

static void on_deadline(uv_timer_t *t) {
    stream_conn_t *k = t->data;
    if (k->state == K_CALL && k->call)
        conn_late(k);
}

/* Moves the call in hand on: its reply is written once it is in and the
 * handler has returned. Loop only. */
void stream__conn_progress(stream_conn_t *k) {
    stream_call_t *c = k->call;
    if (k->state != K_CALL || !c || !c->handled)
        return;
    if (c->replied)
        conn_reply(k);
    else if (k->late)
        conn_late(k);
}

/* The request is whole: answered here, run here (see stream__job_inline)
 * or handed to the handler thread. */
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
    c->lane = k->lane;
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
    if (!stream__job_inline(s, c, k))
        stream__job_push(s, 0, c, k);
}

/* The header is in: checks it and sets up the method and body reads. */
static void conn_header(stream_conn_t *k) {
    stream_server_t *s = k->srv;
    size_t method_len;
    double deadline_s;
    if (rpc__stream_req_get(k->head, &method_len, &deadline_s, &k->body_len) < 0 ||
        method_len == 0 || method_len > RPC_STREAM_METHOD_MAX) {
        log_warn_limited(&k->lane->bad_limit,
                         "rpc: %s sent bytes that are not a pstrain stream request; connection "
                         "closed",
                         k->peer);
        stream__conn_close(k);
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
        log_warn_limited(&k->lane->bad_limit, "rpc: %s: %s; connection closed", k->peer, msg);
        conn_answer(k, RPC_RESOURCE_EXHAUSTED, msg, NULL, K_LINGER);
        return;
    }
    /* A call without a deadline may not hold the connection and its
     * handler's state for ever (a pull for a step that never comes). */
    if (deadline_s <= 0)
        deadline_s = s->cfg.max_wait_s;
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

/* Why the hello's memory cannot be mapped, or NULL when it can: it must be
 * a memfd (a regular file whose seals can be read: an ordinary file's
 * F_GET_SEALS fails) sealed against shrinking and growing, at least as big
 * as the hello says. A file the client could cut would make the server
 * fault (SIGBUS) on the mapping's lost pages. */
static const char *conn_memory_check(int fd, uint64_t rq, uint64_t rs) {
    struct stat st;
    if (rq > ((uint64_t)1 << 40) || rs > ((uint64_t)1 << 40))
        return "sent a hello with areas over 1 TiB";
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return "sent a descriptor that is not a memfd";
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return "sent a descriptor that is not a sealable memfd";
    if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
        return "sent memory not sealed against shrinking and growing";
    if ((uint64_t)st.st_size < rq + rs)
        return "sent memory smaller than its hello says";
    return NULL;
}

/* A same-host connection opens with the client's hello and its memory. */
static int conn_map(stream_conn_t *k) {
    uint64_t rq = 0, rs = 0;
    const char *why = NULL;
    if (k->memfd < 0 || rpc__stream_hello_get(k->head, &rq, &rs) < 0)
        why = "did not open with a hello and its memory";
    else
        why = conn_memory_check(k->memfd, rq, rs);
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
        log_warn_limited(&k->lane->bad_limit, "rpc: %s %s; connection closed", k->peer, why);
    return why ? -1 : 0;
}

/* The hello's descriptor: the first is kept, any later one closed (a
 * client must not make the server hold descriptors it never uses). */
static void conn_keep_fd(stream_conn_t *k, struct cmsghdr *c) {
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    if (k->memfd < 0)
        k->memfd = fd;
    else
        close(fd);
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
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                c->cmsg_len == CMSG_LEN(sizeof(int)))
                conn_keep_fd(k, c);
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
        log_warn_limited(&k->lane->bad_limit,
                         "rpc: %s sent bytes while its call was in hand; connection closed",
                         k->peer);
    stream__conn_close(k);
}

static void conn_read(stream_conn_t *k) {
    while (!k->closing && k->state <= K_BODY) {
        int hello = k->state == K_HELLO;
        int rc = conn_recv(k);
        if (rc < 0 && k->state == K_HEAD && k->left == sizeof k->head)
            log_debug("rpc: %s closed its connection", k->peer);
        if (rc < 0)
            stream__conn_close(k);
        if (rc <= 0)
            return;
        if (hello && conn_map(k) < 0) {
            stream__conn_close(k);
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
        stream__conn_close(k);
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
        stream__conn_close(k);
}

void stream__conn_open(stream_lane_t *l, int fd, int is_unix) {
    stream_server_t *s = l->srv;
    stream_conn_t *k = xcalloc(1, sizeof *k);
    k->srv = s;
    k->lane = l;
    k->fd = fd;
    k->is_unix = is_unix;
    k->memfd = -1;
    atomic_init(&k->refs, 1);
    int rc = uv_poll_init(&l->loop, &k->poll, fd);
    if (rc < 0) {
        log_warn("rpc: tensor stream: cannot watch a new connection: %s", uv_strerror(rc));
        close(fd);
        free(k);
        atomic_fetch_sub(&s->nconns, 1);
        return;
    }
    uv_timer_init(&l->loop, &k->timer);
    k->poll.data = k->timer.data = k;
    if (!is_unix)
        rpc__stream_tune(fd);
    conn_peer(k);
    k->state = is_unix ? K_HELLO : K_HEAD;
    k->at = k->head;
    k->left = sizeof k->head;
    k->next = l->conns;
    if (l->conns)
        l->conns->prev = k;
    l->conns = k;
    atomic_fetch_add(&l->nconns, 1);
    l->conn_structs++;
    conn_timer(k, s->cfg.handshake_s, on_handshake_timeout);
    conn_poll(k, UV_READABLE | UV_DISCONNECT);
}

/* The tensor stream's server: cfg.lanes libuv loop threads ("lanes") serve
 * the stream connections of a server, and one handler thread runs the
 * handlers (a shared-memory call that finds it idle runs on the loop
 * thread instead: stream__job_inline). Lane 0 accepts on both listeners,
 * keeps the Unix socket's connections and hands each TCP connection to the
 * lane that serves the fewest, so that the kernel's copies of many
 * connections' bytes run on several cores; the handlers stay serialized
 * on cfg.hmu.
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

/* Seconds between two warnings about refused connections. */
#define REFUSAL_LOG_S 10.0
/* Connections accepted per wake-up of a listener, so that a flood cannot
 * starve the connections already served. */
#define ACCEPT_BATCH 64

/* The call whose handler this thread runs inline (stream__job_inline): an
 * answer to it from within the handler is written at once. Thread-local, so
 * an answer from any other thread meanwhile takes the usual way. */
static _Thread_local stream_call_t *inline_call;

/* ---- Calls ---------------------------------------------------------------------- */

void stream__call_unref(stream_call_t *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    stream_server_t *s = c->srv;
    rpc_buf_free(&c->out);
    free(c->iov);
    free(c->blobs);
    free(c);
    pthread_mutex_lock(&s->mu);
    if (--s->live == 0 && s->stop_asked) /* under mu: a lane closes wake only with live 0 */
        for (int i = 0; i < s->nlanes; i++)
            if (!s->lanes[i].wake_closed)
                uv_async_send(&s->lanes[i].wake);
    pthread_mutex_unlock(&s->mu);
}

/* Drops what the sent (or abandoned) reply held. */
void stream__reply_done(stream_call_t *c) {
    for (size_t i = 0; i < c->nblobs; i++)
        rpc_blob_unref(c->blobs[i]);
    c->nblobs = c->niov = 0;
    if (c->release)
        c->release(c->release_arg);
    c->release = NULL;
}

/* Queues the call's reply or its handler's return for its lane. A lane's
 * wake stays open while any call lives (stream__maybe_finish). */
static void post(stream_server_t *s, int reply, stream_call_t *c) {
    stream_lane_t *l = c->lane;
    pthread_mutex_lock(&s->mu);
    if (reply) {
        c->next_reply = l->replies;
        l->replies = c;
    } else {
        c->next_handled = l->handled;
        l->handled = c;
    }
    uv_async_send(&l->wake);
    pthread_mutex_unlock(&s->mu);
}

void stream__job_push(stream_server_t *s, int cancel, stream_call_t *c, stream_conn_t *k) {
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
int stream__call_cancel(stream_call_t *c) {
    int old = atomic_fetch_or(&c->head.flags, RPC_CALL_CANCELLED);
    if (old & (RPC_CALL_REPLIED | RPC_CALL_CANCELLED))
        return 0;
    atomic_fetch_add(&c->refs, 1);
    stream__job_push(c->srv, 1, c, NULL);
    return 1;
}

/* A call no connection waits for any more: dropped once its reply is in
 * and its handler has returned. Loop only. */
void stream__call_settle(stream_call_t *c) {
    if (c->conn) {
        stream__conn_progress(c->conn);
        return;
    }
    if (c->replied && c->handled) {
        stream__reply_done(c);
        stream__call_unref(c);
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
    if (inline_call == c)
        c->replied = 1; /* within its handler on the loop: stream__job_inline settles it */
    else
        post(c->srv, 1, c);
    return 0;
}

void stream__peer(const rpc_call_t *call, char *buf, size_t len) {
    snprintf(buf, len, "%s", ((const stream_call_t *)call)->peer);
}

/* ---- The handler thread ------------------------------------------------------------ */

/* Runs the call's handler; the caller holds the handler lock. Then drops
 * the connection's reference and tells the loop that the handler returned. */
static void call_handler(stream_server_t *s, stream_call_t *c, stream_conn_t *k) {
    const uint8_t *body = k->shm ? k->shm : k->in.data;
    size_t len = (size_t)k->body_len;
    if (c->head.method) {
        c->head.method->fn(s->cfg.ctx, (rpc_call_t *)c, body, len);
    } else {
        rpc_seg_t seg = {body, len};
        rpc_msg_t m = {&seg, 1, len};
        c->head.msg_method->fn(s->cfg.ctx, (rpc_call_t *)c, &m);
    }
}

static void run_job(stream_server_t *s, job_t *j) {
    pthread_mutex_lock(s->cfg.hmu);
    call_handler(s, j->call, j->conn);
    pthread_mutex_unlock(s->cfg.hmu);
    stream__conn_unref(j->conn);
    post(s, 0, j->call);
}

/* A shared-memory call runs on the loop thread itself when nothing is queued
 * and the handler lock is free: its request is already in memory, so the
 * handler (which never blocks: it answers now or defers) costs what it would
 * cost on the handler thread, without the two thread hand-offs and the
 * loop's wake-up between handler and reply, which were 9% of a 1 MiB
 * push+pull; an answer made within the handler is written at once. TCP calls keep the handler
 * thread, so that the loop goes on reading other bodies meanwhile. Whether it ran. Loop only. */
int stream__job_inline(stream_server_t *s, stream_call_t *c, stream_conn_t *k) {
    if (!k->shm)
        return 0;
    /* Calls stay in the order the loop read them: none may be queued or
     * in the handler thread's hands. Other lanes may queue meanwhile; their
     * calls then wait for the handler lock held below. */
    pthread_mutex_lock(&s->jmu);
    int busy = s->jhead != NULL || s->jbusy;
    pthread_mutex_unlock(&s->jmu);
    if (busy || pthread_mutex_trylock(s->cfg.hmu) != 0)
        return 0;
    inline_call = c;
    call_handler(s, c, k);
    inline_call = NULL;
    pthread_mutex_unlock(s->cfg.hmu);
    stream__conn_unref(k);
    c->handled = 1;
    stream__call_settle(c); /* a reply made meanwhile is written now */
    return 1;
}

/* The owner hears that its call was cancelled, unless it answered it
 * meanwhile; under the handler lock, so that no handler answers it while. */
static void cancel_job(stream_server_t *s, job_t *j) {
    stream_call_t *c = j->call;
    pthread_mutex_lock(s->cfg.hmu);
    if (!(atomic_load(&c->head.flags) & RPC_CALL_REPLIED) && s->cfg.on_cancel)
        s->cfg.on_cancel(s->cfg.ctx, (rpc_call_t *)c);
    pthread_mutex_unlock(s->cfg.hmu);
    stream__call_unref(c);
}

static void *handler_main(void *arg) {
    stream_server_t *s = arg;
    pthread_setname_np(pthread_self(), "stream-handler");
    for (;;) {
        pthread_mutex_lock(&s->jmu);
        while (!s->jhead && !s->jstop)
            pthread_cond_wait(&s->jcv, &s->jmu);
        job_t *j = s->jhead;
        if (j && !(s->jhead = j->next))
            s->jtail = NULL;
        s->jbusy = j != NULL;
        pthread_mutex_unlock(&s->jmu);
        if (!j)
            return NULL;
        if (j->cancel)
            cancel_job(s, j);
        else
            run_job(s, j);
        free(j);
        pthread_mutex_lock(&s->jmu);
        s->jbusy = 0;
        pthread_mutex_unlock(&s->jmu);
    }
}

/* ---- Accepting ------------------------------------------------------------------ */

/* Past the limit: answered RESOURCE_EXHAUSTED and closed, with a warning at
 * most every REFUSAL_LOG_S. */
static void refuse(stream_server_t *s, int fd) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "the server holds %d tensor stream connections, its limit "
             "(rpc.stream_max_connections)",
             atomic_load(&s->nconns));
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

/* Whether the process at the other end of a Unix connection may use the
 * server's memory: its uid is the server's or one of cfg.allowed_uids. An
 * abstract socket has no file permissions, so this is the only check. */
static int peer_allowed(stream_server_t *s, int fd) {
    struct ucred cred = {0};
    socklen_t cl = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
        return 0;
    if (cred.uid == geteuid())
        return 1;
    for (size_t i = 0; i < s->cfg.n_allowed_uids; i++)
        if (cred.uid == s->cfg.allowed_uids[i])
            return 1;
    return 0;
}

/* A local peer of another uid: answered PERMISSION_DENIED (its client then
 * calls over the TCP stream or gRPC) and closed, with a rate-limited
 * warning. */
static void refuse_peer(stream_server_t *s, int fd) {
    struct ucred cred = {0};
    socklen_t cl = sizeof cred;
    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl);
    char msg[160];
    snprintf(msg, sizeof msg,
             "uid %u may not use this server's shared memory (its uid is %u; see "
             "rpc.stream_allowed_uids)",
             (unsigned)cred.uid, (unsigned)geteuid());
    log_warn_limited(&s->peer_limit, "rpc: tensor stream: refused local pid %d: %s", (int)cred.pid,
                     msg);
    uint8_t h[RPC_STREAM_HDR];
    rpc__stream_resp_put(h, RPC_PERMISSION_DENIED, strlen(msg), 0, RPC_STREAM_CLOSING);
    struct iovec v[2] = {{h, sizeof h}, {msg, strlen(msg)}};
    struct msghdr mh = {.msg_iov = v, .msg_iovlen = 2};
    if (sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("rpc: tensor stream: cannot answer a refused peer: %s", strerror(errno));
    shutdown(fd, SHUT_WR);
    uint8_t sink[4096]; /* its hello, and the descriptor with it, dropped */
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    close(fd);
}

/* The lane that serves the fewest connections: lane 0 (this thread) on a tie. */
static stream_lane_t *lane_pick(stream_server_t *s) {
    stream_lane_t *best = &s->lanes[0];
    int least = atomic_load(&best->nconns);
    for (int i = 1; i < s->nlanes; i++) {
        int n = atomic_load(&s->lanes[i].nconns);
        if (n < least) {
            least = n;
            best = &s->lanes[i];
        }
    }
    return best;
}

/* Hands an accepted TCP connection to lane l (not lane 0), which opens it
 * on its own thread (lane_take). Once a stop is asked the lane may have
 * finished (its wake closed): the connection is closed here instead. */
static void lane_give(stream_lane_t *l, int fd) {
    stream_server_t *s = l->srv;
    pthread_mutex_lock(&s->mu);
    if (s->stop_asked) {
        pthread_mutex_unlock(&s->mu);
        close(fd);
        atomic_fetch_sub(&s->nconns, 1);
        return;
    }
    atomic_fetch_add(&l->nconns, 1); /* counted at once, so the next pick sees it */
    if (l->ninbox == l->capinbox) {
        l->capinbox = l->capinbox ? 2 * l->capinbox : 16;
        l->inbox = xrealloc(l->inbox, l->capinbox * sizeof *l->inbox);
    }
    l->inbox[l->ninbox++] = fd;
    uv_async_send(&l->wake);
    pthread_mutex_unlock(&s->mu);
}

/* Opens the connections lane 0 handed over; closes them once stopping. */
static void lane_take(stream_lane_t *l) {
    stream_server_t *s = l->srv;
    pthread_mutex_lock(&s->mu);
    int *fds = l->inbox;
    size_t n = l->ninbox;
    l->inbox = NULL;
    l->ninbox = l->capinbox = 0;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        atomic_fetch_sub(&l->nconns, 1); /* stream__conn_open counts it again */
        if (l->stopping) {
            close(fds[i]);
            atomic_fetch_sub(&s->nconns, 1);
        } else {
            stream__conn_open(l, fds[i], 0);
        }
    }
    free(fds);
}

static void on_retry(uv_timer_t *t);

static void on_accept(uv_poll_t *h, int status, int events) {
    stream_lane_t *l0 = h->data;
    stream_server_t *s = l0->srv;
    int is_unix = h == &l0->unix_poll;
    int lfd = is_unix ? s->unix_fd : s->tcp_fd;
    for (int i = 0; i < ACCEPT_BATCH && !l0->stopping; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0 && errno == EAGAIN)
            return;
        if (fd < 0) {
            /* Out of descriptors or memory: keep serving the connections
             * there are, and listen again shortly. */
            log_warn("rpc: tensor stream: accept: %s; accepting again in 0.1 s", strerror(errno));
            uv_poll_stop(&l0->tcp_poll);
            uv_poll_stop(&l0->unix_poll);
            uv_timer_start(&l0->retry, on_retry, 100, 0);
            return;
        }
        if (atomic_load(&s->nconns) >= s->cfg.max_conns) {
            refuse(s, fd);
            continue;
        }
        if (is_unix && !peer_allowed(s, fd)) {
            refuse_peer(s, fd);
            continue;
        }
        atomic_fetch_add(&s->nconns, 1);
        stream_lane_t *to = is_unix ? l0 : lane_pick(s);
        if (to == l0)
            stream__conn_open(l0, fd, is_unix);
        else
            lane_give(to, fd);
    }
}

static void on_retry(uv_timer_t *t) {
    stream_lane_t *l0 = t->data;
    stream_server_t *s = l0->srv;
    if (l0->stopping)
        return;
    if (s->tcp_fd >= 0)
        uv_poll_start(&l0->tcp_poll, UV_READABLE, on_accept);
    if (s->unix_fd >= 0)
        uv_poll_start(&l0->unix_poll, UV_READABLE, on_accept);
}

/* ---- Stopping ---------------------------------------------------------------------- */

static void on_listener_closed(uv_handle_t *h) {
    stream_lane_t *l0 = h->data;
    stream_server_t *s = l0->srv;
    close(h == (uv_handle_t *)&l0->unix_poll ? s->unix_fd : s->tcp_fd);
    l0->listeners--;
    stream__maybe_finish(l0);
}

/* The lane's last step: its connections closed and every call of the
 * server released (a call's lane must hear of it until it is freed);
 * closing the remaining handles ends uv_run. */
void stream__maybe_finish(stream_lane_t *l) {
    stream_server_t *s = l->srv;
    if (!l->stopping || l->conn_structs > 0 || l->listeners > 0 ||
        uv_is_closing((uv_handle_t *)&l->wake))
        return;
    pthread_mutex_lock(&s->mu);
    int idle = s->live == 0;
    if (idle) {
        uv_close((uv_handle_t *)&l->wake, NULL);
        l->wake_closed = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (!idle)
        return;
    uv_close((uv_handle_t *)&l->grace, NULL);
    uv_close((uv_handle_t *)&l->retry, NULL);
}

/* The grace is over: what still waits is cancelled and closed. */
static void on_grace(uv_timer_t *t) {
    stream_lane_t *l = t->data;
    while (l->conns)
        stream__conn_close(l->conns);
    stream__maybe_finish(l);
}

static void begin_stop(stream_lane_t *l, double t0) {
    stream_server_t *s = l->srv;
    l->stopping = 1;
    if (l->index == 0 && s->tcp_fd >= 0)
        uv_close((uv_handle_t *)&l->tcp_poll, on_listener_closed);
    if (l->index == 0 && s->unix_fd >= 0)
        uv_close((uv_handle_t *)&l->unix_poll, on_listener_closed);
    uv_timer_stop(&l->retry);
    lane_take(l); /* closes what lane 0 handed over */
    for (stream_conn_t *k = l->conns, *next; k; k = next) {
        next = k->next;
        if (k->state < K_METHOD || k->state == K_LINGER) /* idle: no request in hand */
            stream__conn_close(k);
    }
    double left = t0 + RPC_STOP_GRACE_S - ps_now();
    uv_timer_start(&l->grace, on_grace, left > 0 ? (uint64_t)(left * 1e3) + 1 : 0, 0);
    stream__maybe_finish(l);
}

static void on_wake(uv_async_t *a) {
    stream_lane_t *l = a->data;
    stream_server_t *s = l->srv;
    pthread_mutex_lock(&s->mu);
    stream_call_t *replies = l->replies, *handled = l->handled;
    l->replies = l->handled = NULL;
    int stop = s->stop_asked;
    double t0 = s->t0;
    pthread_mutex_unlock(&s->mu);
    lane_take(l);
    for (stream_call_t *c = handled, *next; c; c = next) {
        next = c->next_handled;
        c->handled = 1;
        stream__call_settle(c);
    }
    for (stream_call_t *c = replies, *next; c; c = next) {
        next = c->next_reply;
        c->replied = 1;
        stream__call_settle(c);
    }
    if (stop && !l->stopping)
        begin_stop(l, t0);
    stream__maybe_finish(l);
}

/* ---- Start and stop ------------------------------------------------------------- */

static void *loop_main(void *arg) {
    stream_lane_t *l = arg;
    char name[16]; /* for top -H and per-thread CPU figures */
    snprintf(name, sizeof name, "stream-lane%d", l->index);
    pthread_setname_np(pthread_self(), name);
    uv_run(&l->loop, UV_RUN_DEFAULT);
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
    return 0;
}

/* A lane's handles (and lane 0's listeners) on its loop; on an error the
 * caller closes what was made. */
static int handles_init(stream_lane_t *l, char *err, size_t errlen) {
    stream_server_t *s = l->srv;
    int rc = uv_async_init(&l->loop, &l->wake, on_wake);
    l->wake.data = l->grace.data = l->retry.data = l->tcp_poll.data = l->unix_poll.data = l;
    uv_timer_init(&l->loop, &l->grace);
    uv_timer_init(&l->loop, &l->retry);
    if (l->index == 0 && rc == 0 && s->tcp_fd >= 0 &&
        (rc = uv_poll_init(&l->loop, &l->tcp_poll, s->tcp_fd)) == 0) {
        l->listeners++;
        rc = uv_poll_start(&l->tcp_poll, UV_READABLE, on_accept);
    }
    if (l->index == 0 && rc == 0 && s->unix_fd >= 0 &&
        (rc = uv_poll_init(&l->loop, &l->unix_poll, s->unix_fd)) == 0) {
        l->listeners++;
        rc = uv_poll_start(&l->unix_poll, UV_READABLE, on_accept);
    }
    if (rc < 0)
        return ps_errf(err, errlen, "rpc: tensor stream: cannot watch its sockets: %s",
                       uv_strerror(rc));
    return 0;
}

/* Makes the lanes' loops and handles; how many loops were made. */
static int lanes_init(stream_server_t *s, int *made, char *err, size_t errlen) {
    for (*made = 0; *made < s->nlanes; (*made)++) {
        stream_lane_t *l = &s->lanes[*made];
        l->srv = s;
        l->index = *made;
        int rc = uv_loop_init(&l->loop);
        if (rc < 0)
            return ps_errf(err, errlen, "rpc: tensor stream: cannot start its loop: %s",
                           uv_strerror(rc));
        /* The handles' fields are zero until made: a failure part way
         * closes only what uv_walk finds on the loop. */
        if (handles_init(l, err, errlen) < 0) {
            (*made)++;
            return -1;
        }
    }
    return 0;
}

/* Undoes a start that failed: closes the handles made on the first `made`
 * loops, runs each until their callbacks have run, then closes it. */
static void close_any(uv_handle_t *h, void *arg) {
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void start_undo(stream_server_t *s, int made) {
    for (int i = 0; i < made; i++) {
        stream_lane_t *l = &s->lanes[i];
        l->stopping = 1;
        uv_walk(&l->loop, close_any, NULL);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
    }
    if (s->tcp_fd >= 0)
        close(s->tcp_fd);
    if (s->unix_fd >= 0)
        close(s->unix_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->jmu);
    pthread_cond_destroy(&s->jcv);
    free(s->lanes);
    free(s);
}

static void handler_stop(stream_server_t *s) {
    pthread_mutex_lock(&s->jmu);
    s->jstop = 1;
    pthread_cond_signal(&s->jcv);
    pthread_mutex_unlock(&s->jmu);
    pthread_join(s->handler_thread, NULL);
}

/* Ends the lanes' threads (after a stop asked) up to n. */
static void lanes_join(stream_server_t *s, int n) {
    for (int i = 0; i < n; i++)
        pthread_join(s->lanes[i].thread, NULL);
}

static void server_free(stream_server_t *s) {
    for (int i = 0; i < s->nlanes; i++) {
        uv_loop_close(&s->lanes[i].loop);
        free(s->lanes[i].inbox);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->jmu);
    pthread_cond_destroy(&s->jcv);
    free(s->lanes);
    free(s);
}

/* Starts a thread per lane. When one cannot start, the server stops as
 * on stream__server_stop (nothing was accepted yet), the lanes without a
 * thread running their loops here, and is freed: -1. */
static int lanes_start(stream_server_t *s, char *err, size_t errlen) {
    int started = 0, rc = 0;
    while (started < s->nlanes && (rc = pthread_create(&s->lanes[started].thread, NULL, loop_main,
                                                       &s->lanes[started])) == 0)
        started++;
    if (rc == 0)
        return 0;
    ps_errf(err, errlen, "rpc: tensor stream: cannot start a thread: %s", strerror(rc));
    stream__server_stop_accepting(s);
    for (int i = started; i < s->nlanes; i++)
        loop_main(&s->lanes[i]);
    lanes_join(s, started);
    handler_stop(s);
    server_free(s);
    return -1;
}

int stream__server_start(stream_server_t **out, const stream_server_config_t *cfg, char *err,
                         size_t errlen) {
    *out = NULL;
    stream_server_t *s = xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    s->tcp_fd = s->unix_fd = -1;
    s->refusal_logged = -REFUSAL_LOG_S;
    s->nlanes = cfg->lanes > 0 ? cfg->lanes : 1;
    s->lanes = xcalloc((size_t)s->nlanes, sizeof *s->lanes);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->jmu, NULL);
    pthread_cond_init(&s->jcv, NULL);
    if (listen_all(s, cfg, err, errlen) < 0) {
        start_undo(s, 0);
        return -1;
    }
    int made = 0;
    int rc = lanes_init(s, &made, err, errlen);
    if (rc == 0 && (rc = pthread_create(&s->handler_thread, NULL, handler_main, s)) != 0)
        rc = ps_errf(err, errlen, "rpc: tensor stream: cannot start a thread: %s", strerror(rc));
    else if (rc == 0 && lanes_start(s, err, errlen) < 0)
        return -1; /* lanes_start stopped and freed the server */
    if (rc != 0) {
        /* The listeners' descriptors close with their handles' walk. */
        start_undo(s, made);
        return -1;
    }
    *out = s;
    return 0;
}

int stream__server_tcp_port(const stream_server_t *s) {
    return s && s->tcp_fd >= 0 ? s->tcp_port : 0;
}

int stream__server_lanes(const stream_server_t *s, int *conns, int max) {
    if (!s)
        return 0;
    for (int i = 0; i < s->nlanes && i < max; i++)
        conns[i] = atomic_load(&s->lanes[i].nconns);
    return s->nlanes;
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
        for (int i = 0; i < s->nlanes; i++)
            if (!s->lanes[i].wake_closed)
                uv_async_send(&s->lanes[i].wake);
    }
    pthread_mutex_unlock(&s->mu);
}

void stream__server_stop(stream_server_t *s) {
    if (!s)
        return;
    stream__server_stop_accepting(s);
    lanes_join(s, s->nlanes);
    handler_stop(s);
    server_free(s);
}

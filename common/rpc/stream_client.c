/* The tensor stream's client: a channel's stream (where its server offers
 * one, which connection a call takes) and calls over it, driven all at once
 * with poll.
 *
 * A channel with opt.shm or opt.stream asks its server, over gRPC, where
 * its tensor stream is before its first call, and again after a call found
 * the stream gone (the server may have restarted elsewhere). Calls then go
 * over connections to the server's Unix socket (shared memory) or TCP
 * stream port, one call at a time each: a fan-out takes an idle connection
 * per call or opens one, and gives the connections back when their calls
 * completed cleanly, whatever their status, a server's DEADLINE_EXCEEDED
 * included. */
#include "common/rpc/stream_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"

/* Idle connections kept per channel. */
#define STREAM_IDLE_MAX 4
/* How long a connection to a stream port may take: a firewall that drops
 * the packets would otherwise hold every call until its deadline. */
#define STREAM_CONNECT_S 3.0
/* How long past its deadline a call waits for the server's own
 * DEADLINE_EXCEEDED, which keeps the connection usable; a server that says
 * nothing by then costs the connection, not the stream. */
#define STREAM_LATE_S 0.5

enum { STREAM_UNKNOWN, STREAM_ON, STREAM_NONE };

typedef struct sconn sconn_t;

struct sconn {
    int fd;
    rpc_buf_t buf; /* responses handed to consume are read into it */
    uint8_t *shm;  /* same host: the request area, then the response area */
    size_t req_cap, resp_cap;
    sconn_t *next;
};

struct stream_chan {
    pthread_mutex_t mu; /* everything below but what is set at creation */
    char target[256];
    char host[256]; /* target's host */
    int tcp_want, shm_want;
    size_t max_send, max_recv;
    int state;
    int port;
    int unix_ok;         /* the server's Unix socket may be reachable */
    char unix_name[108]; /* its abstract name; "" when none */
    int fresh;           /* no call has completed over the port since it was named */
    struct sockaddr_storage saddr;
    socklen_t saddr_len;
    sconn_t *idle;
    int nidle;
};

/* Why a call over the stream failed, which decides what becomes of the
 * channel's stream: a port that cannot be reached straight after it was
 * named means gRPC from now on; a lost connection, asking the server again;
 * a deadline or a local limit, nothing. */
typedef enum { SF_CONNECT, SF_LOST, SF_DEADLINE, SF_LOCAL, SF_PROTOCOL } sfail_t;

static void sconn_free(sconn_t *c) {
    if (!c)
        return;
    if (c->shm)
        munmap(c->shm, c->req_cap + c->resp_cap);
    close(c->fd);
    rpc_buf_free(&c->buf);
    free(c);
}

/* ---- A channel's stream ---------------------------------------------------------- */

stream_chan_t *stream__chan_new(const char *target, int tcp, int shm, size_t max_send,
                                size_t max_recv) {
    stream_chan_t *sc = xcalloc(1, sizeof *sc);
    pthread_mutex_init(&sc->mu, NULL);
    snprintf(sc->target, sizeof sc->target, "%s", target);
    if (rpc__split_host(target, sc->host, sizeof sc->host, NULL) < 0)
        snprintf(sc->host, sizeof sc->host, "%s", target);
    sc->tcp_want = tcp;
    sc->shm_want = shm;
    sc->max_send = max_send;
    sc->max_recv = max_recv;
    return sc;
}

void stream__chan_forget(stream_chan_t *sc) {
    pthread_mutex_lock(&sc->mu);
    sc->state = STREAM_UNKNOWN;
    sconn_t *idle = sc->idle;
    sc->idle = NULL;
    sc->nidle = 0;
    pthread_mutex_unlock(&sc->mu);
    while (idle) {
        sconn_t *next = idle->next;
        sconn_free(idle);
        idle = next;
    }
}

void stream__chan_free(stream_chan_t *sc) {
    if (!sc)
        return;
    stream__chan_forget(sc);
    pthread_mutex_destroy(&sc->mu);
    free(sc);
}

static int chan_state(stream_chan_t *sc) {
    pthread_mutex_lock(&sc->mu);
    int state = sc->state;
    pthread_mutex_unlock(&sc->mu);
    return state;
}

int stream__chan_unknown(stream_chan_t *sc) {
    return (sc->tcp_want || sc->shm_want) && chan_state(sc) == STREAM_UNKNOWN;
}

int stream__chan_on(stream_chan_t *sc) {
    return chan_state(sc) == STREAM_ON;
}

int stream__chan_port(stream_chan_t *sc) {
    pthread_mutex_lock(&sc->mu);
    int port = sc->state == STREAM_ON ? sc->port : 0;
    pthread_mutex_unlock(&sc->mu);
    return port;
}

const char *stream__chan_transport(stream_chan_t *sc) {
    pthread_mutex_lock(&sc->mu);
    const char *t = sc->state != STREAM_ON        ? "grpc"
                    : sc->shm_want && sc->unix_ok ? "shm"
                                                  : "stream";
    pthread_mutex_unlock(&sc->mu);
    return t;
}

static sconn_t *shm_connect(const char *name, size_t req_cap, size_t resp_cap);

/* The TCP stream's address, when both sides want one; 0 when none. */
static int resolve(stream_chan_t *sc, int port, struct addrinfo **res) {
    *res = NULL;
    if (!sc->tcp_want || port <= 0 || port >= 65536)
        return 0;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    if (getaddrinfo(sc->host, service, &hints, res) != 0 || !*res)
        return 0;
    return port;
}

/* Picks what calls go over: the Unix socket and shared memory when offered
 * and reachable from here (same host, same network namespace: a connection
 * is made at once and kept), else the TCP stream when both sides want one,
 * else gRPC. */
int stream__chan_offer(stream_chan_t *sc, int code, const rpc_buf_t *answer) {
    int port = 0;
    char name[sizeof sc->unix_name] = "";
    if (code == RPC_OK && answer->len > 0 && answer->len < 128) {
        char text[128];
        memcpy(text, answer->data, answer->len);
        text[answer->len] = '\0';
        port = atoi(text); /* "PORT" or "PORT NAME"; PORT 0: no TCP stream */
        const char *sp = strchr(text, ' ');
        if (sp && strlen(sp + 1) < sizeof name)
            snprintf(name, sizeof name, "%s", sp + 1);
    }
    sconn_t *local = sc->shm_want && name[0] ? shm_connect(name, sc->max_send, sc->max_recv) : NULL;
    struct addrinfo *res = NULL;
    port = resolve(sc, port, &res);
    pthread_mutex_lock(&sc->mu);
    if (local || port > 0) {
        if (res) {
            memcpy(&sc->saddr, res->ai_addr, res->ai_addrlen);
            sc->saddr_len = res->ai_addrlen;
        }
        sc->port = port;
        sc->state = STREAM_ON;
        sc->fresh = 1;
        snprintf(sc->unix_name, sizeof sc->unix_name, "%s", name);
        sc->unix_ok = local != NULL;
        if (local) { /* the first idle connection */
            local->next = sc->idle;
            sc->idle = local;
            sc->nidle++;
        }
    } else if (code == RPC_OK || code == RPC_UNIMPLEMENTED) {
        /* Nothing offered that can be reached, or a server that predates it. */
        sc->state = STREAM_NONE;
    }
    int state = sc->state;
    pthread_mutex_unlock(&sc->mu);
    if (res)
        freeaddrinfo(res);
    return state == STREAM_ON;
}

/* ---- Connections ------------------------------------------------------------------ */

/* A same-host connection: the server's Unix socket, and memory for the
 * bodies both ways (sparse until written), sent in the hello. NULL when
 * the socket cannot be reached or anything fails. */
static sconn_t *shm_connect(const char *name, size_t req_cap, size_t resp_cap) {
    int fd = rpc__stream_unix_connect(name);
    if (fd < 0)
        return NULL;
    int mfd = memfd_create("pstrain-stream", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    uint8_t *m = MAP_FAILED;
    uint8_t h[RPC_STREAM_HDR];
    rpc__stream_hello_put(h, req_cap, resp_cap);
    if (mfd >= 0 && ftruncate(mfd, (off_t)(req_cap + resp_cap)) == 0 &&
        fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0)
        m = mmap(NULL, req_cap + resp_cap, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (m == MAP_FAILED || rpc__send_fd(fd, h, sizeof h, mfd) < 0) {
        if (m != MAP_FAILED)
            munmap(m, req_cap + resp_cap);
        if (mfd >= 0)
            close(mfd);
        close(fd);
        return NULL;
    }
    close(mfd);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    sconn_t *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->shm = m;
    c->req_cap = req_cap;
    c->resp_cap = resp_cap;
    return c;
}

/* An idle connection of sc's that the server has not closed meanwhile (it
 * restarted, or it stops: the connection reads as ready), or NULL. */
static sconn_t *take_idle(stream_chan_t *sc) {
    for (;;) {
        pthread_mutex_lock(&sc->mu);
        sconn_t *c = sc->idle;
        if (c) {
            sc->idle = c->next;
            sc->nidle--;
        }
        pthread_mutex_unlock(&sc->mu);
        struct pollfd p = {.fd = c ? c->fd : -1, .events = POLLIN | POLLRDHUP};
        if (!c || poll(&p, 1, 0) == 0)
            return c;
        sconn_free(c);
    }
}

/* A new TCP connection, connecting without blocking. */
static sconn_t *tcp_connect(stream_chan_t *sc, bool *connecting, char *err, size_t errlen) {
    pthread_mutex_lock(&sc->mu);
    struct sockaddr_storage sa = sc->saddr;
    socklen_t sl = sc->saddr_len;
    pthread_mutex_unlock(&sc->mu);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ps_errf(err, errlen, "socket: %s", strerror(errno));
        return NULL;
    }
    rpc__stream_tune(fd);
    if (connect(fd, (struct sockaddr *)&sa, sl) < 0) {
        if (errno != EINPROGRESS) {
            ps_errf(err, errlen, "%s", strerror(errno));
            close(fd);
            return NULL;
        }
        *connecting = true;
    }
    sconn_t *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    return c;
}

/* An idle connection of sc's, or a new one. */
static sconn_t *stream_take(stream_chan_t *sc, bool *connecting, char *err, size_t errlen) {
    *connecting = false;
    sconn_t *c = take_idle(sc);
    if (c)
        return c;
    pthread_mutex_lock(&sc->mu);
    bool try_unix = sc->shm_want && sc->unix_ok;
    int tcp_port = sc->port;
    char name[sizeof sc->unix_name];
    memcpy(name, sc->unix_name, sizeof name);
    pthread_mutex_unlock(&sc->mu);
    if (try_unix) {
        c = shm_connect(name, sc->max_send, sc->max_recv);
        if (c)
            return c;
        if (!tcp_port) { /* the server went away since it named its socket */
            ps_errf(err, errlen, "its Unix socket: %s", strerror(errno));
            return NULL;
        }
        /* Another network namespace: its TCP stream from now on. */
        pthread_mutex_lock(&sc->mu);
        sc->unix_ok = 0;
        pthread_mutex_unlock(&sc->mu);
    }
    return tcp_connect(sc, connecting, err, errlen);
}

static void stream_give_back(stream_chan_t *sc, sconn_t *c) {
    pthread_mutex_lock(&sc->mu);
    if (sc->state == STREAM_ON && sc->nidle < STREAM_IDLE_MAX) {
        c->next = sc->idle;
        sc->idle = c;
        sc->nidle++;
        c = NULL;
    }
    pthread_mutex_unlock(&sc->mu);
    sconn_free(c);
}

/* ---- Calls ------------------------------------------------------------------------ */

typedef enum { S_CONNECT, S_SEND, S_HEAD, S_MSG, S_BODY, S_DONE } sphase_t;

/* One call of a fan-out over the stream. */
typedef struct {
    rpc_fanout_t *f;
    stream_chan_t *sc;
    sconn_t *c;
    sphase_t phase;
    uint8_t req_head[RPC_STREAM_HDR], resp_head[RPC_STREAM_HDR];
    struct iovec iov[3], *cur;
    int ncur;
    uint8_t *at; /* where the phase's bytes go, and how many are left */
    size_t left;
    int code;
    size_t msg_len;
    uint64_t body_len;
    uint8_t *body;
    bool cut; /* answered before the request was all sent: not reusable */
    char msg[RPC_STREAM_MSG_MAX + 1];
} scall_t;

/* Ends a call that failed: the connection is closed (its state is lost),
 * and why decides what becomes of the channel's stream. */
static void scall_fail(scall_t *s, const char *method, int code, sfail_t why, const char *what) {
    rpc_fanout_t *f = s->f;
    stream_chan_t *sc = s->sc;
    f->code = code;
    char details[PS_ERRLEN];
    if (s->c && s->c->shm)
        snprintf(details, sizeof details, "tensor stream (shared memory): %s", what);
    else
        snprintf(details, sizeof details, "tensor stream port %d: %s", sc->port, what);
    rpc__status_err(f->err, sizeof f->err, method, sc->target, code, details, __FILE__, __LINE__);
    sconn_free(s->c);
    s->c = NULL;
    s->phase = S_DONE;
    if (why != SF_CONNECT && why != SF_LOST)
        return;
    /* A stream port the server named and nobody listens on (a firewall, a
     * server that restarted): ask again; a port refused straight after it
     * was named means it cannot be reached from here: use gRPC. */
    pthread_mutex_lock(&sc->mu);
    bool unreachable = sc->fresh && sc->port > 0 && why == SF_CONNECT;
    if (unreachable)
        sc->state = STREAM_NONE;
    pthread_mutex_unlock(&sc->mu);
    if (unreachable)
        log_warn("rpc: %s names tensor stream port %d, which cannot be reached from here (%s); "
                 "calls to it go over gRPC",
                 sc->target, sc->port, what);
    else
        stream__chan_forget(sc);
    rpc__channel_renew(f->ch);
}

/* Sets up what the next phase reads. */
static void scall_expect(scall_t *s, sphase_t phase, uint8_t *at, size_t n) {
    s->phase = phase;
    s->at = at;
    s->left = n;
}

static void scall_finish(scall_t *s, const char *method) {
    rpc_fanout_t *f = s->f;
    f->code = s->code;
    if (s->code != RPC_OK) {
        s->msg[s->msg_len] = '\0';
        rpc__status_err(f->err, sizeof f->err, method, s->sc->target, s->code, s->msg, __FILE__,
                        __LINE__);
    } else if (s->c->shm && f->resp && !f->consume) {
        rpc_buf_reserve(f->resp, s->body_len);
        memcpy(f->resp->data, s->body, s->body_len);
        f->resp->len = s->body_len;
    } else if (f->consume) {
        rpc_seg_t seg = {s->body, (size_t)s->body_len};
        rpc_msg_t m = {&seg, 1, (size_t)s->body_len};
        f->consume(f->consume_arg, &m);
    }
    pthread_mutex_lock(&s->sc->mu);
    s->sc->fresh = 0;
    pthread_mutex_unlock(&s->sc->mu);
    if (s->cut)
        sconn_free(s->c);
    else
        stream_give_back(s->sc, s->c);
    s->c = NULL;
    s->phase = S_DONE;
}

/* The server does not let this uid use its shared memory: its TCP stream or
 * gRPC from now on, and the call fails UNAVAILABLE, so that a retry goes
 * there. */
static void shm_refused(scall_t *s, const char *method) {
    stream_chan_t *sc = s->sc;
    pthread_mutex_lock(&sc->mu);
    sc->unix_ok = 0;
    if (sc->port <= 0)
        sc->state = STREAM_NONE;
    pthread_mutex_unlock(&sc->mu);
    log_warn("rpc: %s refuses this process its shared memory; calls to it go over %s", sc->target,
             sc->port > 0 ? "its TCP stream" : "gRPC");
    scall_fail(s, method, RPC_UNAVAILABLE, SF_LOCAL, "shared memory refused to this uid");
}

/* The response header is in: where its message and body go. */
static void scall_head(scall_t *s, const char *method) {
    uint32_t flags = 0;
    if (rpc__stream_resp_get(s->resp_head, &s->code, &s->msg_len, &s->body_len, &flags) < 0 ||
        s->msg_len > RPC_STREAM_MSG_MAX || (s->code != RPC_OK && s->body_len)) {
        scall_fail(s, method, RPC_INTERNAL, SF_PROTOCOL, "the server sent a malformed response");
        return;
    }
    if (s->body_len > s->sc->max_recv) {
        char what[128];
        snprintf(what, sizeof what, "response of %llu bytes is over the limit of %zu",
                 (unsigned long long)s->body_len, s->sc->max_recv);
        scall_fail(s, method, RPC_RESOURCE_EXHAUSTED, SF_LOCAL, what);
        return;
    }
    if (flags & RPC_STREAM_CLOSING)
        s->cut = true;
    if (s->c->shm && s->code == RPC_PERMISSION_DENIED && s->cut) {
        shm_refused(s, method);
        return;
    }
    if (s->c->shm) {
        if (s->body_len > s->c->resp_cap) {
            scall_fail(s, method, RPC_INTERNAL, SF_PROTOCOL,
                       "the server sent a malformed response");
            return;
        }
        s->body = s->c->shm + s->c->req_cap; /* read in place */
        scall_expect(s, S_MSG, (uint8_t *)s->msg, s->msg_len);
        return;
    }
    rpc_buf_t *dst = s->f->consume ? &s->c->buf : s->f->resp;
    if (dst) {
        rpc_buf_reserve(dst, s->body_len);
        dst->len = s->body_len;
        s->body = dst->data;
    } else {
        s->body = NULL; /* nowhere to put it: read and dropped */
    }
    scall_expect(s, S_MSG, (uint8_t *)s->msg, s->msg_len);
}

/* Moves the call on as far as its socket allows without blocking;
 * readable: poll saw the response start to arrive. */
static void scall_step(scall_t *s, const char *method, bool readable) {
    if (s->phase == S_SEND && readable) {
        /* The server answered before reading the whole request (one over
         * its limit): take the answer. */
        s->cut = true;
        scall_expect(s, S_HEAD, s->resp_head, sizeof s->resp_head);
    }
    for (;;) {
        if (s->phase == S_CONNECT) {
            int e = 0;
            socklen_t el = sizeof e;
            getsockopt(s->c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
            if (e) {
                char what[160];
                snprintf(what, sizeof what, "cannot connect: %s", strerror(e));
                scall_fail(s, method, RPC_UNAVAILABLE, SF_CONNECT, what);
                return;
            }
            s->phase = S_SEND;
        } else if (s->phase == S_SEND) {
            struct msghdr mh = {.msg_iov = s->cur, .msg_iovlen = (size_t)s->ncur};
            ssize_t w = sendmsg(s->c->fd, &mh, MSG_NOSIGNAL);
            if (w < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (w < 0) {
                char what[160];
                snprintf(what, sizeof what, "connection lost while sending: %s", strerror(errno));
                scall_fail(s, method, RPC_UNAVAILABLE, SF_LOST, what);
                return;
            }
            rpc__iov_advance(&s->cur, &s->ncur, (size_t)w);
            if (s->ncur == 0)
                scall_expect(s, S_HEAD, s->resp_head, sizeof s->resp_head);
            else
                return;
        } else if (s->phase == S_DONE) {
            return;
        } else if (s->left == 0) {
            if (s->phase == S_HEAD) {
                scall_head(s, method);
            } else if (s->phase == S_MSG) {
                if (s->c->shm) /* the body lies in the response area */
                    scall_expect(s, S_BODY, NULL, 0);
                else
                    scall_expect(s, S_BODY, s->body, s->body_len);
            } else {
                scall_finish(s, method);
                return;
            }
        } else {
            uint8_t sink[65536];
            uint8_t *to = s->at ? s->at : sink;
            ssize_t r = recv(s->c->fd, to, s->at ? s->left : PS_MIN(s->left, sizeof sink), 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (r <= 0) {
                char what[160];
                snprintf(what, sizeof what, "connection closed before the response was whole%s%s",
                         r < 0 ? ": " : " (the server stopped?)", r < 0 ? strerror(errno) : "");
                scall_fail(s, method, RPC_UNAVAILABLE, SF_LOST, what);
                return;
            }
            if (s->at)
                s->at += r;
            s->left -= (size_t)r;
        }
    }
}

/* Sets the call up: a connection, and the request in its header, name and
 * body (or in the request area). */
static void scall_start(scall_t *c, rpc_fanout_t *f, const char *method, double deadline) {
    c->f = f;
    c->sc = rpc__channel_stream(f->ch);
    f->err[0] = '\0';
    if (f->len > c->sc->max_send) {
        char what[128];
        snprintf(what, sizeof what, "request of %zu bytes is over the send limit of %zu", f->len,
                 c->sc->max_send);
        scall_fail(c, method, RPC_RESOURCE_EXHAUSTED, SF_LOCAL, what);
        return;
    }
    char why[PS_ERRLEN];
    bool connecting;
    c->c = stream_take(c->sc, &connecting, why, sizeof why);
    if (!c->c) {
        char what[PS_ERRLEN + 32];
        snprintf(what, sizeof what, "cannot connect: %s", why);
        scall_fail(c, method, RPC_UNAVAILABLE, SF_CONNECT, what);
        return;
    }
    size_t method_len = strlen(method);
    /* What is left of the deadline now: the server's clock counts from
     * when the request arrives. */
    double left = deadline > 0 ? PS_MAX(deadline - ps_now(), 1e-6) : 0;
    rpc__stream_req_put(c->req_head, method_len, left, f->len);
    c->iov[0] = (struct iovec){c->req_head, sizeof c->req_head};
    c->iov[1] = (struct iovec){(void *)method, method_len};
    c->iov[2] = (struct iovec){(void *)f->req, f->len};
    c->cur = c->iov;
    c->ncur = f->len ? 3 : 2;
    if (c->c->shm) {
        if (f->pack)
            f->pack(f->pack_arg, c->c->shm);
        else if (f->len)
            memcpy(c->c->shm, f->req, f->len);
        c->ncur = 2;
    } else if (f->pack) {
        rpc__packed_blob(f);
        c->iov[2].iov_base = (void *)f->req;
    }
    c->phase = connecting ? S_CONNECT : S_SEND;
    scall_step(c, method, false);
}

/* When the call must be woken whatever its socket does (0: never): its
 * connect's limit, its deadline, or, once its request is out, the
 * deadline and the time the server has to say it passed. */
static double scall_wake(const scall_t *s, double deadline, double connect_by) {
    if (s->phase == S_CONNECT)
        return deadline > 0 && deadline < connect_by ? deadline : connect_by;
    if (s->phase == S_SEND)
        return deadline;
    return deadline > 0 ? deadline + STREAM_LATE_S : 0;
}

/* Fails a call whose time is up. */
static void scall_expire(scall_t *s, const char *method, double now, double deadline,
                         double connect_by) {
    if (s->phase == S_DONE)
        return;
    double wake = scall_wake(s, deadline, connect_by);
    if (wake <= 0 || now < wake)
        return;
    if (s->phase == S_CONNECT && (deadline <= 0 || connect_by <= deadline)) {
        char what[64];
        snprintf(what, sizeof what, "cannot connect: no answer within %.0f s", STREAM_CONNECT_S);
        scall_fail(s, method, RPC_UNAVAILABLE, SF_CONNECT, what);
    } else if (s->phase == S_CONNECT || s->phase == S_SEND) {
        scall_fail(s, method, RPC_DEADLINE_EXCEEDED, SF_DEADLINE, "deadline exceeded");
    } else {
        scall_fail(s, method, RPC_DEADLINE_EXCEEDED, SF_DEADLINE,
                   "deadline exceeded, and the server did not say so in time");
    }
}

static short scall_events(const scall_t *s) {
    return s->phase == S_CONNECT ? POLLOUT : s->phase == S_SEND ? POLLOUT | POLLIN : POLLIN;
}

/* Waits for the calls' sockets or the first wake-up; the number polled. */
static nfds_t scalls_poll(scall_t *s, size_t n, struct pollfd *pf, double deadline,
                          double connect_by) {
    nfds_t np = 0;
    double until = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].phase == S_DONE)
            continue;
        pf[np++] = (struct pollfd){.fd = s[i].c->fd, .events = scall_events(&s[i])};
        double w = scall_wake(&s[i], deadline, connect_by);
        if (w > 0 && (until <= 0 || w < until))
            until = w;
    }
    if (np == 0)
        return 0;
    int wait_ms = until > 0 ? (int)PS_MAX(0.0, PS_MIN((until - ps_now()) * 1e3 + 1, 1e9)) : -1;
    if (poll(pf, np, wait_ms) < 0 && errno != EINTR)
        for (nfds_t i = 0; i < np; i++) /* cannot happen with valid descriptors */
            pf[i].revents = POLLERR;
    return np;
}

size_t stream__fanout(rpc_fanout_t **calls, size_t n, const char *method, double deadline) {
    scall_t *s = xcalloc(n, sizeof *s);
    struct pollfd *pf = xcalloc(n, sizeof *pf);
    double connect_by = ps_now() + STREAM_CONNECT_S;
    for (size_t i = 0; i < n; i++)
        scall_start(&s[i], calls[i], method, deadline);
    for (;;) {
        double now = ps_now();
        for (size_t i = 0; i < n; i++)
            scall_expire(&s[i], method, now, deadline, connect_by);
        if (scalls_poll(s, n, pf, deadline, connect_by) == 0)
            break;
        nfds_t np = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i].phase == S_DONE)
                continue;
            short rev = pf[np++].revents;
            if (rev)
                scall_step(&s[i], method, s[i].phase == S_SEND && (rev & POLLIN));
        }
    }
    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += s[i].f->code != RPC_OK;
    free(s);
    free(pf);
    return failed;
}

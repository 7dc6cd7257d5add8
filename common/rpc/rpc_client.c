/* The client: channels, unary calls and fan-out on a completion queue of their
 * own, and the retry wrapper. A unary call is a fan-out of one. */
#include "common/rpc/rpc_internal.h"

#include <errno.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"

/* A channel whose call failed UNAVAILABLE starts its next call on a new
 * gRPC channel (and, with a local subchannel pool, a new connection
 * attempt). gRPC 1.51 waits between connection attempts at least
 * GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, growing: a worker that started before
 * its PS listened went on failing fast for over 20 s after the PS was up.
 * Our own retries are what bound and space the attempts. A gRPC channel is
 * destroyed only when no call uses it any more: destroying it would
 * disconnect the calls other threads still have in flight on it. */
typedef struct {
    grpc_channel *channel;
    int refs; /* the rpc_channel's (while current) and one per call; under mu */
} chan_ref_t;

/* A channel's tensor stream: not asked yet (or to ask again), in use, or
 * none (not offered, or it cannot be reached: calls use gRPC). */
enum { STREAM_UNKNOWN, STREAM_ON, STREAM_NONE };
typedef struct sconn sconn_t;
typedef struct rpc_channel rpc_channel_t;
static void stream_forget(rpc_channel_t *ch);

struct rpc_channel {
    pthread_mutex_t mu; /* cur and the refs of every chan_ref_t */
    chan_ref_t *cur;
    grpc_channel_credentials *creds; /* kept to make the channel again */
    grpc_arg args[RPC_MAX_ARGS + 1]; /* + the local subchannel pool of a renewed channel */
    size_t nargs;
    atomic_int renew; /* a call failed UNAVAILABLE: the next one gets a new channel */
    rpc_pool_t *pool; /* copies of requests */
    char target[256];
    char host[256]; /* target's host */
    size_t max_recv, max_send;
    /* The tensor stream (below); under mu but stream_want. */
    int stream_want;
    int stream_state;
    int stream_port;
    int shm_want;        /* opt.shm */
    int unix_ok;         /* the server's Unix socket may be reachable */
    char unix_name[108]; /* its abstract name; "" when none */
    int fresh;           /* no call has completed over the port since it was named */
    struct sockaddr_storage saddr;
    socklen_t saddr_len;
    sconn_t *idle;
    int nidle;
};

/* The first channel shares gRPC's global subchannel pool (channels to one
 * address share one connection); a channel made anew after a failure gets a
 * local pool, so a subchannel of its own instead of the shared one still
 * waiting out its backoff. */
static chan_ref_t *make_channel(rpc_channel_t *ch, bool renewed) {
    grpc_arg local = {.type = GRPC_ARG_INTEGER,
                      .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
                      .value.integer = 1};
    ch->args[ch->nargs] = local;
    grpc_channel_args chargs = {ch->nargs + (renewed ? 1 : 0), ch->args};
    chan_ref_t *c = xcalloc(1, sizeof *c);
    c->channel = grpc_channel_create(ch->target, ch->creds, &chargs);
    c->refs = 1;
    return c;
}

/* Drops a reference; the last one destroys the gRPC channel. Under ch->mu. */
static void unref_channel_locked(chan_ref_t *c) {
    if (--c->refs > 0)
        return;
    grpc_channel_destroy(c->channel);
    free(c);
}

/* Creates a call on ch's channel, made anew first when the last call failed
 * UNAVAILABLE; *ref is the channel the call holds until release_call. */
static grpc_call *create_call(rpc_channel_t *ch, grpc_completion_queue *cq, grpc_slice method,
                              gpr_timespec deadline, chan_ref_t **ref) {
    pthread_mutex_lock(&ch->mu);
    if (atomic_exchange(&ch->renew, 0)) {
        unref_channel_locked(ch->cur);
        ch->cur = make_channel(ch, true);
    }
    *ref = ch->cur;
    ch->cur->refs++;
    grpc_call *call = grpc_channel_create_call(ch->cur->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               method, NULL, deadline, NULL);
    pthread_mutex_unlock(&ch->mu);
    return call;
}

static void release_call(rpc_channel_t *ch, grpc_call *call, chan_ref_t *ref) {
    if (call)
        grpc_call_unref(call);
    if (!ref)
        return;
    pthread_mutex_lock(&ch->mu);
    unref_channel_locked(ref);
    pthread_mutex_unlock(&ch->mu);
}

int rpc_channel_create(rpc_channel_t **out, const char *target, const rpc_options_t *opt, char *err,
                       size_t errlen) {
    static const rpc_options_t defaults;
    *out = NULL;
    if (!opt)
        opt = &defaults;
    if (!target || !target[0] || !strchr(target, ':'))
        return ps_errf(err, errlen, "rpc: channel target \"%s\" is not host:port",
                       target ? target : "");
    if (strlen(target) >= sizeof(((rpc_channel_t *)0)->target))
        return ps_errf(err, errlen, "rpc: channel target too long: %s", target);
    grpc_arg args[RPC_MAX_ARGS];
    size_t n_args = 0;
    grpc_channel_credentials *creds = NULL;
    if (rpc__args(args, &n_args, opt, 0, err, errlen) < 0 ||
        rpc__channel_creds(opt, &creds, err, errlen) < 0)
        return -1;
    rpc__init();
    rpc_channel_t *ch = xcalloc(1, sizeof *ch);
    pthread_mutex_init(&ch->mu, NULL);
    snprintf(ch->target, sizeof ch->target, "%s", target);
    if (rpc__split_host(target, ch->host, sizeof ch->host, NULL) < 0)
        snprintf(ch->host, sizeof ch->host, "%s", target);
    ch->max_recv = opt->max_recv ? opt->max_recv : RPC_DEFAULT_MAX_MESSAGE;
    ch->max_send = opt->max_send ? opt->max_send : RPC_DEFAULT_MAX_MESSAGE;
    ch->stream_want = opt->stream && !opt->tls_ca && !opt->tls_cert && !opt->tls_key;
    ch->shm_want = opt->shm;
    memcpy(ch->args, args, n_args * sizeof args[0]); /* static keys, integer values */
    ch->nargs = n_args;
    ch->creds = creds;
    ch->cur = make_channel(ch, false);
    ch->pool = rpc__pool_new();
    *out = ch;
    return 0;
}

void rpc_channel_destroy(rpc_channel_t *ch) {
    if (!ch)
        return;
    unref_channel_locked(ch->cur); /* every call has ended: the last reference */
    stream_forget(ch);
    grpc_channel_credentials_release(ch->creds);
    pthread_mutex_destroy(&ch->mu);
    rpc__pool_release(ch->pool);
    free(ch);
    grpc_shutdown();
}

const char *rpc_channel_target(const rpc_channel_t *ch) {
    return ch->target;
}

rpc_blob_t *rpc_channel_blob(rpc_channel_t *ch, size_t len) {
    return rpc__pool_blob(ch->pool, len);
}

const char *rpc_channel_transport(rpc_channel_t *ch) {
    pthread_mutex_lock(&ch->mu);
    const char *t = ch->stream_state != STREAM_ON ? "grpc"
                    : ch->shm_want && ch->unix_ok ? "shm"
                                                  : "stream";
    pthread_mutex_unlock(&ch->mu);
    return t;
}

int rpc_channel_stream_port(rpc_channel_t *ch) {
    pthread_mutex_lock(&ch->mu);
    int port = ch->stream_state == STREAM_ON ? ch->stream_port : 0;
    pthread_mutex_unlock(&ch->mu);
    return port;
}

/* ---- The tensor stream ---------------------------------------------------------
 *
 * A channel with opt.shm or opt.stream asks its server, over gRPC, where its
 * tensor stream is before its first call, and again after any call failed
 * UNAVAILABLE (the server may have restarted elsewhere). Calls then go over
 * connections to the server's Unix socket (shared memory) or TCP stream port,
 * one call at a time each: a fan-out takes an idle connection per call or
 * opens one, drives them all at once with poll, and gives the connections
 * back when their calls completed cleanly. */

/* Idle connections kept per channel. */
#define STREAM_IDLE_MAX 4
/* How long a connection to a stream port may take: a firewall that drops
 * the packets would otherwise hold every call until its deadline. */
#define STREAM_CONNECT_S 3.0

struct sconn {
    int fd;
    rpc_buf_t buf; /* responses handed to consume are read into it */
    uint8_t *shm;  /* same host: the request area, then the response area */
    size_t req_cap, resp_cap;
    sconn_t *next;
};

static void sconn_free(sconn_t *c) {
    if (!c)
        return;
    if (c->shm)
        munmap(c->shm, c->req_cap + c->resp_cap);
    close(c->fd);
    rpc_buf_free(&c->buf);
    free(c);
}

static void stream_forget(rpc_channel_t *ch) {
    pthread_mutex_lock(&ch->mu);
    ch->stream_state = STREAM_UNKNOWN;
    sconn_t *idle = ch->idle;
    ch->idle = NULL;
    ch->nidle = 0;
    pthread_mutex_unlock(&ch->mu);
    while (idle) {
        sconn_t *next = idle->next;
        sconn_free(idle);
        idle = next;
    }
}

static size_t grpc_fanout(rpc_fanout_t **calls, size_t n, const char *method, double deadline_s);
static sconn_t *shm_connect(const char *name, size_t req_cap, size_t resp_cap);

/* Asks the server where its stream is (a gRPC call) and picks what calls
 * on ch go over: its Unix socket and shared memory when that is offered and
 * can be reached from here (same host, same network namespace: a connection
 * is made at once and kept), else its TCP stream when both sides want one,
 * else gRPC. Whether calls on ch go over the stream now. */
static bool stream_ready(rpc_channel_t *ch, double deadline_s) {
    pthread_mutex_lock(&ch->mu);
    int state = ch->stream_state;
    pthread_mutex_unlock(&ch->mu);
    if ((!ch->stream_want && !ch->shm_want) || state != STREAM_UNKNOWN)
        return state == STREAM_ON;
    rpc_buf_t resp = {0};
    rpc_fanout_t f;
    memset(&f, 0, sizeof f);
    f.ch = ch;
    f.resp = &resp;
    rpc_fanout_t *one = &f;
    grpc_fanout(&one, 1, RPC_STREAM_PORT_METHOD, deadline_s > 0 ? PS_MIN(deadline_s, 5.0) : 5.0);
    int port = 0;
    char name[sizeof ch->unix_name] = "";
    if (f.code == RPC_OK && resp.len > 0 && resp.len < 128) {
        char text[128];
        memcpy(text, resp.data, resp.len);
        text[resp.len] = '\0';
        port = atoi(text); /* "PORT" or "PORT NAME"; PORT 0: no TCP stream */
        const char *sp = strchr(text, ' ');
        if (sp && strlen(sp + 1) < sizeof name)
            snprintf(name, sizeof name, "%s", sp + 1);
    }
    rpc_buf_free(&resp);
    sconn_t *local = ch->shm_want && name[0] ? shm_connect(name, ch->max_send, ch->max_recv) : NULL;
    struct addrinfo *res = NULL;
    if (!ch->stream_want || port <= 0 || port >= 65536) {
        port = 0;
    } else {
        char service[16];
        snprintf(service, sizeof service, "%d", port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
        if (getaddrinfo(ch->host, service, &hints, &res) != 0 || !res)
            port = 0;
    }
    pthread_mutex_lock(&ch->mu);
    if (local || port > 0) {
        if (res) {
            memcpy(&ch->saddr, res->ai_addr, res->ai_addrlen);
            ch->saddr_len = res->ai_addrlen;
        }
        ch->stream_port = port;
        ch->stream_state = STREAM_ON;
        ch->fresh = 1;
        snprintf(ch->unix_name, sizeof ch->unix_name, "%s", name);
        ch->unix_ok = local != NULL;
        if (local) { /* the first idle connection */
            local->next = ch->idle;
            ch->idle = local;
            ch->nidle++;
        }
    } else if (f.code == RPC_OK || f.code == RPC_UNIMPLEMENTED) {
        /* Nothing offered that can be reached, or a server that predates it. */
        ch->stream_state = STREAM_NONE;
    }
    state = ch->stream_state;
    pthread_mutex_unlock(&ch->mu);
    if (res)
        freeaddrinfo(res);
    return state == STREAM_ON;
}

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
        fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) == 0)
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

/* An idle connection of ch, or a new one (connecting, non-blocking). */
static sconn_t *stream_take(rpc_channel_t *ch, bool *connecting, char *err, size_t errlen) {
    pthread_mutex_lock(&ch->mu);
    sconn_t *c = ch->idle;
    if (c) {
        ch->idle = c->next;
        ch->nidle--;
    }
    struct sockaddr_storage sa = ch->saddr;
    socklen_t sl = ch->saddr_len;
    pthread_mutex_unlock(&ch->mu);
    *connecting = false;
    pthread_mutex_lock(&ch->mu);
    bool try_unix = ch->shm_want && ch->unix_ok;
    int tcp_port = ch->stream_port;
    char name[sizeof ch->unix_name];
    memcpy(name, ch->unix_name, sizeof name);
    pthread_mutex_unlock(&ch->mu);
    /* An idle connection the server has closed meanwhile (it restarted, or
     * it stops) reads as ready: a new one instead. */
    while (c) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
        if (poll(&p, 1, 0) == 0)
            return c;
        sconn_free(c);
        pthread_mutex_lock(&ch->mu);
        c = ch->idle;
        if (c) {
            ch->idle = c->next;
            ch->nidle--;
        }
        pthread_mutex_unlock(&ch->mu);
    }
    if (try_unix) {
        c = shm_connect(name, ch->max_send, ch->max_recv);
        if (c)
            return c;
        if (!tcp_port) { /* the server went away since it named its socket */
            ps_errf(err, errlen, "its Unix socket: %s", strerror(errno));
            return NULL;
        }
        /* Another network namespace: its TCP stream from now on. */
        pthread_mutex_lock(&ch->mu);
        ch->unix_ok = 0;
        pthread_mutex_unlock(&ch->mu);
    }
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
    c = xcalloc(1, sizeof *c);
    c->fd = fd;
    return c;
}

static void stream_give_back(rpc_channel_t *ch, sconn_t *c) {
    pthread_mutex_lock(&ch->mu);
    if (ch->stream_state == STREAM_ON && ch->nidle < STREAM_IDLE_MAX) {
        c->next = ch->idle;
        ch->idle = c;
        ch->nidle++;
        c = NULL;
    }
    pthread_mutex_unlock(&ch->mu);
    sconn_free(c);
}

typedef enum { S_CONNECT, S_SEND, S_HEAD, S_MSG, S_BODY, S_DONE } sphase_t;

/* One call of a fan-out over the stream. */
typedef struct {
    rpc_fanout_t *f;
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

/* Ends a call that failed: the connection is closed (its state is lost). */
static void scall_fail(scall_t *s, const char *method, int code, const char *what) {
    rpc_fanout_t *f = s->f;
    rpc_channel_t *ch = f->ch;
    f->code = code;
    char details[PS_ERRLEN];
    if (s->c && s->c->shm)
        snprintf(details, sizeof details, "tensor stream (shared memory): %s", what);
    else
        snprintf(details, sizeof details, "tensor stream port %d: %s", ch->stream_port, what);
    rpc__status_err(f->err, sizeof f->err, method, ch->target, code, details, __FILE__, __LINE__);
    sconn_free(s->c);
    s->c = NULL;
    s->phase = S_DONE;
    if (code != RPC_UNAVAILABLE)
        return;
    /* A stream port the server named and nobody listens on (a firewall, a
     * server that restarted): ask again; a port refused straight after it
     * was named means it cannot be reached from here: use gRPC. */
    pthread_mutex_lock(&ch->mu);
    bool fresh = ch->fresh;
    pthread_mutex_unlock(&ch->mu);
    if (fresh && ch->stream_port > 0 && strncmp(what, "cannot connect", 14) == 0) {
        pthread_mutex_lock(&ch->mu);
        ch->stream_state = STREAM_NONE;
        pthread_mutex_unlock(&ch->mu);
        log_warn("rpc: %s names tensor stream port %d, which cannot be reached from here (%s); "
                 "calls to it go over gRPC",
                 ch->target, ch->stream_port, what);
    } else {
        stream_forget(ch);
    }
    atomic_store(&ch->renew, 1);
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
        rpc__status_err(f->err, sizeof f->err, method, f->ch->target, s->code, s->msg, __FILE__,
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
    pthread_mutex_lock(&f->ch->mu);
    f->ch->fresh = 0;
    pthread_mutex_unlock(&f->ch->mu);
    if (s->cut)
        sconn_free(s->c);
    else
        stream_give_back(f->ch, s->c);
    s->c = NULL;
    s->phase = S_DONE;
}

/* The response header is in: where its message and body go. */
static void scall_head(scall_t *s, const char *method) {
    uint32_t flags = 0;
    if (rpc__stream_resp_get(s->resp_head, &s->code, &s->msg_len, &s->body_len, &flags) < 0 ||
        s->msg_len > RPC_STREAM_MSG_MAX || (s->code != RPC_OK && s->body_len)) {
        scall_fail(s, method, RPC_INTERNAL, "the server sent a malformed response");
        return;
    }
    if (s->body_len > s->f->ch->max_recv) {
        char what[128];
        snprintf(what, sizeof what, "response of %llu bytes is over the limit of %zu",
                 (unsigned long long)s->body_len, s->f->ch->max_recv);
        scall_fail(s, method, RPC_RESOURCE_EXHAUSTED, what);
        return;
    }
    if (flags & RPC_STREAM_CLOSING)
        s->cut = true;
    if (s->c->shm) {
        if (s->body_len > s->c->resp_cap) {
            scall_fail(s, method, RPC_INTERNAL, "the server sent a malformed response");
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
                scall_fail(s, method, RPC_UNAVAILABLE, what);
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
                scall_fail(s, method, RPC_UNAVAILABLE, what);
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
                scall_fail(s, method, RPC_UNAVAILABLE, what);
                return;
            }
            if (s->at)
                s->at += r;
            s->left -= (size_t)r;
        }
    }
}

/* A request written by its pack callback into a blob of the channel's, for
 * a send that is not through shared memory; unpacked() undoes it. */
static void packed_blob(rpc_fanout_t *f) {
    f->blob = rpc_channel_blob(f->ch, f->len);
    f->pack(f->pack_arg, rpc_blob_data(f->blob));
    f->req = rpc_blob_data(f->blob);
}

static void unpacked(rpc_fanout_t *f) {
    if (!f->pack || !f->blob)
        return;
    rpc_blob_unref(f->blob);
    f->blob = NULL;
    f->req = NULL;
}

/* Runs the calls over their channels' streams, all at once. */
static size_t stream_fanout(rpc_fanout_t **calls, size_t n, const char *method, double deadline_s) {
    scall_t *s = xcalloc(n, sizeof *s);
    struct pollfd *pf = xcalloc(n, sizeof *pf);
    size_t method_len = strlen(method);
    double deadline = deadline_s > 0 ? ps_now() + deadline_s : 0;
    double connect_by = ps_now() + STREAM_CONNECT_S;
    for (size_t i = 0; i < n; i++) {
        scall_t *c = &s[i];
        c->f = calls[i];
        c->f->err[0] = '\0';
        if (c->f->len > c->f->ch->max_send) {
            char what[128];
            snprintf(what, sizeof what, "request of %zu bytes is over the send limit of %zu",
                     c->f->len, c->f->ch->max_send);
            scall_fail(c, method, RPC_RESOURCE_EXHAUSTED, what);
            continue;
        }
        char why[PS_ERRLEN];
        bool connecting;
        c->c = stream_take(c->f->ch, &connecting, why, sizeof why);
        if (!c->c) {
            char what[PS_ERRLEN + 32];
            snprintf(what, sizeof what, "cannot connect: %s", why);
            scall_fail(c, method, RPC_UNAVAILABLE, what);
            continue;
        }
        rpc__stream_req_put(c->req_head, method_len, deadline_s, c->f->len);
        c->iov[0] = (struct iovec){c->req_head, sizeof c->req_head};
        c->iov[1] = (struct iovec){(void *)method, method_len};
        c->iov[2] = (struct iovec){(void *)c->f->req, c->f->len};
        c->cur = c->iov;
        c->ncur = c->f->len ? 3 : 2;
        if (c->c->shm) {
            if (c->f->pack)
                c->f->pack(c->f->pack_arg, c->c->shm);
            else if (c->f->len)
                memcpy(c->c->shm, c->f->req, c->f->len);
            c->ncur = 2;
        } else if (c->f->pack) {
            packed_blob(c->f);
            c->iov[2].iov_base = (void *)c->f->req;
        }
        c->phase = connecting ? S_CONNECT : S_SEND;
        scall_step(c, method, false);
    }
    for (;;) {
        nfds_t np = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i].phase == S_DONE)
                continue;
            short ev = s[i].phase == S_CONNECT ? POLLOUT
                       : s[i].phase == S_SEND  ? POLLOUT | POLLIN
                                               : POLLIN;
            pf[np++] = (struct pollfd){.fd = s[i].c->fd, .events = ev};
        }
        if (np == 0)
            break;
        bool connecting = false;
        for (size_t i = 0; i < n; i++)
            connecting |= s[i].phase == S_CONNECT;
        double until =
            connecting && (deadline <= 0 || connect_by < deadline) ? connect_by : deadline;
        int wait_ms = -1;
        if (until > 0)
            wait_ms = (int)PS_MAX(0.0, PS_MIN((until - ps_now()) * 1e3 + 1, 1e9));
        int r = poll(pf, np, wait_ms);
        if (connecting && ps_now() >= connect_by) {
            char what[64];
            snprintf(what, sizeof what, "cannot connect: no answer within %.0f s",
                     STREAM_CONNECT_S);
            for (size_t i = 0; i < n; i++)
                if (s[i].phase == S_CONNECT)
                    scall_fail(&s[i], method, RPC_UNAVAILABLE, what);
            continue; /* the descriptors polled may have closed */
        }
        if (r < 0 && errno != EINTR)
            break; /* cannot happen with valid descriptors */
        if (r == 0 && deadline > 0 && ps_now() >= deadline) {
            for (size_t i = 0; i < n; i++)
                if (s[i].phase != S_DONE)
                    scall_fail(&s[i], method, RPC_DEADLINE_EXCEEDED, "deadline exceeded");
            break;
        }
        np = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i].phase == S_DONE)
                continue;
            short rev = pf[np++].revents;
            if (rev)
                scall_step(&s[i], method, s[i].phase == S_SEND && (rev & POLLIN));
        }
    }
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].phase != S_DONE)
            scall_fail(&s[i], method, RPC_INTERNAL, strerror(errno));
        failed += s[i].f->code != RPC_OK;
    }
    free(s);
    free(pf);
    return failed;
}

/* ---- Calls -------------------------------------------------------------------- */

/* One call in flight and what its batch fills in. */
typedef struct {
    rpc_fanout_t *f;
    grpc_call *call;
    chan_ref_t *chan; /* the gRPC channel the call runs on */
    grpc_byte_buffer *send;
    grpc_byte_buffer *recv;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    const char *error_string;
} pending_t;

/* Starts one call: send the request, half-close, receive everything. */
static int start_call(pending_t *p, grpc_completion_queue *cq, grpc_slice method,
                      gpr_timespec deadline, grpc_byte_buffer *send) {
    rpc_fanout_t *f = p->f;
    grpc_metadata_array_init(&p->initial_md);
    grpc_metadata_array_init(&p->trailing_md);
    p->details = grpc_empty_slice();
    p->send = send;
    p->call = create_call(f->ch, cq, method, deadline, &p->chan);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = p->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &p->initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &p->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &p->trailing_md;
    ops[5].data.recv_status_on_client.status = &p->status;
    ops[5].data.recv_status_on_client.status_details = &p->details;
    ops[5].data.recv_status_on_client.error_string = &p->error_string;
    char why[PS_ERRLEN];
    if (RPC_CHECK(grpc_call_start_batch(p->call, ops, 6, p, NULL), "grpc_call_start_batch", why,
                  sizeof why) < 0) {
        f->code = RPC_INTERNAL;
        ps_errf(f->err, sizeof f->err, "call to %s: %s", f->ch->target, why);
        return -1;
    }
    return 0;
}

/* Copies the response into resp, or hands it to consume in place. */
static int take_response(pending_t *p) {
    rpc_fanout_t *f = p->f;
    if (!f->consume) {
        f->resp->len = 0;
        return p->recv ? rpc__flatten(p->recv, f->resp) : 0;
    }
    static const rpc_msg_t empty;
    if (!p->recv) {
        f->consume(f->consume_arg, &empty);
        return 0;
    }
    rpc_segs_t segs = {0};
    rpc_buf_t flat = {0};
    rpc_msg_t m;
    int rc = rpc__segments(p->recv, &segs, &flat, &m);
    if (rc == 0)
        f->consume(f->consume_arg, &m);
    free(segs.seg);
    rpc_buf_free(&flat);
    return rc;
}

/* Reads a finished call's status and response into its fan-out entry. */
static void finish_call(pending_t *p, const char *method, int ok) {
    rpc_fanout_t *f = p->f;
    f->code = ok ? (int)p->status : RPC_INTERNAL;
    f->err[0] = '\0';
    if (f->code == RPC_OK) {
        if (take_response(p) < 0) {
            f->code = RPC_INTERNAL;
            ps_errf(f->err, sizeof f->err, "%s to %s: cannot read the response", method,
                    f->ch->target);
        }
    } else {
        if (f->code == RPC_UNAVAILABLE) {
            atomic_store(&f->ch->renew, 1);
            stream_forget(f->ch); /* a restarted server listens on another port */
        }
        char details[PS_ERRLEN];
        snprintf(details, sizeof details, "%.*s", (int)GRPC_SLICE_LENGTH(p->details),
                 (const char *)GRPC_SLICE_START_PTR(p->details));
        if (!details[0] && p->error_string)
            snprintf(details, sizeof details, "%s", p->error_string);
        rpc__status_err(f->err, sizeof f->err, method, f->ch->target, f->code, details, __FILE__,
                        __LINE__);
    }
}

static void free_call(pending_t *p) {
    release_call(p->f->ch, p->call, p->chan);
    if (p->send)
        grpc_byte_buffer_destroy(p->send);
    if (p->recv)
        grpc_byte_buffer_destroy(p->recv);
    grpc_metadata_array_destroy(&p->initial_md);
    grpc_metadata_array_destroy(&p->trailing_md);
    grpc_slice_unref(p->details);
    gpr_free((void *)p->error_string);
}

/* Entries sharing one request share one copy of it. */
static grpc_byte_buffer *request_body(rpc_fanout_t **calls, size_t i, grpc_byte_buffer **bodies) {
    rpc_fanout_t *f = calls[i];
    for (size_t j = 0; j < i; j++)
        if (calls[j]->req == f->req && calls[j]->len == f->len)
            return grpc_byte_buffer_copy(bodies[j]);
    grpc_slice body;
    if (f->blob) {
        body = rpc__blob_slice(f->blob, f->req, f->len);
    } else if (f->release && f->len == 0) {
        f->release(f->release_arg);
        body = grpc_empty_slice();
    } else if (f->release) {
        body = grpc_slice_new_with_user_data((void *)f->req, f->len, f->release, f->release_arg);
    } else {
        body = rpc__pool_copy(f->ch->pool, f->req, f->len);
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    return bb;
}

static size_t grpc_fanout(rpc_fanout_t **calls, size_t n, const char *method, double deadline_s) {
    pending_t one[4];
    grpc_byte_buffer *one_body[4];
    pending_t *p = n <= 4 ? one : xcalloc(n, sizeof *p);
    grpc_byte_buffer **bodies = n <= 4 ? one_body : xcalloc(n, sizeof *bodies);
    memset(p, 0, n * sizeof *p);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice m = grpc_slice_from_static_string(method);
    gpr_timespec deadline = rpc__deadline(deadline_s);
    size_t in_flight = 0, failed = 0;
    /* Every body first: starting a call empties the byte buffer it sends. */
    for (size_t i = 0; i < n; i++)
        bodies[i] = request_body(calls, i, bodies);
    for (size_t i = 0; i < n; i++) {
        p[i].f = calls[i];
        if (start_call(&p[i], cq, m, deadline, bodies[i]) == 0)
            in_flight++;
        else
            failed++;
    }
    /* Every call has the deadline, so this ends; without one it waits for
     * the server, as asked. */
    while (in_flight > 0) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        pending_t *done = ev.tag;
        finish_call(done, method, ev.success);
        failed += done->f->code != RPC_OK;
        in_flight--;
    }
    for (size_t i = 0; i < n; i++)
        free_call(&p[i]);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    if (p != one) {
        free(p);
        free(bodies);
    }
    return failed;
}

size_t rpc_fanout(rpc_fanout_t *calls, size_t n, const char *method, double deadline_s) {
    rpc_fanout_t *one[8];
    rpc_fanout_t **by = n <= 4 ? one : xcalloc(2 * n, sizeof *by);
    rpc_fanout_t **over_grpc = by, **over_stream = by + n;
    size_t ng = 0, ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (stream_ready(calls[i].ch, deadline_s))
            over_stream[ns++] = &calls[i];
        else
            over_grpc[ng++] = &calls[i];
    }
    size_t failed = 0;
    for (size_t i = 0; i < ng; i++)
        if (over_grpc[i]->pack)
            packed_blob(over_grpc[i]);
    if (ns > 0) {
        failed += stream_fanout(over_stream, ns, method, deadline_s);
        /* Zero-copy requests are written: give each back once, unless a
         * gRPC call shares it (which gives it back itself). */
        for (size_t i = 0; i < ns; i++) {
            rpc_fanout_t *f = over_stream[i];
            bool first = f->release != NULL;
            for (size_t j = 0; j < i && first; j++)
                first = !(over_stream[j]->req == f->req && over_stream[j]->len == f->len);
            for (size_t j = 0; j < ng && first; j++)
                first = !(over_grpc[j]->req == f->req && over_grpc[j]->len == f->len);
            if (first)
                f->release(f->release_arg);
        }
    }
    if (ng > 0)
        failed += grpc_fanout(over_grpc, ng, method, deadline_s);
    for (size_t i = 0; i < n; i++)
        unpacked(&calls[i]);
    if (by != one)
        free(by);
    return failed;
}

int rpc_call(rpc_channel_t *ch, const char *method, const void *req, size_t len, double deadline_s,
             rpc_buf_t *resp, char *err, size_t errlen) {
    rpc_fanout_t f;
    memset(&f, 0, sizeof f);
    f.ch = ch;
    f.req = req;
    f.len = len;
    f.resp = resp;
    rpc_fanout(&f, 1, method, deadline_s);
    if (f.code != RPC_OK)
        ps_errf(err, errlen, "%s", f.err);
    return f.code;
}

/* ---- Retries ------------------------------------------------------------------ */

rpc_retry_t rpc_retry_default(void) {
    rpc_retry_t p;
    memset(&p, 0, sizeof p);
    p.initial_s = 0.05;
    p.max_s = 2.0;
    p.multiplier = 2.0;
    p.jitter = 0.2;
    p.max_attempts = 10;
    return p;
}

/* Uniform in [0, 1), per thread; only spreads retries apart, so any seed does. */
static double uniform01(void) {
    static _Thread_local uint64_t state;
    if (state == 0)
        state = ((uint64_t)getpid() << 32) ^ (uint64_t)(ps_now() * 1e9) ^ (uintptr_t)&state;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) / 9007199254740992.0;
}

static int stopped(const rpc_retry_t *p) {
    return p->stop && *p->stop;
}

/* Sleeps for seconds, waking early when the stop flag is raised. */
static void backoff_sleep(double seconds, const rpc_retry_t *p) {
    double until = ps_now() + seconds;
    for (double left = seconds; left > 0 && !stopped(p); left = until - ps_now()) {
        double step = PS_MIN(left, 0.05);
        struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

int rpc_call_retry(rpc_channel_t *ch, const char *method, const void *req, size_t len,
                   double deadline_s, const rpc_retry_t *policy, rpc_buf_t *resp, char *err,
                   size_t errlen) {
    rpc_retry_t p = policy ? *policy : rpc_retry_default();
    double t0 = ps_now(), wait = p.initial_s;
    char last[PS_ERRLEN] = "";
    int code = RPC_UNAVAILABLE, attempt = 0;
    for (;;) {
        attempt++;
        /* No attempt outlives the policy's time limit. */
        double dl = deadline_s;
        bool clipped = false;
        if (p.max_total_s > 0) {
            double left = PS_MAX(t0 + p.max_total_s - ps_now(), 1e-3);
            clipped = dl <= 0 || left < dl;
            dl = clipped ? left : dl;
        }
        char prev[PS_ERRLEN];
        memcpy(prev, last, sizeof prev);
        code = rpc_call(ch, method, req, len, dl, resp, last, sizeof last);
        if (code == RPC_DEADLINE_EXCEEDED && clipped && attempt > 1) {
            /* The policy's time ran out while this attempt was still
             * connecting: what stands is the earlier attempts' answer. */
            code = RPC_UNAVAILABLE;
            memcpy(last, prev, sizeof last);
            break;
        }
        if (code != RPC_UNAVAILABLE)
            break;
        double sleep_s = wait * (1.0 + p.jitter * (2.0 * uniform01() - 1.0));
        int out_of_attempts = p.max_attempts > 0 && attempt >= p.max_attempts;
        int out_of_time = p.max_total_s > 0 && ps_now() + sleep_s - t0 > p.max_total_s;
        if (out_of_attempts || out_of_time || stopped(&p))
            break;
        if (p.on_retry)
            p.on_retry(p.arg, attempt, sleep_s, last);
        backoff_sleep(sleep_s, &p);
        if (stopped(&p))
            break;
        wait = PS_MIN(wait * p.multiplier, p.max_s);
    }
    if (code == RPC_OK)
        return code;
    if (code == RPC_UNAVAILABLE)
        ps_errf(err, errlen, "%s (gave up after %d attempt%s in %.2f s%s)", last, attempt,
                attempt == 1 ? "" : "s", ps_now() - t0, stopped(&p) ? ", stopping" : "");
    else
        ps_errf(err, errlen, "%s", last);
    return code;
}

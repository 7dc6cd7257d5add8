/* The client: channels, unary calls and fan-out on a completion queue of their
 * own, and the retry wrapper. A unary call is a fan-out of one; the calls of
 * a fan-out whose channels have a tensor stream go over it instead
 * (stream_client.c). */
#include "common/rpc/stream_internal.h"

#include <errno.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

struct rpc_channel {
    pthread_mutex_t mu; /* cur and the refs of every chan_ref_t */
    chan_ref_t *cur;
    grpc_channel_credentials *creds; /* kept to make the channel again */
    grpc_arg args[RPC_MAX_ARGS + 1]; /* + the local subchannel pool of a renewed channel */
    size_t nargs;
    atomic_int renew; /* a call failed UNAVAILABLE: the next one gets a new channel */
    rpc_pool_t *pool; /* copies of requests */
    char target[256];
    size_t max_recv, max_send;
    stream_chan_t *stream; /* its tensor stream */
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
    ch->max_recv = opt->max_recv ? opt->max_recv : RPC_DEFAULT_MAX_MESSAGE;
    ch->max_send = opt->max_send ? opt->max_send : RPC_DEFAULT_MAX_MESSAGE;
    ch->stream =
        stream__chan_new(target, opt->stream && !opt->tls_ca && !opt->tls_cert && !opt->tls_key,
                         opt->shm, ch->max_send, ch->max_recv);
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
    stream__chan_free(ch->stream);
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
    return stream__chan_transport(ch->stream);
}

int rpc_channel_stream_port(rpc_channel_t *ch) {
    return stream__chan_port(ch->stream);
}

stream_chan_t *rpc__channel_stream(rpc_channel_t *ch) {
    return ch->stream;
}

void rpc__channel_renew(rpc_channel_t *ch) {
    atomic_store(&ch->renew, 1);
}

void rpc__packed_blob(rpc_fanout_t *f) {
    f->blob = rpc_channel_blob(f->ch, f->len);
    f->pack(f->pack_arg, rpc_blob_data(f->blob));
    f->req = rpc_blob_data(f->blob);
}

/* Undoes rpc__packed_blob. */
static void unpacked(rpc_fanout_t *f) {
    if (!f->pack || !f->blob)
        return;
    rpc_blob_unref(f->blob);
    f->blob = NULL;
    f->req = NULL;
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
            stream__chan_forget(f->ch->stream); /* a restarted server listens elsewhere */
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

/* Seconds left until deadline (absolute; 0: none), as grpc_fanout takes them. */
static double left_of(double deadline) {
    return deadline > 0 ? PS_MAX(deadline - ps_now(), 1e-6) : 0;
}

/* Whether calls on ch go over its tensor stream: asks the server where it
 * is first, over gRPC, when the channel wants one and has not asked. */
static bool stream_ready(rpc_channel_t *ch, double deadline) {
    if (!stream__chan_unknown(ch->stream))
        return stream__chan_on(ch->stream);
    rpc_buf_t resp = {0};
    rpc_fanout_t f;
    memset(&f, 0, sizeof f);
    f.ch = ch;
    f.resp = &resp;
    rpc_fanout_t *one = &f;
    double left = left_of(deadline);
    grpc_fanout(&one, 1, RPC_STREAM_PORT_METHOD, left > 0 ? PS_MIN(left, 5.0) : 5.0);
    int on = stream__chan_offer(ch->stream, f.code, &resp);
    rpc_buf_free(&resp);
    return on;
}

size_t rpc_fanout(rpc_fanout_t *calls, size_t n, const char *method, double deadline_s) {
    /* One deadline for every step of the call, whichever transport. */
    double deadline = deadline_s > 0 ? ps_now() + deadline_s : 0;
    rpc_fanout_t *one[8];
    rpc_fanout_t **by = n <= 4 ? one : xcalloc(2 * n, sizeof *by);
    rpc_fanout_t **over_grpc = by, **over_stream = by + n;
    size_t ng = 0, ns = 0;
    for (size_t i = 0; i < n; i++) {
        if (stream_ready(calls[i].ch, deadline))
            over_stream[ns++] = &calls[i];
        else
            over_grpc[ng++] = &calls[i];
    }
    size_t failed = 0;
    for (size_t i = 0; i < ng; i++)
        if (over_grpc[i]->pack)
            rpc__packed_blob(over_grpc[i]);
    if (ns > 0) {
        failed += stream__fanout(over_stream, ns, method, deadline);
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
        failed += grpc_fanout(over_grpc, ng, method, left_of(deadline));
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

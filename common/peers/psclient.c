#include "common/peers/psclient.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/log.h"
#include "common/base/util.h"
#include "common/model/placement.h"
#include "common/peers/codec.h"
#include "common/peers/fields.h"
#include "common/peers/psclient_rows.h"
#include "common/peers/pull_read.h"
#include "common/rpc/msg.h"
#include "common/rpc/retry.h"
#include "common/rpc/rpc.h"
#include "common/rpc/wire.h"
#include "common/train/store.h"

/* Gradients clamped by fp16 (rpc.wire_dtype fp16): warned of, limited. */
static log_limit_t clamp_limit;

/* Where one PS's pull response goes, and what went wrong with it. */
typedef struct {
    psclient_t *p;
    size_t ps;
    float *params;
    int rc;
    char err[PS_ERRLEN];
} pull_sink_t;

typedef struct {
    rpc_channel_t *ch;
    rpc_buf_t req, resp;
    Pstrain__PushRequest push; /* the push in flight, packed where it goes */
    pull_sink_t sink;          /* the pull in flight */
    uint64_t step;             /* this PS's step at our last pull */
    uint64_t prev_step;        /* its step at the pull before that */
    uint64_t lineage;          /* this PS's lineage at our last pull */
    int stream_port;           /* the tensor stream port last told; -1 before */
    Pstrain__Tensor *t;        /* push tensors: their data points into the caller's gradients */
    Pstrain__Tensor **sel;     /* the tensors of one push */
    size_t nt;
} ps_link_t;

struct psclient {
    const model_t *model;
    rpc_options_t rpc;
    double deadline_secs;
    rpc_retry_t retry; /* the fan-out's backoff */
    psclient_events_t ev;
    Pstrain__Caller caller;
    placement_t placement;
    size_t nps;
    ps_link_t *ps;
    rpc_fanout_t *fan, *pending;
    size_t *which;
    psclient_stop_fn stop;
    void *stop_arg;
    bool pulled;       /* a pull has set every link's step */
    bool tag_previous; /* pushes carry the step of the pull before the last */
    uint64_t push_seq; /* the last push's number (a retry repeats it) */
    /* rpc.wire_dtype bf16 or fp16 (dtype: the WireDtype of large tensors),
     * rpc.push_topk: a model slab of what each value's pushes left out
     * (error feedback), and the bytes pushed (2 a value). */
    uint64_t dtype;
    float *residual;
    uint8_t *wire16;
    uint8_t *pull16; /* 16-bit pull answers, copied out (2 bytes a value) */
    /* The sparse tables' rows of the batch set by psclient_set_batch (NULL
     * without sparse tables); pulls and pushes move only those while on. */
    psclient_rows_t *rows;
    bool rows_on;
    uint64_t bytes_pulled, bytes_pushed; /* message bytes, every PS together */
    /* rpc.push_topk: the fraction; per partition (at its slab offset) the
     * indices and values pushed; scratch, a slab's worth of floats. */
    double topk;
    uint32_t *topi;
    uint8_t *topv;
    float *scratch;
    float *velocity; /* push_topk_momentum: momentum correction's u */
    float topk_momentum;
    uint64_t fp16_clamped;
};

/* Where a partition's rows start in a model slab, in elements. */
static size_t part_offset(const model_t *m, const placement_part_t *part) {
    const var_t *v = &m->vars[part->var];
    return v->offset + part->row_begin * store_row_size(v);
}

/* The tensors a push to PS k carries; pack_push points their data at the
 * gradient slab of each push. */
static void build_views(psclient_t *p, size_t k) {
    const size_t *idx;
    size_t n = placement_ps_parts(&p->placement, (int)k, &idx);
    ps_link_t *l = &p->ps[k];
    l->nt = n;
    l->t = xcalloc(n ? n : 1, sizeof *l->t);
    l->sel = xcalloc(n + p->model->nvars, sizeof *l->sel); /* + the tables' rows */
    for (size_t i = 0; i < n; i++) {
        const placement_part_t *part = &p->placement.parts[idx[i]];
        const var_t *v = &p->model->vars[part->var];
        Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
        l->t[i] = init;
        l->t[i].name = (char *)v->name;
        l->t[i].row_begin = part->row_begin;
        l->t[i].rows = part->rows;
        l->t[i].data.len = part->size * sizeof(float);
    }
}

/* Doubling from 50 ms up to the cap, without a limit on attempts: a worker
 * waits out a PS that restarts, however long, unless told a time limit. */
static rpc_retry_t fanout_policy(const psclient_options_t *o) {
    rpc_retry_t r = rpc_retry_default();
    r.max_s = o->retry_max_secs;
    r.max_attempts = 0;
    r.max_total_s = o->retry_max_total_secs;
    r.stop = o->stop_flag;
    return r;
}

const char *psclient_status_name(psclient_status_t s) {
    switch (s) {
    case PSCLIENT_OK:
        return "ok";
    case PSCLIENT_STOPPED:
        return "stopped";
    case PSCLIENT_INVALID:
        return "invalid";
    case PSCLIENT_UNREACHABLE:
        return "unreachable";
    }
    return "unknown";
}

psclient_t *psclient_create(const psclient_options_t *o, const model_t *m,
                            const Pstrain__Caller *caller, psclient_stop_fn stop, void *arg,
                            char *err, size_t errlen) {
    psclient_t *p = xcalloc(1, sizeof *p);
    p->model = m;
    p->rpc = o->rpc;
    p->deadline_secs = o->deadline_secs;
    p->retry = fanout_policy(o);
    p->caller = *caller;
    p->stop = stop;
    p->stop_arg = arg;
    p->nps = o->nps;
    p->dtype = o->wire_fp16   ? WIRE_DTYPE_FLOAT16
               : o->wire_bf16 ? WIRE_DTYPE_BFLOAT16
                              : WIRE_DTYPE_FLOAT32;
    p->topk = o->push_topk;
    size_t slab = m->nparams ? m->nparams : 1;
    if (p->dtype != WIRE_DTYPE_FLOAT32 || p->topk > 0)
        p->residual = xcalloc(slab, sizeof(float));
    if (p->dtype != WIRE_DTYPE_FLOAT32) {
        p->wire16 = xmalloc(2 * slab);
        p->pull16 = xmalloc(2 * slab);
    }
    if (p->topk > 0) {
        p->topi = xmalloc(slab * sizeof *p->topi);
        p->topv = xmalloc(slab * sizeof(float));
        p->scratch = xmalloc(slab * sizeof(float));
        if (o->push_topk_momentum > 0) {
            p->velocity = xcalloc(slab, sizeof(float));
            p->topk_momentum = (float)o->push_topk_momentum;
        }
    }
    p->ps = xcalloc(p->nps, sizeof *p->ps);
    p->fan = xcalloc(p->nps, sizeof *p->fan);
    p->pending = xcalloc(p->nps, sizeof *p->pending);
    p->which = xcalloc(p->nps, sizeof *p->which);
    if (placement_compute(&p->placement, m, (int)p->nps, NULL, err, errlen))
        goto fail;
    p->rows = psclient_rows_create(m, &p->placement);
    for (size_t i = 0; i < p->nps; i++) {
        if (rpc_channel_create(&p->ps[i].ch, o->addrs[i], &p->rpc, err, errlen))
            goto fail;
        build_views(p, i);
        p->ps[i].stream_port = -1;
    }
    return p;
fail:
    psclient_free(p);
    return NULL;
}

void psclient_free(psclient_t *p) {
    if (!p)
        return;
    for (size_t i = 0; i < p->nps; i++) {
        if (p->ps[i].ch)
            rpc_channel_destroy(p->ps[i].ch);
        rpc_buf_free(&p->ps[i].req);
        rpc_buf_free(&p->ps[i].resp);
        free(p->ps[i].t);
        free(p->ps[i].sel);
    }
    psclient_rows_free(p->rows);
    placement_free(&p->placement);
    free(p->residual);
    free(p->wire16);
    free(p->pull16);
    free(p->topi);
    free(p->topv);
    free(p->scratch);
    free(p->velocity);
    free(p->ps);
    free(p->fan);
    free(p->pending);
    free(p->which);
    free(p);
}

void psclient_set_events(psclient_t *p, const psclient_events_t *ev) {
    p->ev = *ev;
}

size_t psclient_nps(const psclient_t *p) {
    return p->nps;
}

size_t psclient_set_batch(psclient_t *p, const float *x, size_t n) {
    p->rows_on = p->rows && x;
    return p->rows_on ? psclient_rows_set(p->rows, x, n) : 0;
}

void psclient_bytes(const psclient_t *p, uint64_t *pulled, uint64_t *pushed) {
    *pulled = p->bytes_pulled;
    *pushed = p->bytes_pushed;
}

void psclient_tag_previous_pull(psclient_t *p, bool on) {
    p->tag_previous = on;
}

uint64_t psclient_step(const psclient_t *p, size_t ps) {
    return p->ps[ps].step;
}

static bool stopped(const psclient_t *p) {
    return (p->retry.stop && *p->retry.stop) || (p->stop && p->stop(p->stop_arg));
}

/* A PS that stops cancels the calls it cannot finish: as transient as one
 * that cannot be reached, or one whose deadline passed. */
static bool transient(int code) {
    return code == RPC_UNAVAILABLE || code == RPC_DEADLINE_EXCEEDED || code == RPC_CANCELLED;
}

/* Keeps only the calls that failed in a way worth retrying; a permanent
 * failure ends the fan-out with its error in err. */
static psclient_status_t keep_retryable(psclient_t *p, size_t *n, char *err, size_t errlen) {
    size_t left = 0;
    for (size_t i = 0; i < *n; i++) {
        p->fan[p->which[i]] = p->pending[i];
        int code = p->pending[i].code;
        if (code == RPC_OK)
            continue;
        if (!transient(code)) {
            ps_errf(err, errlen, "%s", p->pending[i].err);
            return PSCLIENT_INVALID;
        }
        p->pending[left] = p->pending[i];
        p->which[left++] = p->which[i];
    }
    *n = left;
    return PSCLIENT_OK;
}

/* Sleeps before the next attempt; a status other than PSCLIENT_OK when the
 * loop should end instead, with err filled. */
static psclient_status_t before_retry(psclient_t *p, rpc_backoff_t *b, const char *method,
                                      char *err, size_t errlen) {
    const rpc_fanout_t *first = &p->pending[0];
    double sleep_s = rpc_backoff_next(b);
    /* A deadline already waited; an unreachable peer fails at once. */
    if (first->code != RPC_UNAVAILABLE)
        sleep_s = 0;
    if (rpc_backoff_exhausted(b, sleep_s)) {
        ps_errf(err, errlen, "%s (gave up after %d attempts in %.1f s)", first->err, b->attempts,
                rpc_backoff_elapsed(b));
        return PSCLIENT_UNREACHABLE;
    }
    if (stopped(p) || rpc_backoff_sleep(b, sleep_s) || stopped(p)) {
        ps_errf(err, errlen, "%s: stopped while retrying: %s", method, first->err);
        return PSCLIENT_STOPPED;
    }
    return PSCLIENT_OK;
}

/* Runs the prepared fan-out until every call is OK, retrying UNAVAILABLE,
 * DEADLINE_EXCEEDED and CANCELLED with capped backoff; only the calls that
 * failed are sent again. */
static psclient_status_t fanout_until_ok(psclient_t *p, const char *method, char *err,
                                         size_t errlen) {
    rpc_backoff_t b;
    rpc_backoff_init(&b, &p->retry);
    size_t n = p->nps;
    for (size_t i = 0; i < n; i++) {
        p->pending[i] = p->fan[i];
        p->which[i] = i;
    }
    for (;;) {
        rpc_backoff_attempt(&b);
        rpc_fanout(p->pending, n, method, p->deadline_secs);
        psclient_status_t s = keep_retryable(p, &n, err, errlen);
        if (s != PSCLIENT_OK)
            return s;
        if (n == 0)
            break;
        if (b.attempts == 1 && p->ev.retrying)
            p->ev.retrying(p->ev.arg, p->pending[0].err, p->retry.max_s);
        if ((s = before_retry(p, &b, method, err, errlen)) != PSCLIENT_OK)
            return s;
    }
    if (b.attempts > 1 && p->ev.recovered)
        p->ev.recovered(p->ev.arg, method);
    return PSCLIENT_OK;
}

static void prepare(psclient_t *p, size_t i) {
    p->fan[i] = (rpc_fanout_t){.ch = p->ps[i].ch,
                               .req = p->ps[i].req.data,
                               .len = p->ps[i].req.len,
                               .resp = &p->ps[i].resp};
}

/* pull_read's callback: copies one tensor into params, checking it against
 * the placement every role computes. */
static int take_tensor(void *arg, const pull_tensor_t *t) {
    pull_sink_t *k = arg;
    psclient_t *p = k->p;
    if (t->row_ids.len)
        return p->rows_on ? psclient_rows_take(p->rows, k->ps, t, k->params, k->err, sizeof k->err)
                          : ps_errf(k->err, sizeof k->err, "ps%zu sent rows not asked for", k->ps);
    int v = t->name_len <= PULL_READ_NAME_MAX ? model_find_var(p->model, t->name) : -1;
    const placement_part_t *part = v >= 0 ? placement_find(&p->placement, v, t->row_begin) : NULL;
    /* float32, or the 16-bit encoding asked for */
    bool dtype_ok = t->dtype == WIRE_DTYPE_FLOAT32 || t->dtype == p->dtype;
    size_t bytes = codec_value_bytes(t->dtype);
    if (!part || part->ps != (int)k->ps || part->row_begin != t->row_begin ||
        part->rows != t->rows || !dtype_ok || t->data.len != part->size * bytes)
        return ps_errf(k->err, sizeof k->err,
                       "ps%zu sent %s rows [%llu, +%llu) that placement does not give it: do "
                       "all roles run the same model and cluster spec?",
                       k->ps, t->name, (unsigned long long)t->row_begin,
                       (unsigned long long)t->rows);
    float *dst = k->params + part_offset(p->model, part);
    if (t->dtype == WIRE_DTYPE_FLOAT32) {
        wire_copy(&t->data, dst);
        return 0;
    }
    /* Copied out whole (it may straddle segments), then widened. */
    uint8_t *tmp = p->pull16 + 2 * part_offset(p->model, part);
    wire_copy(&t->data, tmp);
    codec_decode(t->dtype, dst, tmp, part->size);
    return 0;
}

/* The fan-out's consume callback: reads one PS's PullResponse where gRPC
 * received it and copies each tensor straight into params. */
static void take_pull(void *arg, const rpc_msg_t *m) {
    pull_sink_t *k = arg;
    uint64_t step, lineage;
    k->err[0] = '\0';
    k->p->bytes_pulled += m->len;
    k->rc = pull_read(m, &step, &lineage, take_tensor, k);
    if (k->rc < 0 && !k->err[0])
        ps_errf(k->err, sizeof k->err, "ps%zu sent a malformed PullResponse", k->ps);
    ps_link_t *l = &k->p->ps[k->ps];
    l->prev_step = k->p->pulled ? l->step : step;
    l->step = step;
    k->p->ps[k->ps].lineage = lineage;
}

/* Tells the events of a PS whose transport changed since the last pull. */
static void note_transports(psclient_t *p) {
    for (size_t i = 0; i < p->nps; i++) {
        int port = rpc_channel_stream_port(p->ps[i].ch);
        if (port == p->ps[i].stream_port)
            continue;
        p->ps[i].stream_port = port;
        if (p->ev.transport)
            p->ev.transport(p->ev.arg, i, rpc_channel_transport(p->ps[i].ch), port);
    }
}

/* Whether a pull or push moves variable v whole, given the mask: the
 * tables go by rows in pulls and pushes of the whole model while rows are
 * on (a masked one, of the overlapped loop, moves them whole). */
static bool moves_whole(const psclient_t *p, const uint8_t *mask, size_t v) {
    if (mask)
        return mask[v];
    return !(p->rows_on && p->model->vars[v].sparse);
}

/* The names of the variables in mask (all when mask is NULL: no names),
 * without the sparse tables while their rows are on (then always named). */
static size_t mask_names(const psclient_t *p, const uint8_t *mask, char **names) {
    size_t n = 0;
    for (size_t v = 0; (mask || p->rows_on) && v < p->model->nvars; v++)
        if (moves_whole(p, mask, v))
            names[n++] = (char *)p->model->vars[v].name;
    return n;
}

/* The WireDtype of PS i's large tensors: rpc.wire_dtype over the network
 * (gRPC, the TCP stream), float32 through shared memory, where the bytes
 * cost a memcpy and converting them costs more than it saves (the CNN on
 * one host: 12% fewer images/s in bfloat16, docs/scaling.md). A channel
 * that has not called yet counts as the network. */
static uint64_t link_dtype(psclient_t *p, size_t i) {
    if (p->dtype == WIRE_DTYPE_FLOAT32 || strcmp(rpc_channel_transport(p->ps[i].ch), "shm") != 0)
        return p->dtype;
    return WIRE_DTYPE_FLOAT32;
}

psclient_status_t psclient_pull_vars(psclient_t *p, float *params, bool wait_next,
                                     const uint8_t *mask, char *err, size_t errlen) {
    char **names = xcalloc(p->model->nvars, sizeof *names);
    size_t nnames = mask_names(p, mask, names);
    for (size_t i = 0; i < p->nps; i++) {
        Pstrain__PullRequest req = PSTRAIN__PULL_REQUEST__INIT;
        req.caller = &p->caller;
        req.min_step = wait_next && p->pulled ? p->ps[i].step + 1 : 0;
        req.lineage = p->ps[i].lineage;
        req.n_names = nnames;
        req.names = names;
        req.wire_dtype = (Pstrain__WireDtype)link_dtype(p, i);
        if (p->rows_on && !mask)
            req.n_rows = psclient_rows_selects(p->rows, i, &req.rows);
        msg_pack(&p->ps[i].req, &req.base);
        prepare(p, i);
        pull_sink_t *k = &p->ps[i].sink;
        *k = (pull_sink_t){.p = p, .ps = i, .params = params};
        p->fan[i].consume = take_pull;
        p->fan[i].consume_arg = k;
    }
    free(names);
    psclient_status_t s = fanout_until_ok(p, "/pstrain.ParameterServer/Pull", err, errlen);
    if (s != PSCLIENT_OK)
        return s;
    for (size_t i = 0; i < p->nps; i++)
        if (p->ps[i].sink.rc) {
            ps_errf(err, errlen, "%s", p->ps[i].sink.err);
            return PSCLIENT_INVALID;
        }
    p->pulled = true;
    note_transports(p);
    return PSCLIENT_OK;
}

psclient_status_t psclient_pull(psclient_t *p, float *params, bool wait_next, char *err,
                                size_t errlen) {
    return psclient_pull_vars(p, params, wait_next, NULL, err, errlen);
}

/* rpc_fanout_t.pack: the push written straight into the memory it is sent
 * from (the tensor stream's shared memory, or a send buffer). */
static void write_push(void *arg, uint8_t *dst) {
    ps_link_t *l = arg;
    protobuf_c_message_pack(&l->push.base, dst);
}

/* Points a push tensor at its partition's gradient: the float32 values in
 * grads; their 16-bit encoding (with error feedback) when the wire carries
 * bf16 or fp16 and the partition is large enough; or, with push_topk, the
 * largest values of a large partition and their indices. A moving
 * statistic's batch statistic always travels whole as float32: error
 * feedback would carry one batch's rounding into the next batch's
 * statistic. */
static void set_push_data(psclient_t *p, Pstrain__Tensor *t, const float *grads,
                          const placement_part_t *part, uint64_t dtype) {
    size_t off = part_offset(p->model, part);
    bool large = part->size >= WIRE_BF16_MIN_VALUES && !p->model->vars[part->var].moving;
    t->n_indices = 0;
    t->indices = NULL;
    t->dtype = large ? (Pstrain__WireDtype)dtype : PSTRAIN__WIRE_DTYPE__FLOAT32;
    if (large && p->topk > 0) {
        size_t k = codec_topk_count(part->size, p->topk);
        uint8_t *values = p->topv + sizeof(float) * off;
        p->fp16_clamped += codec_topk_feedback(
            dtype, grads + off, p->residual + off, part->size, k, p->topi + off, values, p->scratch,
            p->velocity ? p->velocity + off : NULL, p->topk_momentum);
        t->n_indices = k;
        t->indices = p->topi + off;
        t->data = (ProtobufCBinaryData){k * codec_value_bytes(dtype), values};
        return;
    }
    /* float32 goes as it is: a residual left from 16-bit pushes before the
     * PS's link turned to shared memory (a restart on this host) stays
     * unsent, one push's rounding. */
    if (t->dtype == PSTRAIN__WIRE_DTYPE__FLOAT32) {
        t->data = (ProtobufCBinaryData){part->size * sizeof(float), (uint8_t *)(grads + off)};
        return;
    }
    p->fp16_clamped += codec_encode_feedback(dtype, p->wire16 + 2 * off, grads + off,
                                             p->residual + off, part->size);
    t->data = (ProtobufCBinaryData){2 * part->size, p->wire16 + 2 * off};
}

/* Sets up PS i's push of the masked variables' partitions of grads. */
static void pack_push(psclient_t *p, size_t i, const float *grads, const uint8_t *mask,
                      bool partial) {
    ps_link_t *l = &p->ps[i];
    const size_t *idx;
    placement_ps_parts(&p->placement, (int)i, &idx);
    size_t n = 0;
    uint64_t dtype = link_dtype(p, i);
    for (size_t k = 0; k < l->nt; k++) {
        const placement_part_t *part = &p->placement.parts[idx[k]];
        if (!moves_whole(p, mask, (size_t)part->var))
            continue;
        set_push_data(p, &l->t[k], grads, part, dtype);
        l->sel[n++] = &l->t[k];
    }
    if (p->rows_on && !mask)
        n += psclient_rows_push(p->rows, i, grads, l->sel + n);
    Pstrain__PushRequest req = PSTRAIN__PUSH_REQUEST__INIT;
    req.caller = &p->caller;
    req.step = p->tag_previous ? l->prev_step : l->step;
    req.n_grads = n;
    req.grads = l->sel;
    req.partial = partial;
    req.seq = p->push_seq;
    l->push = req;
    p->bytes_pushed += protobuf_c_message_get_packed_size(&l->push.base);
    p->fan[i] = (rpc_fanout_t){.ch = l->ch,
                               .len = protobuf_c_message_get_packed_size(&l->push.base),
                               .pack = write_push,
                               .pack_arg = l,
                               .resp = &l->resp};
}

psclient_status_t psclient_push_vars(psclient_t *p, const float *grads, const uint8_t *mask,
                                     bool partial, size_t *stale, char *err, size_t errlen) {
    p->push_seq++;
    uint64_t clamped = p->fp16_clamped;
    for (size_t i = 0; i < p->nps; i++)
        pack_push(p, i, grads, mask, partial);
    if (p->fp16_clamped > clamped)
        log_warn_limited(&clamp_limit,
                         "push: %llu gradient values beyond fp16's range sent as +-65504 "
                         "(rpc.wire_dtype fp16; %llu so far); the rest is kept for later pushes",
                         (unsigned long long)(p->fp16_clamped - clamped),
                         (unsigned long long)p->fp16_clamped);
    psclient_status_t s = fanout_until_ok(p, "/pstrain.ParameterServer/Push", err, errlen);
    if (s != PSCLIENT_OK)
        return s;
    *stale = 0;
    for (size_t i = 0; i < p->nps; i++) {
        Pstrain__PushResponse *r =
            pstrain__push_response__unpack(NULL, p->ps[i].resp.len, p->ps[i].resp.data);
        if (r && r->stale)
            (*stale)++;
        if (r)
            pstrain__push_response__free_unpacked(r, NULL);
    }
    return PSCLIENT_OK;
}

psclient_status_t psclient_push(psclient_t *p, const float *grads, size_t *stale, char *err,
                                size_t errlen) {
    return psclient_push_vars(p, grads, NULL, false, stale, err, errlen);
}

uint64_t psclient_fp16_clamped(const psclient_t *p) {
    return p->fp16_clamped;
}

/* Sends one request to every PS at once; the number that failed. */
static size_t fanout_send(psclient_t *p, const ProtobufCMessage *req, const char *method,
                          double deadline_s) {
    for (size_t i = 0; i < p->nps; i++) {
        msg_pack(&p->ps[i].req, req);
        prepare(p, i);
    }
    return rpc_fanout(p->fan, p->nps, method, deadline_s);
}

/* fanout_send; 0 when all answered OK, else -1 with the first failure in err. */
static int fanout_all(psclient_t *p, const ProtobufCMessage *req, const char *method,
                      double deadline_s, char *err, size_t errlen) {
    if (fanout_send(p, req, method, deadline_s) == 0)
        return 0;
    for (size_t i = 0; i < p->nps; i++)
        if (p->fan[i].code != RPC_OK)
            return ps_errf(err, errlen, "%s", p->fan[i].err);
    return -1;
}

void psclient_shutdown(psclient_t *p, const char *reason, double deadline_s) {
    Pstrain__ShutdownRequest req = PSTRAIN__SHUTDOWN_REQUEST__INIT;
    req.reason = (char *)reason;
    fanout_send(p, &req.base, "/pstrain.ParameterServer/Shutdown", deadline_s);
    for (size_t i = 0; i < p->nps; i++)
        if (p->fan[i].code != RPC_OK)
            log_warn("shutdown of ps%zu: %s", i, p->fan[i].err);
}

int psclient_save(psclient_t *p, uint64_t step, double deadline_s, char *err, size_t errlen) {
    Pstrain__SaveRequest req = PSTRAIN__SAVE_REQUEST__INIT;
    req.step = step;
    return fanout_all(p, &req.base, "/pstrain.ParameterServer/Save", deadline_s, err, errlen);
}

int psclient_restore(psclient_t *p, uint64_t step, uint64_t lineage, psclient_restore_t how,
                     double deadline_s, char *err, size_t errlen) {
    Pstrain__RestoreRequest req = PSTRAIN__RESTORE_REQUEST__INIT;
    req.step = step;
    req.lineage = lineage;
    req.initial = how == PSCLIENT_RESTORE_INITIAL;
    req.adopt = how == PSCLIENT_ADOPT;
    if (fanout_all(p, &req.base, "/pstrain.ParameterServer/Restore", deadline_s, err, errlen) == 0)
        return 0;
    for (size_t i = 0; i < p->nps; i++)
        if (p->fan[i].code == RPC_FAILED_PRECONDITION)
            return PSCLIENT_RESTORE_REFUSED;
    return -1;
}

int psclient_stats(psclient_t *p, double deadline_s, psclient_stats_t *out) {
    Pstrain__StatsRequest req = PSTRAIN__STATS_REQUEST__INIT;
    char err[PS_ERRLEN];
    if (fanout_all(p, &req.base, "/pstrain.ParameterServer/Stats", deadline_s, err, sizeof err))
        return -1;
    for (size_t i = 0; i < p->nps; i++) {
        Pstrain__StatsResponse *r =
            pstrain__stats_response__unpack(NULL, p->ps[i].resp.len, p->ps[i].resp.data);
        if (!r)
            return -1;
        out[i] = (psclient_stats_t){.step = r->step,
                                    .lineage = r->lineage,
                                    .origin_step = r->origin_step,
                                    .incarnation = r->incarnation};
        pstrain__stats_response__free_unpacked(r, NULL);
    }
    return 0;
}

int64_t psclient_poll_step(psclient_t *p, double deadline_s) {
    Pstrain__StatsRequest req = PSTRAIN__STATS_REQUEST__INIT;
    ps_link_t *l = &p->ps[0];
    msg_pack(&l->req, &req.base);
    char err[PS_ERRLEN];
    if (rpc_call(l->ch, "/pstrain.ParameterServer/Stats", l->req.data, l->req.len, deadline_s,
                 &l->resp, err, sizeof err) != RPC_OK)
        return -1;
    Pstrain__StatsResponse *r = pstrain__stats_response__unpack(NULL, l->resp.len, l->resp.data);
    if (!r)
        return -1;
    int64_t step = (int64_t)r->step;
    pstrain__stats_response__free_unpacked(r, NULL);
    return step;
}

/* The parts of the gRPC layer that servers and clients share: status names,
 * channel and server arguments, TLS credentials, gRPC's log, received-message
 * flattening and the pool of send buffers. */
#include "common/rpc/rpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <uv.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"

#define SAME_CODE(ours, theirs) _Static_assert((int)(ours) == (int)(theirs), #ours)
SAME_CODE(RPC_OK, GRPC_STATUS_OK);
SAME_CODE(RPC_CANCELLED, GRPC_STATUS_CANCELLED);
SAME_CODE(RPC_UNKNOWN, GRPC_STATUS_UNKNOWN);
SAME_CODE(RPC_INVALID_ARGUMENT, GRPC_STATUS_INVALID_ARGUMENT);
SAME_CODE(RPC_DEADLINE_EXCEEDED, GRPC_STATUS_DEADLINE_EXCEEDED);
SAME_CODE(RPC_NOT_FOUND, GRPC_STATUS_NOT_FOUND);
SAME_CODE(RPC_ALREADY_EXISTS, GRPC_STATUS_ALREADY_EXISTS);
SAME_CODE(RPC_PERMISSION_DENIED, GRPC_STATUS_PERMISSION_DENIED);
SAME_CODE(RPC_RESOURCE_EXHAUSTED, GRPC_STATUS_RESOURCE_EXHAUSTED);
SAME_CODE(RPC_FAILED_PRECONDITION, GRPC_STATUS_FAILED_PRECONDITION);
SAME_CODE(RPC_ABORTED, GRPC_STATUS_ABORTED);
SAME_CODE(RPC_OUT_OF_RANGE, GRPC_STATUS_OUT_OF_RANGE);
SAME_CODE(RPC_UNIMPLEMENTED, GRPC_STATUS_UNIMPLEMENTED);
SAME_CODE(RPC_INTERNAL, GRPC_STATUS_INTERNAL);
SAME_CODE(RPC_UNAVAILABLE, GRPC_STATUS_UNAVAILABLE);
SAME_CODE(RPC_DATA_LOSS, GRPC_STATUS_DATA_LOSS);
SAME_CODE(RPC_UNAUTHENTICATED, GRPC_STATUS_UNAUTHENTICATED);

const char *rpc_grpc_version(void) {
    return grpc_version_string();
}

const char *rpc_libuv_version(void) {
    return uv_version_string();
}

const char *rpc_status_name(int code) {
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (code < 0 || (size_t)code >= PS_ARRAY_LEN(names))
        return "UNKNOWN_STATUS";
    return names[code];
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int rpc__check(grpc_call_error e, const char *what, const char *file, int line, char *err,
               size_t errlen) {
    if (e == GRPC_CALL_OK)
        return 0;
    char msg[PS_ERRLEN];
    snprintf(msg, sizeof msg, "%s:%d: %s: %s", base_name(file), line, what,
             grpc_call_error_to_string(e));
    log_error("rpc: %s", msg);
    return ps_errf(err, errlen, "%s", msg);
}

void rpc__status_err(char *err, size_t errlen, const char *method, const char *peer, int code,
                     const char *details, const char *file, int line) {
    ps_errf(err, errlen, "%s to %s: %s: %s (%s:%d)", method, peer, rpc_status_name(code),
            details && details[0] ? details : "no message", base_name(file), line);
}

void rpc_buf_reserve(rpc_buf_t *b, size_t n) {
    if (b->cap >= n)
        return;
    /* Round up so that messages that grow a little do not reallocate each time. */
    size_t cap = (n + ((size_t)64 << 10) - 1) & ~(((size_t)64 << 10) - 1);
    if (b->len == 0) {
        free(b->data);
        b->data = xmalloc(cap);
    } else {
        b->data = xrealloc(b->data, cap);
    }
    b->cap = cap;
}

void rpc_buf_free(rpc_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void rpc_tune_malloc(void) {
    /* 32 MiB is the largest mmap threshold glibc accepts; blocks above it are
     * still mapped fresh each time, which is why big buffers here are kept and
     * reused rather than allocated per message. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

int rpc_stream_threads(int n) {
    if (n > 0)
        return n;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return (int)PS_MAX(1L, PS_MIN(cpus / 2, (long)RPC_STREAM_AUTO_THREADS));
}

int rpc_parse_uids(const char *text, uid_t *uids, char *err, size_t errlen) {
    int n = 0;
    const char *p = text ? text : "";
    while (*p) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || *p < '0' || *p > '9' || errno || v > (unsigned long)UINT32_MAX - 1 ||
            (*end && *end != ','))
            return ps_errf(err, errlen,
                           "rpc.stream_allowed_uids: not a comma-separated list of uids at "
                           "\"%.20s\"",
                           p);
        if (n == RPC_MAX_ALLOWED_UIDS)
            return ps_errf(err, errlen, "rpc.stream_allowed_uids: more than %d uids",
                           RPC_MAX_ALLOWED_UIDS);
        if (uids)
            uids[n] = (uid_t)v;
        n++;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return ps_errf(err, errlen, "rpc.stream_allowed_uids: ends with a comma");
    }
    return n;
}

/* ---- gRPC's log -------------------------------------------------------------- */

static _Thread_local char last_grpc_error[PS_ERRLEN];
static _Thread_local int capturing;

/* gRPC's errors are mostly what peers cause (a failed TLS handshake per
 * bad client): limited, so that a flood of them cannot fill the log. */
static log_limit_t grpc_errors;

static void grpc_log_hook(gpr_log_func_args *a) {
    if (a->severity == GPR_LOG_SEVERITY_ERROR) {
        snprintf(last_grpc_error, sizeof last_grpc_error, "%s", a->message);
        if (!capturing)
            log_warn_limited(&grpc_errors, "grpc: %s (%s:%d)", a->message, base_name(a->file),
                             a->line);
    } else {
        log_debug("grpc: %s (%s:%d)", a->message, base_name(a->file), a->line);
    }
}

static void init_once(void) {
    gpr_set_log_function(grpc_log_hook);
    gpr_set_log_verbosity(log_threshold <= LOG_DEBUG ? GPR_LOG_SEVERITY_DEBUG
                                                     : GPR_LOG_SEVERITY_ERROR);
}

void rpc__init(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_once);
    grpc_init();
}

const char *rpc__log_last(void) {
    return last_grpc_error;
}

void rpc__log_capture(int on) {
    if (on)
        last_grpc_error[0] = '\0';
    capturing = on;
}

/* ---- Arguments ---------------------------------------------------------------- */

static grpc_arg int_arg(const char *key, int value) {
    grpc_arg a;
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)key;
    a.value.integer = value;
    return a;
}

static int size_limit(size_t v, const char *name, int *out, char *err, size_t errlen) {
    if (v == 0)
        v = RPC_DEFAULT_MAX_MESSAGE;
    if (v > INT_MAX)
        return ps_errf(err, errlen, "rpc: %s %zu is over gRPC's limit of %d bytes", name, v,
                       INT_MAX);
    *out = (int)v;
    return 0;
}

int rpc__args(grpc_arg *args, size_t *n, const rpc_options_t *opt, int server, char *err,
              size_t errlen) {
    int max_recv = 0, max_send = 0;
    if (size_limit(opt->max_recv, "max_recv", &max_recv, err, errlen) < 0 ||
        size_limit(opt->max_send, "max_send", &max_send, err, errlen) < 0)
        return -1;
    size_t k = 0;
    args[k++] = int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, max_recv);
    args[k++] = int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, max_send);
    if (server) {
        /* With SO_REUSEPORT (gRPC's default) a second server on a busy port
         * binds "successfully" and silently shares its connections. */
        args[k++] = int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0);
    } else {
        /* Retrying is rpc_call_retry's job; gRPC's own retries would also keep
         * a copy of every message sent. */
        args[k++] = int_arg(GRPC_ARG_ENABLE_RETRIES, 0);
        /* gRPC's reconnect backoff grows to 120 s by default, during which every
         * call fails at once: a restarted server would go unnoticed for minutes. */
        args[k++] = int_arg(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
        args[k++] = int_arg(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, (int)(RPC_RECONNECT_MAX_S * 1000));
        args[k++] = int_arg(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
    }
    *n = k;
    return 0;
}

/* ---- TLS ---------------------------------------------------------------------- */

typedef struct {
    char *ca, *cert, *key;
} pem_files_t;

static void pem_free(pem_files_t *p) {
    free(p->ca);
    free(p->cert);
    free(p->key);
}

static int read_pem(const char *path, const char *name, const char *marker, char **out, char *err,
                    size_t errlen) {
    char why[PS_ERRLEN];
    if (ps_read_file(path, out, NULL, why, sizeof why) < 0)
        return ps_errf(err, errlen, "rpc: cannot read %s file %s", name, why);
    if (!strstr(*out, marker)) {
        free(*out);
        *out = NULL;
        return ps_errf(err, errlen, "rpc: %s file %s holds no PEM \"%s\"", name, path, marker);
    }
    return 0;
}

/* 0 with no TLS configured, 1 with the files read, -1 on an error. A server
 * needs all three files; a client may give tls_ca alone, and then checks the
 * server without presenting a certificate of its own. */
static int read_tls(const rpc_options_t *opt, int server, pem_files_t *p, char *err,
                    size_t errlen) {
    memset(p, 0, sizeof *p);
    int ca = opt->tls_ca && opt->tls_ca[0], cert = opt->tls_cert && opt->tls_cert[0],
        key = opt->tls_key && opt->tls_key[0];
    if (!ca && !cert && !key)
        return 0;
    if (server && !(ca && cert && key))
        return ps_errf(err, errlen, "rpc: a server needs tls_ca, tls_cert and tls_key together");
    if (!ca || cert != key)
        return ps_errf(err, errlen, "rpc: a client needs tls_ca, and tls_cert with tls_key");
    if (read_pem(opt->tls_ca, "tls_ca", "-----BEGIN CERTIFICATE", &p->ca, err, errlen) < 0 ||
        (cert && read_pem(opt->tls_cert, "tls_cert", "-----BEGIN CERTIFICATE", &p->cert, err,
                          errlen) < 0) ||
        (key && read_pem(opt->tls_key, "tls_key", "PRIVATE KEY-----", &p->key, err, errlen) < 0)) {
        pem_free(p);
        return -1;
    }
    return 1;
}

int rpc__server_creds(const rpc_options_t *opt, grpc_server_credentials **out, char *err,
                      size_t errlen) {
    pem_files_t p;
    int tls = read_tls(opt, 1, &p, err, errlen);
    if (tls < 0)
        return -1;
    if (tls == 0) {
        *out = grpc_insecure_server_credentials_create();
        return 0;
    }
    grpc_ssl_pem_key_cert_pair pair = {p.key, p.cert};
    /* gRPC copies the PEM strings. */
    grpc_ssl_server_certificate_config *cfg =
        grpc_ssl_server_certificate_config_create(p.ca, &pair, 1);
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config(
            GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, cfg);
    *out = grpc_ssl_server_credentials_create_with_options(o);
    pem_free(&p);
    if (!*out)
        return ps_errf(err, errlen, "rpc: gRPC refused the TLS files %s, %s, %s (%s)", opt->tls_ca,
                       opt->tls_cert, opt->tls_key, rpc__log_last());
    return 0;
}

int rpc__channel_creds(const rpc_options_t *opt, grpc_channel_credentials **out, char *err,
                       size_t errlen) {
    pem_files_t p;
    int tls = read_tls(opt, 0, &p, err, errlen);
    if (tls < 0)
        return -1;
    if (tls == 0) {
        *out = grpc_insecure_credentials_create();
        return 0;
    }
    grpc_ssl_pem_key_cert_pair pair = {p.key, p.cert};
    *out = grpc_ssl_credentials_create(p.ca, p.cert ? &pair : NULL, NULL, NULL);
    pem_free(&p);
    if (!*out)
        return ps_errf(err, errlen, "rpc: gRPC refused the TLS files %s, %s, %s (%s)", opt->tls_ca,
                       opt->tls_cert, opt->tls_key, rpc__log_last());
    return 0;
}

/* ---- Messages ----------------------------------------------------------------- */

int rpc__flatten(grpc_byte_buffer *bb, rpc_buf_t *out) {
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return -1;
    size_t total = grpc_byte_buffer_length(bb);
    out->len = 0;
    rpc_buf_reserve(out, total);
    grpc_slice s;
    size_t n = 0;
    while (grpc_byte_buffer_reader_next(&r, &s)) {
        size_t k = GRPC_SLICE_LENGTH(s);
        if (n + k <= total)
            memcpy(out->data + n, GRPC_SLICE_START_PTR(s), k);
        n += k;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&r);
    if (n != total)
        return -1;
    out->len = n;
    return 0;
}

int rpc__segments(grpc_byte_buffer *bb, rpc_segs_t *segs, rpc_buf_t *flat, rpc_msg_t *out) {
    if (bb->type != GRPC_BB_RAW || bb->data.raw.compression != GRPC_COMPRESS_NONE) {
        if (rpc__flatten(bb, flat) < 0)
            return -1;
        if (segs->cap < 1) {
            segs->seg = xrealloc(segs->seg, sizeof *segs->seg);
            segs->cap = 1;
        }
        segs->seg[0] = (rpc_seg_t){flat->data, flat->len};
        *out = (rpc_msg_t){segs->seg, 1, flat->len};
        return 0;
    }
    const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    if (segs->cap < sb->count) {
        segs->cap = PS_MAX(sb->count, 2 * segs->cap);
        segs->seg = xrealloc(segs->seg, segs->cap * sizeof *segs->seg);
    }
    size_t len = 0;
    for (size_t i = 0; i < sb->count; i++) {
        segs->seg[i] =
            (rpc_seg_t){GRPC_SLICE_START_PTR(sb->slices[i]), GRPC_SLICE_LENGTH(sb->slices[i])};
        len += segs->seg[i].len;
    }
    *out = (rpc_msg_t){segs->seg, sb->count, len};
    return 0;
}

gpr_timespec rpc__deadline(double seconds) {
    if (seconds <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_nanos((int64_t)(seconds * 1e9), GPR_TIMESPAN));
}

/* ---- Send buffers ------------------------------------------------------------- */

/* Below this gRPC's own copy is as cheap as ours and keeps big blocks free. */
#define POOL_MIN_BYTES ((size_t)64 << 10)
#define POOL_KEEP 4

typedef struct rpc_blob blob_t;

struct rpc_blob {
    rpc_pool_t *pool;
    size_t cap;
    uint8_t *data;
    grpc_slice whole; /* rpc_blob_t: all of data; the owner's reference */
};

struct rpc_pool {
    pthread_mutex_t mu;
    int refs; /* the owner's, until released, plus one per blob lent out */
    int owner_gone;
    size_t n_free;
    blob_t *free[POOL_KEEP];
};

rpc_pool_t *rpc__pool_new(void) {
    rpc_pool_t *p = xcalloc(1, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    p->refs = 1;
    return p;
}

static void blob_free(blob_t *b) {
    if (b) {
        free(b->data);
        free(b);
    }
}

static void pool_destroy(rpc_pool_t *p) {
    for (size_t i = 0; i < p->n_free; i++)
        blob_free(p->free[i]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Drops one reference under the lock; returns 1 when the pool must go. */
static int pool_unref_locked(rpc_pool_t *p) {
    return --p->refs == 0;
}

void rpc__pool_release(rpc_pool_t *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->owner_gone = 1;
    int last = pool_unref_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (last)
        pool_destroy(p);
}

/* The slice's destroy callback: gRPC dropped its last reference, on any thread. */
static void blob_return(void *arg) {
    blob_t *b = arg;
    rpc_pool_t *p = b->pool;
    pthread_mutex_lock(&p->mu);
    if (!p->owner_gone) {
        if (p->n_free < POOL_KEEP) {
            p->free[p->n_free++] = b;
            b = NULL;
        } else {
            /* Full: keep the bigger blocks, which are the expensive ones. */
            size_t small = 0;
            for (size_t i = 1; i < p->n_free; i++)
                if (p->free[i]->cap < p->free[small]->cap)
                    small = i;
            if (p->free[small]->cap < b->cap) {
                blob_t *t = p->free[small];
                p->free[small] = b;
                b = t;
            }
        }
    }
    int last = pool_unref_locked(p);
    pthread_mutex_unlock(&p->mu);
    blob_free(b);
    if (last)
        pool_destroy(p);
}

/* Takes the smallest free blob that fits, else the largest one (to regrow). */
static blob_t *pool_take(rpc_pool_t *p, size_t len) {
    pthread_mutex_lock(&p->mu);
    size_t pick = p->n_free;
    for (size_t i = 0; i < p->n_free; i++) {
        size_t cap = p->free[i]->cap;
        if (pick == p->n_free) {
            pick = i;
            continue;
        }
        size_t best = p->free[pick]->cap;
        int fits = cap >= len, best_fits = best >= len;
        if ((fits && (!best_fits || cap < best)) || (!fits && !best_fits && cap > best))
            pick = i;
    }
    blob_t *b = NULL;
    if (pick < p->n_free) {
        b = p->free[pick];
        p->free[pick] = p->free[--p->n_free];
    }
    p->refs++;
    pthread_mutex_unlock(&p->mu);
    if (!b) {
        b = xcalloc(1, sizeof *b);
        b->pool = p;
    }
    return b;
}

/* A blob of at least len bytes, grown (in whole MiB) when the one taken is
 * too small. */
static blob_t *pool_take_fit(rpc_pool_t *p, size_t len) {
    blob_t *b = pool_take(p, len);
    if (b->cap < len) {
        free(b->data);
        b->cap = (PS_MAX(len, 1) + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
        b->data = xmalloc(b->cap);
    }
    return b;
}

grpc_slice rpc__pool_copy(rpc_pool_t *p, const void *data, size_t len) {
    if (len < POOL_MIN_BYTES)
        return grpc_slice_from_copied_buffer(data, len);
    blob_t *b = pool_take_fit(p, len);
    memcpy(b->data, data, len);
    return grpc_slice_new_with_user_data(b->data, len, blob_return, b);
}

rpc_blob_t *rpc__pool_blob(rpc_pool_t *p, size_t len) {
    blob_t *b = pool_take_fit(p, len);
    b->whole = grpc_slice_new_with_user_data(b->data, b->cap, blob_return, b);
    return b;
}

grpc_slice rpc__blob_slice(rpc_blob_t *b, const void *start, size_t len) {
    size_t off = (size_t)((const uint8_t *)start - b->data);
    return grpc_slice_sub(b->whole, off, off + len);
}

/* A wrapped blob's release: the owner's callback, then the blob itself. */
typedef struct {
    blob_t blob;
    void (*release)(void *arg);
    void *arg;
} wrapped_t;

static void wrapped_release(void *arg) {
    wrapped_t *w = arg;
    w->release(w->arg);
    free(w);
}

rpc_blob_t *rpc_blob_wrap(void *data, size_t len, void (*release)(void *arg), void *arg) {
    wrapped_t *w = xcalloc(1, sizeof *w);
    w->blob.data = data;
    w->blob.cap = len;
    w->release = release;
    w->arg = arg;
    w->blob.whole = grpc_slice_new_with_user_data(data, len, wrapped_release, w);
    return &w->blob;
}

grpc_byte_buffer *rpc__pieces_buffer(const rpc_piece_t *pieces, size_t n) {
    grpc_slice one[16];
    grpc_slice *slices = n <= 16 ? one : xcalloc(n, sizeof *slices);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (pieces[i].blob) {
            slices[k++] = rpc__blob_slice(pieces[i].blob, pieces[i].data, pieces[i].len);
            i++;
            continue;
        }
        size_t j = i, len = 0;
        for (; j < n && !pieces[j].blob; j++)
            len += pieces[j].len;
        grpc_slice s = grpc_slice_malloc(len);
        uint8_t *at = GRPC_SLICE_START_PTR(s);
        for (; i < j; i++) {
            if (pieces[i].len)
                memcpy(at, pieces[i].data, pieces[i].len);
            at += pieces[i].len;
        }
        slices[k++] = s;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, k);
    for (size_t i = 0; i < k; i++)
        grpc_slice_unref(slices[i]);
    if (slices != one)
        free(slices);
    return bb;
}

uint8_t *rpc_blob_data(rpc_blob_t *b) {
    return b->data;
}

rpc_blob_t *rpc_blob_ref(rpc_blob_t *b) {
    grpc_slice_ref(b->whole);
    return b;
}

void rpc_blob_unref(rpc_blob_t *b) {
    if (!b)
        return;
    /* The last reference hands b back to its pool, where another owner may
     * take it at once: read the slice out first. */
    grpc_slice whole = b->whole;
    grpc_slice_unref(whole);
}

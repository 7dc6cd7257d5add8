/* pstrain's RPC layer (gRPC C core, no C++, and beside it the tensor stream):
 * a server that routes unary calls by full method name
 * ("/pstrain.ParameterServer/Push") to handlers run one at a time, client
 * calls with deadlines, a retry wrapper
 * with capped exponential backoff, fan-out of calls to N servers at once, and
 * mutual TLS. Messages are opaque byte strings (serialized protobuf-c).
 *
 * Errors: functions that can fail return -1 (or a gRPC status code, for calls)
 * and write one line into the caller's err buffer; nothing here exits.
 * Every gRPC object lives behind these types: callers never include grpc.h. */
#ifndef PSTRAIN_RPC_H
#define PSTRAIN_RPC_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* gRPC status codes, with gRPC's numbers (rpc.c checks they agree). */
enum {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16,
};

/* "UNAVAILABLE" for 14; "UNKNOWN_STATUS" for numbers outside 0..16. */
const char *rpc_status_name(int code);

/* The versions of the libraries under this layer, for a run's record:
 * gRPC's core and libuv's. */
const char *rpc_grpc_version(void);
const char *rpc_libuv_version(void);

/* 64 MiB of payload plus 1 MiB for the protobuf framing around it. */
#define RPC_DEFAULT_MAX_MESSAGE ((size_t)65 << 20)

/* Options shared by servers and channels. Zeroed means the defaults. */
typedef struct {
    size_t max_recv; /* largest message received, bytes; 0 = RPC_DEFAULT_MAX_MESSAGE */
    size_t max_send; /* largest message sent, bytes; 0 = RPC_DEFAULT_MAX_MESSAGE */
    /* Mutual TLS: PEM file paths. A server needs all three and then requires a
     * client certificate signed by tls_ca. A client checks the server's
     * certificate (its SAN must name the target host) against tls_ca and
     * presents tls_cert and tls_key; with tls_ca alone it presents none (and a
     * pstrain server refuses it). */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    /* The tensor stream: the same calls beside gRPC, framed by pstrain
     * instead of HTTP/2, which a server offers and a channel uses when both
     * set the same flag (never with TLS). A channel asks the server where
     * its stream is once, and makes its calls over gRPC when it offers none
     * the channel can reach.
     * shm: between processes of one host (one network namespace), over a
     *   Unix socket with message bodies in memory both map: no byte goes
     *   through the kernel's TCP.
     * stream: over TCP, on stream_port of the server's host (0 = a free
     *   port); for clients on other hosts. */
    int shm;
    int stream;
    int stream_port;
    /* A server's stream connections at once, Unix socket and TCP together
     * (0 = RPC_STREAM_MAX_CONNECTIONS): the next one is answered
     * RESOURCE_EXHAUSTED and closed. */
    int stream_max_connections;
    /* Loop threads of a server's stream (rpc_stream_threads picks 0's):
     * its TCP connections spread over them, so that the kernel's copies
     * of their bytes run on several cores; the Unix socket's stay on the
     * first. The handlers stay serialized whatever the count. */
    int stream_threads;
    /* Seconds a new stream connection has to open with its hello (Unix
     * socket) or its first request's header (TCP) before the server closes
     * it (0 = RPC_STREAM_HANDSHAKE_S). */
    double stream_handshake_s;
    /* Uids besides the server's own whose processes may use its Unix
     * socket and shared memory: decimal, comma-separated ("1000,1001");
     * NULL or "" for none. Any other local peer is answered
     * PERMISSION_DENIED (rpc_parse_uids checks the text). */
    const char *stream_allowed_uids;
    /* Seconds a stream call that brings no deadline may wait for its answer
     * before the server answers DEADLINE_EXCEEDED (0 = RPC_STREAM_MAX_WAIT_S). */
    double stream_max_wait_s;
} rpc_options_t;

#define RPC_STREAM_MAX_CONNECTIONS 1024
/* The most loop threads stream_threads 0 picks. */
#define RPC_STREAM_AUTO_THREADS 4

/* Loop threads of a stream server for rpc_options_t.stream_threads n: n
 * when > 0, else half the online CPUs, at least 1 and at most
 * RPC_STREAM_AUTO_THREADS: the other half is left to the processes a PS
 * shares its host with (workers, the kernel's packet path). On 2 CPUs that
 * is 1, the PS before loop threads: spreading costs ~9% more PS CPU per
 * step (docs/scaling.md), which a machine whose CPUs the workers share
 * pays in steps/s. */
int rpc_stream_threads(int n);
#define RPC_STREAM_HANDSHAKE_S 5.0
#define RPC_STREAM_MAX_WAIT_S 300.0
#define RPC_MAX_ALLOWED_UIDS 32

/* Parses a list of uids as stream_allowed_uids has it into uids (room for
 * RPC_MAX_ALLOWED_UIDS; may be NULL to check only): how many, or -1 with
 * err naming what is wrong. */
int rpc_parse_uids(const char *text, uid_t *uids, char *err, size_t errlen);

/* A growable byte buffer the caller owns and reuses across calls, so that
 * steady-state calls allocate nothing big. Zero-initialise it; free it with
 * rpc_buf_free. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} rpc_buf_t;

/* Makes cap >= n (contents up to len are kept). */
void rpc_buf_reserve(rpc_buf_t *b, size_t n);
void rpc_buf_free(rpc_buf_t *b);

/* Keeps glibc from returning big freed blocks to the kernel and from serving
 * mid-size blocks with fresh mmaps, both of which make every large message pay
 * page faults again (~2.3 ms per MiB here). Daemons call it first thing in main. */
void rpc_tune_malloc(void);

/* ---- Server ------------------------------------------------------------------
 *
 * Threading: a server has three threads: gRPC's completion-queue thread,
 * and with a tensor stream its loop thread (every stream connection, on
 * libuv) and its handler thread. Handlers and on_cancel run on the
 * completion-queue thread (calls over gRPC) or the handler thread (calls
 * over the stream), on_tick on the completion-queue thread, all under one
 * server lock, so one at a time: they may share the ctx without locks among
 * themselves, but none may block, since each stalls every call of both
 * transports. rpc_call_reply may be called from any thread: from the handler itself, from
 * a later handler or on_tick (a deferred reply), or from a thread of the
 * owner's. A call's handle stays valid until that one reply; the owner keeps
 * the handles it defers in one place (its wait list) so that exactly one of
 * "answer it" and "it was cancelled, release it" happens: a reply from another
 * thread can race with on_cancel, and the owner's lock decides which wins. */

typedef struct rpc_server rpc_server_t;
typedef struct rpc_call rpc_call_t;

/* req (len bytes) is valid only until the handler returns: it lives in a buffer
 * reused for the next call. The handler answers with rpc_call_reply, either
 * before returning or later (a deferred reply, from any thread). */
typedef void (*rpc_handler_fn)(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len);

typedef struct {
    const char *method; /* full name, "/package.Service/Method" */
    rpc_handler_fn fn;
} rpc_method_t;

/* A received message as gRPC holds it: a run of segments (a large message
 * arrives in pieces of about 64 KiB) whose lengths add up to len. Reading it
 * in place saves the copy that flattening it costs. */
typedef struct {
    const uint8_t *data;
    size_t len;
} rpc_seg_t;

typedef struct {
    const rpc_seg_t *seg;
    size_t nseg;
    size_t len;
} rpc_msg_t;

/* A handler that reads its request in place: req and its segments are valid
 * only until the handler returns. Otherwise as rpc_handler_fn. */
typedef void (*rpc_msg_handler_fn)(void *ctx, rpc_call_t *call, const rpc_msg_t *req);

typedef struct {
    const char *method;
    rpc_msg_handler_fn fn;
} rpc_msg_method_t;

typedef struct {
    const char *addr; /* bound exactly as given; port 0 picks a free port */
    const rpc_method_t *methods;
    size_t n_methods;
    /* Methods whose handlers read the request in place (large messages). */
    const rpc_msg_method_t *msg_methods;
    size_t n_msg_methods;
    void *ctx; /* passed to handlers and callbacks */
    /* Called (under the server lock) when a call that has not been answered yet
     * is cancelled: the client gave up, its deadline passed, or the server is
     * stopping. The call must still be released with rpc_call_reply (the
     * answer goes nowhere). May be NULL. */
    void (*on_cancel)(void *ctx, rpc_call_t *call);
    /* Called every tick_s seconds under the server lock, e.g. to expire waits.
     * May be NULL. */
    void (*on_tick)(void *ctx);
    double tick_s;
    rpc_options_t opt;
} rpc_server_config_t;

/* Binds, starts the server's threads and returns once the port listens. A
 * busy port, an address that is not local, unreadable TLS files, or a
 * process out of threads or descriptors are errors. The
 * method table and its strings must outlive the server. */
int rpc_server_start(rpc_server_t **out, const rpc_server_config_t *cfg, char *err, size_t errlen);
/* The port actually bound (useful with port 0). */
int rpc_server_port(const rpc_server_t *s);
/* The port of its tensor stream; 0 when it offers none. */
int rpc_server_stream_port(const rpc_server_t *s);
/* The stream's loop threads (0 without a stream), and into conns (room for
 * max) the connections each serves now. */
int rpc_server_stream_lanes(const rpc_server_t *s, int *conns, int max);
/* Seconds rpc_server_stop gives the calls in flight to finish. */
#define RPC_STOP_GRACE_S 0.5
/* Stops accepting, gives the calls in flight RPC_STOP_GRACE_S to finish, then
 * cancels the rest (on_cancel runs for each one not yet answered), waits
 * until every call has been released by its rpc_call_reply, joins the threads
 * and frees everything. Must not be called from a handler or callback. NULL
 * is ignored. */
void rpc_server_stop(rpc_server_t *s);

/* Answers a call exactly once with a status, a message for the client (NULL or
 * "" when none) and, when code is RPC_OK, the response bytes, which are copied
 * (into a buffer the server keeps and reuses). Any thread may call it; the
 * call handle is invalid afterwards. Answering a call that was cancelled just
 * releases it. Returns -1 when gRPC refused the reply (logged; a bug here) or
 * when it notices a second answer, which is a bug of the caller's. */
int rpc_call_reply(rpc_call_t *call, int code, const char *message, const void *data, size_t len);
/* Like rpc_call_reply, but sends data without copying it: data must stay
 * unchanged until release(arg) is called (always exactly once; at once when
 * code is not RPC_OK), possibly on another thread and possibly after the call
 * completed (a write still in the transport). With release NULL, data must
 * stay unchanged for as long as the server lives. */
int rpc_call_reply_zc(rpc_call_t *call, int code, const char *message, const void *data, size_t len,
                      void (*release)(void *arg), void *arg);
/* ---- Send buffers ------------------------------------------------------------
 *
 * A blob is a buffer to build a large message in and send without copying
 * it, once or many times: each send takes a reference of its own, which gRPC
 * holds until the bytes are written (possibly after the call completed, on
 * any thread). The owner holds one reference from rpc_channel_blob until
 * rpc_blob_unref; after that last reference the blob goes back to the
 * channel's pool, whose blocks stay mapped, so steady-state messages land in
 * memory that is already faulted in. rpc_blob_wrap lends memory of the
 * caller's instead. The owner must not write to a blob once it has been
 * sent. */
typedef struct rpc_blob rpc_blob_t;

/* A blob over the caller's own memory (len bytes at data): release(arg) is
 * called, once, on any thread, when the last reference is dropped; data must
 * stay unchanged until then. */
rpc_blob_t *rpc_blob_wrap(void *data, size_t len, void (*release)(void *arg), void *arg);
uint8_t *rpc_blob_data(rpc_blob_t *b);
/* Another reference (returned: b). */
rpc_blob_t *rpc_blob_ref(rpc_blob_t *b);
void rpc_blob_unref(rpc_blob_t *b);

/* A message sent as it lies, in pieces: len bytes at data, lent from blob
 * (data points into it; the send takes a reference of its own) or, with blob
 * NULL, copied (adjacent copied pieces into one buffer). */
typedef struct {
    const void *data;
    size_t len;
    rpc_blob_t *blob;
} rpc_piece_t;

/* Answers a call RPC_OK with the pieces joined. Otherwise as rpc_call_reply. */
int rpc_call_reply_pieces(rpc_call_t *call, const rpc_piece_t *pieces, size_t n);

/* 1 once gRPC has reported the call cancelled (on_cancel has then been or is
 * being called); any thread. */
int rpc_call_is_cancelled(const rpc_call_t *call);
/* One pointer the owner may attach to a deferred call, e.g. its wait record. */
void rpc_call_set_user(rpc_call_t *call, void *user);
void *rpc_call_user(const rpc_call_t *call);
/* The full method name the call was made to. */
const char *rpc_call_method(const rpc_call_t *call);
/* The client's address, e.g. "ipv4:127.0.0.1:40512", into buf. */
void rpc_call_peer(rpc_call_t *call, char *buf, size_t len);

/* ---- Client ------------------------------------------------------------------
 *
 * A channel is safe to use from several threads at once. Calls do not wait
 * for a server that is down: a refused connection fails them UNAVAILABLE at
 * once (a host that does not answer at all makes them wait for the connect
 * timeout or their deadline); waiting and trying again is the caller's, with
 * the one backoff of retry.h (rpc_call_retry for a single call, psclient for
 * its fan-outs). The channel reconnects on its own with a backoff capped at
 * RPC_RECONNECT_MAX_S. */

#define RPC_RECONNECT_MAX_S 1.0

typedef struct rpc_channel rpc_channel_t;

/* target is "host:port". Connects lazily, on the first call. */
int rpc_channel_create(rpc_channel_t **out, const char *target, const rpc_options_t *opt, char *err,
                       size_t errlen);
void rpc_channel_destroy(rpc_channel_t *ch);
const char *rpc_channel_target(const rpc_channel_t *ch);
/* The tensor stream port its calls go over; 0 while they go over gRPC. */
int rpc_channel_stream_port(rpc_channel_t *ch);
/* What its calls went over last: "grpc", "stream" (TCP) or "shm" (the
 * stream through shared memory). */
const char *rpc_channel_transport(rpc_channel_t *ch);
/* A blob of at least len bytes from the channel's pool (any thread). */
rpc_blob_t *rpc_channel_blob(rpc_channel_t *ch, size_t len);

/* One unary call. Returns the gRPC status code (RPC_OK = 0). On RPC_OK the
 * response is in resp (len set, grown only when too small); otherwise err holds
 * "METHOD to TARGET: STATUS_NAME: message". deadline_s is relative, in seconds
 * (<= 0: none). req is copied before sending, so the caller may reuse it at
 * once. */
int rpc_call(rpc_channel_t *ch, const char *method, const void *req, size_t len, double deadline_s,
             rpc_buf_t *resp, char *err, size_t errlen);

/* When and how often to try again after UNAVAILABLE. Other statuses are
 * returned at once. Sleeps grow from initial_s by multiplier up to max_s, each
 * scaled by a random factor in [1 - jitter, 1 + jitter]. */
typedef struct {
    double initial_s;
    double max_s;
    double multiplier;
    double jitter;
    int max_attempts;   /* 0: no limit on attempts */
    double max_total_s; /* 0: no limit on the time spent; with max_attempts 0 it retries forever */
    /* Optional: stop retrying (returning the last status) once *stop != 0, e.g.
     * a daemon's SIGTERM flag. Checked between attempts and during sleeps. */
    const volatile sig_atomic_t *stop;
    /* Optional: told before each sleep, e.g. to log "ps0 unavailable, retrying". */
    void (*on_retry)(void *arg, int attempt, double sleep_s, const char *err);
    void *arg;
} rpc_retry_t;

/* 50 ms doubling to 2 s, jitter 0.2, at most 10 attempts, no time limit. */
rpc_retry_t rpc_retry_default(void);

/* rpc_call, tried again after UNAVAILABLE by the policy; each attempt has
 * deadline_s, cut to what is left of max_total_s. When it gives up, err says
 * how many attempts over how long. */
int rpc_call_retry(rpc_channel_t *ch, const char *method, const void *req, size_t len,
                   double deadline_s, const rpc_retry_t *policy, rpc_buf_t *resp, char *err,
                   size_t errlen);

/* One call of a fan-out: the caller fills ch, req, len, resp and, to send
 * req without copying it, release; code and err come back. Entries may share
 * one req (the same pointer and len): it is then sent (or copied) once. */
typedef struct {
    rpc_channel_t *ch;
    const void *req;
    size_t len;
    rpc_buf_t *resp;
    /* Zero-copy send: when set, req is lent to gRPC instead of copied and must
     * stay unchanged until release(release_arg) is called (once per distinct
     * req), on any thread and possibly after rpc_fanout returned: gRPC can
     * still hold it while a peer that stopped reading keeps a write pending.
     * With release NULL (the default), req is copied first. */
    void (*release)(void *arg);
    void *release_arg;
    /* Zero-copy send from a blob: req points into it; the call takes a
     * reference of its own. release must then be NULL. */
    rpc_blob_t *blob;
    /* Or the request written where it goes: with pack set (and req, release
     * and blob not), pack(pack_arg, dst) writes the len bytes of the request
     * at dst, which is the shared memory of a same-host tensor stream or a
     * blob of the channel's. Called once per call and attempt, on the calling
     * thread, before rpc_fanout returns. */
    void (*pack)(void *arg, uint8_t *dst);
    void *pack_arg;
    /* When set, a response that ended RPC_OK is handed to consume in place
     * (on the calling thread, before rpc_fanout returns) instead of being
     * copied into resp, which may then be NULL. */
    void (*consume)(void *arg, const rpc_msg_t *resp);
    void *consume_arg;
    int code;
    char err[512]; /* PS_ERRLEN */
} rpc_fanout_t;

/* Starts all n calls to method at once, all in flight together, and returns
 * when every one has finished: the number of calls that did not end RPC_OK. */
size_t rpc_fanout(rpc_fanout_t *calls, size_t n, const char *method, double deadline_s);

#endif

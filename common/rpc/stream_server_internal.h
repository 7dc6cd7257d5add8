/* What the tensor stream server's two files share: stream_server.c (calls,
 * the handler thread, accepting, the lanes, start and stop) and
 * stream_conn.c (a connection's reads and writes on its lane's loop).
 * Nothing else includes this.
 *
 * "Loop only" below means: on the thread of the lane the connection or
 * call belongs to. */
#ifndef PSTRAIN_STREAM_SERVER_INTERNAL_H
#define PSTRAIN_STREAM_SERVER_INTERNAL_H

#include <stdatomic.h>
#include <sys/uio.h>
#include <uv.h>

#include "common/base/log.h"
#include "common/rpc/stream_internal.h"

typedef enum { K_HELLO, K_HEAD, K_METHOD, K_BODY, K_CALL, K_WRITE, K_LINGER } kstate_t;

typedef struct stream_conn stream_conn_t;
typedef struct stream_call stream_call_t;
typedef struct stream_lane stream_lane_t;

struct stream_call {
    rpc_call_head_t head; /* first: what the rpc_call_* functions read */
    stream_server_t *srv;
    stream_lane_t *lane; /* of its connection: the loop that settles it */
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
    stream_lane_t *lane; /* whose loop serves it */
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
    stream_conn_t *prev, *next; /* the lane's open connections; loop only */
};

typedef struct job {
    int cancel; /* on_cancel, else the handler */
    stream_call_t *call;
    stream_conn_t *conn;
    struct job *next;
} job_t;

/* A lane: one loop thread and the connections it serves. Lane 0 also
 * accepts (both listeners) and keeps the Unix socket's connections; it
 * hands each TCP connection to the lane that serves the fewest. */
struct stream_lane {
    stream_server_t *srv;
    int index;
    uv_loop_t loop;
    uv_async_t wake;
    uv_poll_t tcp_poll, unix_poll; /* lane 0 */
    uv_timer_t grace, retry;
    pthread_t thread;
    atomic_int nconns; /* open here; read by lane 0 to pick a lane */
    /* Loop only. */
    stream_conn_t *conns;
    int conn_structs; /* not yet past their close callbacks */
    int listeners;    /* listener handles not yet closed (lane 0) */
    int stopping;
    log_limit_t bad_limit; /* connections that broke the protocol */
    /* From any thread, under the server's mu. */
    stream_call_t *replies, *handled;
    int *inbox; /* accepted TCP descriptors handed over by lane 0 */
    size_t ninbox, capinbox;
    int wake_closed;
};

struct stream_server {
    int tcp_fd, unix_fd, tcp_port;
    char unix_name[108];
    stream_server_config_t cfg;
    pthread_t handler_thread;
    stream_lane_t *lanes;
    int nlanes;
    atomic_int nconns; /* open, counted against the limit (all lanes) */
    /* Lane 0 only. */
    size_t refused;
    double refusal_logged;
    log_limit_t peer_limit; /* refused local peers */
    /* From any thread, under mu. */
    pthread_mutex_t mu;
    size_t live; /* calls not yet freed */
    int stop_asked;
    double t0;
    /* The handler thread's queue. */
    pthread_mutex_t jmu;
    pthread_cond_t jcv;
    job_t *jhead, *jtail;
    int jbusy; /* the handler thread holds a job */
    int jstop;
};

/* stream_server.c, for the connections (loop thread but where said). */
void stream__call_unref(stream_call_t *c); /* any thread */
void stream__reply_done(stream_call_t *c);
int stream__call_cancel(stream_call_t *c);
void stream__call_settle(stream_call_t *c);
void stream__job_push(stream_server_t *s, int cancel, stream_call_t *c, stream_conn_t *k);
int stream__job_inline(stream_server_t *s, stream_call_t *c, stream_conn_t *k);
void stream__maybe_finish(stream_lane_t *l);

/* stream_conn.c, for the server (loop thread but where said). */
void stream__conn_open(stream_lane_t *l, int fd, int is_unix);
void stream__conn_close(stream_conn_t *k);
void stream__conn_unref(stream_conn_t *k); /* any thread */
void stream__conn_progress(stream_conn_t *k);

#endif

/* The tensor stream's private header: its frames (stream_frame.c), its
 * server (stream_server.c, on a libuv loop) and its client
 * (stream_client.c), and what rpc_server.c and rpc_client.c call of them.
 * Nothing outside common/rpc/ includes this. */
#ifndef PSTRAIN_STREAM_INTERNAL_H
#define PSTRAIN_STREAM_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>

#include "common/rpc/rpc_internal.h"

/* ---- Frames (stream_frame.c) ----------------------------------------------------
 *
 * A plain TCP connection beside gRPC carrying the same unary calls, framed
 * by pstrain instead of HTTP/2: one call at a time per connection, a
 * request then its response. Little-endian, RPC_STREAM_HDR bytes of header:
 *   request:  magic "PSR1" u32 | method length u32 | deadline, microseconds
 *             from receipt (0: none) u64 | body length u64; then the method
 *             name and the body (the serialized message).
 *   response: magic "PSA1" u32 | status code u32 | message length u32 |
 *             flags u32 | body length u64; then the status message and, for
 *             RPC_OK, the body.
 * A server that cannot make sense of a frame answers it when it can (an
 * unknown method, an oversized body) and closes the connection. */
#define RPC_STREAM_REQ_MAGIC 0x31525350u  /* "PSR1" */
#define RPC_STREAM_RESP_MAGIC 0x31415350u /* "PSA1" */
#define RPC_STREAM_HDR 24
#define RPC_STREAM_METHOD_MAX 256
#define RPC_STREAM_MSG_MAX 1024
/* Response flags: the server closes the connection after this response. */
#define RPC_STREAM_CLOSING 1u
/* The method a channel asks a server where its stream is with, over gRPC.
 * The answer is the TCP stream's port in decimal (0: none) and, when the
 * server offers shared memory, a space and its Unix socket's abstract name
 * ("0 pstrain-1234-2222"). */
#define RPC_STREAM_PORT_METHOD "/pstrain.Rpc/StreamPort"

struct iovec;
void rpc__stream_req_put(uint8_t h[RPC_STREAM_HDR], size_t method_len, double deadline_s,
                         size_t body_len);
/* -1 when h is not a request header. */
int rpc__stream_req_get(const uint8_t h[RPC_STREAM_HDR], size_t *method_len, double *deadline_s,
                        uint64_t *body_len);
void rpc__stream_resp_put(uint8_t h[RPC_STREAM_HDR], int code, size_t msg_len, size_t body_len,
                          uint32_t flags);
/* -1 when h is not a response header. */
int rpc__stream_resp_get(const uint8_t h[RPC_STREAM_HDR], int *code, size_t *msg_len,
                         uint64_t *body_len, uint32_t *flags);
/* Blocking reads and writes of whole runs: 0; -1 with errno on an error or
 * an end of stream within the run; read_full returns 1 at an end of stream
 * before its first byte. write_iov consumes iov. */
int rpc__read_full(int fd, void *buf, size_t n);
int rpc__write_iov(int fd, struct iovec *iov, int n);
/* Steps *iov and *n past done bytes written. */
void rpc__iov_advance(struct iovec **iov, int *n, size_t done);
/* The host of "host:port" or "[v6]:port" into host, the port into *port
 * (may be NULL); -1 when target has no such form. */
int rpc__split_host(const char *target, char *host, size_t hostlen, int *port);
/* TCP_NODELAY and larger socket buffers. */
void rpc__stream_tune(int fd);
/* A listening socket on addr's host and the given port (0: a free one). */
int rpc__stream_listen(const char *addr, int port, int *fd, int *bound, char *err, size_t errlen);

/* Same host: the server also listens on a Unix socket with an abstract name
 * (reachable only in its network namespace, so only on its host), which it
 * names after the port when a channel asks ("PORT NAME"). A client that
 * reaches it first sends a hello with a memfd (SCM_RIGHTS) holding two
 * areas, sealed against shrinking and growing: requests (req_cap bytes) and after them
 * responses (resp_cap). On such a connection every body lies in its area
 * instead of following its header: the header's body length says how much
 * of the area it fills.
 *   hello: magic "PSM1" u32 | 0 u32 | req_cap u64 | resp_cap u64 */
#define RPC_STREAM_SHM_MAGIC 0x314d5350u /* "PSM1" */
int rpc__stream_unix_listen(char *name, size_t namelen, int *fd, char *err, size_t errlen);
/* A connected socket, or -1 (errno set). */
int rpc__stream_unix_connect(const char *name);
/* len bytes of buf with a descriptor; 0 or -1. recv_fd reads exactly len. */
int rpc__send_fd(int sock, const void *buf, size_t len, int fd);
int rpc__recv_fd(int sock, void *buf, size_t len, int *fd);
void rpc__stream_hello_put(uint8_t h[RPC_STREAM_HDR], uint64_t req_cap, uint64_t resp_cap);
int rpc__stream_hello_get(const uint8_t h[RPC_STREAM_HDR], uint64_t *req_cap, uint64_t *resp_cap);

/* ---- Server (stream_server.c) ---------------------------------------------------
 *
 * One libuv loop thread per server serves every stream connection, Unix
 * socket and TCP: it accepts, reads requests, writes replies and keeps
 * deadlines; one handler thread runs the handlers and on_cancel under the
 * server's handler lock, so the loop never waits for a handler. */
typedef struct stream_server stream_server_t;

typedef struct {
    const char *addr; /* the gRPC address: the TCP stream listens on its host */
    int tcp;          /* offer the TCP stream, on tcp_port (0: a free one) */
    int tcp_port;
    int shm; /* offer the Unix socket and shared memory */
    int max_conns;
    int lanes; /* loop threads; TCP connections spread over them (< 1: one) */
    double handshake_s;
    /* Uids besides the server's own that may connect to its Unix socket. */
    uid_t allowed_uids[RPC_MAX_ALLOWED_UIDS];
    size_t n_allowed_uids;
    /* Seconds a call that brings no deadline may wait at most (0: for ever). */
    double max_wait_s;
    size_t max_recv, max_send;
    const rpc_method_t *methods;
    size_t n_methods;
    const rpc_msg_method_t *msg_methods;
    size_t n_msg_methods;
    void *ctx;
    void (*on_cancel)(void *ctx, rpc_call_t *call);
    pthread_mutex_t *hmu; /* the lock every handler of the server runs under */
} stream_server_config_t;

/* Listens and starts the loop and handler threads; on an error nothing is
 * left behind. */
int stream__server_start(stream_server_t **out, const stream_server_config_t *cfg, char *err,
                         size_t errlen);
/* The TCP stream's port, 0 when not offered; the Unix socket's abstract
 * name, "" when not offered. */
int stream__server_tcp_port(const stream_server_t *s);
/* Its lanes (0 for NULL), and into conns (room for max) each one's
 * connections now. Any thread. */
int stream__server_lanes(const stream_server_t *s, int *conns, int max);
const char *stream__server_unix_name(const stream_server_t *s);
/* Stops accepting and closes idle connections; the calls in flight have
 * RPC_STOP_GRACE_S from now. Returns at once. */
void stream__server_stop_accepting(stream_server_t *s);
/* After the grace, cancels what is left, waits until every call has been
 * released by its rpc_call_reply, joins the threads and frees s. */
void stream__server_stop(stream_server_t *s);
/* rpc_call_reply and its kin for a stream call: pieces joined; borrowed:
 * pieces without a blob are lent (released by release), else copied. */
int stream__reply(rpc_call_t *c, int code, const char *message, const rpc_piece_t *pieces, size_t n,
                  int borrowed, void (*release)(void *arg), void *arg);
void stream__peer(const rpc_call_t *c, char *buf, size_t len);

/* ---- Client (stream_client.c) ---------------------------------------------------
 *
 * A channel's tensor stream: not asked yet (or to ask again), in use, or
 * none. The channel asks its server where the stream is over gRPC and hands
 * the answer to stream__chan_offer. */
typedef struct stream_chan stream_chan_t;

stream_chan_t *stream__chan_new(const char *target, int tcp, int shm, size_t max_send,
                                size_t max_recv);
void stream__chan_free(stream_chan_t *sc);
/* Whether the channel wants a stream and has not asked where it is. */
int stream__chan_unknown(stream_chan_t *sc);
/* Takes the server's answer to RPC_STREAM_PORT_METHOD (code, and the text
 * when RPC_OK): whether calls go over the stream now. */
int stream__chan_offer(stream_chan_t *sc, int code, const rpc_buf_t *answer);
int stream__chan_on(stream_chan_t *sc);
/* Forgets the stream (closing idle connections): the next call asks again. */
void stream__chan_forget(stream_chan_t *sc);
int stream__chan_port(stream_chan_t *sc);
const char *stream__chan_transport(stream_chan_t *sc);
/* Runs the calls over their channels' streams, all at once; deadline is
 * absolute on ps_now()'s clock (0: none). The number that did not end OK. */
size_t stream__fanout(rpc_fanout_t **calls, size_t n, const char *method, double deadline);

/* What stream_client.c needs of a channel (rpc_client.c). */
stream_chan_t *rpc__channel_stream(rpc_channel_t *ch);
/* The next gRPC call on ch starts on a new gRPC channel. */
void rpc__channel_renew(rpc_channel_t *ch);
/* A request written by its pack callback into a blob of the channel's. */
void rpc__packed_blob(rpc_fanout_t *f);

#endif

/* What rpc.c, rpc_server.c and rpc_client.c share; nothing outside them
 * includes this (it pulls in gRPC's headers). */
#ifndef PSTRAIN_RPC_INTERNAL_H
#define PSTRAIN_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>

#include "common/rpc/rpc.h"

/* Reports a grpc_call_error that is not GRPC_CALL_OK: "file:line: what:
 * GRPC_CALL_ERROR_..." into err (and the log, since it means a bug here), and
 * returns -1; returns 0 for GRPC_CALL_OK. */
int rpc__check(grpc_call_error e, const char *what, const char *file, int line, char *err,
               size_t errlen);
#define RPC_CHECK(e, what, err, errlen) rpc__check((e), (what), __FILE__, __LINE__, (err), (errlen))

/* Formats a call's failure, "METHOD to PEER: STATUS_NAME: details (file:line)". */
void rpc__status_err(char *err, size_t errlen, const char *method, const char *peer, int code,
                     const char *details, const char *file, int line);

/* grpc_init plus, once per process, gRPC's log routed into ours. */
void rpc__init(void);
/* The last error gRPC logged on this thread ("" if none), for messages such as
 * why a port could not be bound. rpc__log_capture(1) forgets it and keeps
 * this thread's gRPC errors out of the log (the caller reports them in its own
 * words) until rpc__log_capture(0). */
const char *rpc__log_last(void);
void rpc__log_capture(int on);

/* Channel or server arguments for opt; args holds at least RPC_MAX_ARGS. */
#define RPC_MAX_ARGS 12
int rpc__args(grpc_arg *args, size_t *n, const rpc_options_t *opt, int server, char *err,
              size_t errlen);

/* Credentials for opt: TLS when opt names its files, else insecure. */
int rpc__server_creds(const rpc_options_t *opt, grpc_server_credentials **out, char *err,
                      size_t errlen);
int rpc__channel_creds(const rpc_options_t *opt, grpc_channel_credentials **out, char *err,
                       size_t errlen);

/* Copies a received message into out, one memcpy per slice; out is grown only
 * when too small. Returns -1 when gRPC cannot read it (bad compression). */
int rpc__flatten(grpc_byte_buffer *bb, rpc_buf_t *out);

/* A growable array of segments, reused from message to message. */
typedef struct {
    rpc_seg_t *seg;
    size_t cap;
} rpc_segs_t;

/* Describes a received message in out without copying it: its slices as
 * segments (kept in segs). A buffer gRPC has not decompressed is flattened
 * into flat instead, as one segment. Valid while bb lives (and segs and flat
 * are unchanged); -1 when gRPC cannot read it. */
int rpc__segments(grpc_byte_buffer *bb, rpc_segs_t *segs, rpc_buf_t *flat, rpc_msg_t *out);

/* Send buffers: a pool keeps a few big blocks and lends them out as slices, so
 * that large sends copy into warm memory instead of a fresh allocation. A
 * block comes back when gRPC drops its last reference, maybe after the call
 * has completed and maybe on another thread; the pool outlives its owner until
 * then. */
typedef struct rpc_pool rpc_pool_t;
rpc_pool_t *rpc__pool_new(void);
/* Drops the owner's reference. */
void rpc__pool_release(rpc_pool_t *p);
/* A slice holding a copy of data; the caller owns one reference. */
grpc_slice rpc__pool_copy(rpc_pool_t *p, const void *data, size_t len);
/* A blob of at least len bytes (rpc.h); the caller owns one reference. */
rpc_blob_t *rpc__pool_blob(rpc_pool_t *p, size_t len);
/* A new reference to len bytes of b from start, which must lie in b. */
grpc_slice rpc__blob_slice(rpc_blob_t *b, const void *start, size_t len);
/* A byte buffer of the pieces (rpc.h), for a send. */
grpc_byte_buffer *rpc__pieces_buffer(const rpc_piece_t *pieces, size_t n);

/* A gpr deadline seconds from now on the monotonic clock; infinite if <= 0. */
gpr_timespec rpc__deadline(double seconds);

/* ---- The tensor stream (rpc_stream.c) -------------------------------------------
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
 * areas, sealed against shrinking: requests (req_cap bytes) and after them
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

#endif

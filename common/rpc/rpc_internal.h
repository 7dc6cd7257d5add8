/* What rpc.c, rpc_server.c and rpc_client.c share; nothing outside them
 * includes this (it pulls in gRPC's headers). */
#ifndef PSTRAIN_RPC_INTERNAL_H
#define PSTRAIN_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <stdatomic.h>

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

/* What a call of either transport starts with, so that the rpc_call_*
 * functions can tell a gRPC call (rpc_server.c) from a tensor stream call
 * (stream_server.c) and read what both have. */
enum { RPC_CALL_REPLIED = 1, RPC_CALL_CANCELLED = 2 };
typedef struct {
    int is_stream;
    atomic_int flags; /* RPC_CALL_REPLIED, RPC_CALL_CANCELLED */
    void *user;
    const rpc_method_t *method;
    const rpc_msg_method_t *msg_method; /* instead of method */
} rpc_call_head_t;

#endif

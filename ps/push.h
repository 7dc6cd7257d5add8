/* A push as the parameter server reads it: decoded in place from the
 * request's segments (the gradient payloads stay where gRPC received them,
 * so a push is never copied before the optimizer reads it), or taken from a
 * protobuf-c PushRequest (tests, tools). The storage is kept from push to
 * push. */
#ifndef PSTRAIN_PS_PUSH_H
#define PSTRAIN_PS_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"
#include "common/rpc/wire.h"
#include "pstrain.pb-c.h"

/* One Tensor of a push. */
typedef struct {
    const char *name;
    uint64_t row_begin;
    uint64_t rows;
    wire_bytes_t data;      /* rows * row size values encoded as dtype says, in place */
    uint64_t dtype;         /* WIRE_DTYPE_* (fields.h) */
    wire_bytes_t name_wire; /* where the name lies in the request (decoded pushes) */
    /* Rows listed one by one (an embedding table's, ps/sparse.c): data holds
     * n_row_ids rows; 0 for a run of rows. */
    const uint64_t *row_ids;
    size_t n_row_ids;
    size_t ids_at; /* decoding: where its row ids start in ps_push_t.ids */
    /* A sparse tensor (rpc.push_topk): data holds the values of these
     * elements only; n_indices 0: a dense one. */
    const uint32_t *indices;
    size_t n_indices;
    size_t idx_at; /* decoded pushes: where its indices start in ps_push_t.idx */
} ps_grad_t;

typedef struct {
    bool has_caller;
    uint32_t caller_index;
    uint64_t caller_incarnation;
    uint64_t step;
    bool partial;
    uint64_t seq; /* the caller's push number; 0: none */
    size_t n_grads;
    ps_grad_t *grads;
    /* Storage: grads, the names (copied: they may straddle segments) and,
     * for a protobuf-c push, one segment per payload. */
    size_t cap_grads;
    char *names;
    size_t names_cap;
    uint64_t *ids; /* the row ids of every tensor, one after the other */
    size_t n_ids, ids_cap;
    rpc_seg_t *segs;
    uint32_t *idx; /* the sparse tensors' indices, decoded */
    size_t idx_len, idx_cap;
} ps_push_t;

void ps_push_init(ps_push_t *p);
void ps_push_free(ps_push_t *p);

/* Decodes a serialized PushRequest, reading the same fields protobuf-c's
 * unpack reads (unknown fields are skipped; a known field with another wire
 * type is malformed, as for protobuf-c). p points into m until m changes.
 * Returns 0, or -1 when the message is malformed. */
int ps_push_decode(ps_push_t *p, const rpc_msg_t *m);
/* The same push from an unpacked PushRequest, which must outlive p's use. */
void ps_push_from_pb(ps_push_t *p, const Pstrain__PushRequest *r);

#endif

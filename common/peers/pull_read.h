/* A PullResponse read where it lies (in gRPC's slices or a stream frame),
 * the way protobuf-c's unpack reads it: the client's side of the pull that
 * copies each tensor once, straight into the model (psclient.c). */
#ifndef PSTRAIN_PEERS_PULL_READ_H
#define PSTRAIN_PEERS_PULL_READ_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"
#include "common/rpc/wire.h"

/* Longest variable name kept; a longer one names no variable of a model. */
#define PULL_READ_NAME_MAX 256

/* One Tensor of a PullResponse; data points into the message. */
typedef struct {
    char name[PULL_READ_NAME_MAX + 1];
    size_t name_len; /* over PULL_READ_NAME_MAX: name holds only its start */
    uint64_t row_begin, rows;
    wire_bytes_t data;
    uint64_t dtype; /* WIRE_DTYPE_FLOAT32 (also when absent) or WIRE_DTYPE_BFLOAT16 */
    /* Rows listed one by one: their packed ids (wire_packed_varints reads
     * them); len 0 for a run of rows. Only the packed form is read (the
     * PS writes no other). */
    wire_bytes_t row_ids;
} pull_tensor_t;

/* Told each tensor, in the order they came; a non-zero return ends the read
 * and is returned by pull_read. */
typedef int (*pull_tensor_fn)(void *arg, const pull_tensor_t *t);

/* Reads the serialized PullResponse m: each tensor to fn, the last step and
 * lineage to *step and *lineage (0 when absent, as protobuf-c has them).
 * Unknown fields are skipped; a known field of another wire type, or a
 * message cut short, is malformed, as for protobuf-c. Returns 0, -1 when
 * malformed, or what fn returned. */
int pull_read(const rpc_msg_t *m, uint64_t *step, uint64_t *lineage, pull_tensor_fn fn, void *arg);

#endif

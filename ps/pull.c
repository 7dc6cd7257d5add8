#include "pull.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/peers/fields.h"
#include "common/rpc/wire.h"

/* The longest framing of one varint field: a key byte and 10 bytes. */
#define VARINT_FIELD_MAX 11

void ps_pull_init(ps_pull_t *p) {
    memset(p, 0, sizeof *p);
}

void ps_pull_free(ps_pull_t *p) {
    rpc_buf_free(&p->head);
    free(p->piece);
    memset(p, 0, sizeof *p);
}

/* A proto3 uint64 field, left out when 0 as protobuf-c does. */
static uint8_t *put_uint64(uint8_t *at, uint32_t field, uint64_t v) {
    if (v == 0)
        return at;
    return wire_put_varint(wire_put_key(at, field, WIRE_VARINT), v);
}

static size_t uint64_size(uint64_t v) {
    return v ? 1 + wire_varint_size(v) : 0;
}

/* The length of a Tensor's encoding, its data included. */
static size_t tensor_size(const Pstrain__Tensor *t) {
    size_t name = t->name ? strlen(t->name) : 0, data = t->data.len;
    return (name ? 1 + wire_varint_size(name) + name : 0) + uint64_size(t->row_begin) +
           uint64_size(t->rows) + (data ? 1 + wire_varint_size(data) + data : 0);
}

/* Writes a tensor's framing: everything but its data. */
static uint8_t *put_tensor_head(uint8_t *at, const Pstrain__Tensor *t) {
    at = wire_put_varint(wire_put_key(at, FIELD_PULL_TENSORS, WIRE_LEN), tensor_size(t));
    size_t name = t->name ? strlen(t->name) : 0;
    if (name) {
        at = wire_put_varint(wire_put_key(at, FIELD_TENSOR_NAME, WIRE_LEN), name);
        memcpy(at, t->name, name);
        at += name;
    }
    at = put_uint64(at, FIELD_TENSOR_ROW_BEGIN, t->row_begin);
    at = put_uint64(at, FIELD_TENSOR_ROWS, t->rows);
    if (t->data.len)
        at = wire_put_varint(wire_put_key(at, FIELD_TENSOR_DATA, WIRE_LEN), t->data.len);
    return at;
}

/* Room for the whole framing, so that head does not move while pieces are
 * taken from it. */
static size_t head_room(const Pstrain__PullResponse *r) {
    size_t n = 2 * VARINT_FIELD_MAX;
    for (size_t i = 0; i < r->n_tensors; i++) {
        const Pstrain__Tensor *t = r->tensors[i];
        n += 4 * VARINT_FIELD_MAX + 1 + (t->name ? strlen(t->name) : 0) + 1 + 10;
    }
    return n;
}

static void add_piece(ps_pull_t *p, const void *data, size_t len, rpc_blob_t *blob) {
    if (len == 0)
        return;
    p->piece[p->npiece++] = (rpc_piece_t){data, len, blob};
}

void ps_pull_encode(ps_pull_t *p, const Pstrain__PullResponse *r, rpc_blob_t *weights) {
    rpc_buf_reserve(&p->head, head_room(r));
    size_t want = 2 * r->n_tensors + 2;
    if (p->cap < want) {
        p->cap = want;
        p->piece = xrealloc(p->piece, p->cap * sizeof *p->piece);
    }
    p->npiece = 0;
    uint8_t *at = p->head.data, *from = at;
    at = put_uint64(at, FIELD_PULL_STEP, r->step);
    for (size_t i = 0; i < r->n_tensors; i++) {
        const Pstrain__Tensor *t = r->tensors[i];
        at = put_tensor_head(at, t);
        add_piece(p, from, (size_t)(at - from), NULL);
        add_piece(p, t->data.data, t->data.len, weights);
        from = at;
    }
    at = put_uint64(at, FIELD_PULL_LINEAGE, r->lineage);
    add_piece(p, from, (size_t)(at - from), NULL);
    p->head.len = (size_t)(at - p->head.data);
}

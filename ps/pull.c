#include "pull.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/peers/codec.h"
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
    free(p->conv);
    free(p->conv_ptrs);
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

/* The bytes of a tensor's packed row ids (without their key and length). */
static size_t row_ids_size(const Pstrain__Tensor *t) {
    size_t n = 0;
    for (size_t i = 0; i < t->n_row_ids; i++)
        n += wire_varint_size(t->row_ids[i]);
    return n;
}

/* The length of a Tensor's encoding, its data included. */
static size_t tensor_size(const Pstrain__Tensor *t) {
    size_t name = t->name ? strlen(t->name) : 0, data = t->data.len, ids = row_ids_size(t);
    return (name ? 1 + wire_varint_size(name) + name : 0) + uint64_size(t->row_begin) +
           uint64_size(t->rows) + (data ? 1 + wire_varint_size(data) + data : 0) +
           uint64_size((uint64_t)t->dtype) + (ids ? 1 + wire_varint_size(ids) + ids : 0);
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

/* The fields after a tensor's data (protobuf-c writes them in number order). */
static uint8_t *put_tensor_tail(uint8_t *at, const Pstrain__Tensor *t) {
    at = put_uint64(at, FIELD_TENSOR_DTYPE, (uint64_t)t->dtype);
    size_t ids = row_ids_size(t);
    if (!ids)
        return at;
    at = wire_put_varint(wire_put_key(at, FIELD_TENSOR_ROW_IDS, WIRE_LEN), ids);
    for (size_t i = 0; i < t->n_row_ids; i++)
        at = wire_put_varint(at, t->row_ids[i]);
    return at;
}

/* Room for the whole framing, so that head does not move while pieces are
 * taken from it. */
static size_t head_room(const Pstrain__PullResponse *r) {
    size_t n = 2 * VARINT_FIELD_MAX;
    for (size_t i = 0; i < r->n_tensors; i++) {
        const Pstrain__Tensor *t = r->tensors[i];
        n +=
            6 * VARINT_FIELD_MAX + 1 + (t->name ? strlen(t->name) : 0) + 1 + 10 + 10 * t->n_row_ids;
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
        /* Rows listed one by one are gathered, not lent: copied when sent. */
        add_piece(p, t->data.data, t->data.len, t->n_row_ids ? NULL : weights);
        from = at;
        at = put_tensor_tail(at, t);
    }
    at = put_uint64(at, FIELD_PULL_LINEAGE, r->lineage);
    add_piece(p, from, (size_t)(at - from), NULL);
    p->head.len = (size_t)(at - p->head.data);
}

static void free_buffer(void *arg) {
    free(arg);
}

/* Bytes a tensor of n values takes in a 16-bit answer. */
static size_t bf16_bytes(size_t n) {
    return n >= WIRE_BF16_MIN_VALUES ? 2 * n : 4 * n;
}

rpc_blob_t *ps_pull_encode_bf16(ps_pull_t *p, const Pstrain__PullResponse *r) {
    return ps_pull_encode_16(p, r, PSTRAIN__WIRE_DTYPE__BFLOAT16);
}

rpc_blob_t *ps_pull_encode_16(ps_pull_t *p, const Pstrain__PullResponse *r,
                              Pstrain__WireDtype dtype) {
    if (p->conv_cap < r->n_tensors) {
        p->conv_cap = r->n_tensors;
        p->conv = xrealloc(p->conv, p->conv_cap * sizeof *p->conv);
        p->conv_ptrs = xrealloc(p->conv_ptrs, p->conv_cap * sizeof *p->conv_ptrs);
    }
    size_t total = 0;
    for (size_t i = 0; i < r->n_tensors; i++)
        total += bf16_bytes(r->tensors[i]->data.len / sizeof(float));
    uint8_t *buf = xmalloc(total ? total : 1), *at = buf;
    for (size_t i = 0; i < r->n_tensors; i++) {
        const Pstrain__Tensor *t = r->tensors[i];
        size_t n = t->data.len / sizeof(float);
        size_t len = t->n_row_ids ? 4 * n : bf16_bytes(n); /* rows stay float32 */
        p->conv[i] = *t;
        p->conv[i].data = (ProtobufCBinaryData){len, at};
        p->conv[i].dtype = len < 4 * n ? dtype : PSTRAIN__WIRE_DTYPE__FLOAT32;
        if (len < 4 * n)
            p->fp16_clamped +=
                codec_encode(dtype, at, (const float *)(const void *)t->data.data, n);
        else
            memcpy(at, t->data.data, len);
        p->conv_ptrs[i] = &p->conv[i];
        at += len;
    }
    Pstrain__PullResponse conv = *r;
    conv.tensors = p->conv_ptrs;
    rpc_blob_t *blob = rpc_blob_wrap(buf, total, free_buffer, buf);
    ps_pull_encode(p, &conv, blob);
    return blob;
}

/* A PullResponse as the parameter server sends it: the framing of each
 * tensor written out, the tensor data lent from the weights where they lie
 * (a blob), so that answering a pull copies no weights. The bytes are
 * exactly what protobuf-c's pack writes for the same message. */
#ifndef PSTRAIN_PS_PULL_H
#define PSTRAIN_PS_PULL_H

#include "common/rpc/rpc.h"
#include "pstrain.pb-c.h"

typedef struct {
    rpc_buf_t head;     /* the framing, pieces point into it */
    rpc_piece_t *piece; /* 2 per tensor and one for the fields after them */
    size_t npiece, cap;
    /* ps_pull_encode_bf16: the tensors as sent, their data converted */
    Pstrain__Tensor *conv;
    Pstrain__Tensor **conv_ptrs;
    size_t conv_cap;
    uint64_t fp16_clamped; /* weights over 65504 sent as +-65504 in fp16 answers */
} ps_pull_t;

void ps_pull_init(ps_pull_t *p);
void ps_pull_free(ps_pull_t *p);

/* Encodes resp into p->piece: every tensor's data must lie in `weights`
 * (or weights is NULL, and the data is copied when sent). Valid until the
 * next call or resp's data change. */
void ps_pull_encode(ps_pull_t *p, const Pstrain__PullResponse *resp, rpc_blob_t *weights);

/* Encodes resp for a caller that reads bfloat16 (rpc.wire_dtype): tensors
 * of WIRE_BF16_MIN_VALUES values or more as bfloat16 (rounded to nearest),
 * the others as float32, all converted or copied into one buffer that the
 * sends free. Returns that buffer's blob, which the caller unrefs once it
 * has replied with p->piece. */
rpc_blob_t *ps_pull_encode_bf16(ps_pull_t *p, const Pstrain__PullResponse *resp);
/* The same in a 16-bit dtype: BFLOAT16 or FLOAT16 (weights beyond fp16's
 * range go as +-65504 and are counted in p->fp16_clamped). */
rpc_blob_t *ps_pull_encode_16(ps_pull_t *p, const Pstrain__PullResponse *resp,
                              Pstrain__WireDtype dtype);

#endif

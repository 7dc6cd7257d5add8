/* How a Tensor's values travel, for both ends of a push or a pull: the
 * WireDtype encodings (float32, bfloat16, fp16) by their number, error
 * feedback (what an encoding leaves out of a push is kept and added to the
 * next), and top-k sparsification (rpc.push_topk: a push carries the k
 * largest-magnitude values of a partition and their indices, the rest kept
 * as the residual). */
#ifndef PSTRAIN_PEERS_CODEC_H
#define PSTRAIN_PEERS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes a value takes in dtype (a WireDtype number): 4, 2, or 0 for a dtype
 * this build does not know. */
size_t codec_value_bytes(uint64_t dtype);
/* Whether dtype is one of the 2-byte encodings. */
bool codec_is16(uint64_t dtype);

/* Writes n floats encoded as dtype at dst; returns the values fp16 had to
 * clamp (wire_fp16.h). */
size_t codec_encode(uint64_t dtype, uint8_t *dst, const float *src, size_t n);
/* Reads n values encoded as dtype (any alignment) into floats. */
void codec_decode(uint64_t dtype, float *dst, const uint8_t *src, size_t n);
/* 0 when the n 2-byte values at src (dtype codec_is16) are all finite. */
int codec_check_finite16(uint64_t dtype, const uint8_t *src, size_t n);

/* Error feedback: writes g + residual encoded as dtype at dst and keeps in
 * residual what the encoding left out. Returns the values clamped. */
size_t codec_encode_feedback(uint64_t dtype, uint8_t *dst, const float *g, float *residual,
                             size_t n);

/* The k of top-k for n values at `fraction` (0, 1]: fraction * n rounded
 * up, at least 1 and at most n. */
size_t codec_topk_count(size_t n, double fraction);
/* The indices of the k values of largest magnitude among x[0..n), in
 * ascending order, into idx (ties: the lower indices; NaN counts as the
 * largest). scratch holds n floats. Expected O(n). */
void codec_topk_select(const float *x, size_t n, size_t k, uint32_t *idx, float *scratch);
/* Top-k with error feedback: e = g + residual; the k values of e of largest
 * magnitude are written, encoded as dtype, at values (k of them) and their
 * indices at idx; residual becomes e less what was sent (e where not sent,
 * the encoding's rounding where sent). scratch holds n floats. Returns the
 * values clamped.
 * With velocity (not NULL: momentum correction, Lin et al., "Deep Gradient
 * Compression", 2018): u = momentum * u + g comes first and e = u +
 * residual, so that what is sent adds up to momentum SGD's steps, for the
 * PS to apply as plain SGD. u is not zeroed where sent (DGC's momentum
 * factor masking): that cuts each gradient's momentum tail short whenever
 * its element is sent, which at 10% sends lost 2 points on the MLP. */
size_t codec_topk_feedback(uint64_t dtype, const float *g, float *residual, size_t n, size_t k,
                           uint32_t *idx, uint8_t *values, float *scratch, float *velocity,
                           float momentum);

#endif

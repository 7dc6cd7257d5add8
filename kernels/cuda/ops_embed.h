/* Launchers of the Embedding layer's CUDA kernels (kernels/cuda/ops_embed.cu),
 * with kernels/cpu/ops_embed.c as their reference. */
#ifndef PSTRAIN_CUDA_OPS_EMBED_H
#define PSTRAIN_CUDA_OPS_EMBED_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

void cuk_embed_forward(float *y, const float *ids, const float *table, size_t n, size_t dim,
                       size_t rows);
void cuk_embed_backward(float *dtable, const float *dy, const float *ids, size_t n, size_t dim,
                        size_t rows);

#ifdef __cplusplus
}
#endif

#endif

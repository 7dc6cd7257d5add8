/* The CPU ops of the Embedding layer (see the last entries of backend_t):
 * plain loops, the references the CUDA counterparts are tested against. */
#ifndef PSTRAIN_CPU_OPS_EMBED_H
#define PSTRAIN_CPU_OPS_EMBED_H

#include "kernels/backend.h"

void cpu_embed_forward(float *y, const float *ids, const float *table, size_t n, size_t dim,
                       size_t rows);
void cpu_embed_backward(float *dtable, const float *dy, const float *ids, size_t n, size_t dim,
                        size_t rows);

#endif

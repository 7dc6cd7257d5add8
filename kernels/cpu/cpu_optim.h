/* The optimizer update rules of common/optim.c (whose top comment writes
 * them down) on the CPU, one per element, run by drivers that vectorize. */
#ifndef PSTRAIN_CPU_OPTIM_H
#define PSTRAIN_CPU_OPTIM_H

#include "kernels/backend.h"

void cpu_apply_update(const update_step_t *k, float *w, float *slot0, float *slot1, const float *g,
                      size_t n);

#endif

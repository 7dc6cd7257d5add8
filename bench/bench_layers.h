/* pstrain-bench-compute --layers: each layer's ops timed on their own. */
#ifndef PSTRAIN_BENCH_LAYERS_H
#define PSTRAIN_BENCH_LAYERS_H

#include <stddef.h>

#include "common/model/model.h"

/* Times, on the calling thread, every op a training step runs for each
 * layer of m at batch n (forward, its bias and activation, backward-data,
 * backward-filter, the loss, the optimizer over all parameters) and prints
 * one line each:
 *   layer=NAME op=OP ms=X gflops=Y
 * (gflops only for the products), then the sum. The median of reps runs of
 * each op, in the thread's CPU time (a shared machine's other jobs left out). Returns 0, or 2 when
 * a buffer cannot be had. */
int bench_layers(const model_t *m, const backend_t *be, size_t n, size_t reps);

#endif

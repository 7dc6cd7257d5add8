/* Pushes for the shard tests: a Tensor per partition of a shard. */
#ifndef PSTRAIN_TESTS_SHARD_TENSORS_H
#define PSTRAIN_TESTS_SHARD_TENSORS_H

#include "ps/shard.h"

/* One Tensor per partition of s in *t (pointers to them in *tp; both the
 * caller's to free), named and placed as the partition; with g non-NULL
 * each holds the partition's values of g, a slab of s->store.size floats. */
void shard_tensors(const ps_shard_t *s, float *g, Pstrain__Tensor **t, Pstrain__Tensor ***tp);

#endif

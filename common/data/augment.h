/* Training-time augmentation of image examples, run by the loader's prefetch
 * thread: random horizontal flip, random crop with zero padding and random
 * translation (zero fill), each drawn from a key of (seed, epoch, shard) and
 * the example's index, so a run is the same however the thread is timed and
 * on resume. Off by default; evaluation never augments. */
#ifndef PSTRAIN_AUGMENT_H
#define PSTRAIN_AUGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    bool flip;        /* mirror left-right with probability 1/2 */
    size_t crop_pad;  /* pad by this many pixels and crop back: a shift in [-pad, pad] */
    double translate; /* shift by up to this fraction of the height and width */
} augment_opts_t;

/* True when o changes anything. */
bool augment_enabled(const augment_opts_t *o);

/* Augments x[h][w][c] in place with the draws of (key, index); tmp holds
 * h * w * c floats. */
void augment_example(float *x, float *tmp, size_t h, size_t w, size_t c, const augment_opts_t *o,
                     uint64_t key, uint64_t index);

#endif

#include "common/data/augment.h"

#include <string.h>

#include "kernels/backend.h"

bool augment_enabled(const augment_opts_t *o) {
    return o->flip || o->crop_pad > 0 || o->translate > 0;
}

/* A uniform integer in [-r, r] from one 64-bit draw (r is small, so the
 * modulo's bias, below 2^-50, does not matter). */
static long draw_shift(uint64_t r, size_t range) {
    return (long)(r % (2 * range + 1)) - (long)range;
}

/* x shifted by (dy, dx) (positive: content moves down, right), zero fill,
 * optionally mirrored; from src into dst. */
static void shift(float *dst, const float *src, size_t h, size_t w, size_t c, long dy, long dx,
                  bool flip) {
    for (size_t y = 0; y < h; y++) {
        long sy = (long)y - dy;
        for (size_t x = 0; x < w; x++) {
            long sx = (long)(flip ? w - 1 - x : x) - dx;
            float *d = dst + (y * w + x) * c;
            if (sy < 0 || sy >= (long)h || sx < 0 || sx >= (long)w) {
                memset(d, 0, c * sizeof *d);
                continue;
            }
            memcpy(d, src + ((size_t)sy * w + (size_t)sx) * c, c * sizeof *d);
        }
    }
}

void augment_example(float *x, float *tmp, size_t h, size_t w, size_t c, const augment_opts_t *o,
                     uint64_t key, uint64_t index) {
    uint64_t base = index * 5;
    bool flip = o->flip && (rng_mix(key, base) >> 63);
    long dy = 0, dx = 0;
    if (o->crop_pad > 0) {
        dy += draw_shift(rng_mix(key, base + 1), o->crop_pad);
        dx += draw_shift(rng_mix(key, base + 2), o->crop_pad);
    }
    if (o->translate > 0) {
        dy += draw_shift(rng_mix(key, base + 3), (size_t)(o->translate * (double)h));
        dx += draw_shift(rng_mix(key, base + 4), (size_t)(o->translate * (double)w));
    }
    if (!flip && dy == 0 && dx == 0)
        return;
    memcpy(tmp, x, h * w * c * sizeof *x);
    shift(x, tmp, h, w, c, dy, dx, flip);
}

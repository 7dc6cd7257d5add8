#include "backend.h"

#include <math.h>

/* splitmix64's finalizer over key + counter * golden ratio: a counter-based
 * generator (the stream for a key is splitmix64 seeded with the key), cheap
 * enough to draw a dropout mask per element and easy to mirror on a GPU. */
uint64_t rng_mix(uint64_t key, uint64_t counter) {
    uint64_t z = key + (counter + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float rng_uniform(uint64_t key, uint64_t counter) {
    return (float)(rng_mix(key, counter) >> 40) * (1.0f / 16777216.0f);
}

uint64_t rng_key(uint64_t seed, const char *name, uint64_t extra) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return rng_mix(rng_mix(seed, h), extra);
}

/* rng_uniform is u * 2^-24 for a 24-bit u, exact in float, so it is >= rate
 * exactly when u >= ceil(rate * 2^24); rates above 1 keep nothing. */
uint64_t rng_threshold(float rate) {
    if (!(rate > 0.0f))
        return 0;
    if (rate >= 1.0f)
        return (uint64_t)1 << 24;
    return (uint64_t)ceil((double)rate * 16777216.0);
}

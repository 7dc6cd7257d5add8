#include "common/peers/codec.h"

#include <math.h>
#include <string.h>

#include "common/base/util.h"
#include "common/peers/fields.h"
#include "common/rpc/wire.h"
#include "common/rpc/wire_fp16.h"

size_t codec_value_bytes(uint64_t dtype) {
    switch (dtype) {
    case WIRE_DTYPE_FLOAT32:
        return 4;
    case WIRE_DTYPE_BFLOAT16:
    case WIRE_DTYPE_FLOAT16:
        return 2;
    }
    return 0;
}

bool codec_is16(uint64_t dtype) {
    return codec_value_bytes(dtype) == 2;
}

size_t codec_encode(uint64_t dtype, uint8_t *dst, const float *src, size_t n) {
    if (dtype == WIRE_DTYPE_FLOAT16)
        return wire_fp16_from_floats(dst, src, n);
    if (dtype == WIRE_DTYPE_BFLOAT16)
        wire_bf16_from_floats(dst, src, n);
    else
        memcpy(dst, src, n * sizeof(float));
    return 0;
}

void codec_decode(uint64_t dtype, float *dst, const uint8_t *src, size_t n) {
    if (dtype == WIRE_DTYPE_FLOAT16)
        wire_fp16_to_floats(dst, src, n);
    else if (dtype == WIRE_DTYPE_BFLOAT16)
        wire_bf16_to_floats(dst, src, n);
    else
        memcpy(dst, src, n * sizeof(float));
}

int codec_check_finite16(uint64_t dtype, const uint8_t *src, size_t n) {
    return dtype == WIRE_DTYPE_FLOAT16 ? wire_fp16_check_finite(src, n)
                                       : wire_bf16_check_finite(src, n);
}

/* Values encoded and decoded back a block at a time (on the stack). */
#define FEEDBACK_BLOCK 256

size_t codec_encode_feedback(uint64_t dtype, uint8_t *dst, const float *g, float *residual,
                             size_t n) {
    if (dtype == WIRE_DTYPE_BFLOAT16) { /* one pass; bfloat16 never clamps */
        wire_bf16_feedback(dst, g, residual, n);
        return 0;
    }
    float e[FEEDBACK_BLOCK], q[FEEDBACK_BLOCK];
    size_t bytes = codec_value_bytes(dtype), clamped = 0;
    for (size_t i = 0; i < n; i += FEEDBACK_BLOCK) {
        size_t m = PS_MIN(n - i, (size_t)FEEDBACK_BLOCK);
        for (size_t j = 0; j < m; j++)
            e[j] = g[i + j] + residual[i + j];
        clamped += codec_encode(dtype, dst + bytes * i, e, m);
        codec_decode(dtype, q, dst + bytes * i, m);
        for (size_t j = 0; j < m; j++)
            residual[i + j] = e[j] - q[j];
    }
    return clamped;
}

size_t codec_topk_count(size_t n, double fraction) {
    double k = ceil(fraction * (double)n);
    if (k < 1)
        return n ? 1 : 0;
    return k >= (double)n ? n : (size_t)k;
}

/* |x|, with NaN as the largest of all (so that it is sent, and refused). */
static float magnitude(float x) {
    return isnan(x) ? HUGE_VALF : fabsf(x);
}

static float median3(float a, float b, float c) {
    if (a > b) {
        float t = a;
        a = b;
        b = t;
    }
    return c < a ? a : c > b ? b : c;
}

/* The value that would sit at a[kth] were a[0..n) sorted ascending
 * (Hoare's selection: a is reordered). */
static float kth_smallest(float *a, long n, long kth) {
    long lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = median3(a[lo], a[lo + (hi - lo) / 2], a[hi]);
        long i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        /* a[lo..j] <= pivot <= a[i..hi]; between them, values equal to it */
        if (kth <= j)
            hi = j;
        else if (kth >= i)
            lo = i;
        else
            return pivot;
    }
    return a[kth];
}

void codec_topk_select(const float *x, size_t n, size_t k, uint32_t *idx, float *scratch) {
    if (k == 0)
        return;
    for (size_t i = 0; i < n; i++)
        scratch[i] = magnitude(x[i]);
    float t = kth_smallest(scratch, (long)n, (long)(n - k)); /* the k-th largest */
    size_t above = 0;
    for (size_t i = 0; i < n; i++)
        above += magnitude(x[i]) > t;
    size_t ties = k - above, got = 0;
    for (size_t i = 0; i < n && got < k; i++) {
        float m = magnitude(x[i]);
        if (m > t || (m == t && ties > 0)) {
            ties -= m == t;
            idx[got++] = (uint32_t)i;
        }
    }
}

size_t codec_topk_feedback(uint64_t dtype, const float *g, float *residual, size_t n, size_t k,
                           uint32_t *idx, uint8_t *values, float *scratch, float *velocity,
                           float momentum) {
    if (velocity)
        for (size_t i = 0; i < n; i++) {
            velocity[i] = momentum * velocity[i] + g[i];
            residual[i] += velocity[i]; /* e */
        }
    else
        for (size_t i = 0; i < n; i++)
            residual[i] += g[i]; /* e */
    codec_topk_select(residual, n, k, idx, scratch);
    for (size_t j = 0; j < k; j++)
        scratch[j] = residual[idx[j]];
    size_t clamped = codec_encode(dtype, values, scratch, k);
    codec_decode(dtype, scratch, values, k);
    for (size_t j = 0; j < k; j++)
        residual[idx[j]] -= scratch[j];
    return clamped;
}

#include "common/rpc/wire_fp16.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "common/base/util.h"
#include "common/rpc/wire.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_F16C_PATH 1
#endif

/* Magnitudes at or above 65520 (0x477ff000) round to Inf: the tie between
 * 65504 and 65536 goes to 65536's even mantissa. */
#define HALF_INF_FROM 0x477ff000u
#define HALF_NORMAL_FROM 0x38800000u /* 2^-14, the smallest normal half */
#define REBIAS (112u << 23)          /* exponent bias 127 -> 15 */

/* Rounds a float whose magnitude (bits a, under 2^-14) falls in the
 * subnormal range: m * 2^-24, m rounded to nearest even (m may reach
 * 0x400, the smallest normal, which is its right encoding). */
static uint16_t subnormal_of(uint32_t a) {
    uint32_t e = a >> 23;
    if (e < 102) /* under 2^-25: rounds to 0 */
        return 0;
    uint32_t mant = (a & 0x7fffffu) | 0x800000u, shift = 126 - e; /* 14..24 */
    uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (m & 1u)))
        m++;
    return (uint16_t)m;
}

uint16_t wire_fp16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, the top of its payload kept */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x1ffu));
    if (a >= HALF_INF_FROM)
        return (uint16_t)(sign | 0x7c00u);
    if (a < HALF_NORMAL_FROM)
        return (uint16_t)(sign | subnormal_of(a));
    uint32_t r = a - REBIAS;
    r += 0x0fffu + ((r >> 13) & 1u); /* to nearest even on the 13 bits dropped */
    return (uint16_t)(sign | (r >> 13));
}

float wire_fp16_value(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0x1f)
        u = sign | 0x7f800000u | (m << 13);
    else if (e != 0)
        u = sign | ((e << 23) + REBIAS) | (m << 13);
    else if (m == 0)
        u = sign;
    else { /* subnormal, m * 2^-24: normalised */
        uint32_t s = 0;
        for (; !(m & 0x400u); s++)
            m <<= 1;
        u = sign | ((113u - s) << 23) | ((m & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void put16(uint8_t *p, uint16_t h) {
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static uint16_t get16(const uint8_t *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static void portable_from(uint8_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        put16(dst + 2 * i, wire_fp16_of(src[i]));
}

static void portable_to(float *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = wire_fp16_value(get16(src + 2 * i));
}

#ifdef HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) static void hw_from(uint8_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(void *)(dst + 2 * i), h);
    }
    portable_from(dst + 2 * i, src + i, n - i);
}

__attribute__((target("avx,f16c"))) static void hw_to(float *dst, const uint8_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                      (const __m128i *)(const void *)(src + 2 * i))));
    portable_to(dst + i, src + 2 * i, n - i);
}
#endif

#ifdef HAVE_F16C_PATH
/* CPUID leaf 1: F16C and AVX, and the OS saving the AVX registers
 * (OSXSAVE, and XCR0's SSE and AVX state bits). Compilers disagree on
 * __builtin_cpu_supports("f16c"), so it is asked directly. */
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    const unsigned f16c = 1u << 29, avx = 1u << 28, osxsave = 1u << 27;
    if ((c & (f16c | avx | osxsave)) != (f16c | avx | osxsave))
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 6u) == 6u;
}
#endif

/* -1: not decided yet; 0: portable; 1: F16C. */
static atomic_int use_hw = -1;

bool wire_fp16_hw(void) {
    int v = atomic_load_explicit(&use_hw, memory_order_relaxed);
    if (v < 0) {
#ifdef HAVE_F16C_PATH
        v = cpu_has_f16c();
#else
        v = 0;
#endif
        atomic_store_explicit(&use_hw, v, memory_order_relaxed);
    }
    return v == 1;
}

void wire_fp16_force_portable(bool on) {
    atomic_store_explicit(&use_hw, on ? 0 : -1, memory_order_relaxed);
}

static void from_block(uint8_t *dst, const float *src, size_t n) {
#ifdef HAVE_F16C_PATH
    if (wire_fp16_hw()) {
        hw_from(dst, src, n);
        return;
    }
#endif
    portable_from(dst, src, n);
}

/* Values converted a block at a time, clamped on the way (a block of floats
 * stays in the L1 cache). */
#define CLAMP_BLOCK 256

size_t wire_fp16_from_floats(uint8_t *dst, const float *src, size_t n) {
    float tmp[CLAMP_BLOCK];
    size_t clamped = 0;
    for (size_t i = 0; i < n; i += CLAMP_BLOCK) {
        size_t m = PS_MIN(n - i, (size_t)CLAMP_BLOCK);
        for (size_t j = 0; j < m; j++) {
            float x = src[i + j]; /* NaN fails both tests and stays NaN */
            bool hi = x > WIRE_FP16_MAX && x < HUGE_VALF, lo = x < -WIRE_FP16_MAX && x > -HUGE_VALF;
            clamped += hi | lo;
            tmp[j] = hi ? WIRE_FP16_MAX : lo ? -WIRE_FP16_MAX : x;
        }
        from_block(dst + 2 * i, tmp, m);
    }
    return clamped;
}

void wire_fp16_to_floats(float *dst, const uint8_t *src, size_t n) {
#ifdef HAVE_F16C_PATH
    if (wire_fp16_hw()) {
        hw_to(dst, src, n);
        return;
    }
#endif
    portable_to(dst, src, n);
}

int wire_fp16_check_finite(const uint8_t *src, size_t n) {
    return wire_check_finite16(src, n, 0x7c00u);
}

/* The CPU backend's matrix product: kernels of its own for AVX-512 and for
 * AVX2+FMA, chosen once at run time, with OpenBLAS taking every product they
 * do not suit. */
#ifndef PSTRAIN_CPU_GEMM_H
#define PSTRAIN_CPU_GEMM_H

#include <stdbool.h>
#include <stddef.h>

/* Which product kernel runs the products it suits. */
typedef enum {
    CPU_MM_OPENBLAS = 0, /* OpenBLAS takes every product */
    CPU_MM_AVX2,         /* 6 x 16 tiles of 8-float registers, AVX2 + FMA */
    CPU_MM_AVX512,       /* 6 x 64 tiles of 16-float registers */
} cpu_mm_kind_t;

/* Picks the kernel once (thread-safe): the widest the CPU runs, unless
 * PSTRAIN_CPU_GEMM asks for "openblas", "avx2" or "avx512" (a kernel the
 * CPU lacks falls back to the best it has), and pins OpenBLAS to one thread. */
void cpu_gemm_init(void);
cpu_mm_kind_t cpu_gemm_kind(void);
/* OpenBLAS's core with pstrain's kernel, e.g. "SkylakeX+avx512", "Haswell+avx2". */
const char *cpu_gemm_name(void);

/* Whether the chosen kernel takes a product whose b is stored [k, n]. */
bool cpu_gemm_fast(size_t n);

/* c[m, n] = alpha * op(a)[m, k] op(b)[k, n] + beta * c, as backend_t's gemm. */
void cpu_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *a,
              const float *b, float beta, float *c);

#endif

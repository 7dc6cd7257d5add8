/* The CPU backend's matrix product. OpenBLAS copies ("packs") both operands
 * of every call before its kernel runs; for the convolutions' products (b a
 * few dozen to a few hundred columns, a an im2col chunk already laid out row
 * by row) that copying was 14% of a training step. The kernels here read
 * both in place: a tile of rows of c by whole vectors of columns lives in
 * registers while it walks k, broadcasting one a value per row and loading a
 * row of b. The AVX-512 one reached the FMA peak of the Zen 4 core it was
 * measured on, against 85% for OpenBLAS; the AVX2 one is the same loop on
 * 8-float registers for CPUs without AVX-512. */
#include "kernels/cpu/cpu_gemm.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* c[m, n] = alpha * A[m, k] b[k, n] + beta * c[m, n], with A(r, l) at
 * a[r * ars + l * acs] so that a stored transposed needs no copy. */
typedef struct {
    const float *a;
    size_t ars, acs;
    const float *b;
    size_t ldb;
    float *c;
    size_t ldc;
    size_t m, n, k;
    float alpha, beta;
} mm_t;

/* The kernel chosen and the name cpu_gemm_name reports: written once,
 * under gemm_once, by choose_kernel. */
static pthread_once_t gemm_once = PTHREAD_ONCE_INIT;
static cpu_mm_kind_t kind;
static char name[64];

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_MM_SIMD 1
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
#define TILE_ROWS 6
/* k is walked in blocks so that the block of b (128 x 64 floats, 32 KiB,
 * for AVX-512) stays in L1 while every row tile of c passes over it. */
#define TILE_K 128

static size_t min_size(size_t a, size_t b) {
    return a < b ? a : b;
}

/* Rows of a this many floats apart or more are copied into a panel first:
 * a tile reads one cache line from each of its 6 rows, and rows 4 KiB or
 * more apart (the dense layer's 12544 inputs) fall in a handful of L1 sets
 * and evict each other; the CNN's dense forward ran at a third of the
 * kernel's speed. A conv's im2col rows (K floats) are read in place. */
#define PACK_STRIDE 1024

/* Whether the product reads a through a panel. */
static bool mm_packs(const mm_t *p) {
    return p->acs == 1 && p->ars >= PACK_STRIDE;
}

/* panel[l * mr + r] = A(i + r, l0 + l) for a tile's mr rows and kc steps,
 * and *q the product of that tile alone (rows [i, i + mr) of c, k block
 * l0) reading it: the same sums in the same order as without the panel. */
static void pack_panel(float *panel, mm_t *q, const mm_t *p, size_t i, size_t mr, size_t l0,
                       size_t kc) {
    const float *a = p->a + i * p->ars + l0;
    for (size_t r = 0; r < mr; r++)
        for (size_t l = 0; l < kc; l++)
            panel[l * mr + r] = a[r * p->ars + l];
    *q = *p;
    q->a = panel;
    q->ars = 1;
    q->acs = mr;
    q->b = p->b + l0 * p->ldb;
    q->c = p->c + i * p->ldc;
    q->m = mr;
    q->k = kc;
}

/* ---- AVX-512: tiles of up to 6 rows by 4 x 16 floats (24 registers) ---- */

#define AVX512_VECS 4

/* One tile: rows [i, i + mr) by 16-float vectors [j, j + 16 nv) of c, over
 * l in [l0, l0 + kc); beta applies to what c held. mr and nv are constants
 * at every call site, so the loops unroll and acc stays in registers. */
AVX512 static inline __attribute__((always_inline)) void
tile512(const mm_t *p, size_t i, size_t j, size_t l0, size_t kc, float beta, int mr, int nv) {
    __m512 acc[TILE_ROWS][AVX512_VECS];
    const float *a = p->a + i * p->ars + l0 * p->acs, *b = p->b + l0 * p->ldb + j;
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (size_t l = 0; l < kc; l++, a += p->acs, b += p->ldb) {
        __m512 bv[AVX512_VECS];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            __m512 av = _mm512_set1_ps(a[(size_t)r * p->ars]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    __m512 alpha = _mm512_set1_ps(p->alpha), vbeta = _mm512_set1_ps(beta);
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        float *c = p->c + (i + (size_t)r) * p->ldc + j;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __m512 out = _mm512_mul_ps(acc[r][v], alpha);
            if (beta != 0.0f) /* beta 0 overwrites c, NaN included */
                out = _mm512_fmadd_ps(vbeta, _mm512_loadu_ps(c + 16 * v), out);
            _mm512_storeu_ps(c + 16 * v, out);
        }
    }
}

#define CASE512(mr, nv)                                                                            \
    case (mr)*8 + (nv):                                                                            \
        tile512(p, i, j, l0, kc, beta, mr, nv);                                                    \
        break;
#define CASES512(mr) CASE512(mr, 1) CASE512(mr, 2) CASE512(mr, 3) CASE512(mr, 4)

/* One tile of any size up to 6 x 4 vectors, each size compiled on its own. */
AVX512 static void tile512_any(const mm_t *p, size_t i, size_t j, size_t l0, size_t kc, float beta,
                               int mr, int nv) {
    switch (mr * 8 + nv) {
        CASES512(1)
        CASES512(2)
        CASES512(3)
        CASES512(4)
        CASES512(5)
        CASES512(6)
    }
}

/* mm_avx512 with a copied into a panel per row tile (see mm_packs). */
AVX512 static void mm_avx512_packed(const mm_t *p) {
    float panel[TILE_K * TILE_ROWS];
    for (size_t l0 = 0; l0 < p->k; l0 += TILE_K) {
        size_t kc = min_size(TILE_K, p->k - l0);
        float beta = l0 ? 1.0f : p->beta;
        for (size_t i = 0; i < p->m; i += TILE_ROWS) {
            int mr = (int)min_size(TILE_ROWS, p->m - i);
            mm_t q;
            pack_panel(panel, &q, p, i, (size_t)mr, l0, kc);
            for (size_t j = 0; j < p->n; j += 16 * AVX512_VECS)
                tile512_any(&q, 0, j, 0, kc, beta, mr, (int)min_size(AVX512_VECS, (p->n - j) / 16));
        }
    }
}

/* The whole product; n must be a multiple of 16. */
AVX512 static void mm_avx512(const mm_t *p) {
    if (mm_packs(p)) {
        mm_avx512_packed(p);
        return;
    }
    for (size_t l0 = 0; l0 < p->k; l0 += TILE_K) {
        size_t kc = min_size(TILE_K, p->k - l0);
        float beta = l0 ? 1.0f : p->beta;
        for (size_t j = 0; j < p->n; j += 16 * AVX512_VECS) {
            int nv = (int)min_size(AVX512_VECS, (p->n - j) / 16);
            for (size_t i = 0; i < p->m; i += TILE_ROWS)
                tile512_any(p, i, j, l0, kc, beta, (int)min_size(TILE_ROWS, p->m - i), nv);
        }
    }
}

/* ---- AVX2 + FMA: tiles of up to 6 rows by 2 x 8 floats ----
 *
 * 16 registers: 12 accumulators, 2 rows of b, one broadcast of a, one
 * spare; per step of k 12 FMAs against 8 loads, which both Haswell-class
 * and Zen cores issue in the time of the FMAs. */

#define AVX2_VECS 2

/* The AVX2 tile, as tile512 with 8-float vectors. */
AVX2 static inline __attribute__((always_inline)) void
tile256(const mm_t *p, size_t i, size_t j, size_t l0, size_t kc, float beta, int mr, int nv) {
    __m256 acc[TILE_ROWS][AVX2_VECS];
    const float *a = p->a + i * p->ars + l0 * p->acs, *b = p->b + l0 * p->ldb + j;
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            acc[r][v] = _mm256_setzero_ps();
    for (size_t l = 0; l < kc; l++, a += p->acs, b += p->ldb) {
        __m256 bv[AVX2_VECS];
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            __m256 av = _mm256_broadcast_ss(a + (size_t)r * p->ars);
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++)
                acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    __m256 alpha = _mm256_set1_ps(p->alpha), vbeta = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        float *c = p->c + (i + (size_t)r) * p->ldc + j;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            __m256 out = _mm256_mul_ps(acc[r][v], alpha);
            if (beta != 0.0f) /* beta 0 overwrites c, NaN included */
                out = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(c + 8 * v), out);
            _mm256_storeu_ps(c + 8 * v, out);
        }
    }
}

#define CASE256(mr, nv)                                                                            \
    case (mr)*8 + (nv):                                                                            \
        tile256(p, i, j, l0, kc, beta, mr, nv);                                                    \
        break;
#define CASES256(mr) CASE256(mr, 1) CASE256(mr, 2)

/* One tile of any size up to 6 x 2 vectors, each size compiled on its own. */
AVX2 static void tile256_any(const mm_t *p, size_t i, size_t j, size_t l0, size_t kc, float beta,
                             int mr, int nv) {
    switch (mr * 8 + nv) {
        CASES256(1)
        CASES256(2)
        CASES256(3)
        CASES256(4)
        CASES256(5)
        CASES256(6)
    }
}

/* mm_avx2 with a copied into a panel per row tile (see mm_packs). */
AVX2 static void mm_avx2_packed(const mm_t *p) {
    float panel[TILE_K * TILE_ROWS];
    for (size_t l0 = 0; l0 < p->k; l0 += TILE_K) {
        size_t kc = min_size(TILE_K, p->k - l0);
        float beta = l0 ? 1.0f : p->beta;
        for (size_t i = 0; i < p->m; i += TILE_ROWS) {
            int mr = (int)min_size(TILE_ROWS, p->m - i);
            mm_t q;
            pack_panel(panel, &q, p, i, (size_t)mr, l0, kc);
            for (size_t j = 0; j < p->n; j += 8 * AVX2_VECS)
                tile256_any(&q, 0, j, 0, kc, beta, mr, (int)min_size(AVX2_VECS, (p->n - j) / 8));
        }
    }
}

/* The whole product; n must be a multiple of 8. The 16 columns of a tile
 * are a quarter of AVX-512's, so b's block (128 x 16 floats, 8 KiB) leaves
 * room in L1 for the rows of a that every tile of the column strip rereads. */
AVX2 static void mm_avx2(const mm_t *p) {
    if (mm_packs(p)) {
        mm_avx2_packed(p);
        return;
    }
    for (size_t l0 = 0; l0 < p->k; l0 += TILE_K) {
        size_t kc = min_size(TILE_K, p->k - l0);
        float beta = l0 ? 1.0f : p->beta;
        for (size_t j = 0; j < p->n; j += 8 * AVX2_VECS) {
            int nv = (int)min_size(AVX2_VECS, (p->n - j) / 8);
            for (size_t i = 0; i < p->m; i += TILE_ROWS)
                tile256_any(p, i, j, l0, kc, beta, (int)min_size(TILE_ROWS, p->m - i), nv);
        }
    }
}
#endif

/* ---- choosing ---- */

/* The kernel PSTRAIN_CPU_GEMM names, capped by what the CPU runs. */
static cpu_mm_kind_t pick_kind(void) {
    const char *want = getenv("PSTRAIN_CPU_GEMM");
    cpu_mm_kind_t best = CPU_MM_OPENBLAS;
#ifdef HAVE_MM_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        best = CPU_MM_AVX2;
    if (__builtin_cpu_supports("avx512f"))
        best = CPU_MM_AVX512;
#endif
    if (want && strcmp(want, "openblas") == 0)
        return CPU_MM_OPENBLAS;
    if (want && strcmp(want, "avx2") == 0 && best >= CPU_MM_AVX2)
        return CPU_MM_AVX2;
    return best;
}

static void choose_kernel(void) {
    static const char *const suffix[] = {"", "+avx2", "+avx512"};
    openblas_set_num_threads(1);
    kind = pick_kind();
    snprintf(name, sizeof name, "%s%s", openblas_get_corename(), suffix[kind]);
}

const char *cpu_backend_blas_config(void) {
    return openblas_get_config();
}

void cpu_gemm_init(void) {
    pthread_once(&gemm_once, choose_kernel);
}

cpu_mm_kind_t cpu_gemm_kind(void) {
    pthread_once(&gemm_once, choose_kernel);
    return kind;
}

const char *cpu_gemm_name(void) {
    pthread_once(&gemm_once, choose_kernel);
    return name;
}

/* AVX-512 takes n in whole 16-float vectors, AVX2 in whole 8-float ones. */
bool cpu_gemm_fast(size_t n) {
    cpu_mm_kind_t k = cpu_gemm_kind();
    return (k == CPU_MM_AVX512 && n % 16 == 0) || (k == CPU_MM_AVX2 && n % 8 == 0);
}

/* ---- gemm ---- */

/* c[n] = beta * c[n] with BLAS's rule that beta == 0 overwrites (NaN too). */
static void scale_or_zero(float *c, float beta, size_t n) {
    if (beta == 0.0f) {
        memset(c, 0, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++)
        c[i] *= beta;
}

/* Whether pstrain's kernel takes the product. With ta it reads a down its
 * columns: a tile takes one cache line from each of up to 128 rows of a.
 * Rows over 4 KiB apart are neither prefetched nor kept in L1 together; the
 * dense layer's dw (rows of 12544 floats, a out of cache) ran 10-25% slower
 * than OpenBLAS, which copies a into a panel first. A conv's im2col chunk,
 * just written and in L2, has rows of K floats. */
#ifdef HAVE_MM_SIMD
static bool own_kernel_takes(bool ta, bool tb, size_t m, size_t n) {
    return !tb && cpu_gemm_fast(n) && !(ta && m > 1024);
}
#endif

/* Sizes must fit a BLAS int, which every tensor of a model that fits in
 * memory does. */
void cpu_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *a,
              const float *b, float beta, float *c) {
    if (m == 0 || n == 0)
        return;
    if (k == 0 || alpha == 0.0f) {
        scale_or_zero(c, beta, m * n);
        return;
    }
#ifdef HAVE_MM_SIMD
    if (own_kernel_takes(ta, tb, m, n)) {
        mm_t p = {a, ta ? 1 : k, ta ? m : 1, b, n, c, n, m, n, k, alpha, beta};
        if (kind == CPU_MM_AVX512)
            mm_avx512(&p);
        else
            mm_avx2(&p);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)m, (blasint)n, (blasint)k, alpha, a, (blasint)(ta ? m : k), b,
                (blasint)(tb ? k : n), beta, c, (blasint)n);
}

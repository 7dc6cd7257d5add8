/* What the kernels tests (test_kernels.c, test_kernels_conv.c) share: the CPU
 * backend, backend buffers freed together at the end of a test, inputs that
 * are pure functions of a seed, central differences, and the choice of
 * product kernel. */
#ifndef PSTRAIN_TEST_KERNELS_HELPERS_H
#define PSTRAIN_TEST_KERNELS_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* The CPU backend, initialised on first use. */
const backend_t *be(void);

/* Backend memory of `bytes`, freed by release_buffers (at most 64 at once). */
void *buffer(size_t bytes);
void release_buffers(void);

/* n floats uniform in [lo, hi), a pure function of the seed. */
float *random_floats(size_t n, uint64_t seed, float lo, float hi);
/* n floats equal to v. */
float *filled(size_t n, float v);
/* d[n] rounded to float. */
float *to_float(const double *d, size_t n);
/* n doubles, zero. */
double *doubles(size_t n);
/* sum of a[i] * b[i], in double. */
double dot(const float *a, const float *b, size_t n);

/* A scalar loss of the current parameters, e.g. sum(op(x) * r). */
typedef double (*loss_fn)(void *ctx);

/* grad[i] = d loss / d param[i] by central differences of step eps, using
 * the step actually taken after rounding to float. */
float *numeric_grad(float *param, size_t n, loss_fn loss, void *ctx, float eps);

/* OpenBLAS takes every product, as on a CPU without AVX-512 or AVX2. */
void force_openblas(void);
/* The AVX2 kernel, on a CPU with AVX-512 too; false (the test marked
 * skipped) without AVX2 + FMA. */
bool force_avx2(void);

#endif

/* A tiny test harness: each test is a void function named in tests/tests.def;
 * the runner runs one by name (ctest gives every test its own process and
 * timeout). A failed check prints both values and returns from the test. */
#ifndef PSTRAIN_TEST_H
#define PSTRAIN_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

extern int test_failures;
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks the test skipped with a reason (the caller then returns): the runner
 * prints it and exits 77, which CTest counts as skipped, never as passed. */
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond);                              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                      \
        if (va_ != vb_) {                                                                          \
            test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, va_, vb_);             \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol * max(1, |a|, |b|): a tolerance that scales with magnitude. */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double va_ = (double)(a), vb_ = (double)(b);                                               \
        double m_ = fabs(va_) > fabs(vb_) ? fabs(va_) : fabs(vb_);                                 \
        if (!(fabs(va_ - vb_) <= (tol) * (m_ > 1.0 ? m_ : 1.0))) {                                 \
            test_fail(__FILE__, __LINE__, "%s ~= %s: %.9g vs %.9g (tol %g)", #a, #b, va_, vb_,     \
                      (double)(tol));                                                              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                            \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_)) {                                                              \
            test_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)",    \
                      n_);                                                                         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Compares two float arrays element-wise with a magnitude-scaled tolerance;
 * prints the first few mismatches. Returns the number of mismatches. */
size_t test_compare(const char *what, const float *got, const float *want, size_t n, double tol);
#define CHECK_ARRAY_NEAR(what, got, want, n, tol)                                                  \
    do {                                                                                           \
        if (test_compare((what), (got), (want), (n), (tol)) != 0) {                                \
            test_fail(__FILE__, __LINE__, "%s: arrays differ", (what));                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* A fresh directory under $TMPDIR for this test; removed by the runner. */
const char *test_tmpdir(void);
/* test_tmpdir()/name, in one of 32 rotating buffers. */
const char *test_path(const char *name);
/* Writes len bytes to path, or exits 2 (the test cannot go on). */
void test_write_bytes(const char *path, const void *p, size_t len);
/* Makes this process's writes past `bytes` of a file fail with EFBIG (and
 * ignores SIGXFSZ): a disk that fills up, for testing write errors. Each test
 * runs in a process of its own, so the limit ends with the test. */
void test_limit_file_size(size_t bytes);

#define TEST(name) void test_##name(void);
#include "tests.def"
#undef TEST

#endif

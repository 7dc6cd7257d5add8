/* Tests of the CPU ops of BatchNormalization (kernels/cpu/ops_bn.c): the
 * statistics and the normalization against references written here in
 * double, and the backward (gamma's, beta's and the input's gradients
 * through the batch statistics) against central differences of the double
 * reference. */
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "kernels/backend.h"
#include "test_helpers.h"

static const backend_t *be(void) {
    cpu_backend_init();
    return cpu_backend();
}

/* n values in [lo, hi). */
/* Per-channel mean and biased variance of x[rows, c] in double. */
static void ref_moments(const double *x, size_t rows, size_t c, double *mean, double *var) {
    for (size_t j = 0; j < c; j++) {
        double s = 0.0, q = 0.0;
        for (size_t r = 0; r < rows; r++)
            s += x[r * c + j];
        mean[j] = s / (double)rows;
        for (size_t r = 0; r < rows; r++)
            q += (x[r * c + j] - mean[j]) * (x[r * c + j] - mean[j]);
        var[j] = q / (double)rows;
    }
}

/* 12000 rows around 5 (a mean large beside the spread, where float sums
 * would lose digits), 70 channels (more than one block of 64). */
void test_ops_bn_stats(void) {
    size_t rows = 12000, c = 70;
    float *x = test_floats(rows * c, 1, 4.0f, 6.0f);
    double *xd = xmalloc(rows * c * sizeof(double)), *mean = xmalloc(c * sizeof(double));
    double *var = xmalloc(c * sizeof(double));
    for (size_t i = 0; i < rows * c; i++)
        xd[i] = x[i];
    ref_moments(xd, rows, c, mean, var);
    float *sum = xmalloc(c * sizeof(float)), *sq = xmalloc(c * sizeof(float));
    float *want_sum = xmalloc(c * sizeof(float)), *want_sq = xmalloc(c * sizeof(float));
    float *m = xmalloc(c * sizeof(float));
    for (size_t j = 0; j < c; j++) {
        want_sum[j] = (float)(mean[j] * (double)rows);
        m[j] = (float)mean[j];
    }
    be()->bn_stats(sum, x, NULL, rows, c);
    CHECK_ARRAY_NEAR("sum", sum, want_sum, c, 1e-6);
    /* The squared deviations from the float mean the model passes. */
    for (size_t j = 0; j < c; j++) {
        double q = 0.0;
        for (size_t r = 0; r < rows; r++)
            q += (xd[r * c + j] - m[j]) * (xd[r * c + j] - m[j]);
        want_sq[j] = (float)q;
    }
    be()->bn_stats(sq, x, m, rows, c);
    CHECK_ARRAY_NEAR("squared deviations", sq, want_sq, c, 1e-6);
    for (size_t j = 0; j < c; j++)
        CHECK_NEAR(sq[j] / (double)rows, var[j], 1e-6);
    free(x);
    free(xd);
    free(mean);
    free(var);
    free(sum);
    free(sq);
    free(want_sum);
    free(want_sq);
    free(m);
}

/* y = (x - mean) / sqrt(var + eps) * gamma + beta, with and without gamma
 * and beta, and in place. */
void test_ops_bn_forward(void) {
    size_t rows = 301, c = 67;
    float eps = 1e-3f;
    float *x = test_floats(rows * c, 2, -3.0f, 3.0f), *mean = test_floats(c, 3, -1.0f, 1.0f);
    float *var = test_floats(c, 4, 0.0f, 2.0f), *gamma = test_floats(c, 5, 0.5f, 1.5f);
    float *beta = test_floats(c, 6, -0.5f, 0.5f);
    float *y = xmalloc(rows * c * sizeof(float)), *want = xmalloc(rows * c * sizeof(float));
    for (int with = 0; with < 2; with++) {
        for (size_t i = 0; i < rows * c; i++) {
            size_t j = i % c;
            double v = ((double)x[i] - mean[j]) / sqrt((double)var[j] + (double)eps);
            want[i] = (float)(with ? v * gamma[j] + beta[j] : v);
        }
        be()->bn_forward(y, x, mean, var, with ? gamma : NULL, with ? beta : NULL, eps, rows, c);
        CHECK_ARRAY_NEAR(with ? "bn_forward" : "bn_forward without gamma, beta", y, want, rows * c,
                         1e-5);
    }
    memcpy(y, x, rows * c * sizeof(float));
    be()->bn_forward(y, y, mean, var, gamma, beta, eps, rows, c);
    CHECK_ARRAY_NEAR("bn_forward in place", y, want, rows * c, 1e-5);
    free(x);
    free(mean);
    free(var);
    free(gamma);
    free(beta);
    free(y);
    free(want);
}

/* The loss sum(w * BN(x)) of the double reference, normalising x by its own
 * batch statistics as training does. */
static double ref_loss(const double *x, const double *gamma, const double *beta, const float *w,
                       double eps, size_t rows, size_t c) {
    double mean[8], var[8], loss = 0.0;
    ref_moments(x, rows, c, mean, var);
    for (size_t i = 0; i < rows * c; i++) {
        size_t j = i % c;
        double y = (x[i] - mean[j]) / sqrt(var[j] + eps) * gamma[j] + beta[j];
        loss += w[i] * y;
    }
    return loss;
}

/* Central difference of ref_loss in one of its inputs, p[i]. */
static double central(double *p, size_t i, const double *x, const double *gamma, const double *beta,
                      const float *w, double eps, size_t rows, size_t c) {
    double saved = p[i], h = 1e-5;
    p[i] = saved + h;
    double up = ref_loss(x, gamma, beta, w, eps, rows, c);
    p[i] = saved - h;
    double down = ref_loss(x, gamma, beta, w, eps, rows, c);
    p[i] = saved;
    return (up - down) / (2.0 * h);
}

/* dgamma, dbeta and dx (through the mean and the variance) against central
 * differences, for dy = w. */
void test_ops_bn_backward_finite_differences(void) {
    size_t rows = 13, c = 5;
    float eps = 1e-3f;
    float *x = test_floats(rows * c, 7, -2.0f, 2.0f), *w = test_floats(rows * c, 8, -1.0f, 1.0f);
    float *gamma = test_floats(c, 9, 0.5f, 1.5f), *beta = test_floats(c, 10, -0.5f, 0.5f);
    double xd[13 * 5], gd[5], bd[5], mean_d[5], var_d[5];
    for (size_t i = 0; i < rows * c; i++)
        xd[i] = x[i];
    for (size_t j = 0; j < c; j++) {
        gd[j] = gamma[j];
        bd[j] = beta[j];
    }
    ref_moments(xd, rows, c, mean_d, var_d);
    float mean[5], var[5], sums[10], dx[13 * 5], num_dx[13 * 5], num_g[5], num_b[5];
    for (size_t j = 0; j < c; j++) {
        mean[j] = (float)mean_d[j];
        var[j] = (float)var_d[j];
    }
    be()->bn_backward_sums(sums, w, x, mean, var, eps, rows, c);
    be()->bn_backward_data(dx, w, x, mean, var, gamma, sums, eps, rows, rows, c);
    for (size_t i = 0; i < rows * c; i++)
        num_dx[i] = (float)central(xd, i, xd, gd, bd, w, eps, rows, c);
    for (size_t j = 0; j < c; j++) {
        num_g[j] = (float)central(gd, j, xd, gd, bd, w, eps, rows, c);
        num_b[j] = (float)central(bd, j, xd, gd, bd, w, eps, rows, c);
    }
    CHECK_ARRAY_NEAR("gamma's gradient (sum dy * xhat)", sums, num_g, c, 1e-4);
    CHECK_ARRAY_NEAR("beta's gradient (sum dy)", sums + c, num_b, c, 1e-4);
    CHECK_ARRAY_NEAR("dx", dx, num_dx, rows * c, 1e-3);
    /* In place, as a chain runs it. */
    memcpy(dx, w, sizeof dx);
    be()->bn_backward_data(dx, dx, x, mean, var, gamma, sums, eps, rows, rows, c);
    CHECK_ARRAY_NEAR("dx in place", dx, num_dx, rows * c, 1e-3);
    /* Without gamma (scale=False): gamma is 1. */
    for (size_t j = 0; j < c; j++)
        gd[j] = 1.0;
    for (size_t i = 0; i < rows * c; i++)
        num_dx[i] = (float)central(xd, i, xd, gd, bd, w, eps, rows, c);
    be()->bn_backward_data(dx, w, x, mean, var, NULL, sums, eps, rows, rows, c);
    CHECK_ARRAY_NEAR("dx without gamma", dx, num_dx, rows * c, 1e-3);
    free(x);
    free(w);
    free(gamma);
    free(beta);
}

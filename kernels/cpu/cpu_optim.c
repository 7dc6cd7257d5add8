/* Keras's optimizer update rules on flat float32 arrays (the formulas are
 * written down at the top of common/optim.c), run by the parameter server on
 * every push and by a standalone worker on the CPU. */
#include "kernels/cpu/cpu_optim.h"

#include <math.h>

/* Each rule is written once per element (the *_at functions) and run by a
 * driver over blocks of BLOCK elements, then over the tail. The PS runs these
 * over every parameter on every push, so they must vectorize, and GCC 12 at
 * -O2 (its "very cheap" cost model) vectorizes only loops whose trip count is
 * a known multiple of the vector width: the fixed-size inner loop is one. The
 * square-root rules vectorize only where libm's errno is off
 * (-fno-math-errno); without it they run scalar, with the same results. */
#define BLOCK 16

/* Runs stmt for every i in [0, n): blocks of BLOCK, then the tail. */
#define FOR_EACH_BLOCKED(i, n, stmt)                                                               \
    do {                                                                                           \
        size_t block_ = 0;                                                                         \
        for (; block_ + BLOCK <= (n); block_ += BLOCK)                                             \
            for (size_t i = block_; i < block_ + BLOCK; i++)                                       \
                stmt;                                                                              \
        for (size_t i = block_; i < (n); i++)                                                      \
            stmt;                                                                                  \
    } while (0)

/* Drivers stay out of line: GCC forgets their restrict parameters when it
 * inlines them into optim_apply, whose pointers are not restrict, and then
 * does not vectorize. */
#define DRIVER __attribute__((noinline))

/* The constants, passed by value so that no store through a weight pointer
 * can be taken to change them. */
typedef update_step_t coef_t;

static inline void sgd_at(float *restrict w, const float *restrict g, size_t i, coef_t k) {
    w[i] -= k.lr * g[i];
}

static inline void sgd_momentum_at(float *restrict w, float *restrict v, const float *restrict g,
                                   size_t i, coef_t k) {
    v[i] = k.mom * v[i] - k.lr * g[i];
    w[i] += v[i];
}

static inline void sgd_nesterov_at(float *restrict w, float *restrict v, const float *restrict g,
                                   size_t i, coef_t k) {
    v[i] = k.mom * v[i] - k.lr * g[i];
    w[i] += k.mom * v[i] - k.lr * g[i];
}

static inline void adam_at(float *restrict w, float *restrict m, float *restrict v,
                           const float *restrict g, size_t i, coef_t k) {
    m[i] = k.b1 * m[i] + k.one_minus_b1 * g[i];
    v[i] = k.b2 * v[i] + k.one_minus_b2 * g[i] * g[i];
    w[i] -= k.alpha * m[i] / (sqrtf(v[i]) + k.eps);
}

static inline void rmsprop_at(float *restrict w, float *restrict ms, const float *restrict g,
                              size_t i, coef_t k) {
    ms[i] = k.rho * ms[i] + k.one_minus_rho * g[i] * g[i];
    w[i] -= k.lr * g[i] / sqrtf(ms[i] + k.eps);
}

static inline void rmsprop_momentum_at(float *restrict w, float *restrict ms, float *restrict mom,
                                       const float *restrict g, size_t i, coef_t k) {
    ms[i] = k.rho * ms[i] + k.one_minus_rho * g[i] * g[i];
    mom[i] = k.mom * mom[i] + k.lr * g[i] / sqrtf(ms[i] + k.eps);
    w[i] -= mom[i];
}

static inline void adagrad_at(float *restrict w, float *restrict acc, const float *restrict g,
                              size_t i, coef_t k) {
    acc[i] += g[i] * g[i];
    w[i] -= k.lr * g[i] / sqrtf(acc[i] + k.eps);
}

static DRIVER void sgd(float *restrict w, const float *restrict g, size_t n, coef_t k) {
    FOR_EACH_BLOCKED(i, n, sgd_at(w, g, i, k));
}

static DRIVER void sgd_momentum(float *restrict w, float *restrict v, const float *restrict g,
                                size_t n, coef_t k) {
    FOR_EACH_BLOCKED(i, n, sgd_momentum_at(w, v, g, i, k));
}

static DRIVER void sgd_nesterov(float *restrict w, float *restrict v, const float *restrict g,
                                size_t n, coef_t k) {
    FOR_EACH_BLOCKED(i, n, sgd_nesterov_at(w, v, g, i, k));
}

static DRIVER void adam(float *restrict w, float *restrict m, float *restrict v,
                        const float *restrict g, size_t n, coef_t k) {
    FOR_EACH_BLOCKED(i, n, adam_at(w, m, v, g, i, k));
}

static DRIVER void rmsprop(float *restrict w, float *restrict ms, const float *restrict g, size_t n,
                           coef_t k) {
    FOR_EACH_BLOCKED(i, n, rmsprop_at(w, ms, g, i, k));
}

static DRIVER void rmsprop_momentum(float *restrict w, float *restrict ms, float *restrict mom,
                                    const float *restrict g, size_t n, coef_t k) {
    FOR_EACH_BLOCKED(i, n, rmsprop_momentum_at(w, ms, mom, g, i, k));
}

static DRIVER void adagrad(float *restrict w, float *restrict acc, const float *restrict g,
                           size_t n, coef_t k) {
    FOR_EACH_BLOCKED(i, n, adagrad_at(w, acc, g, i, k));
}

void cpu_apply_update(const update_step_t *kp, float *w, float *slot0, float *slot1, const float *g,
                      size_t n) {
    coef_t k = *kp;
    switch (k.rule) {
    case UPDATE_SGD:
        sgd(w, g, n, k);
        break;
    case UPDATE_SGD_MOMENTUM:
        sgd_momentum(w, slot0, g, n, k);
        break;
    case UPDATE_SGD_NESTEROV:
        sgd_nesterov(w, slot0, g, n, k);
        break;
    case UPDATE_ADAM:
        adam(w, slot0, slot1, g, n, k);
        break;
    case UPDATE_RMSPROP:
        rmsprop(w, slot0, g, n, k);
        break;
    case UPDATE_RMSPROP_MOMENTUM:
        rmsprop_momentum(w, slot0, slot1, g, n, k);
        break;
    case UPDATE_ADAGRAD:
        adagrad(w, slot0, g, n, k);
        break;
    }
}

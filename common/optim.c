/* Keras's optimizers on flat float32 arrays.
 *
 * These formulas are a contract: checkpoints store the slots under the names
 * below and restore them into exactly these rules, and the parameter server
 * applies them to each partition it holds. The rules are Keras 3's update
 * steps (keras/src/optimizers/, one file each), plus tf.keras 2.x's legacy `decay`,
 * which Keras 3 dropped:
 *
 *   lr_t = learning_rate / (1 + decay * iterations)      (every optimizer)
 *
 *   SGD, momentum == 0:    w -= lr_t * g                 (no slot)
 *   SGD, momentum  > 0:    v  = momentum * v - lr_t * g  (slot "momentum", starts at 0)
 *                          w += v                        (plain)
 *                          w += momentum * v - lr_t * g  (nesterov, with the new v)
 *
 *   Adam:                  t = iterations + 1
 *                          m = beta1 * m + (1 - beta1) * g          (slot "m", starts at 0)
 *                          v = beta2 * v + (1 - beta2) * g^2        (slot "v", starts at 0)
 *                          alpha = lr_t * sqrt(1 - beta2^t) / (1 - beta1^t)
 *                          w -= alpha * m / (sqrt(v) + epsilon)
 *
 *   RMSprop:               ms = rho * ms + (1 - rho) * g^2          (slot "rms", starts at 0)
 *                          inc = lr_t * g / sqrt(ms + epsilon)
 *                          momentum == 0: w -= inc
 *                          momentum  > 0: mom = momentum * mom + inc  (slot "momentum", at 0)
 *                                         w -= mom
 *
 *   Adagrad:               acc += g^2                    (slot "accumulator", starts at
 *                          w -= lr_t * g / sqrt(acc + epsilon)    initial_accumulator)
 *
 * RMSprop and Adagrad put epsilon inside the square root, as Keras 3 does (and
 * tf.keras 2.x's momentum RMSprop); Adam puts it outside, as every Keras does.
 * Scalars (lr_t, alpha) are computed in double and rounded to float once; the
 * per-element math is float, like Keras on float32 variables. */
#include "optim.h"

#include <math.h>
#include <string.h>

#include "util.h"

static const char *const kind_names[] = {"sgd", "adam", "rmsprop", "adagrad"};

void optim_defaults(optim_cfg_t *c, optim_kind_t kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->learning_rate = kind == OPTIM_SGD ? 0.01 : 0.001;
    c->decay = 0.0;
    c->momentum = 0.0;
    c->nesterov = false;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->epsilon = 1e-7;
    c->rho = 0.9;
    c->initial_accumulator = 0.1;
}

int optim_kind_from_name(const char *name, optim_kind_t *out) {
    for (size_t i = 0; i < PS_ARRAY_LEN(kind_names); i++) {
        if (strcmp(name, kind_names[i]) == 0) {
            *out = (optim_kind_t)i;
            return 0;
        }
    }
    return -1;
}

const char *optim_kind_name(optim_kind_t kind) {
    if ((size_t)kind >= PS_ARRAY_LEN(kind_names))
        return "unknown";
    return kind_names[kind];
}

size_t optim_nslots(const optim_cfg_t *c) {
    switch (c->kind) {
    case OPTIM_SGD:
        return c->momentum > 0 ? 1 : 0;
    case OPTIM_ADAM:
        return 2;
    case OPTIM_RMSPROP:
        return c->momentum > 0 ? 2 : 1;
    case OPTIM_ADAGRAD:
        return 1;
    }
    return 0;
}

const char *optim_slot_name(const optim_cfg_t *c, size_t i) {
    static const char *const names[][OPTIM_MAX_SLOTS] = {
        [OPTIM_SGD] = {"momentum", NULL},
        [OPTIM_ADAM] = {"m", "v"},
        [OPTIM_RMSPROP] = {"rms", "momentum"},
        [OPTIM_ADAGRAD] = {"accumulator", NULL},
    };
    if (i >= optim_nslots(c))
        return NULL;
    return names[c->kind][i];
}

float optim_slot_init(const optim_cfg_t *c, size_t i) {
    if (c->kind == OPTIM_ADAGRAD && i == 0)
        return (float)c->initial_accumulator;
    return 0.0f;
}

double optim_lr(const optim_cfg_t *c, uint64_t iterations) {
    return c->learning_rate / (1.0 + c->decay * (double)iterations);
}

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

/* The constants of one update, rounded to float once. The complements
 * (1 - beta) are taken in double before rounding, as Keras takes them in
 * Python: 1 - 0.999f would be off by 1.3e-5 relative. Passed by value, so
 * that no store through a weight pointer can be taken to change them. */
typedef struct {
    float lr;    /* lr_t */
    float mom;   /* momentum */
    float alpha; /* Adam: lr_t * sqrt(1 - beta2^t) / (1 - beta1^t) */
    float b1, one_minus_b1, b2, one_minus_b2;
    float rho, one_minus_rho;
    float eps;
} coef_t;

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

static coef_t coefficients(const optim_cfg_t *c, uint64_t iterations) {
    double lr = optim_lr(c, iterations);
    double t = (double)iterations + 1.0; /* Adam's step number */
    double alpha = lr * sqrt(1.0 - pow(c->beta2, t)) / (1.0 - pow(c->beta1, t));
    return (coef_t){
        .lr = (float)lr,
        .mom = (float)c->momentum,
        .alpha = (float)alpha,
        .b1 = (float)c->beta1,
        .one_minus_b1 = (float)(1.0 - c->beta1),
        .b2 = (float)c->beta2,
        .one_minus_b2 = (float)(1.0 - c->beta2),
        .rho = (float)c->rho,
        .one_minus_rho = (float)(1.0 - c->rho),
        .eps = (float)c->epsilon,
    };
}

void optim_apply(const optim_cfg_t *c, uint64_t iterations, float *w, float **slots, const float *g,
                 size_t n) {
    coef_t k = coefficients(c, iterations);
    bool momentum = c->momentum > 0;
    switch (c->kind) {
    case OPTIM_SGD:
        if (momentum && c->nesterov)
            sgd_nesterov(w, slots[0], g, n, k);
        else if (momentum)
            sgd_momentum(w, slots[0], g, n, k);
        else
            sgd(w, g, n, k);
        break;
    case OPTIM_ADAM:
        adam(w, slots[0], slots[1], g, n, k);
        break;
    case OPTIM_RMSPROP:
        if (momentum)
            rmsprop_momentum(w, slots[0], slots[1], g, n, k);
        else
            rmsprop(w, slots[0], g, n, k);
        break;
    case OPTIM_ADAGRAD:
        adagrad(w, slots[0], g, n, k);
        break;
    }
}

int optim_from_config(optim_cfg_t *o, const config_t *c, char *err, size_t errlen) {
    optim_kind_t kind;
    if (optim_kind_from_name(c->train.optimizer, &kind))
        return ps_errf(err, errlen, "train.optimizer: unknown optimizer \"%s\"",
                       c->train.optimizer);
    optim_defaults(o, kind);
    o->learning_rate = c->train.learning_rate;
    o->decay = c->train.decay;
    /* train.momentum is SGD's; RMSprop runs without momentum, as Keras's default. */
    o->momentum = kind == OPTIM_SGD ? c->train.momentum : 0.0;
    o->nesterov = c->train.nesterov;
    o->beta1 = c->train.beta1;
    o->beta2 = c->train.beta2;
    o->epsilon = c->train.epsilon;
    o->rho = c->train.rho;
    o->initial_accumulator = c->train.initial_accumulator;
    return 0;
}

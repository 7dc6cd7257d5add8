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
 * per-element math is float, like Keras on float32 variables. The rules run
 * as a backend op: kernels/cpu/cpu_optim.c on the CPU, the CUDA plugin's
 * kernel for a store kept on a GPU. */
#include "common/train/optim.h"

#include <math.h>
#include <string.h>

#include "common/base/util.h"

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

/* The rule a configuration applies. */
static update_rule_t rule_of(const optim_cfg_t *c) {
    bool momentum = c->momentum > 0;
    switch (c->kind) {
    case OPTIM_SGD:
        return !momentum ? UPDATE_SGD : c->nesterov ? UPDATE_SGD_NESTEROV : UPDATE_SGD_MOMENTUM;
    case OPTIM_ADAM:
        return UPDATE_ADAM;
    case OPTIM_RMSPROP:
        return momentum ? UPDATE_RMSPROP_MOMENTUM : UPDATE_RMSPROP;
    case OPTIM_ADAGRAD:
        return UPDATE_ADAGRAD;
    }
    return UPDATE_SGD;
}

/* The complements (1 - beta) are taken in double before rounding, as Keras
 * takes them in Python: 1 - 0.999f would be off by 1.3e-5 relative. */
static void step_scaled(const optim_cfg_t *c, uint64_t iterations, double scale,
                        update_step_t *out) {
    double lr = optim_lr(c, iterations) * scale;
    double t = (double)iterations + 1.0; /* Adam's step number */
    double alpha = lr * sqrt(1.0 - pow(c->beta2, t)) / (1.0 - pow(c->beta1, t));
    *out = (update_step_t){
        .rule = rule_of(c),
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

void optim_update_step(const optim_cfg_t *c, uint64_t iterations, update_step_t *out) {
    step_scaled(c, iterations, 1.0, out);
}

void optim_update_step_scaled(const optim_cfg_t *c, uint64_t iterations, double scale,
                              update_step_t *out) {
    step_scaled(c, iterations, scale, out);
}

void optim_apply(const optim_cfg_t *c, uint64_t iterations, float *w, float **slots, const float *g,
                 size_t n) {
    optim_apply_scaled(c, iterations, 1.0, w, slots, g, n);
}

double optim_linear_scale(double k, uint64_t iterations, uint64_t warmup) {
    if (k <= 1.0 || warmup == 0 || iterations >= warmup)
        return k > 1.0 ? k : 1.0;
    return 1.0 + (k - 1.0) * (double)iterations / (double)warmup;
}

double optim_staleness_scale(uint64_t staleness) {
    return staleness > 1 ? 1.0 / (double)staleness : 1.0;
}

/* The step sizes are scaled in double before their rounding to float, so
 * that scale 1 gives optim_apply's floats bit for bit. */
void optim_apply_scaled(const optim_cfg_t *c, uint64_t iterations, double scale, float *w,
                        float **slots, const float *g, size_t n) {
    update_step_t k;
    step_scaled(c, iterations, scale, &k);
    size_t nslots = optim_nslots(c);
    cpu_backend()->apply_update(&k, w, nslots > 0 ? slots[0] : NULL, nslots > 1 ? slots[1] : NULL,
                                g, n);
}

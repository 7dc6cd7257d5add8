/* Tests of the optimizers: names, defaults and slots; a few updates worked out
 * by hand; and several steps on 37 elements (two vector blocks and a tail)
 * against a reference written here in double from Keras's formulas. */
#include "test.h"

#include <stdint.h>

#include "common/train/optim.h"

#define N 37
#define STEPS 3

/* Gradients of step s: magnitudes from 1 down to 1e-5, so that where epsilon
 * goes matters, and signs that change between steps, so that the slots carry
 * both. */
static float grad(int s, size_t i) {
    static const float scale[] = {1.0f, 0.1f, 1e-2f, 1e-3f, 1e-4f, 1e-5f};
    float sign = ((i + (size_t)s) % 3 == 0) ? -1.0f : 1.0f;
    return sign * scale[i % 6] * (1.0f + 0.25f * (float)(i % 5) + 0.5f * (float)s);
}

/* Counts elements where |got - want| > rtol * |want| (+ a tiny floor), and
 * prints the first few. Float against double: rtol 1e-5 leaves room for
 * float rounding and none for a wrong formula. */
static size_t compare_rel(const char *what, const float *got, const double *want, size_t n,
                          double rtol) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)got[i] - want[i]) <= rtol * fabs(want[i]) + 1e-20)
            continue;
        if (bad < 6)
            fprintf(stderr, "  %s[%zu]: got %.9g want %.9g\n", what, i, (double)got[i], want[i]);
        bad++;
    }
    return bad;
}

#define CHECK_REL(what, got, want, n)                                                              \
    do {                                                                                           \
        if (compare_rel((what), (got), (want), (n), 1e-5) != 0) {                                  \
            test_fail(__FILE__, __LINE__, "%s differs from the reference", (what));                \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* The reference: one update in double, straight from the formulas. */
typedef struct {
    double w[N], s0[N], s1[N];
} ref_t;

static void ref_step(const optim_cfg_t *c, uint64_t it, ref_t *r, int s) {
    double lr = c->learning_rate / (1.0 + c->decay * (double)it);
    double t = (double)it + 1.0;
    for (size_t i = 0; i < N; i++) {
        double g = grad(s, i);
        switch (c->kind) {
        case OPTIM_SGD:
            if (c->momentum == 0) {
                r->w[i] -= lr * g;
            } else {
                r->s0[i] = c->momentum * r->s0[i] - lr * g;
                r->w[i] += c->nesterov ? c->momentum * r->s0[i] - lr * g : r->s0[i];
            }
            break;
        case OPTIM_ADAM: {
            r->s0[i] = c->beta1 * r->s0[i] + (1 - c->beta1) * g;
            r->s1[i] = c->beta2 * r->s1[i] + (1 - c->beta2) * g * g;
            double mhat = r->s0[i] / (1 - pow(c->beta1, t));
            /* Keras's epsilon-hat form: eps is added to sqrt(v), not sqrt(vhat). */
            double denom = sqrt(r->s1[i]) / sqrt(1 - pow(c->beta2, t)) +
                           c->epsilon / sqrt(1 - pow(c->beta2, t));
            r->w[i] -= lr * mhat / denom;
            break;
        }
        case OPTIM_RMSPROP: {
            r->s0[i] = c->rho * r->s0[i] + (1 - c->rho) * g * g;
            double inc = lr * g / sqrt(r->s0[i] + c->epsilon);
            if (c->momentum > 0) {
                r->s1[i] = c->momentum * r->s1[i] + inc;
                r->w[i] -= r->s1[i];
            } else {
                r->w[i] -= inc;
            }
            break;
        }
        case OPTIM_ADAGRAD:
            r->s0[i] += g * g;
            r->w[i] -= lr * g / sqrt(r->s0[i] + c->epsilon);
            break;
        }
    }
}

/* Runs STEPS updates from iteration it0 in both implementations, from zero
 * weights (so the comparison is relative to the updates themselves), and
 * compares the weights and every slot. Returns the number of mismatches. */
static size_t run_against_reference(const optim_cfg_t *c, uint64_t it0) {
    float w[N] = {0}, slot[OPTIM_MAX_SLOTS][N], g[N];
    float *slots[OPTIM_MAX_SLOTS] = {slot[0], slot[1]};
    ref_t r;
    memset(&r, 0, sizeof r);
    for (size_t k = 0; k < optim_nslots(c); k++)
        for (size_t i = 0; i < N; i++)
            slot[k][i] = optim_slot_init(c, k);
    for (size_t i = 0; i < N; i++)
        r.s0[i] = c->kind == OPTIM_ADAGRAD ? c->initial_accumulator : 0.0;
    for (int s = 0; s < STEPS; s++) {
        for (size_t i = 0; i < N; i++)
            g[i] = grad(s, i);
        optim_apply(c, it0 + (uint64_t)s, w, slots, g, N);
        ref_step(c, it0 + (uint64_t)s, &r, s);
    }
    size_t bad = compare_rel("w", w, r.w, N, 1e-5);
    if (optim_nslots(c) > 0)
        bad += compare_rel(optim_slot_name(c, 0), slot[0], r.s0, N, 1e-5);
    if (optim_nslots(c) > 1)
        bad += compare_rel(optim_slot_name(c, 1), slot[1], r.s1, N, 1e-5);
    return bad;
}

#define CHECK_AGAINST_REFERENCE(c, it0)                                                            \
    do {                                                                                           \
        if (run_against_reference((c), (it0)) != 0) {                                              \
            test_fail(__FILE__, __LINE__, "%s from iteration %llu differs from the reference",     \
                      optim_kind_name((c)->kind), (unsigned long long)(it0));                      \
            return;                                                                                \
        }                                                                                          \
    } while (0)

void test_optim_kind_names(void) {
    const char *names[] = {"sgd", "adam", "rmsprop", "adagrad"};
    const optim_kind_t kinds[] = {OPTIM_SGD, OPTIM_ADAM, OPTIM_RMSPROP, OPTIM_ADAGRAD};
    for (size_t i = 0; i < 4; i++) {
        optim_kind_t k = (optim_kind_t)99;
        CHECK_INT_EQ(optim_kind_from_name(names[i], &k), 0);
        CHECK_INT_EQ(k, kinds[i]);
        CHECK(strcmp(optim_kind_name(kinds[i]), names[i]) == 0);
    }
    optim_kind_t k = OPTIM_ADAM;
    CHECK_INT_EQ(optim_kind_from_name("adamw", &k), -1);
    CHECK_INT_EQ(optim_kind_from_name("SGD", &k), -1);
    CHECK_INT_EQ(optim_kind_from_name("", &k), -1);
    CHECK_INT_EQ(k, OPTIM_ADAM);
    CHECK(strcmp(optim_kind_name((optim_kind_t)42), "unknown") == 0);
}

void test_optim_defaults(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_SGD);
    CHECK_INT_EQ(c.kind, OPTIM_SGD);
    CHECK(c.learning_rate == 0.01);
    CHECK(c.momentum == 0.0);
    CHECK(!c.nesterov);
    CHECK(c.decay == 0.0);
    optim_defaults(&c, OPTIM_ADAM);
    CHECK(c.learning_rate == 0.001);
    CHECK(c.beta1 == 0.9);
    CHECK(c.beta2 == 0.999);
    CHECK(c.epsilon == 1e-7);
    optim_defaults(&c, OPTIM_RMSPROP);
    CHECK(c.learning_rate == 0.001);
    CHECK(c.rho == 0.9);
    CHECK(c.momentum == 0.0);
    CHECK(c.epsilon == 1e-7);
    optim_defaults(&c, OPTIM_ADAGRAD);
    CHECK(c.learning_rate == 0.001);
    CHECK(c.initial_accumulator == 0.1);
    CHECK(c.epsilon == 1e-7);
}

void test_optim_slots(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_SGD);
    CHECK_INT_EQ(optim_nslots(&c), 0);
    CHECK(optim_slot_name(&c, 0) == NULL);
    c.momentum = 0.9;
    CHECK_INT_EQ(optim_nslots(&c), 1);
    CHECK(strcmp(optim_slot_name(&c, 0), "momentum") == 0);
    CHECK(optim_slot_init(&c, 0) == 0.0f);
    CHECK(optim_slot_name(&c, 1) == NULL);

    optim_defaults(&c, OPTIM_ADAM);
    CHECK_INT_EQ(optim_nslots(&c), 2);
    CHECK(strcmp(optim_slot_name(&c, 0), "m") == 0);
    CHECK(strcmp(optim_slot_name(&c, 1), "v") == 0);
    CHECK(optim_slot_init(&c, 0) == 0.0f && optim_slot_init(&c, 1) == 0.0f);
    CHECK(optim_slot_name(&c, 2) == NULL);

    optim_defaults(&c, OPTIM_RMSPROP);
    CHECK_INT_EQ(optim_nslots(&c), 1);
    CHECK(strcmp(optim_slot_name(&c, 0), "rms") == 0);
    CHECK(optim_slot_name(&c, 1) == NULL);
    c.momentum = 0.5;
    CHECK_INT_EQ(optim_nslots(&c), 2);
    CHECK(strcmp(optim_slot_name(&c, 1), "momentum") == 0);
    CHECK(optim_slot_init(&c, 0) == 0.0f && optim_slot_init(&c, 1) == 0.0f);

    optim_defaults(&c, OPTIM_ADAGRAD);
    CHECK_INT_EQ(optim_nslots(&c), 1);
    CHECK(strcmp(optim_slot_name(&c, 0), "accumulator") == 0);
    CHECK(optim_slot_init(&c, 0) == 0.1f);
    c.initial_accumulator = 0.5;
    CHECK(optim_slot_init(&c, 0) == 0.5f);
}

void test_optim_lr_decay(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_SGD);
    c.learning_rate = 0.1;
    CHECK(optim_lr(&c, 0) == 0.1);
    CHECK(optim_lr(&c, 1000) == 0.1);
    c.decay = 0.1;
    CHECK_NEAR(optim_lr(&c, 0), 0.1, 1e-15);
    CHECK_NEAR(optim_lr(&c, 10), 0.05, 1e-15);
    CHECK_NEAR(optim_lr(&c, 30), 0.025, 1e-15);
    /* The update after 10 updates uses lr / 2. */
    float w[1] = {1.0f}, g[1] = {1.0f};
    optim_apply(&c, 10, w, NULL, g, 1);
    CHECK_NEAR(w[0], 0.95, 1e-7);
}

/* Worked by hand: plain SGD, lr 0.1, two steps with the same gradient. */
void test_optim_sgd_hand(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_SGD);
    c.learning_rate = 0.1;
    float w[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.1f, -0.2f, 0.3f};
    optim_apply(&c, 0, w, NULL, g, 3);
    const float want1[3] = {0.99f, -1.98f, 0.47f};
    CHECK_ARRAY_NEAR("w after 1", w, want1, 3, 1e-6);
    optim_apply(&c, 1, w, NULL, g, 3);
    const float want2[3] = {0.98f, -1.96f, 0.44f};
    CHECK_ARRAY_NEAR("w after 2", w, want2, 3, 1e-6);
}

/* Worked by hand: lr 0.1, momentum 0.9, w = 1, g = 1 twice.
 * plain:    v = -0.1, w = 0.9;  v = -0.09 - 0.1 = -0.19, w = 0.71
 * nesterov: v = -0.1, w = 1 - 0.09 - 0.1 = 0.81;
 *           v = -0.19, w = 0.81 - 0.171 - 0.1 = 0.539 */
void test_optim_sgd_momentum_hand(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_SGD);
    c.learning_rate = 0.1;
    c.momentum = 0.9;
    float w[1] = {1.0f}, v[1] = {0.0f}, g[1] = {1.0f};
    float *slots[1] = {v};
    optim_apply(&c, 0, w, slots, g, 1);
    CHECK_NEAR(v[0], -0.1, 1e-6);
    CHECK_NEAR(w[0], 0.9, 1e-6);
    optim_apply(&c, 1, w, slots, g, 1);
    CHECK_NEAR(v[0], -0.19, 1e-6);
    CHECK_NEAR(w[0], 0.71, 1e-6);

    c.nesterov = true;
    w[0] = 1.0f;
    v[0] = 0.0f;
    optim_apply(&c, 0, w, slots, g, 1);
    CHECK_NEAR(v[0], -0.1, 1e-6);
    CHECK_NEAR(w[0], 0.81, 1e-6);
    optim_apply(&c, 1, w, slots, g, 1);
    CHECK_NEAR(v[0], -0.19, 1e-6);
    CHECK_NEAR(w[0], 0.539, 1e-6);
}

/* Worked by hand (Keras defaults, lr 0.1, w = 1, g = 1): m = 0.1, v = 0.001,
 * alpha = 0.1 * sqrt(0.001) / 0.1 = 0.0316227766, and the step is
 * alpha * 0.1 / (0.0316227766 + 1e-7) = 0.0999996838: Adam's first step is
 * lr in the direction of -sign(g), for any size of g. */
void test_optim_adam_hand(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_ADAM);
    c.learning_rate = 0.1;
    float w[3] = {1.0f, 1.0f, 1.0f}, m[3] = {0}, v[3] = {0}, g[3] = {1.0f, -50.0f, 0.25f};
    float *slots[2] = {m, v};
    optim_apply(&c, 0, w, slots, g, 3);
    CHECK_NEAR(m[0], 0.1, 1e-6);
    CHECK_NEAR(v[0], 0.001, 1e-6);
    CHECK_NEAR(w[0], 0.900000316, 1e-6);
    CHECK_NEAR(w[1], 1.1, 1e-6);
    CHECK_NEAR(w[2], 0.9, 1e-5);
}

/* Worked by hand (lr 0.01, rho 0.9, w = 1; g = 1 then 0.5):
 * ms = 0.1, w = 1 - 0.01 / sqrt(0.1000001) = 0.968377239;
 * ms = 0.09 + 0.025 = 0.115, w -= 0.005 / sqrt(0.1150001) -> 0.953633050. */
void test_optim_rmsprop_hand(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_RMSPROP);
    c.learning_rate = 0.01;
    float w[1] = {1.0f}, ms[1] = {0.0f}, g[1] = {1.0f};
    float *slots[1] = {ms};
    optim_apply(&c, 0, w, slots, g, 1);
    CHECK_NEAR(ms[0], 0.1, 1e-6);
    CHECK_NEAR(w[0], 0.968377239, 1e-6);
    g[0] = 0.5f;
    optim_apply(&c, 1, w, slots, g, 1);
    CHECK_NEAR(ms[0], 0.115, 1e-6);
    CHECK_NEAR(w[0], 0.953633050, 1e-6);
}

/* Worked by hand (lr 0.1, accumulator from 0.1, w = 1; g = 1 then 0.5):
 * acc = 1.1, w = 1 - 0.1 / sqrt(1.1000001) = 0.904653745;
 * acc = 1.35, w -= 0.05 / sqrt(1.3500001) -> 0.861620599. */
void test_optim_adagrad_hand(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_ADAGRAD);
    c.learning_rate = 0.1;
    float w[1] = {1.0f}, acc[1] = {optim_slot_init(&c, 0)}, g[1] = {1.0f};
    float *slots[1] = {acc};
    optim_apply(&c, 0, w, slots, g, 1);
    CHECK_NEAR(acc[0], 1.1, 1e-6);
    CHECK_NEAR(w[0], 0.904653745, 1e-6);
    g[0] = 0.5f;
    optim_apply(&c, 1, w, slots, g, 1);
    CHECK_NEAR(acc[0], 1.35, 1e-6);
    CHECK_NEAR(w[0], 0.861620599, 1e-6);
}

void test_optim_sgd_reference(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_SGD);
    CHECK_AGAINST_REFERENCE(&c, 0);
    c.decay = 0.05;
    CHECK_AGAINST_REFERENCE(&c, 5);
    c.momentum = 0.9;
    CHECK_AGAINST_REFERENCE(&c, 0);
    CHECK_AGAINST_REFERENCE(&c, 5);
    c.nesterov = true;
    CHECK_AGAINST_REFERENCE(&c, 0);
    CHECK_AGAINST_REFERENCE(&c, 5);
}

void test_optim_adam_reference(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_ADAM);
    CHECK_AGAINST_REFERENCE(&c, 0);
    /* Later iterations change the bias correction and the decay. */
    c.decay = 0.01;
    CHECK_AGAINST_REFERENCE(&c, 7);
    c.beta1 = 0.5;
    c.beta2 = 0.9;
    c.epsilon = 1e-4;
    CHECK_AGAINST_REFERENCE(&c, 0);
}

void test_optim_rmsprop_reference(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_RMSPROP);
    CHECK_AGAINST_REFERENCE(&c, 0);
    c.decay = 0.01;
    CHECK_AGAINST_REFERENCE(&c, 3);
    c.momentum = 0.5;
    CHECK_AGAINST_REFERENCE(&c, 0);
    c.rho = 0.5;
    CHECK_AGAINST_REFERENCE(&c, 3);
}

void test_optim_adagrad_reference(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_ADAGRAD);
    CHECK_AGAINST_REFERENCE(&c, 0);
    c.decay = 0.01;
    CHECK_AGAINST_REFERENCE(&c, 3);
    /* From a zero accumulator, epsilon decides the first steps of small gradients. */
    c.initial_accumulator = 0.0;
    CHECK_AGAINST_REFERENCE(&c, 0);
}

/* A long run (many blocks and a tail) gives the same numbers as the same
 * elements updated one at a time, which only the scalar tail path handles. */
void test_optim_blocks_match_tail(void) {
    enum { LEN = 1000 + 13 };
    static float w_all[LEN], w_one[LEN], s_all[2][LEN], s_one[2][LEN], g[LEN];
    const optim_kind_t kinds[] = {OPTIM_SGD, OPTIM_ADAM, OPTIM_RMSPROP, OPTIM_ADAGRAD};
    for (size_t k = 0; k < 4; k++) {
        optim_cfg_t c;
        optim_defaults(&c, kinds[k]);
        c.momentum = 0.5;
        c.nesterov = k == 0;
        for (size_t i = 0; i < LEN; i++) {
            w_all[i] = w_one[i] = 0.001f * (float)i;
            g[i] = grad(0, i);
            for (size_t j = 0; j < 2; j++)
                s_all[j][i] = s_one[j][i] = optim_slot_init(&c, j);
        }
        float *slots_all[2] = {s_all[0], s_all[1]};
        optim_apply(&c, 0, w_all, slots_all, g, LEN);
        for (size_t i = 0; i < LEN; i++) {
            float *slots_one[2] = {&s_one[0][i], &s_one[1][i]};
            optim_apply(&c, 0, &w_one[i], slots_one, &g[i], 1);
        }
        CHECK_ARRAY_NEAR(optim_kind_name(kinds[k]), w_all, w_one, LEN, 0.0);
        CHECK_ARRAY_NEAR("slot 0", s_all[0], s_one[0], LEN, 0.0);
    }
}

/* The linear scaling rule's schedule (Goyal et al.): from 1x at step 0 to k
 * times at the end of the warm-up, linearly, then k; no warm-up: k at once;
 * one replica: 1. And the staleness-aware multiplier: 1 / staleness. */
void test_optim_lr_schedules(void) {
    CHECK_NEAR(optim_linear_scale(16, 0, 100), 1.0, 1e-15);
    CHECK_NEAR(optim_linear_scale(16, 50, 100), 8.5, 1e-12);
    CHECK_NEAR(optim_linear_scale(16, 99, 100), 1.0 + 15.0 * 0.99, 1e-12);
    CHECK_NEAR(optim_linear_scale(16, 100, 100), 16.0, 1e-15);
    CHECK_NEAR(optim_linear_scale(16, 5000, 100), 16.0, 1e-15);
    CHECK_NEAR(optim_linear_scale(8, 0, 0), 8.0, 1e-15);
    CHECK_NEAR(optim_linear_scale(1, 3, 10), 1.0, 1e-15);
    CHECK_NEAR(optim_staleness_scale(0), 1.0, 1e-15);
    CHECK_NEAR(optim_staleness_scale(1), 1.0, 1e-15);
    CHECK_NEAR(optim_staleness_scale(4), 0.25, 1e-15);
    CHECK_NEAR(optim_staleness_scale(15), 1.0 / 15.0, 1e-15);
}

/* A scaled update: scale 1 is optim_apply bit for bit; scale 0.5 on SGD
 * with momentum halves lr inside the velocity (v = m v - lr / 2 g). */
void test_optim_apply_scaled(void) {
    optim_cfg_t c;
    optim_defaults(&c, OPTIM_ADAM);
    float w1[2] = {0.5f, -1.0f}, w2[2] = {0.5f, -1.0f}, g[2] = {0.3f, -0.7f};
    float m1[2] = {0}, v1[2] = {0}, m2[2] = {0}, v2[2] = {0};
    float *s1[2] = {m1, v1}, *s2[2] = {m2, v2};
    for (uint64_t it = 0; it < 3; it++) {
        optim_apply(&c, it, w1, s1, g, 2);
        optim_apply_scaled(&c, it, 1.0, w2, s2, g, 2);
    }
    CHECK(memcmp(w1, w2, sizeof w1) == 0 && memcmp(v1, v2, sizeof v1) == 0);
    optim_defaults(&c, OPTIM_SGD);
    c.learning_rate = 0.1;
    c.momentum = 0.9;
    float w[1] = {1.0f}, v[1] = {-0.2f}, g1[1] = {1.0f}, *sl[1] = {v};
    optim_apply_scaled(&c, 0, 0.5, w, sl, g1, 1);
    CHECK_NEAR(v[0], 0.9 * -0.2 - 0.05, 1e-7);
    CHECK_NEAR(w[0], 1.0 + 0.9 * -0.2 - 0.05, 1e-7);
}

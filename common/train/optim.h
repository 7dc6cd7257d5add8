/* Optimizers with Keras's update rules and defaults, applied to a flat run of
 * floats with its slots. Used by the parameter server for each partition it
 * holds and, linked in, by a standalone worker. */
#ifndef PSTRAIN_OPTIM_H
#define PSTRAIN_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

typedef enum { OPTIM_SGD = 0, OPTIM_ADAM, OPTIM_RMSPROP, OPTIM_ADAGRAD } optim_kind_t;

#define OPTIM_MAX_SLOTS 2

typedef struct {
    optim_kind_t kind;
    double learning_rate;
    double decay;               /* lr_t = lr / (1 + decay * iterations) (Keras SGD decay) */
    double momentum;            /* SGD: velocity; RMSprop: momentum (0 = none) */
    bool nesterov;              /* SGD only */
    double beta1, beta2;        /* Adam */
    double epsilon;             /* Adam, RMSprop, Adagrad */
    double rho;                 /* RMSprop */
    double initial_accumulator; /* Adagrad */
} optim_cfg_t;

/* Keras defaults for each optimizer (lr 0.01 for SGD, 0.001 otherwise). */
void optim_defaults(optim_cfg_t *c, optim_kind_t kind);
/* "sgd", "adam", "rmsprop", "adagrad"; -1 if unknown. */
int optim_kind_from_name(const char *name, optim_kind_t *out);
const char *optim_kind_name(optim_kind_t kind);

/* Number of slot arrays (each as long as the weights) and their names, which
 * are the suffixes in checkpoints: "momentum"; "m", "v"; "rms", "momentum";
 * "accumulator". */
size_t optim_nslots(const optim_cfg_t *c);
const char *optim_slot_name(const optim_cfg_t *c, size_t i);
/* The value a fresh slot starts at (0, or initial_accumulator for Adagrad). */
float optim_slot_init(const optim_cfg_t *c, size_t i);

/* Learning rate in effect for the update that follows `iterations` updates. */
double optim_lr(const optim_cfg_t *c, uint64_t iterations);

/* One update of w[n] with gradient g[n]; `iterations` is the number of updates
 * applied before this one (Keras's optimizer.iterations), which drives decay
 * and Adam's bias correction. slots has optim_nslots entries of n floats.
 * w, g and the slots must not overlap (the loops are vectorized on that). The
 * formulas are written out at the top of optim.c. */
void optim_apply(const optim_cfg_t *c, uint64_t iterations, float *w, float **slots, const float *g,
                 size_t n);
/* optim_apply with the step size (lr_t, and Adam's alpha) multiplied by
 * `scale`: the slots take the gradient as it is, so momentum, Adam's moments
 * and the accumulators keep the statistics of the gradients, and only how
 * far the weights move changes. Scaling the gradient instead would shrink
 * Adam's v by scale^2 and cancel out of m / sqrt(v). scale 1 is optim_apply. */
void optim_apply_scaled(const optim_cfg_t *c, uint64_t iterations, double scale, float *w,
                        float **slots, const float *g, size_t n);

/* The learning-rate multiplier of the linear scaling rule with gradual
 * warm-up (Goyal et al., 2017): a step that averages k workers' batches
 * takes k times the one-batch rate, reached linearly from 1x over the first
 * `warmup` steps: 1 + (k - 1) * min(1, iterations / warmup). warmup 0: k. */
double optim_linear_scale(double k, uint64_t iterations, uint64_t warmup);

/* The staleness-aware multiplier (Zhang et al., 2016, "Staleness-aware
 * async-SGD"): a gradient computed `staleness` updates ago moves the weights
 * by lr / staleness; a fresh one (staleness 0 or 1) by lr. */
double optim_staleness_scale(uint64_t staleness);

/* The rule and constants of the update that follows `iterations` updates,
 * for a backend's apply_update (optim_apply is that on the CPU). */
void optim_update_step(const optim_cfg_t *c, uint64_t iterations, update_step_t *out);
/* The same with the step size times scale (optim_apply_scaled's). */
void optim_update_step_scaled(const optim_cfg_t *c, uint64_t iterations, double scale,
                              update_step_t *out);

#endif

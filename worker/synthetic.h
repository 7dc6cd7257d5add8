/* Synthetic compute (train.synthetic_step_ms): a worker that stands in for a
 * machine with a GPU without computing, so that tens of workers fit on a few
 * cores and the PS, the network and the protocol are what a run measures.
 * Each step still pulls and pushes every variable of the real model; its
 * gradient is cheap, deterministic and keeps training sane. */
#ifndef PSTRAIN_WORKER_SYNTHETIC_H
#define PSTRAIN_WORKER_SYNTHETIC_H

#include <stddef.h>

/* The weight decay whose gradient a synthetic step pushes. */
#define SYNTHETIC_DECAY 1e-4f

/* grads[n] = SYNTHETIC_DECAY * params[n]: the gradient of the penalty
 * (SYNTHETIC_DECAY / 2) * |w|^2. Deterministic, finite and small, it shrinks
 * the weights by a millionth of themselves per step at the default learning
 * rate, so a model trained by synthetic workers stays what it was. */
void synthetic_gradient(float *grads, const float *params, size_t n);

/* The "compute" of a step that began at `start` (ps_now's clock): sleeps
 * until start + step_ms, or not at all when that has passed. */
void synthetic_wait(double start, double step_ms);

#endif

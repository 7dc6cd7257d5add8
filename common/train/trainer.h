/* Gradients and evaluation of a model over a thread pool: each thread runs
 * its slice of the batch on its own exec (single-threaded BLAS), and the
 * threads then sum their gradients stripe by stripe. One thread on a GPU,
 * where copies run beside the computation: the weights go up layer by layer
 * as the forward pass reaches them, the gradients come down layer by layer as
 * the backward pass leaves them, and the next batch goes up during a step. */
#ifndef PSTRAIN_TRAINER_H
#define PSTRAIN_TRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/model/model.h"
#include "common/train/store.h"

typedef struct trainer trainer_t;

typedef struct {
    double loss;     /* mean cross-entropy */
    double accuracy; /* fraction predicted right */
    size_t n;        /* examples */
} step_metrics_t;

/* threads >= 1 (a device backend runs 1); max_batch is the largest batch any
 * call will pass. */
trainer_t *trainer_create(const model_t *m, const backend_t *be, size_t threads, size_t max_batch);
void trainer_free(trainer_t *t);
size_t trainer_threads(const trainer_t *t);
const backend_t *trainer_backend(const trainer_t *t);

/* Mean gradient over the batch x[n, ...] (host, in [0, 1]) with labels y
 * (host) into grads (host slab of m->nparams, overwritten). Dropout masks
 * come from dropout_seed and each example's position in the batch, so the
 * result does not depend on the number of threads. */
void trainer_gradient(trainer_t *t, const float *params, const float *x, const int32_t *y, size_t n,
                      uint64_t dropout_seed, float *grads, step_metrics_t *out);

/* A standalone worker's training: s (a store holding the whole model, as
 * store_init_full makes) is updated by trainer_step, which is trainer_gradient
 * at s->w then store_apply. On a device the store moves there at attach and
 * stays: a step moves only its batch and its metrics, the optimizer runs on
 * the device, and s->w and the slots on the host are brought up to date by
 * trainer_sync_store (trainer_evaluate with s->w reads the device's weights
 * without it). s must outlive the trainer. */
void trainer_attach_store(trainer_t *t, store_t *s);
void trainer_step(trainer_t *t, const float *x, const int32_t *y, size_t n, uint64_t dropout_seed,
                  step_metrics_t *out);
void trainer_sync_store(trainer_t *t);

/* The next batch's copy beside a step (device backends; nothing happens on
 * the CPU). During each trainer_gradient or trainer_step, once the step's
 * own batch has been copied (its host memory may then be reused), fn(arg) is
 * called while the device computes; it may fetch the next batch and hand it
 * to trainer_stage, whose copy then runs beside the computation. A later call
 * given the same x, y and n uses the staged copy. */
void trainer_set_prefetch(trainer_t *t, void (*fn)(void *arg), void *arg);
void trainer_stage(trainer_t *t, const float *x, const int32_t *y, size_t n);

/* Overlapping a step's computation with moving the model's head (its last
 * layers, whose variables sit at the end of the slab from head_begin on):
 * forward calls wait_head_params before the head layer (every thread; it
 * blocks until the head's weights are in params), and once every thread's
 * backward is past the head, its gradient is summed and head_grads_ready is
 * called (on one compute thread) while the other layers go on backward. On a
 * device the head's weights go up once wait_head_params returns, and its
 * gradient comes down before head_grads_ready. */
typedef struct {
    size_t head;
    size_t head_begin;
    void (*wait_head_params)(void *arg);
    void (*head_grads_ready)(void *arg);
    void *arg;
} trainer_overlap_t;

/* o NULL turns overlap off. */
void trainer_set_overlap(trainer_t *t, const trainer_overlap_t *o);

typedef struct {
    double loss, accuracy;
    size_t n;
    size_t nclasses;
    size_t *class_total;   /* [nclasses] examples per true class */
    size_t *class_correct; /* [nclasses] */
    size_t *confusion;     /* [nclasses][nclasses]: row the true class, column the predicted */
} eval_metrics_t;

/* Loss and accuracy (also per class) of the model on a whole data set, in
 * batches of batch_size (<= max_batch). Caller frees with eval_metrics_free. */
void trainer_evaluate(trainer_t *t, const float *params, const dataset_t *d, size_t batch_size,
                      eval_metrics_t *out);
void eval_metrics_free(eval_metrics_t *e);

/* Checks that a data set fits the model (values per example, classes);
 * the error names `where` (e.g. the data directory). */
int trainer_check_data(const model_t *m, const dataset_t *d, const char *where, char *err,
                       size_t errlen);

/* Global steps a run trains for: max_steps when set, else enough for
 * `epochs` passes over the training set when each global step consumes
 * batch_size * replicas examples (replicas: 1 in async mode, the pushes
 * averaged per step in sync mode). */
uint64_t trainer_target_steps(int64_t max_steps, int64_t epochs, size_t train_examples,
                              size_t batch_size, size_t replicas);

#endif

/* What trainer.c and trainer_device.c share: the trainer itself. A device
 * backend (memory that is not host memory) runs one thread and the device
 * path of trainer_device.c. */
#ifndef PSTRAIN_TRAINER_INTERNAL_H
#define PSTRAIN_TRAINER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "common/train/store.h"
#include "common/train/trainer.h"

typedef struct trainer_device trainer_device_t;

typedef void (*job_fn)(trainer_t *t, size_t k);

struct trainer {
    const model_t *m;
    const backend_t *be;
    size_t nthreads, max_batch;
    model_exec_t **exec;
    float **grads;  /* per thread; grads[0] is unused on host memory (thread 0 writes out) */
    float *dparams; /* backend copy of the parameters when backend memory is not host memory */
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t generation;
    size_t pending;
    bool stop;
    job_fn job;
    /* Arguments of the job in flight. */
    const float *params;
    const float *x;
    const int32_t *y;
    size_t n;
    uint64_t seed;
    float *out;
    double *loss;    /* per thread */
    size_t *correct; /* per thread */
    int32_t *pred;   /* [max_batch] predictions of an evaluation batch */
    trainer_overlap_t overlap;
    bool overlap_on;   /* overlap set, and a gradient is being computed */
    size_t heads_done; /* threads past the head's backward in this step */
    struct hook_ctx {
        trainer_t *t;
        size_t k;
    } * hooks;
    /* BatchNormalization's sums over the threads (model_exec_set_reduce):
     * each thread's buffer of the reduction in progress, how many have
     * arrived, the total, and a generation that tells the waiting threads
     * it is ready. */
    pthread_mutex_t red_mu;
    pthread_cond_t red_cv;
    float **red_bufs;
    size_t red_arrived;
    float *red_total;
    uint64_t red_gen;
    float *xbuf; /* evaluation batch, scaled */
    int32_t *ybuf;
    /* A device backend's copies, batch slots and attached store (NULL on
     * host memory, which runs the threads above instead). */
    trainer_device_t *dev;
    const float *host_params; /* the weights trainer_gradient was given */
    store_t *store;           /* trainer_attach_store's */
    float *step_grads;        /* trainer_step's gradient on host memory */
    void (*prefetch)(void *arg);
    void *prefetch_arg;
};

/* The device path (trainer_device.c). create installs its hooks on the
 * exec; the rest run the public calls of the same names on a device. */
trainer_device_t *trainer_device_create(trainer_t *t);
void trainer_device_free(trainer_t *t);
void trainer_device_gradient(trainer_t *t, const float *params, const float *x, const int32_t *y,
                             size_t n, uint64_t dropout_seed, float *grads, step_metrics_t *out);
void trainer_device_step(trainer_t *t, const float *x, const int32_t *y, size_t n,
                         uint64_t dropout_seed, step_metrics_t *out);
void trainer_device_stage(trainer_t *t, const float *x, const int32_t *y, size_t n);
void trainer_device_attach(trainer_t *t);
void trainer_device_sync_store(trainer_t *t);
/* The attached store's weights on the device when params is the store's
 * host slab, else NULL. */
const float *trainer_device_store_weights(trainer_t *t, const float *params);

#endif

#include "common/train/trainer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/train/trainer_internal.h"
#include "common/base/util.h"
#include "common/train/optim_sparse.h"

/* Thread k's slice of n examples. */
static void slice(size_t n, size_t k, size_t nthreads, size_t *begin, size_t *end) {
    *begin = n * k / nthreads;
    *end = n * (k + 1) / nthreads;
}

static void *pool_main(void *arg);

/* Sums the head's gradient over the threads once the last one is past it,
 * and hands it over (the others go on backward meanwhile). */
static void head_done(trainer_t *t) {
    pthread_mutex_lock(&t->mu);
    bool last = ++t->heads_done == t->nthreads;
    pthread_mutex_unlock(&t->mu);
    if (!last)
        return;
    size_t b = t->overlap.head_begin, n = t->m->nparams - b;
    for (size_t j = 1; j < t->nthreads; j++)
        t->be->axpy(t->out + b, 1.0f, t->grads[j] + b, n);
    t->overlap.head_grads_ready(t->overlap.arg);
}

static void hook_before_forward(void *arg, size_t layer) {
    struct hook_ctx *h = arg;
    if (h->t->overlap_on && layer == h->t->overlap.head)
        h->t->overlap.wait_head_params(h->t->overlap.arg);
}

static void hook_after_backward(void *arg, size_t layer) {
    struct hook_ctx *h = arg;
    if (h->t->overlap_on && layer == h->t->overlap.head)
        head_done(h->t);
}

void trainer_set_overlap(trainer_t *t, const trainer_overlap_t *o) {
    if (!o) {
        t->overlap.wait_head_params = NULL;
        return;
    }
    t->overlap = *o;
    if (t->dev)
        return; /* the device path's own hooks move the head */
    for (size_t k = 0; k < t->nthreads; k++) {
        t->hooks[k] = (struct hook_ctx){.t = t, .k = k};
        model_exec_set_hooks(t->exec[k], hook_before_forward, hook_after_backward, &t->hooks[k]);
    }
}

/* The threads whose slice of the current batch is not empty: they run
 * forward and backward, and so meet at each BatchNormalization. */
static size_t busy_threads(const trainer_t *t) {
    return PS_MIN(t->n, t->nthreads);
}

/* model_reduce_fn: the last thread to arrive sums every busy thread's
 * buffer, in thread order (the same sum whatever the arrival order); each
 * then copies the total into its own. The next reduction cannot overwrite
 * the total before every thread has copied it: its last arrival waits for
 * them all. */
static size_t hook_reduce(void *arg, float *buf, size_t len) {
    struct hook_ctx *h = arg;
    trainer_t *t = h->t;
    pthread_mutex_lock(&t->red_mu);
    t->red_bufs[h->k] = buf;
    if (++t->red_arrived == busy_threads(t)) {
        memset(t->red_total, 0, len * sizeof(float));
        for (size_t k = 0; k < t->nthreads; k++)
            for (size_t j = 0; t->red_bufs[k] && j < len; j++)
                t->red_total[j] += t->red_bufs[k][j];
        memset(t->red_bufs, 0, t->nthreads * sizeof *t->red_bufs);
        t->red_arrived = 0;
        t->red_gen++;
        pthread_cond_broadcast(&t->red_cv);
    } else {
        uint64_t gen = t->red_gen;
        while (t->red_gen == gen)
            pthread_cond_wait(&t->red_cv, &t->red_mu);
    }
    pthread_mutex_unlock(&t->red_mu);
    memcpy(buf, t->red_total, len * sizeof(float));
    return t->n;
}

/* The largest buffer a BatchNormalization reduces: its backward sums, 2c. */
static size_t max_reduce(const model_t *m) {
    size_t len = 0;
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].kind == LAYER_BATCH_NORM)
            len = PS_MAX(len, 2 * m->layers[i].out[2]);
    return len;
}

/* Threads that split a batch share BatchNormalization's statistics. */
static void init_reduce(trainer_t *t) {
    pthread_mutex_init(&t->red_mu, NULL);
    pthread_cond_init(&t->red_cv, NULL);
    t->red_bufs = xcalloc(t->nthreads, sizeof *t->red_bufs);
    t->red_total = xcalloc(max_reduce(t->m) + 1, sizeof(float));
    for (size_t k = 0; t->nthreads > 1 && k < t->nthreads; k++) {
        t->hooks[k] = (struct hook_ctx){.t = t, .k = k};
        model_exec_set_reduce(t->exec[k], hook_reduce, &t->hooks[k]);
    }
}

typedef struct {
    trainer_t *t;
    size_t k;
} pool_arg_t;

static void run_all(trainer_t *t, job_fn job) {
    if (t->nthreads == 1) {
        job(t, 0);
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->job = job;
    t->pending = t->nthreads - 1;
    t->generation++;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->mu);
    job(t, 0);
    pthread_mutex_lock(&t->mu);
    while (t->pending > 0)
        pthread_cond_wait(&t->done, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static void *pool_main(void *arg) {
    pool_arg_t a = *(pool_arg_t *)arg;
    free(arg);
    trainer_t *t = a.t;
    uint64_t seen = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stop && t->generation == seen)
            pthread_cond_wait(&t->go, &t->mu);
        if (t->stop)
            break;
        seen = t->generation;
        job_fn job = t->job;
        pthread_mutex_unlock(&t->mu);
        job(t, a.k);
        pthread_mutex_lock(&t->mu);
        if (--t->pending == 0)
            pthread_cond_signal(&t->done);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

trainer_t *trainer_create(const model_t *m, const backend_t *be, size_t threads, size_t max_batch) {
    trainer_t *t = xcalloc(1, sizeof *t);
    t->m = m;
    t->be = be;
    /* A device runs one stream: the batch is not split. */
    t->nthreads = threads && be->host_memory ? threads : 1;
    t->max_batch = max_batch;
    size_t per_thread = (max_batch + t->nthreads - 1) / t->nthreads;
    t->exec = xcalloc(t->nthreads, sizeof *t->exec);
    t->hooks = xcalloc(t->nthreads, sizeof *t->hooks);
    t->grads = xcalloc(t->nthreads, sizeof *t->grads);
    for (size_t k = 0; k < t->nthreads; k++) {
        t->exec[k] = model_exec_create(m, be, per_thread);
        if (k > 0 || !be->host_memory)
            t->grads[k] = be->alloc(m->nparams * sizeof(float));
    }
    if (!be->host_memory)
        t->dparams = be->alloc(m->nparams * sizeof(float));
    t->loss = xcalloc(t->nthreads, sizeof *t->loss);
    t->correct = xcalloc(t->nthreads, sizeof *t->correct);
    t->pred = xcalloc(max_batch, sizeof *t->pred);
    size_t in_size = m->input[0] * m->input[1] * m->input[2];
    t->xbuf = xalloc_aligned(max_batch * in_size * sizeof(float));
    t->ybuf = xcalloc(max_batch, sizeof *t->ybuf);
    if (!be->host_memory)
        t->dev = trainer_device_create(t);
    init_reduce(t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->go, NULL);
    pthread_cond_init(&t->done, NULL);
    t->tids = xcalloc(t->nthreads, sizeof *t->tids);
    for (size_t k = 1; k < t->nthreads; k++) {
        pool_arg_t *a = xmalloc(sizeof *a);
        a->t = t;
        a->k = k;
        if (pthread_create(&t->tids[k], NULL, pool_main, a) != 0) {
            fprintf(stderr, "fatal: pthread_create failed\n");
            abort();
        }
    }
    return t;
}

void trainer_free(trainer_t *t) {
    if (!t)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->mu);
    for (size_t k = 1; k < t->nthreads; k++)
        pthread_join(t->tids[k], NULL);
    if (t->dev)
        trainer_device_free(t);
    free(t->step_grads);
    for (size_t k = 0; k < t->nthreads; k++) {
        model_exec_free(t->exec[k]);
        if (t->grads[k])
            t->be->free(t->grads[k]);
    }
    if (t->dparams)
        t->be->free(t->dparams);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->go);
    pthread_cond_destroy(&t->done);
    pthread_mutex_destroy(&t->red_mu);
    pthread_cond_destroy(&t->red_cv);
    free(t->red_bufs);
    free(t->red_total);
    free(t->tids);
    free(t->exec);
    free(t->hooks);
    free(t->grads);
    free(t->loss);
    free(t->correct);
    free(t->pred);
    free(t->xbuf);
    free(t->ybuf);
    free(t);
}

size_t trainer_threads(const trainer_t *t) {
    return t->nthreads;
}

/* Loads thread k's slice into its exec and runs forward; returns its size. */
static size_t forward_slice(trainer_t *t, size_t k, bool training, size_t *begin) {
    size_t b, e;
    slice(t->n, k, t->nthreads, &b, &e);
    *begin = b;
    t->loss[k] = 0.0;
    t->correct[k] = 0;
    if (e == b)
        return 0;
    model_exec_t *ex = t->exec[k];
    size_t in_size = t->m->layers[0].in_size;
    t->be->upload(model_exec_input(ex), t->x + b * in_size, (e - b) * in_size * sizeof(float));
    t->be->upload(model_exec_labels(ex), t->y + b, (e - b) * sizeof(int32_t));
    model_forward(ex, t->params, e - b, training, t->seed, b);
    model_loss(ex, e - b, &t->loss[k], &t->correct[k], t->pred ? t->pred + b : NULL);
    return e - b;
}

static float *grad_target(trainer_t *t, size_t k) {
    return k == 0 && t->be->host_memory ? t->out : t->grads[k];
}

static void gradient_job(trainer_t *t, size_t k) {
    size_t b;
    size_t n = forward_slice(t, k, true, &b);
    if (n == 0) {
        t->be->zero(grad_target(t, k), t->m->nparams * sizeof(float));
        if (t->overlap_on)
            head_done(t);
        return;
    }
    model_backward(t->exec[k], t->params, n, 1.0f / (float)t->n, grad_target(t, k));
}

/* Thread k sums its stripe of every other thread's gradient into the output. */
static void reduce_job(trainer_t *t, size_t k) {
    size_t b, e;
    /* With overlap the head was summed already, when its backward ended. */
    slice(t->overlap_on ? t->overlap.head_begin : t->m->nparams, k, t->nthreads, &b, &e);
    for (size_t j = 1; j < t->nthreads; j++)
        t->be->axpy(t->out + b, 1.0f, t->grads[j] + b, e - b);
}

/* reduce_job, then thread k's stripe of the whole slab updated by the
 * attached store's optimizer: the update runs on every thread of the pool,
 * on a stripe just summed. */
static void reduce_apply_job(trainer_t *t, size_t k) {
    size_t b, e;
    reduce_job(t, k);
    slice(t->m->nparams, k, t->nthreads, &b, &e);
    store_apply_range(t->store, t->out, b, e);
}

static void set_params(trainer_t *t, const float *params) {
    if (t->be->host_memory) {
        t->params = params;
        return;
    }
    const float *resident = trainer_device_store_weights(t, params);
    if (resident) {
        t->params = resident;
        return;
    }
    t->be->upload(t->dparams, params, t->m->nparams * sizeof(float));
    t->params = t->dparams;
}

static void sum_metrics(const trainer_t *t, double *loss, size_t *correct) {
    *loss = 0.0;
    *correct = 0;
    for (size_t k = 0; k < t->nthreads; k++) {
        *loss += t->loss[k];
        *correct += t->correct[k];
    }
}

/* trainer_gradient on host memory, the threads' gradients summed by the
 * pool's job `reduce` (reduce_job, or reduce_apply_job for a step). */
static void host_gradient(trainer_t *t, const float *params, const float *x, const int32_t *y,
                          size_t n, uint64_t dropout_seed, float *grads, job_fn reduce,
                          step_metrics_t *out) {
    set_params(t, params);
    t->x = x;
    t->y = y;
    t->n = n;
    t->seed = dropout_seed;
    t->out = grads;
    int32_t *pred = t->pred;
    t->pred = NULL;
    t->overlap_on = t->overlap.wait_head_params != NULL;
    t->heads_done = 0;
    run_all(t, gradient_job);
    t->pred = pred;
    if (t->nthreads > 1 || reduce != reduce_job)
        run_all(t, reduce);
    t->overlap_on = false;
    double loss;
    size_t correct;
    sum_metrics(t, &loss, &correct);
    out->n = n;
    out->loss = loss / (double)n;
    out->accuracy = (double)correct / (double)n;
}

void trainer_gradient(trainer_t *t, const float *params, const float *x, const int32_t *y, size_t n,
                      uint64_t dropout_seed, float *grads, step_metrics_t *out) {
    if (t->dev)
        trainer_device_gradient(t, params, x, y, n, dropout_seed, grads, out);
    else
        host_gradient(t, params, x, y, n, dropout_seed, grads, reduce_job, out);
}

void trainer_attach_store(trainer_t *t, store_t *s) {
    t->store = s;
    if (t->dev)
        trainer_device_attach(t);
    else if (!t->step_grads)
        t->step_grads = xalloc_aligned(t->m->nparams * sizeof(float));
}

void trainer_step(trainer_t *t, const float *x, const int32_t *y, size_t n, uint64_t dropout_seed,
                  step_metrics_t *out) {
    if (t->dev) {
        trainer_device_step(t, x, y, n, dropout_seed, out);
        return;
    }
    if (model_has_sparse(t->m)) {
        /* tables: the touched rows only */
        trainer_gradient(t, t->store->w, x, y, n, dropout_seed, t->step_grads, out);
        store_apply_sparse(t->store, t->step_grads, x, n);
        return;
    }
    /* each compute thread sums its stripe of the gradient and applies the
     * optimizer to it */
    host_gradient(t, t->store->w, x, y, n, dropout_seed, t->step_grads, reduce_apply_job, out);
    store_count_update(t->store);
}

void trainer_sync_store(trainer_t *t) {
    if (t->dev)
        trainer_device_sync_store(t);
}

void trainer_set_prefetch(trainer_t *t, void (*fn)(void *arg), void *arg) {
    t->prefetch = fn;
    t->prefetch_arg = arg;
}

void trainer_stage(trainer_t *t, const float *x, const int32_t *y, size_t n) {
    if (t->dev)
        trainer_device_stage(t, x, y, n);
}

const backend_t *trainer_backend(const trainer_t *t) {
    return t->be;
}

static void eval_job(trainer_t *t, size_t k) {
    size_t b;
    forward_slice(t, k, false, &b);
}

void trainer_evaluate(trainer_t *t, const float *params, const dataset_t *d, size_t batch_size,
                      eval_metrics_t *out) {
    memset(out, 0, sizeof *out);
    /* a regression's confusion matrix spans only the labels the data has */
    out->nclasses = t->m->loss == LOSS_MSE ? d->nclasses : model_label_classes(t->m);
    out->class_total = xcalloc(out->nclasses, sizeof(size_t));
    out->class_correct = xcalloc(out->nclasses, sizeof(size_t));
    out->confusion = xcalloc(out->nclasses * out->nclasses, sizeof(size_t));
    set_params(t, params);
    batch_size = PS_MIN(batch_size, t->max_batch);
    double loss_sum = 0.0;
    size_t correct = 0;
    for (size_t first = 0; first < d->n; first += batch_size) {
        size_t n = PS_MIN(batch_size, d->n - first);
        for (size_t i = 0; i < n; i++)
            dataset_example(d, first + i, t->xbuf + i * d->example_size);
        for (size_t i = 0; i < n; i++)
            t->ybuf[i] = d->labels[first + i];
        t->x = t->xbuf;
        t->y = t->ybuf;
        t->n = n;
        run_all(t, eval_job);
        double l;
        size_t c;
        sum_metrics(t, &l, &c);
        loss_sum += l;
        correct += c;
        for (size_t i = 0; i < n; i++) {
            size_t label = (size_t)t->ybuf[i];
            if (label >= out->nclasses)
                continue;
            out->class_total[label]++;
            out->class_correct[label] += t->pred[i] == t->ybuf[i];
            if (t->pred[i] >= 0 && (size_t)t->pred[i] < out->nclasses)
                out->confusion[label * out->nclasses + (size_t)t->pred[i]]++;
        }
    }
    out->n = d->n;
    out->loss = d->n ? loss_sum / (double)d->n : 0.0;
    out->accuracy = d->n ? (double)correct / (double)d->n : 0.0;
}

void eval_metrics_free(eval_metrics_t *e) {
    free(e->class_total);
    free(e->class_correct);
    free(e->confusion);
    e->class_total = e->class_correct = e->confusion = NULL;
}

uint64_t trainer_target_steps(int64_t max_steps, int64_t epochs, size_t train_examples,
                              size_t batch_size, size_t replicas) {
    if (max_steps > 0)
        return (uint64_t)max_steps;
    size_t per_step = batch_size * (replicas ? replicas : 1);
    return (uint64_t)epochs * ((train_examples + per_step - 1) / per_step);
}

/* Every example's token ids, for a model whose embedding reads its input. */
static int check_ids(const model_t *m, const dataset_t *d, const char *where, char *err,
                     size_t errlen) {
    bool ids = false;
    for (size_t i = 0; i < m->nlayers; i++)
        ids |= m->layers[i].kind == LAYER_EMBEDDING && m->layers[i].inputs[0] < 0;
    if (!ids || d->n == 0)
        return 0;
    float *x = xmalloc(d->example_size * sizeof *x);
    char why[PS_ERRLEN];
    int rc = 0;
    for (size_t i = 0; i < d->n && rc == 0; i++) {
        dataset_example(d, i, x);
        if ((rc = model_check_ids(m, x, 1, i, why, sizeof why)) != 0)
            ps_errf(err, errlen, "%s: %s", where, why);
    }
    free(x);
    return rc;
}

int trainer_check_data(const model_t *m, const dataset_t *d, const char *where, char *err,
                       size_t errlen) {
    size_t in_size = m->input[0] * m->input[1] * m->input[2];
    if (d->example_size != in_size)
        return ps_errf(err, errlen, "%s: examples have %zu values but the model's input has %zu",
                       where, d->example_size, in_size);
    if (d->nclasses > model_label_classes(m))
        return ps_errf(err, errlen, "%s: labels go up to %zu but the model has %zu classes (%s)",
                       where, d->nclasses - 1, model_label_classes(m), model_loss_name(m->loss));
    return check_ids(m, d, where, err, errlen);
}

/* The trainer on a device backend (a GPU): one exec, one stream of ops, and
 * copies on the backend's copy queues beside it.
 *
 * trainer_gradient (a cluster worker): each layer's weights are queued for
 * upload before the step, and the forward pass waits for a layer's weights
 * only when it reaches that layer; each layer's gradient is queued for
 * download as soon as the backward pass has left it. With overlap (the
 * worker pulls the model's head while the convolutions compute), the head's
 * weights go up once the pull is done, and its gradient is brought down
 * before the worker pushes it.
 *
 * trainer_step (a standalone worker): the store lives on the device and the
 * optimizer runs there; nothing but the batch goes up and the metrics down.
 *
 * Either way the batch sits in one of two slots: while a step computes on
 * one, the caller's prefetch hook may stage the next batch into the other. */
#include <stdlib.h>
#include <string.h>

#include "common/train/trainer_internal.h"
#include "common/base/util.h"
#include "common/train/moving.h"

struct trainer_device {
    float *x[2]; /* batch slots: [0] is the exec's own, [1] ours */
    int32_t *y[2];
    backend_event_t *in[2]; /* slot k's batch is on the device */
    size_t slot;            /* the slot of the step in flight (or the last) */
    struct {
        bool on;
        const float *x;
        const int32_t *y;
        size_t n, slot;
    } staged;
    backend_event_t **up;  /* [nlayers]: layer i's weights are on the device */
    backend_event_t *down; /* the last gradient copy queued has landed */
    bool layer_copies;     /* the step in flight moves weights and gradients */
    float *w;              /* the attached store's weights and slots */
    float *slots[OPTIM_MAX_SLOTS];
};

static backend_event_t *device_event(const backend_t *be) {
    backend_event_t *e = be->event_create();
    if (!e) {
        fprintf(stderr, "fatal: backend %s could not create an event\n", be->name);
        abort();
    }
    return e;
}

/* The slab range [*begin, *end) of layer i's variables (they are
 * contiguous); false if it has none. */
static bool layer_range(const model_t *m, size_t i, size_t *begin, size_t *end) {
    int idx[MODEL_LAYER_MAX_VARS];
    size_t n = model_layer_vars(m, i, idx);
    if (n == 0)
        return false;
    const var_t *last = &m->vars[idx[n - 1]];
    *begin = m->vars[idx[0]].offset;
    *end = last->offset + last->size;
    return true;
}

/* Whether the overlapped step moves slab offset b with the head. */
static bool in_head(const trainer_t *t, size_t b) {
    return t->overlap_on && b >= t->overlap.head_begin;
}

static void before_forward(void *arg, size_t layer) {
    trainer_t *t = arg;
    trainer_device_t *d = t->dev;
    if (!d->layer_copies)
        return;
    bool head = t->overlap_on && layer == t->overlap.head;
    if (head) {
        size_t b = t->overlap.head_begin, bytes = (t->m->nparams - b) * sizeof(float);
        t->overlap.wait_head_params(t->overlap.arg);
        t->be->upload_async(t->dparams + b, t->host_params + b, bytes, d->up[layer]);
    }
    size_t b, e;
    if (layer_range(t->m, layer, &b, &e) && (head || !in_head(t, b)))
        t->be->wait_event(d->up[layer]);
}

static void after_backward(void *arg, size_t layer) {
    trainer_t *t = arg;
    trainer_device_t *d = t->dev;
    if (!d->layer_copies)
        return;
    size_t b, e;
    if (layer_range(t->m, layer, &b, &e))
        t->be->download_async(t->out + b, t->grads[0] + b, (e - b) * sizeof(float), d->down);
    if (t->overlap_on && layer == t->overlap.head) {
        t->be->sync_event(d->down);
        t->overlap.head_grads_ready(t->overlap.arg);
    }
}

trainer_device_t *trainer_device_create(trainer_t *t) {
    const backend_t *be = t->be;
    trainer_device_t *d = xcalloc(1, sizeof *d);
    size_t in_size = t->m->layers[0].in_size;
    d->x[0] = model_exec_input(t->exec[0]);
    d->y[0] = model_exec_labels(t->exec[0]);
    d->x[1] = BACKEND_XALLOC(be, t->max_batch * in_size * sizeof(float));
    d->y[1] = BACKEND_XALLOC(be, t->max_batch * sizeof(int32_t));
    be->zero(d->y[1], t->max_batch * sizeof(int32_t));
    for (size_t k = 0; k < 2; k++)
        d->in[k] = device_event(be);
    d->up = xcalloc(t->m->nlayers, sizeof *d->up);
    for (size_t i = 0; i < t->m->nlayers; i++)
        d->up[i] = device_event(be);
    d->down = device_event(be);
    model_exec_set_hooks(t->exec[0], before_forward, after_backward, t);
    return d;
}

void trainer_device_free(trainer_t *t) {
    trainer_device_t *d = t->dev;
    const backend_t *be = t->be;
    model_exec_set_input(t->exec[0], NULL, NULL);
    be->free(d->x[1]);
    be->free(d->y[1]);
    for (size_t k = 0; k < 2; k++)
        be->event_free(d->in[k]);
    for (size_t i = 0; i < t->m->nlayers; i++)
        be->event_free(d->up[i]);
    be->event_free(d->down);
    free(d->up);
    if (d->w)
        be->free(d->w);
    for (size_t k = 0; k < OPTIM_MAX_SLOTS; k++)
        if (d->slots[k])
            be->free(d->slots[k]);
    free(d);
    t->dev = NULL;
}

/* Queues the copy of a batch into slot k. */
static void copy_batch(trainer_t *t, size_t k, const float *x, const int32_t *y, size_t n) {
    trainer_device_t *d = t->dev;
    size_t in_size = t->m->layers[0].in_size;
    t->be->upload_async(d->x[k], x, n * in_size * sizeof(float), d->in[k]);
    t->be->upload_async(d->y[k], y, n * sizeof(int32_t), d->in[k]);
}

void trainer_device_stage(trainer_t *t, const float *x, const int32_t *y, size_t n) {
    trainer_device_t *d = t->dev;
    size_t k = d->slot ^ 1;
    copy_batch(t, k, x, y, n);
    d->staged.on = true;
    d->staged.x = x;
    d->staged.y = y;
    d->staged.n = n;
    d->staged.slot = k;
}

/* The step's batch: the staged one when it is this batch, else copied now
 * into the slot the last step did not use. The ops that follow wait for it. */
static void take_batch(trainer_t *t, const float *x, const int32_t *y, size_t n) {
    trainer_device_t *d = t->dev;
    size_t k;
    if (d->staged.on && d->staged.x == x && d->staged.y == y && d->staged.n == n) {
        k = d->staged.slot;
    } else {
        k = d->slot ^ 1;
        copy_batch(t, k, x, y, n);
    }
    d->staged.on = false;
    d->slot = k;
    model_exec_set_input(t->exec[0], d->x[k], d->y[k]);
    t->be->wait_event(d->in[k]);
}

/* The rest of a step once its ops are queued: the caller's prefetch while
 * the device computes, then the metrics (which wait for the computation),
 * then the last gradient copy. */
static void finish_step(trainer_t *t, size_t n, step_metrics_t *out) {
    trainer_device_t *d = t->dev;
    if (t->prefetch) {
        t->be->sync_event(d->in[d->slot]);
        t->prefetch(t->prefetch_arg);
    }
    double loss;
    size_t correct;
    model_loss(t->exec[0], n, &loss, &correct, NULL);
    t->be->sync_event(d->down);
    out->n = n;
    out->loss = n ? loss / (double)n : 0.0;
    out->accuracy = n ? (double)correct / (double)n : 0.0;
}

/* Queues each layer's weights, but the head's when the overlap moves it. */
static void upload_weights(trainer_t *t, const float *params) {
    for (size_t i = 0; i < t->m->nlayers; i++) {
        size_t b, e;
        if (layer_range(t->m, i, &b, &e) && !in_head(t, b))
            t->be->upload_async(t->dparams + b, params + b, (e - b) * sizeof(float), t->dev->up[i]);
    }
}

void trainer_device_gradient(trainer_t *t, const float *params, const float *x, const int32_t *y,
                             size_t n, uint64_t dropout_seed, float *grads, step_metrics_t *out) {
    trainer_device_t *d = t->dev;
    model_exec_t *ex = t->exec[0];
    if (n == 0) {
        memset(grads, 0, t->m->nparams * sizeof(float));
        *out = (step_metrics_t){0};
        return;
    }
    t->host_params = params;
    t->out = grads;
    t->overlap_on = t->overlap.wait_head_params != NULL;
    upload_weights(t, params);
    take_batch(t, x, y, n);
    d->layer_copies = true;
    model_forward(ex, t->dparams, n, true, dropout_seed, 0);
    model_backward(ex, t->dparams, n, 1.0f / (float)n, t->grads[0]);
    d->layer_copies = false;
    finish_step(t, n, out);
    t->overlap_on = false;
}

void trainer_device_step(trainer_t *t, const float *x, const int32_t *y, size_t n,
                         uint64_t dropout_seed, step_metrics_t *out) {
    trainer_device_t *d = t->dev;
    model_exec_t *ex = t->exec[0];
    store_t *s = t->store;
    if (n == 0) {
        *out = (step_metrics_t){0};
        return;
    }
    take_batch(t, x, y, n);
    model_forward(ex, d->w, n, true, dropout_seed, 0);
    model_backward(ex, d->w, n, 1.0f / (float)n, t->grads[0]);
    update_step_t k;
    optim_update_step(&s->opt, s->iterations, &k);
    moving_apply_model(t->m, t->be, &k, d->w, d->slots[0], d->slots[1], t->grads[0]);
    s->iterations++;
    finish_step(t, n, out);
}

/* The store's weights and slots go to the device and stay there. */
void trainer_device_attach(trainer_t *t) {
    trainer_device_t *d = t->dev;
    const backend_t *be = t->be;
    const store_t *s = t->store;
    size_t bytes = t->m->nparams * sizeof(float);
    if (s->size != t->m->nparams) {
        fprintf(stderr, "fatal: trainer_attach_store: a store of %zu elements for a model of %zu\n",
                s->size, t->m->nparams);
        abort();
    }
    if (!d->w)
        d->w = BACKEND_XALLOC(be, bytes);
    be->upload(d->w, s->w, bytes);
    for (size_t k = 0; k < optim_nslots(&s->opt); k++) {
        if (!d->slots[k])
            d->slots[k] = BACKEND_XALLOC(be, bytes);
        be->upload(d->slots[k], s->slots[k], bytes);
    }
}

void trainer_device_sync_store(trainer_t *t) {
    trainer_device_t *d = t->dev;
    store_t *s = t->store;
    if (!s || !d->w)
        return;
    size_t bytes = t->m->nparams * sizeof(float);
    t->be->download(s->w, d->w, bytes);
    for (size_t k = 0; k < optim_nslots(&s->opt); k++)
        t->be->download(s->slots[k], d->slots[k], bytes);
}

const float *trainer_device_store_weights(trainer_t *t, const float *params) {
    if (t->dev && t->dev->w && t->store && params == t->store->w)
        return t->dev->w;
    return NULL;
}

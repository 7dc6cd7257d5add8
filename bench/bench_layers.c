/* The per-layer breakdown of a training step: every backend op the trainer
 * runs for a layer, timed alone at the step's batch on one thread, so that
 * a gap to PyTorch (bench/pytorch_layers.py prints the same lines) has an
 * address. The ops and their arguments are model_exec.c's, in its order. */
#include "bench/bench_layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/util.h"

typedef enum {
    OP_FORWARD,         /* the conv or the product */
    OP_BIAS_ACT,        /* bias add and relu after it */
    OP_BACKWARD_DATA,   /* dx */
    OP_BACKWARD_FILTER, /* dw */
    OP_BIAS_ACT_GRAD,   /* relu backward and the bias gradient */
} op_t;

static const char *const op_names[] = {"forward", "bias_act", "backward_data", "backward_filter",
                                       "bias_act_grad"};

/* One layer's buffers at batch n; x, y, dx, dy are [n, in] / [n, out]. */
typedef struct {
    const backend_t *be;
    const layer_t *l;
    size_t n;
    conv2d_shape_t conv;
    pool2d_shape_t pool;
    float *x, *y, *dx, *dy, *w, *dw, *b, *db;
    void *ws;
} job_t;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Bias and relu of the layer's output, forward or backward. */
static void bias_act(const job_t *j, bool backward) {
    const layer_t *l = j->l;
    size_t rows = j->n * l->out_size / l->out[2], cols = l->out[2];
    bool relu = l->activation == ACT_RELU;
    /* fused where the backend fuses them, as model_exec.c runs them */
    if (j->b && relu && !backward && j->be->bias_relu) {
        j->be->bias_relu(j->y, j->b, rows, cols);
        return;
    }
    if (j->b && relu && backward && j->be->relu_bias_grad) {
        j->be->relu_bias_grad(j->db, j->dy, j->y, rows, cols);
        return;
    }
    if (!backward) {
        if (j->b)
            j->be->bias_add(j->y, j->b, rows, cols);
        if (relu)
            j->be->relu_forward(j->y, j->y, j->n * l->out_size);
        return;
    }
    if (relu)
        j->be->relu_backward(j->dy, j->dy, j->y, j->n * l->out_size);
    if (j->b)
        j->be->bias_grad(j->db, j->dy, rows, cols);
}

/* Layers with a kernel: dense, conv2d, depthwise_conv2d. */
static bool is_weighted(const layer_t *l) {
    return l->kind == LAYER_CONV2D || l->kind == LAYER_DENSE || l->kind == LAYER_DEPTHWISE_CONV2D;
}

/* A dense or conv layer's op, as model_exec.c calls it. */
static void run_weighted(const job_t *j, op_t op) {
    const backend_t *be = j->be;
    const layer_t *l = j->l;
    bool conv = l->kind == LAYER_CONV2D;
    if (op == OP_BIAS_ACT || op == OP_BIAS_ACT_GRAD)
        bias_act(j, op == OP_BIAS_ACT_GRAD);
    else if (l->kind == LAYER_DEPTHWISE_CONV2D && op == OP_FORWARD)
        be->depthwise_conv2d_forward(j->y, j->x, j->w, &j->conv);
    else if (l->kind == LAYER_DEPTHWISE_CONV2D && op == OP_BACKWARD_DATA)
        be->depthwise_conv2d_backward_data(j->dx, j->dy, j->w, &j->conv);
    else if (l->kind == LAYER_DEPTHWISE_CONV2D)
        be->depthwise_conv2d_backward_filter(j->dw, j->dy, j->x, &j->conv);
    else if (op == OP_FORWARD && conv)
        be->conv2d_forward(j->y, j->x, j->w, &j->conv, j->ws);
    else if (op == OP_FORWARD)
        be->gemm(false, false, j->n, l->units, l->in_size, 1.0f, j->x, j->w, 0.0f, j->y);
    else if (op == OP_BACKWARD_DATA && conv)
        be->conv2d_backward_data(j->dx, j->dy, j->w, &j->conv, j->ws);
    else if (op == OP_BACKWARD_DATA)
        be->gemm(false, true, j->n, l->in_size, l->units, 1.0f, j->dy, j->w, 0.0f, j->dx);
    else if (conv)
        be->conv2d_backward_filter(j->dw, j->dy, j->x, &j->conv, j->ws);
    else
        be->gemm(true, false, l->in_size, l->units, j->n, 1.0f, j->x, j->dy, 0.0f, j->dw);
}

/* A pooling or dropout layer's op (forward or backward-data). */
static void run_plain(const job_t *j, op_t op) {
    const layer_t *l = j->l;
    size_t len = j->n * l->out_size;
    if (l->kind == LAYER_MAX_POOL2D && op == OP_FORWARD)
        j->be->maxpool2d_forward(j->y, j->x, &j->pool);
    else if (l->kind == LAYER_MAX_POOL2D)
        j->be->maxpool2d_backward(j->dx, j->dy, j->x, j->y, &j->pool);
    else if (op == OP_FORWARD)
        j->be->dropout_forward(j->y, j->x, len, l->rate, 7, 0);
    else
        j->be->dropout_backward(j->dx, j->dy, len, l->rate, 7, 0);
}

static void run_op(const job_t *j, op_t op) {
    if (is_weighted(j->l))
        run_weighted(j, op);
    else
        run_plain(j, op);
}

/* CPU seconds of the calling thread: the ops run on it alone, and on a
 * machine shared with other jobs this counts their work without the time
 * the thread waited for the core. */
static double thread_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Median thread CPU seconds of reps calls after one untimed call. */
static double time_op(const job_t *j, op_t op, size_t reps) {
    double *t = xcalloc(reps, sizeof *t);
    run_op(j, op);
    for (size_t r = 0; r < reps; r++) {
        double t0 = thread_now();
        run_op(j, op);
        t[r] = thread_now() - t0;
    }
    qsort(t, reps, sizeof *t, cmp_double);
    double median = t[reps / 2];
    free(t);
    return median;
}

/* Floating-point operations of a product op of the layer (0 for the rest). */
static double op_flops(const job_t *j, op_t op) {
    const layer_t *l = j->l;
    if (op == OP_BIAS_ACT || op == OP_BIAS_ACT_GRAD)
        return 0;
    if (l->kind == LAYER_DENSE)
        return 2.0 * (double)j->n * (double)l->in_size * (double)l->units;
    if (l->kind == LAYER_CONV2D)
        return 2.0 * (double)j->n * (double)l->out_size * (double)(l->kernel[0] * l->kernel[1]) *
               (double)l->in[2];
    if (l->kind == LAYER_DEPTHWISE_CONV2D)
        return 2.0 * (double)j->n * (double)l->out_size * (double)(l->kernel[0] * l->kernel[1]);
    return 0;
}

/* Prints one op's line and adds its seconds to *total. */
static void report(const job_t *j, op_t op, size_t reps, double *total) {
    double s = time_op(j, op, reps), flops = op_flops(j, op);
    *total += s;
    printf("layer=%s op=%s ms=%.3f", j->l->name, op_names[op], s * 1e3);
    if (flops > 0)
        printf(" gflops=%.1f", flops / s / 1e9);
    printf("\n");
    fflush(stdout);
}

/* Random contents in [-0.5, 0.5) (relu and pooling see both signs). */
static float *random_buffer(const backend_t *be, size_t count, uint64_t seed) {
    float *p = BACKEND_XALLOC(be, (count ? count : 1) * sizeof(float));
    for (size_t i = 0; i < count; i++)
        p[i] = rng_uniform(seed, i) - 0.5f;
    return p;
}

/* The buffers and shapes of layer l at batch n. */
static void job_init(job_t *j, const backend_t *be, const model_t *m, size_t i, size_t n) {
    const layer_t *l = &m->layers[i];
    *j = (job_t){.be = be, .l = l, .n = n};
    j->x = random_buffer(be, n * l->in_size, 10 * i + 1);
    j->dx = random_buffer(be, n * l->in_size, 10 * i + 2);
    j->y = random_buffer(be, n * l->out_size, 10 * i + 3);
    j->dy = random_buffer(be, n * l->out_size, 10 * i + 4);
    size_t wsize = l->kernel_var >= 0 ? m->vars[l->kernel_var].size : 0;
    size_t bsize = l->bias_var >= 0 ? m->vars[l->bias_var].size : 0;
    j->w = random_buffer(be, wsize, 10 * i + 5);
    j->dw = random_buffer(be, wsize, 10 * i + 6);
    j->b = bsize ? random_buffer(be, bsize, 10 * i + 7) : NULL;
    j->db = bsize ? random_buffer(be, bsize, 10 * i + 8) : NULL;
    if (l->kind == LAYER_CONV2D || l->kind == LAYER_DEPTHWISE_CONV2D) {
        j->conv = (conv2d_shape_t){.n = n,
                                   .h = l->in[0],
                                   .w = l->in[1],
                                   .c = l->in[2],
                                   .kh = l->kernel[0],
                                   .kw = l->kernel[1],
                                   .f = l->filters,
                                   .sh = l->strides[0],
                                   .sw = l->strides[1]};
        conv2d_shape_init(&j->conv, l->same);
        j->ws = BACKEND_XALLOC(be, be->conv2d_workspace(&j->conv) + 64);
    }
    if (l->kind == LAYER_MAX_POOL2D) {
        j->pool = (pool2d_shape_t){.n = n,
                                   .h = l->in[0],
                                   .w = l->in[1],
                                   .c = l->in[2],
                                   .ph = l->pool[0],
                                   .pw = l->pool[1],
                                   .sh = l->strides[0],
                                   .sw = l->strides[1]};
        pool2d_shape_init(&j->pool, l->same);
    }
}

static void job_free(job_t *j) {
    float *bufs[] = {j->x, j->dx, j->y, j->dy, j->w, j->dw, j->b, j->db};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i])
            j->be->free(bufs[i]);
    if (j->ws)
        j->be->free(j->ws);
}

/* The ops the trainer runs for layer i (the first layer computes no dx). */
static void bench_layer(const backend_t *be, const model_t *m, size_t i, size_t n, size_t reps,
                        double *total) {
    const layer_t *l = &m->layers[i];
    if (l->kind == LAYER_FLATTEN || (l->kind == LAYER_DROPOUT && l->rate <= 0.0f))
        return;
    job_t j;
    job_init(&j, be, m, i, n);
    bool weighted = is_weighted(l);
    report(&j, OP_FORWARD, reps, total);
    if (weighted && (j.b || l->activation == ACT_RELU)) {
        report(&j, OP_BIAS_ACT, reps, total);
        report(&j, OP_BIAS_ACT_GRAD, reps, total);
    }
    if (i > 0)
        report(&j, OP_BACKWARD_DATA, reps, total);
    if (weighted)
        report(&j, OP_BACKWARD_FILTER, reps, total);
    job_free(&j);
}

/* The loss and SGD with momentum over every parameter, as the benchmark's
 * step runs them. */
static void bench_tail(const backend_t *be, const model_t *m, size_t n, size_t reps,
                       double *total) {
    size_t classes = m->nclasses, p = m->nparams;
    float *logits = random_buffer(be, n * classes, 91), *probs = random_buffer(be, n * classes, 92);
    float *loss = random_buffer(be, n, 93);
    int32_t *labels = BACKEND_XALLOC(be, n * sizeof *labels);
    for (size_t i = 0; i < n; i++)
        labels[i] = (int32_t)(i % classes);
    double t0 = thread_now();
    for (size_t r = 0; r < reps; r++) {
        be->softmax_xent_forward(probs, loss, logits, labels, n, classes);
        be->softmax_xent_backward(logits, probs, labels, n, classes, 1.0f / (float)n);
    }
    double s = (thread_now() - t0) / (double)reps;
    *total += s;
    printf("layer=loss op=softmax_xent ms=%.3f\n", s * 1e3);
    float *w = random_buffer(be, p, 94), *slot = random_buffer(be, p, 95);
    float *g = random_buffer(be, p, 96);
    update_step_t k = {.rule = UPDATE_SGD_MOMENTUM, .lr = 0.01f, .mom = 0.9f};
    be->apply_update(&k, w, slot, NULL, g, p);
    t0 = thread_now();
    for (size_t r = 0; r < reps; r++)
        be->apply_update(&k, w, slot, NULL, g, p);
    s = (thread_now() - t0) / (double)reps;
    *total += s;
    printf("layer=optimizer op=sgd_momentum ms=%.3f gbytes_per_sec=%.1f\n", s * 1e3,
           16.0 * (double)p / s / 1e9);
    float *bufs[] = {logits, probs, loss, w, slot, g};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        be->free(bufs[i]);
    be->free(labels);
}

int bench_layers(const model_t *m, const backend_t *be, size_t n, size_t reps) {
    reps = reps < 5 ? 5 : reps;
    double total = 0;
    printf("# per-layer ops, batch %zu on one thread, median of %zu runs each (thread CPU time)\n",
           n, reps);
    for (size_t i = 0; i < m->nlayers; i++)
        bench_layer(be, m, i, n, reps, &total);
    bench_tail(be, m, n, reps, &total);
    printf("layer=all op=sum ms=%.3f images_per_sec=%.0f\n", total * 1e3, (double)n / total);
    return 0;
}

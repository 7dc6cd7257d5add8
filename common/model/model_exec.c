/* Forward and backward over the layers of a model on one backend. Every
 * buffer is allocated once, for max_batch examples, when the exec is made. */
#include "common/model/model.h"

#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

struct model_exec {
    const model_t *m;
    const backend_t *be;
    size_t max_batch;
    float *input; /* [max_batch, input size]: own_input, or a buffer set by model_exec_set_input */
    int32_t *labels;
    float *own_input;
    int32_t *own_labels;
    float **act;       /* act[i]: buffer for the output of layer i (none for flatten) */
    const float **out; /* out[i]: where the last forward left layer i's output (a view for
                        * flatten, and for dropout outside training) */
    float **dout;      /* dout[i]: gradient of layer i's output, summed over the layers that take it
                        * (graph models only; a chain passes one gradient along) */
    float **pre;       /* pre[i]: a dense or conv layer's output before an activation whose
                        * gradient needs it (sigmoid, tanh, gelu, silu); else NULL */
    float *logits;     /* last layer before softmax */
    float *row_loss;
    float *grad[2];                /* ping-pong gradients of layer outputs */
    void *ws;                      /* conv workspace */
    float *host_probs, *host_loss; /* downloads for model_loss */
    const float *params;           /* of the last forward, for the regularizers' loss */
    float *reg_dot;                /* one float of scratch for model_reg_loss */
    int32_t *host_labels;
    uint64_t dropout_seed, example_offset; /* of the last forward, for backward */
    model_hook_fn before_forward, after_backward;
    void *hook_arg;
    /* bn[i]: a BatchNormalization layer's batch mean [c], variance [c] and
     * backward sums [2c]; NULL for other layers. */
    float **bn;
    size_t bn_batch; /* examples of the whole batch of the last training forward */
    model_reduce_fn reduce;
    void *reduce_arg;
};

void model_exec_set_reduce(model_exec_t *e, model_reduce_fn reduce, void *arg) {
    e->reduce = reduce;
    e->reduce_arg = arg;
}

void model_exec_set_hooks(model_exec_t *e, model_hook_fn before_forward,
                          model_hook_fn after_backward, void *arg) {
    e->before_forward = before_forward;
    e->after_backward = after_backward;
    e->hook_arg = arg;
}

/* Layers whose output is their input, reinterpreted: no buffer of their own. */
static bool is_view(const layer_t *l) {
    return l->kind == LAYER_FLATTEN || l->kind == LAYER_RESHAPE;
}

/* The backend's function for an activation other than linear, relu and softmax. */
static bool extra_act(activation_t a, act_fn_t *f) {
    switch (a) {
    case ACT_SIGMOID:
        *f = ACT_FN_SIGMOID;
        return true;
    case ACT_TANH:
        *f = ACT_FN_TANH;
        return true;
    case ACT_GELU:
        *f = ACT_FN_GELU;
        return true;
    case ACT_SILU:
        *f = ACT_FN_SILU;
        return true;
    default:
        return false;
    }
}

static conv2d_shape_t conv_shape(const layer_t *l, size_t n) {
    conv2d_shape_t s = {.n = n,
                        .h = l->in[0],
                        .w = l->in[1],
                        .c = l->in[2],
                        .kh = l->kernel[0],
                        .kw = l->kernel[1],
                        .f = l->filters,
                        .sh = l->strides[0],
                        .sw = l->strides[1]};
    conv2d_shape_init(&s, l->same);
    return s;
}

static pool2d_shape_t pool_shape(const layer_t *l, size_t n) {
    pool2d_shape_t s = {.n = n,
                        .h = l->in[0],
                        .w = l->in[1],
                        .c = l->in[2],
                        .ph = l->pool[0],
                        .pw = l->pool[1],
                        .sh = l->strides[0],
                        .sw = l->strides[1]};
    pool2d_shape_init(&s, l->same);
    return s;
}

model_exec_t *model_exec_create(const model_t *m, const backend_t *be, size_t max_batch) {
    model_exec_t *e = xcalloc(1, sizeof *e);
    e->m = m;
    e->be = be;
    e->max_batch = max_batch;
    size_t in_size = m->input[0] * m->input[1] * m->input[2];
    e->input = e->own_input = BACKEND_XALLOC(be, max_batch * in_size * sizeof(float));
    e->labels = e->own_labels = BACKEND_XALLOC(be, max_batch * sizeof(int32_t));
    be->zero(e->labels, max_batch * sizeof(int32_t));
    e->act = xcalloc(m->nlayers, sizeof *e->act);
    e->out = xcalloc(m->nlayers, sizeof *e->out);
    e->pre = xcalloc(m->nlayers, sizeof *e->pre);
    e->dout = xcalloc(m->nlayers, sizeof *e->dout);
    e->bn = xcalloc(m->nlayers, sizeof *e->bn);
    size_t max_out = in_size, ws = 0;
    for (size_t i = 0; i < m->nlayers; i++) {
        const layer_t *l = &m->layers[i];
        max_out = PS_MAX(max_out, l->out_size);
        act_fn_t f;
        if (!is_view(l))
            e->act[i] = BACKEND_XALLOC(be, max_batch * l->out_size * sizeof(float));
        /* the last layer's activation belongs to the loss, which computes it */
        bool kernel =
            l->kind == LAYER_DENSE || l->kind == LAYER_CONV2D || l->kind == LAYER_DEPTHWISE_CONV2D;
        if (kernel && i + 1 < m->nlayers && extra_act(l->activation, &f))
            e->pre[i] = BACKEND_XALLOC(be, max_batch * l->out_size * sizeof(float));
        if (m->graph)
            e->dout[i] = BACKEND_XALLOC(be, max_batch * l->out_size * sizeof(float));
        if (l->kind == LAYER_BATCH_NORM)
            e->bn[i] = BACKEND_XALLOC(be, 4 * l->out[2] * sizeof(float));
        if (l->kind == LAYER_CONV2D) {
            conv2d_shape_t s = conv_shape(l, max_batch);
            ws = PS_MAX(ws, be->conv2d_workspace(&s));
        }
    }
    e->logits = BACKEND_XALLOC(be, max_batch * m->nclasses * sizeof(float));
    e->row_loss = BACKEND_XALLOC(be, max_batch * sizeof(float));
    e->reg_dot = BACKEND_XALLOC(be, sizeof(float));
    e->grad[0] = BACKEND_XALLOC(be, max_batch * max_out * sizeof(float));
    e->grad[1] = BACKEND_XALLOC(be, max_batch * max_out * sizeof(float));
    e->ws = BACKEND_XALLOC(be, ws);
    e->host_probs = xmalloc(max_batch * m->nclasses * sizeof(float));
    e->host_loss = xmalloc(max_batch * sizeof(float));
    e->host_labels = xmalloc(max_batch * sizeof(int32_t));
    return e;
}

void model_exec_free(model_exec_t *e) {
    if (!e)
        return;
    const backend_t *be = e->be;
    for (size_t i = 0; i < e->m->nlayers; i++) {
        if (!is_view(&e->m->layers[i]))
            be->free(e->act[i]);
        if (e->pre[i])
            be->free(e->pre[i]);
        if (e->dout[i])
            be->free(e->dout[i]);
        if (e->bn[i])
            be->free(e->bn[i]);
    }
    free(e->bn);
    free(e->pre);
    free(e->dout);
    free(e->act);
    free(e->out);
    be->free(e->own_input);
    be->free(e->own_labels);
    be->free(e->logits);
    be->free(e->row_loss);
    be->free(e->reg_dot);
    be->free(e->grad[0]);
    be->free(e->grad[1]);
    be->free(e->ws);
    free(e->host_probs);
    free(e->host_loss);
    free(e->host_labels);
    free(e);
}

float *model_exec_input(model_exec_t *e) {
    return e->input;
}

int32_t *model_exec_labels(model_exec_t *e) {
    return e->labels;
}

void model_exec_set_input(model_exec_t *e, float *input, int32_t *labels) {
    e->input = input ? input : e->own_input;
    e->labels = labels ? labels : e->own_labels;
}

static uint64_t dropout_key(const layer_t *l, uint64_t seed) {
    return rng_key(seed, l->name, 0);
}

/* y = act(x W + b) for a dense layer; the last layer writes logits and
 * leaves softmax to the loss. */
/* y = act(z) for a dense or conv layer's output z; z is in pre (kept for
 * backward) when the activation's gradient needs it, else already in y. */
static void activate(model_exec_t *e, const layer_t *l, const float *pre, float *y, size_t n) {
    act_fn_t f;
    if (l->activation == ACT_RELU)
        e->be->relu_forward(y, y, n * l->out_size);
    else if (pre && extra_act(l->activation, &f))
        e->be->act_forward(y, pre, n * l->out_size, f);
}

/* z[rows, cols] += the layer's bias, then y = act(z) (see activate); bias
 * and relu in one pass where the backend fuses them. */
static void bias_activate(model_exec_t *e, const layer_t *l, const float *params, float *pre,
                          float *y, size_t n, size_t rows) {
    const backend_t *be = e->be;
    float *z = pre ? pre : y;
    const float *b = l->bias_var >= 0 ? params + e->m->vars[l->bias_var].offset : NULL;
    size_t cols = l->out[2];
    if (b && !pre && l->activation == ACT_RELU && be->bias_relu) {
        be->bias_relu(y, b, rows, cols);
        return;
    }
    if (b)
        be->bias_add(z, b, rows, cols);
    activate(e, l, pre, y, n);
}

static void dense_forward(model_exec_t *e, const layer_t *l, const float *params, const float *x,
                          float *y, size_t n) {
    const var_t *k = &e->m->vars[l->kernel_var];
    float *pre = e->pre[l - e->m->layers], *z = pre ? pre : y;
    e->be->gemm(false, false, n, l->units, l->in_size, 1.0f, x, params + k->offset, 0.0f, z);
    bias_activate(e, l, params, pre, y, n, n);
}

static void conv_forward(model_exec_t *e, const layer_t *l, const float *params, const float *x,
                         float *y, size_t n) {
    conv2d_shape_t s = conv_shape(l, n);
    float *pre = e->pre[l - e->m->layers], *z = pre ? pre : y;
    const float *w = params + e->m->vars[l->kernel_var].offset;
    if (l->kind == LAYER_DEPTHWISE_CONV2D)
        e->be->depthwise_conv2d_forward(z, x, w, &s);
    else
        e->be->conv2d_forward(z, x, w, &s, e->ws);
    bias_activate(e, l, params, pre, y, n, n * s.oh * s.ow);
}

/* Center crop of n images x[n, h, w, c] into y[n, H, W, c] (Keras: the
 * window starts at (h - H) / 2, (w - W) / 2), or with back, the gradient:
 * dy into the window of dx, zeros around it. */
static void crop(model_exec_t *e, const layer_t *l, float *out, const float *in, size_t n,
                 bool back) {
    const backend_t *be = e->be;
    size_t h = l->in[0], w = l->in[1], c = l->in[2], H = l->out[0], W = l->out[1];
    size_t top = (h - H) / 2, left = (w - W) / 2;
    if (back)
        be->zero(out, n * l->in_size * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        float *big = (back ? out : (float *)in) + (i * h + top) * w * c;
        float *small = (back ? (float *)in : out) + i * l->out_size;
        if (back)
            be->copy_cols(big, w * c, left * c, small, W * c, 0, H, W * c);
        else
            be->copy_cols(small, W * c, 0, big, w * c, left * c, H, W * c);
    }
}

/* Forward of the layers without variables beyond the builtin models.
 * Returns where the output is (x itself for a view or a linear activation). */
static float *extra_forward(model_exec_t *e, const layer_t *l, const float *x, float *y, size_t n) {
    const backend_t *be = e->be;
    act_fn_t f;
    switch (l->kind) {
    case LAYER_ACTIVATION:
        if (l->activation == ACT_RELU)
            be->relu_forward(y, x, n * l->out_size);
        else if (extra_act(l->activation, &f))
            be->act_forward(y, x, n * l->out_size, f);
        else
            return (float *)x; /* linear */
        return y;
    case LAYER_RESCALING:
        be->scale_shift(y, x, n * l->out_size, l->scale, l->offset);
        return y;
    case LAYER_AVG_POOL2D:
    case LAYER_GLOBAL_AVG_POOL2D:
    case LAYER_GLOBAL_AVG_POOL1D: {
        pool2d_shape_t s = pool_shape(l, n);
        be->avgpool2d_forward(y, x, &s);
        return y;
    }
    case LAYER_GLOBAL_MAX_POOL2D: {
        pool2d_shape_t s = pool_shape(l, n);
        be->maxpool2d_forward(y, x, &s);
        return y;
    }
    case LAYER_CENTER_CROP:
        crop(e, l, y, x, n, false);
        return y;
    default: /* reshape */
        return (float *)x;
    }
}

/* Sums buf[len] over the execs that split the batch (model_exec_set_reduce);
 * returns the whole batch's examples (n when this exec has it all). */
static size_t batch_reduce(model_exec_t *e, float *buf, size_t len, size_t n) {
    return e->reduce ? e->reduce(e->reduce_arg, buf, len) : n;
}

/* BatchNormalization's forward over n examples: normalised by the batch's
 * mean and biased variance (two passes over x, each summed over the whole
 * batch) when training, else by the moving statistics in params. */
static void bn_forward(model_exec_t *e, size_t i, const float *params, const float *x, float *y,
                       size_t n, bool training) {
    const model_t *m = e->m;
    const backend_t *be = e->be;
    const layer_t *l = &m->layers[i];
    size_t c = l->out[2], pixels = l->out[0] * l->out[1], rows = n * pixels;
    const float *gamma = l->kernel_var >= 0 ? params + m->vars[l->kernel_var].offset : NULL;
    const float *beta = l->bias_var >= 0 ? params + m->vars[l->bias_var].offset : NULL;
    const float *mean = params + m->vars[l->moving_var].offset;
    const float *var = params + m->vars[l->moving_var + 1].offset;
    if (training) {
        float *bm = e->bn[i], *bv = bm + c;
        be->bn_stats(bm, x, NULL, rows, c);
        e->bn_batch = batch_reduce(e, bm, c, n);
        float per = 1.0f / (float)(e->bn_batch * pixels);
        be->scale_shift(bm, bm, c, per, 0.0f);
        be->bn_stats(bv, x, bm, rows, c);
        batch_reduce(e, bv, c, n);
        be->scale_shift(bv, bv, c, per, 0.0f);
        mean = bm;
        var = bv;
    }
    be->bn_forward(y, x, mean, var, gamma, beta, (float)l->epsilon, rows, c);
}

/* The output of layer j as the last forward left it (-1: the model's input). */
static const float *output_of(const model_exec_t *e, int j) {
    return j < 0 ? e->input : e->out[j];
}

/* Forward of a merge: the sum, product or channel concatenation of its inputs. */
static void merge_forward(model_exec_t *e, const layer_t *l, float *y, size_t n) {
    const backend_t *be = e->be;
    size_t size = n * l->out_size, rows = n * l->out[0] * l->out[1], off = 0;
    for (size_t k = 0; k < l->ninputs; k++) {
        const float *x = output_of(e, l->inputs[k]);
        if (l->kind == LAYER_CONCATENATE) {
            size_t c = l->inputs[k] < 0 ? e->m->input[2] : e->m->layers[l->inputs[k]].out[2];
            be->copy_cols(y, l->out[2], off, x, c, 0, rows, c);
            off += c;
        } else if (k == 0) {
            be->scale_shift(y, x, size, 1.0f, 0.0f);
        } else if (l->kind == LAYER_ADD) {
            be->axpy(y, 1.0f, x, size);
        } else {
            be->mul(y, y, x, size);
        }
    }
}

const float *model_forward(model_exec_t *e, const float *params, size_t n, bool training,
                           uint64_t dropout_seed, uint64_t example_offset) {
    const model_t *m = e->m;
    const backend_t *be = e->be;
    e->dropout_seed = dropout_seed;
    e->example_offset = example_offset;
    e->params = params;
    for (size_t i = 0; i < m->nlayers; i++) {
        const layer_t *l = &m->layers[i];
        bool last = i + 1 == m->nlayers;
        float *y = last ? e->logits : e->act[i];
        const float *x = output_of(e, l->inputs[0]);
        if (e->before_forward)
            e->before_forward(e->hook_arg, i);
        switch (l->kind) {
        case LAYER_CONV2D:
        case LAYER_DEPTHWISE_CONV2D:
            conv_forward(e, l, params, x, y, n);
            break;
        case LAYER_DENSE:
            dense_forward(e, l, params, x, y, n);
            break;
        case LAYER_MAX_POOL2D: {
            pool2d_shape_t s = pool_shape(l, n);
            be->maxpool2d_forward(y, x, &s);
            break;
        }
        case LAYER_DROPOUT:
            if (training && l->rate > 0.0f)
                be->dropout_forward(y, x, n * l->out_size, l->rate, dropout_key(l, dropout_seed),
                                    example_offset * l->out_size);
            else
                y = (float *)x; /* identity outside training */
            break;
        case LAYER_FLATTEN:
            y = (float *)x;
            break;
        case LAYER_EMBEDDING:
            be->embed_forward(y, x, params + m->vars[l->kernel_var].offset, n * l->in_size,
                              l->units, l->input_dim);
            break;
        case LAYER_ADD:
        case LAYER_MULTIPLY:
        case LAYER_CONCATENATE:
            merge_forward(e, l, y, n);
            break;
        case LAYER_BATCH_NORM:
            bn_forward(e, i, params, x, y, n, training);
            break;
        default:
            y = extra_forward(e, l, x, y, n);
            break;
        }
        e->out[i] = y;
    }
    float *probs = e->act[m->nlayers - 1];
    e->out[m->nlayers - 1] = probs;
    if (m->loss == LOSS_BCE)
        be->sigmoid_bce_forward(probs, e->row_loss, e->logits, e->labels, n);
    else if (m->loss == LOSS_MSE)
        be->mse_forward(probs, e->row_loss, e->logits, e->labels, n);
    else
        be->softmax_xent_forward(probs, e->row_loss, e->logits, e->labels, n, m->nclasses);
    return probs;
}

/* dlogits = gradient of (loss_sum * scale) w.r.t. the last layer's output
 * before its activation (the loss's). */
static void loss_backward(model_exec_t *e, float *dlogits, size_t n, float scale) {
    const model_t *m = e->m;
    const float *out = e->out[m->nlayers - 1];
    if (m->loss == LOSS_BCE)
        e->be->sigmoid_bce_backward(dlogits, out, e->labels, n, scale);
    else if (m->loss == LOSS_MSE)
        e->be->mse_backward(dlogits, out, e->labels, n, scale);
    else
        e->be->softmax_xent_backward(dlogits, out, e->labels, n, m->nclasses, scale);
}

void model_loss(model_exec_t *e, size_t n, double *loss_sum, size_t *correct, int32_t *pred) {
    const backend_t *be = e->be;
    size_t k = e->m->nclasses;
    be->download(e->host_probs, e->out[e->m->nlayers - 1], n * k * sizeof(float));
    be->download(e->host_loss, e->row_loss, n * sizeof(float));
    be->download(e->host_labels, e->labels, n * sizeof(int32_t));
    double sum = 0.0;
    size_t right = 0;
    for (size_t r = 0; r < n; r++) {
        int32_t best = model_predict_class(e->m, e->host_probs + r * k);
        right += best == e->host_labels[r];
        if (pred)
            pred[r] = best;
        sum += e->host_loss[r];
    }
    /* The regularizers' term belongs to each example's share of the mean. */
    if (n && model_has_reg(e->m))
        sum += (double)n * model_reg_loss(e->m, be, e->params, e->reg_dot);
    *loss_sum = sum;
    *correct = right;
}

const float *model_exec_probs(model_exec_t *e, size_t n) {
    e->be->download(e->host_probs, e->out[e->m->nlayers - 1], n * e->m->nclasses * sizeof(float));
    return e->host_probs;
}

/* Index of the first layer with variables: no layer before it needs the
 * gradient of its input. */
static size_t first_trainable(const model_t *m) {
    int idx[MODEL_LAYER_MAX_VARS];
    for (size_t i = 0; i < m->nlayers; i++)
        if (model_layer_vars(m, i, idx) > 0)
            return i;
    return m->nlayers;
}

/* BatchNormalization's backward: gamma's and beta's gradients over this
 * exec's examples (the trainer sums the execs' slabs), the batch statistics
 * in the moving statistics' places (this exec's share of them), and, when
 * need_dx, the input's gradient through the statistics of the whole batch.
 * Returns where dx is. */
static float *bn_backward(model_exec_t *e, size_t i, const float *params, size_t n, float *dy,
                          float *dx, bool need_dx, float *grads) {
    const model_t *m = e->m;
    const backend_t *be = e->be;
    const layer_t *l = &m->layers[i];
    size_t c = l->out[2], pixels = l->out[0] * l->out[1], rows = n * pixels;
    const float *x = output_of(e, l->inputs[0]);
    float *bm = e->bn[i], *bv = bm + c, *sums = bv + c;
    be->bn_backward_sums(sums, dy, x, bm, bv, (float)l->epsilon, rows, c);
    if (l->kernel_var >= 0)
        be->scale_shift(grads + m->vars[l->kernel_var].offset, sums, c, 1.0f, 0.0f);
    if (l->bias_var >= 0)
        be->scale_shift(grads + m->vars[l->bias_var].offset, sums + c, c, 1.0f, 0.0f);
    float share = (float)n / (float)e->bn_batch;
    be->scale_shift(grads + m->vars[l->moving_var].offset, bm, c, share, 0.0f);
    be->scale_shift(grads + m->vars[l->moving_var + 1].offset, bv, c, share, 0.0f);
    if (!need_dx)
        return dy;
    batch_reduce(e, sums, 2 * c, n);
    const float *gamma = l->kernel_var >= 0 ? params + m->vars[l->kernel_var].offset : NULL;
    be->bn_backward_data(dx, dy, x, bm, bv, gamma, sums, (float)l->epsilon, e->bn_batch * pixels,
                         rows, c);
    return dx;
}

/* dy (in place) through a dense or conv layer i's activation. */
static void act_backward(model_exec_t *e, size_t i, float *dy, size_t n) {
    const layer_t *l = &e->m->layers[i];
    act_fn_t f;
    if (l->activation == ACT_RELU)
        e->be->relu_backward(dy, dy, e->out[i], n * l->out_size);
    else if (e->pre[i] && extra_act(l->activation, &f))
        e->be->act_backward(dy, dy, e->pre[i], e->out[i], n * l->out_size, f);
}

/* dy[rows, cols] (in place) through a dense or conv layer i's activation,
 * then db (when not NULL) = its bias gradient; relu and the bias gradient in
 * one pass where the backend fuses them. */
static void act_bias_backward(model_exec_t *e, size_t i, float *dy, size_t n, size_t rows,
                              float *db) {
    const layer_t *l = &e->m->layers[i];
    if (db && l->activation == ACT_RELU && e->be->relu_bias_grad) {
        e->be->relu_bias_grad(db, dy, e->out[i], rows, l->out[2]);
        return;
    }
    act_backward(e, i, dy, n);
    if (db)
        e->be->bias_grad(db, dy, rows, l->out[2]);
}

/* Backward of the layers without variables beyond the builtin models: x and
 * y are the forward's input and output. Returns where dx is. */
static float *extra_backward(model_exec_t *e, const layer_t *l, size_t n, const float *x,
                             const float *y, float *dy, float *dx) {
    const backend_t *be = e->be;
    act_fn_t f;
    switch (l->kind) {
    case LAYER_ACTIVATION:
        if (l->activation == ACT_RELU)
            be->relu_backward(dy, dy, y, n * l->out_size);
        else if (extra_act(l->activation, &f))
            be->act_backward(dy, dy, x, y, n * l->out_size, f);
        return dy;
    case LAYER_RESCALING:
        be->scale_shift(dy, dy, n * l->out_size, l->scale, 0.0f);
        return dy;
    case LAYER_AVG_POOL2D:
    case LAYER_GLOBAL_AVG_POOL2D:
    case LAYER_GLOBAL_AVG_POOL1D: {
        pool2d_shape_t s = pool_shape(l, n);
        be->avgpool2d_backward(dx, dy, &s);
        return dx;
    }
    case LAYER_GLOBAL_MAX_POOL2D: {
        pool2d_shape_t s = pool_shape(l, n);
        be->maxpool2d_backward(dx, dy, x, y, &s);
        return dx;
    }
    case LAYER_CENTER_CROP:
        crop(e, l, dx, dy, n, true);
        return dx;
    default: /* reshape */
        return dy;
    }
}

/* Backward through layer i: dy is the gradient of its output (may be
 * modified), dx receives the gradient of its input when need_dx. Returns
 * where the input gradient is (dx, or dy for layers that work in place). */
static float *layer_backward(model_exec_t *e, size_t i, const float *params, size_t n, float *dy,
                             float *dx, bool need_dx, float *grads) {
    const model_t *m = e->m;
    const backend_t *be = e->be;
    const layer_t *l = &m->layers[i];
    const float *x = output_of(e, l->inputs[0]);
    const float *y = e->out[i];
    const var_t *kv = l->kernel_var >= 0 ? &m->vars[l->kernel_var] : NULL;
    const var_t *bv = l->bias_var >= 0 ? &m->vars[l->bias_var] : NULL;
    switch (l->kind) {
    case LAYER_DENSE:
        act_bias_backward(e, i, dy, n, n, bv ? grads + bv->offset : NULL);
        be->gemm(true, false, l->in_size, l->units, n, 1.0f, x, dy, 0.0f, grads + kv->offset);
        if (!need_dx)
            return dy;
        be->gemm(false, true, n, l->in_size, l->units, 1.0f, dy, params + kv->offset, 0.0f, dx);
        return dx;
    case LAYER_CONV2D:
    case LAYER_DEPTHWISE_CONV2D: {
        conv2d_shape_t s = conv_shape(l, n);
        bool depthwise = l->kind == LAYER_DEPTHWISE_CONV2D;
        act_bias_backward(e, i, dy, n, n * s.oh * s.ow, bv ? grads + bv->offset : NULL);
        if (depthwise)
            be->depthwise_conv2d_backward_filter(grads + kv->offset, dy, x, &s);
        else
            be->conv2d_backward_filter(grads + kv->offset, dy, x, &s, e->ws);
        if (!need_dx)
            return dy;
        if (depthwise)
            be->depthwise_conv2d_backward_data(dx, dy, params + kv->offset, &s);
        else
            be->conv2d_backward_data(dx, dy, params + kv->offset, &s, e->ws);
        return dx;
    }
    case LAYER_MAX_POOL2D: {
        if (!need_dx)
            return dy;
        pool2d_shape_t s = pool_shape(l, n);
        be->maxpool2d_backward(dx, dy, x, y, &s);
        return dx;
    }
    case LAYER_DROPOUT:
        if (need_dx && l->rate > 0.0f)
            be->dropout_backward(dy, dy, n * l->out_size, l->rate, dropout_key(l, e->dropout_seed),
                                 e->example_offset * l->out_size);
        return dy;
    case LAYER_FLATTEN:
        return dy;
    case LAYER_EMBEDDING:
        /* The whole table's gradient: zeros but in the rows the batch reads. */
        be->zero(grads + kv->offset, kv->size * sizeof(float));
        be->embed_backward(grads + kv->offset, dy, x, n * l->in_size, l->units, l->input_dim);
        if (!need_dx)
            return dy;
        be->zero(dx, n * l->in_size * sizeof(float)); /* token ids take no gradient */
        return dx;
    case LAYER_BATCH_NORM:
        return bn_backward(e, i, params, n, dy, dx, need_dx, grads);
    default:
        return need_dx ? extra_backward(e, l, n, x, y, dy, dx) : dy;
    }
    return dy;
}

/* Adds the regularizers' gradient to layer i's variables' (after its
 * backward wrote them): the share of these n examples in a batch of n /
 * scale, so that a batch split over threads sums to the whole term once. */
static void reg_backward(model_exec_t *e, size_t i, const float *params, size_t n, float scale,
                         float *grads) {
    const layer_t *l = &e->m->layers[i];
    if (l->kernel_var >= 0)
        model_reg_backward(e->m, l, e->be, params, scale * (float)n, grads);
}

/* dout[src] += the gradient of a merge's input k, given its output's dy. */
static void merge_backward(model_exec_t *e, const layer_t *l, size_t k, const float *dy, size_t n) {
    const backend_t *be = e->be;
    size_t src_size = e->m->layers[l->inputs[k]].out_size; /* never the model's input */
    float *tmp = e->grad[1], *dx = e->dout[l->inputs[k]];
    if (l->kind == LAYER_ADD) {
        be->axpy(dx, 1.0f, dy, n * l->out_size);
        return;
    }
    if (l->kind == LAYER_MULTIPLY) {
        be->scale_shift(tmp, dy, n * l->out_size, 1.0f, 0.0f);
        for (size_t j = 0; j < l->ninputs; j++)
            if (j != k)
                be->mul(tmp, tmp, output_of(e, l->inputs[j]), n * l->out_size);
    } else {
        size_t rows = n * l->out[0] * l->out[1], c = src_size / (l->out[0] * l->out[1]), off = 0;
        for (size_t j = 0; j < k; j++) {
            int s = l->inputs[j];
            off += s < 0 ? e->m->input[2] : e->m->layers[s].out[2];
        }
        be->copy_cols(tmp, c, 0, dy, l->out[2], off, rows, c);
    }
    be->axpy(dx, 1.0f, tmp, n * src_size);
}

/* Backward of a graph: each layer's output gradient is the sum of what the
 * layers that take it send back, gathered in dout before the layer runs. */
static void graph_backward(model_exec_t *e, const float *params, size_t n, float scale,
                           float *grads) {
    const model_t *m = e->m;
    size_t first = first_trainable(m);
    for (size_t i = first; i < m->nlayers; i++)
        e->be->zero(e->dout[i], n * m->layers[i].out_size * sizeof(float));
    loss_backward(e, e->dout[m->nlayers - 1], n, scale);
    for (size_t i = m->nlayers; i-- > first;) {
        const layer_t *l = &m->layers[i];
        float *dy = e->dout[i];
        if (l->kind == LAYER_ADD || l->kind == LAYER_MULTIPLY || l->kind == LAYER_CONCATENATE) {
            for (size_t k = 0; k < l->ninputs; k++)
                if (l->inputs[k] >= (int)first)
                    merge_backward(e, l, k, dy, n);
        } else {
            int src = l->inputs[0];
            bool need = src >= (int)first;
            float *dx = layer_backward(e, i, params, n, dy, e->grad[0], need, grads);
            if (need)
                e->be->axpy(e->dout[src], 1.0f, dx, n * l->in_size);
            reg_backward(e, i, params, n, scale, grads);
        }
        if (e->after_backward)
            e->after_backward(e->hook_arg, i);
    }
}

void model_backward(model_exec_t *e, const float *params, size_t n, float scale, float *grads) {
    const model_t *m = e->m;
    if (m->graph) {
        graph_backward(e, params, n, scale, grads);
        return;
    }
    size_t first = first_trainable(m);
    float *dy = e->grad[0];
    loss_backward(e, dy, n, scale);
    for (size_t i = m->nlayers; i-- > first;) {
        float *spare = dy == e->grad[0] ? e->grad[1] : e->grad[0];
        dy = layer_backward(e, i, params, n, dy, spare, i > first, grads);
        reg_backward(e, i, params, n, scale, grads);
        if (e->after_backward)
            e->after_backward(e->hook_arg, i);
    }
}

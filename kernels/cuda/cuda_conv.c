/* Convolutions through cuDNN, on pstrain's layouts.
 *
 * Tensors are NHWC, which cuDNN takes as they are (CUDNN_TENSOR_NHWC). The
 * kernel is Keras's [kh, kw, cin, cout]; cuDNN's NHWC filter is
 * [cout, kh, kw, cin] (KRSC), which is Keras's read as a matrix [K, cout]
 * (K = kh * kw * cin) and transposed: forward and backward-data transpose the
 * kernel into the workspace first, backward-filter writes the KRSC gradient
 * there and transposes it back.
 *
 * TF's 'same' padding puts the odd row or column at the bottom or right;
 * cuDNN pads both sides alike. Where the padding is symmetric cuDNN pads; where
 * it is not, the input is copied into the workspace with the padding written
 * out ([n, h + pad_total, w + pad_total, c], zeros around), the convolution
 * runs unpadded on that, and backward-data crops its gradient back to
 * [n, h, w, c].
 *
 * Each shape gets a plan once: its descriptors and the fastest algorithm of
 * each op (cudnnFind) whose workspace fits. The workspace query sizes the
 * plan of the shape it is asked about; an op on the same geometry with a
 * smaller batch (an epoch's last batch, evaluation) gets algorithms that fit
 * in what that query returned. */
#include "kernels/cuda/cuda_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    bool used;
    conv2d_shape_t s;
    bool padded;   /* asymmetric padding: written out in the workspace */
    size_t th, tw; /* total padding of each axis */
    size_t hp, wp; /* the input's size as cuDNN sees it */
    size_t fixed;  /* workspace bytes before cuDNN's: kernel, padded input */
    size_t dnn;    /* cuDNN's workspace: the largest of the three algorithms' */
    size_t budget; /* bytes a workspace query returned for this shape, 0 if none */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t data;
    cudnnConvolutionBwdFilterAlgo_t filter;
    cudnnMathType_t fwd_math, data_math, filter_math;
} plan_t;

/* A model has a few conv layers, each seen at a few batch sizes; past this
 * many shapes the oldest plan is rebuilt when needed again. */
#define MAX_PLANS 64
/* cudnnFind may pick algorithms with workspaces up to this. */
#define DNN_LIMIT ((size_t)1 << 30)

static plan_t plans[MAX_PLANS];
static size_t next_victim;
static pthread_mutex_t plans_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t round_256(size_t bytes) {
    return (bytes + 255) & ~(size_t)255;
}

static size_t conv_k(const conv2d_shape_t *s) {
    return s->kh * s->kw * s->c;
}

/* No output (or no input): the ops only zero the gradients. */
static bool conv_empty(const conv2d_shape_t *s) {
    return s->n == 0 || s->oh == 0 || s->ow == 0 || s->c == 0 || s->f == 0 || s->h == 0 ||
           s->w == 0;
}

/* Same geometry: every field but the batch. */
static bool same_geometry(const conv2d_shape_t *a, const conv2d_shape_t *b) {
    conv2d_shape_t x = *a, y = *b;
    x.n = y.n = 0;
    return !memcmp(&x, &y, sizeof x);
}

static size_t pad_total(size_t in, size_t out, size_t k, size_t stride) {
    size_t need = (out - 1) * stride + k;
    return need > in ? need - in : 0;
}

static void describe_shape(char *buf, size_t len, const conv2d_shape_t *s) {
    snprintf(buf, len, "conv n=%zu h=%zu w=%zu c=%zu k=%zux%zu f=%zu stride=%zux%zu pad=%zu,%zu",
             s->n, s->h, s->w, s->c, s->kh, s->kw, s->f, s->sh, s->sw, s->pad_top, s->pad_left);
}

static void plan_fatal(const plan_t *p, const char *what) {
    char shape[200];
    describe_shape(shape, sizeof shape, &p->s);
    cuda_fatal(what, shape, __FILE__, __LINE__);
}

static void set_descriptors(plan_t *p) {
    const conv2d_shape_t *s = &p->s;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->xd));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->yd));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->wd));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->cd));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT,
                                           cuda_int(s->n, "conv n"), cuda_int(s->c, "conv c"),
                                           cuda_int(p->hp, "conv h"), cuda_int(p->wp, "conv w")));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT,
                                           cuda_int(s->n, "conv n"), cuda_int(s->f, "conv f"),
                                           cuda_int(s->oh, "conv oh"), cuda_int(s->ow, "conv ow")));
    /* k, c, h, w of a KRSC filter */
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NHWC,
                                           cuda_int(s->f, "conv f"), cuda_int(s->c, "conv c"),
                                           cuda_int(s->kh, "conv kh"), cuda_int(s->kw, "conv kw")));
    int pad_h = p->padded ? 0 : (int)s->pad_top, pad_w = p->padded ? 0 : (int)s->pad_left;
    /* Keras's convolution is a cross-correlation: the kernel is not flipped. */
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->cd, pad_h, pad_w, cuda_int(s->sh, "stride"),
                                                cuda_int(s->sw, "stride"), 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, cuda.conv_math));
    int n, c, h, w;
    CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->wd, &n, &c, &h, &w));
    if ((size_t)n != s->n || (size_t)c != s->f || (size_t)h != s->oh || (size_t)w != s->ow)
        plan_fatal(p, "cuDNN's output size differs from Keras's");
}

/* The math an algorithm runs with: what cudnnFind ran it with, but never
 * TF32 when float32 was asked for. */
static cudnnMathType_t math_of(cudnnMathType_t found) {
    return cuda.conv_math == CUDNN_FMA_MATH ? CUDNN_FMA_MATH : found;
}

/* The fastest result that ran, fits in limit bytes and keeps float inputs
 * (no conversion to half); cudnnFind sorts them by time. */
#define PICK_FASTEST(perf, count, limit, algo_out, math_out, what)                                 \
    do {                                                                                           \
        int k_ = 0;                                                                                \
        while (k_ < (count) &&                                                                     \
               (perf[k_].status != CUDNN_STATUS_SUCCESS || perf[k_].memory > (limit) ||            \
                perf[k_].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))                       \
            k_++;                                                                                  \
        if (k_ == (count))                                                                         \
            plan_fatal(p, "no cuDNN algorithm for " what " fits the workspace");                   \
        (algo_out) = perf[k_].algo;                                                                \
        (math_out) = math_of(perf[k_].mathType);                                                   \
        p->dnn = perf[k_].memory > p->dnn ? perf[k_].memory : p->dnn;                              \
    } while (0)

static void find_algorithms(plan_t *p, size_t limit) {
    int count = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(
        cuda.dnn, p->xd, p->wd, p->cd, p->yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, fwd));
    PICK_FASTEST(fwd, count, limit, p->fwd, p->fwd_math, "conv2d_forward");
    cudnnConvolutionBwdDataAlgoPerf_t data[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(
        cuda.dnn, p->wd, p->yd, p->cd, p->xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, data));
    PICK_FASTEST(data, count, limit, p->data, p->data_math, "conv2d_backward_data");
    cudnnConvolutionBwdFilterAlgoPerf_t filter[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(cuda.dnn, p->xd, p->yd, p->cd, p->wd,
                                                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                            &count, filter));
    PICK_FASTEST(filter, count, limit, p->filter, p->filter_math, "conv2d_backward_filter");
}

static void plan_release(plan_t *p) {
    if (!p->used)
        return;
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->xd));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->yd));
    CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->wd));
    CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->cd));
    memset(p, 0, sizeof *p);
}

/* Workspace bytes of a shape apart from cuDNN's: the transposed kernel, and
 * the padded input when the padding is asymmetric. */
static void plan_geometry(plan_t *p, const conv2d_shape_t *s) {
    p->s = *s;
    p->th = pad_total(s->h, s->oh, s->kh, s->sh);
    p->tw = pad_total(s->w, s->ow, s->kw, s->sw);
    p->padded = p->th != 2 * s->pad_top || p->tw != 2 * s->pad_left;
    p->hp = p->padded ? s->h + p->th : s->h;
    p->wp = p->padded ? s->w + p->tw : s->w;
    p->fixed = round_256(conv_k(s) * s->f * sizeof(float));
    if (p->padded)
        p->fixed += round_256(s->n * p->hp * p->wp * s->c * sizeof(float));
}

/* Builds the plan of shape s in a free slot (or the oldest), its cuDNN
 * workspace at most limit bytes. Called with plans_mu held. */
static plan_t *plan_build(const conv2d_shape_t *s, size_t limit) {
    plan_t *p = NULL;
    for (size_t i = 0; i < MAX_PLANS && !p; i++)
        if (!plans[i].used)
            p = &plans[i];
    if (!p) {
        p = &plans[next_victim];
        next_victim = (next_victim + 1) % MAX_PLANS;
        plan_release(p);
    }
    plan_geometry(p, s);
    set_descriptors(p);
    find_algorithms(p, limit);
    p->used = true;
    return p;
}

static plan_t *plan_find(const conv2d_shape_t *s) {
    for (size_t i = 0; i < MAX_PLANS; i++)
        if (plans[i].used && !memcmp(&plans[i].s, s, sizeof *s))
            return &plans[i];
    return NULL;
}

/* The workspace the caller holds for shape s: what the query returned for
 * the same geometry at the smallest batch at least as large; 0 if none. */
static size_t budget_for(const conv2d_shape_t *s) {
    size_t best_n = 0, budget = 0;
    for (size_t i = 0; i < MAX_PLANS; i++) {
        const plan_t *p = &plans[i];
        if (p->used && p->budget && p->s.n >= s->n && same_geometry(&p->s, s) &&
            (!best_n || p->s.n < best_n)) {
            best_n = p->s.n;
            budget = p->budget;
        }
    }
    return budget;
}

/* The plan an op runs with; its workspace fits what a query returned. */
static plan_t *plan_for(const conv2d_shape_t *s) {
    pthread_mutex_lock(&plans_mu);
    plan_t *p = plan_find(s);
    if (!p) {
        size_t budget = budget_for(s);
        plan_t probe;
        plan_geometry(&probe, s);
        if (budget < probe.fixed) {
            probe.used = false;
            plan_fatal(&probe, "conv2d op on a shape whose workspace was never queried");
        }
        p = plan_build(s, budget - probe.fixed);
    }
    pthread_mutex_unlock(&plans_mu);
    return p;
}

size_t cuda_conv2d_workspace(const conv2d_shape_t *s) {
    if (conv_empty(s))
        return 256;
    pthread_mutex_lock(&plans_mu);
    plan_t *p = plan_find(s);
    if (!p) {
        size_t free_bytes = 0, total = 0;
        CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
        size_t limit = free_bytes / 4 < DNN_LIMIT ? free_bytes / 4 : DNN_LIMIT;
        p = plan_build(s, limit);
    }
    size_t bytes = p->fixed + p->dnn;
    p->budget = bytes > p->budget ? bytes : p->budget;
    pthread_mutex_unlock(&plans_mu);
    return bytes;
}

/* Where each piece lives in the workspace. */
typedef struct {
    float *kernel; /* [f, K]: the kernel (or its gradient) in KRSC */
    float *padded; /* [n, hp, wp, c], when the plan pads */
    void *dnn;
} layout_t;

static layout_t layout(const plan_t *p, void *ws) {
    size_t kernel = round_256(conv_k(&p->s) * p->s.f * sizeof(float));
    layout_t l = {.kernel = ws, .padded = NULL, .dnn = (char *)ws + p->fixed};
    if (p->padded)
        l.padded = (float *)((char *)ws + kernel);
    return l;
}

/* x padded out into the workspace when the plan pads; else x. */
static const float *input_of(const plan_t *p, const layout_t *l, const float *x) {
    if (!p->padded)
        return x;
    const conv2d_shape_t *s = &p->s;
    cuk_pad(l->padded, x, s->n, s->h, s->w, s->c, p->th, p->tw, s->pad_top, s->pad_left);
    return l->padded;
}

static const float one = 1.0f, zero = 0.0f;

/* y[n, oh, ow, f] = conv(x[n, h, w, c], w[kh, kw, c, f]) */
void cuda_conv2d_forward(float *y, const float *x, const float *w, const conv2d_shape_t *s,
                         void *ws) {
    if (conv_empty(s))
        return;
    plan_t *p = plan_for(s);
    layout_t l = layout(p, ws);
    cuk_transpose(l.kernel, w, conv_k(s), s->f);
    const float *in = input_of(p, &l, x);
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, p->fwd_math));
    CUDNN_CHECK(cudnnConvolutionForward(cuda.dnn, &one, p->xd, in, p->wd, l.kernel, p->cd, p->fwd,
                                        l.dnn, p->dnn, &zero, p->yd, y));
}

/* dx[n, h, w, c] from dy[n, oh, ow, f] and the kernel (overwrites dx) */
void cuda_conv2d_backward_data(float *dx, const float *dy, const float *w, const conv2d_shape_t *s,
                               void *ws) {
    if (conv_empty(s)) {
        CUDA_CHECK(cudaMemsetAsync(dx, 0, s->n * s->h * s->w * s->c * sizeof(float), cuda.compute));
        return;
    }
    plan_t *p = plan_for(s);
    layout_t l = layout(p, ws);
    cuk_transpose(l.kernel, w, conv_k(s), s->f);
    float *out = p->padded ? l.padded : dx;
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, p->data_math));
    CUDNN_CHECK(cudnnConvolutionBackwardData(cuda.dnn, &one, p->wd, l.kernel, p->yd, dy, p->cd,
                                             p->data, l.dnn, p->dnn, &zero, p->xd, out));
    if (p->padded)
        cuk_crop(dx, l.padded, s->n, s->h, s->w, s->c, p->th, p->tw, s->pad_top, s->pad_left);
}

/* dw[kh, kw, c, f] from dy and x (overwrites dw) */
void cuda_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                 const conv2d_shape_t *s, void *ws) {
    if (conv_empty(s)) {
        CUDA_CHECK(cudaMemsetAsync(dw, 0, conv_k(s) * s->f * sizeof(float), cuda.compute));
        return;
    }
    plan_t *p = plan_for(s);
    layout_t l = layout(p, ws);
    const float *in = input_of(p, &l, x);
    CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, p->filter_math));
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(cuda.dnn, &one, p->xd, in, p->yd, dy, p->cd,
                                               p->filter, l.dnn, p->dnn, &zero, p->wd, l.kernel));
    cuk_transpose(dw, l.kernel, s->f, conv_k(s));
}

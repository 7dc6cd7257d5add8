/* The math every role runs, as one table of operations. A backend is the CPU
 * (OpenBLAS + C, kernels/cpu/) or a GPU plugin (kernels/cuda/, loaded at run
 * time). Every pointer an op takes is backend memory (from ->alloc) unless the
 * comment says host. Tensors are row-major; images are NHWC; a conv kernel is
 * [kh, kw, cin, cout] and a dense kernel [in, out], as in Keras.
 *
 * Ops are synchronous from the caller's view on the CPU; a GPU backend may
 * queue them on its stream, and ->download waits for the work before it. Ops
 * never allocate: whatever scratch they need comes from the caller as a
 * workspace of the size the matching *_workspace query returned.
 *
 * A GPU backend is a plugin (libpstrain_cuda.so) that backend_open loads
 * with dlopen, so the binaries need no CUDA library unless a GPU is asked
 * for. Its ops run on one stream from one thread; an error inside an op (a
 * device fault) is fatal: it prints file, line and the library's message
 * and aborts. */
#ifndef PSTRAIN_BACKEND_H
#define PSTRAIN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PSTRAIN_BACKEND_WHY 512

/* Geometry of a 2-D convolution. Output size and padding follow Keras/TF:
 * 'valid': oh = (h - kh) / sh + 1, no padding;
 * 'same':  oh = ceil(h / sh), pad_total = max((oh - 1) * sh + kh - h, 0),
 *          pad_top = pad_total / 2 (the extra row, if any, goes at the bottom).
 * conv2d_shape_init fills oh, ow, pad_top and pad_left from the rest. */
typedef struct {
    size_t n, h, w, c; /* input [n, h, w, c] */
    size_t kh, kw, f;  /* kernel [kh, kw, c, f] */
    size_t sh, sw;     /* strides */
    size_t pad_top, pad_left;
    size_t oh, ow; /* output [n, oh, ow, f] */
} conv2d_shape_t;

/* Geometry of a 2-D max pooling with the same rules ('valid' is Keras's
 * default for pooling). Padded cells never win the max. */
typedef struct {
    size_t n, h, w, c;
    size_t ph, pw; /* pool window */
    size_t sh, sw; /* strides (Keras default: the pool size) */
    size_t pad_top, pad_left;
    size_t oh, ow;
} pool2d_shape_t;

void conv2d_shape_init(conv2d_shape_t *s, bool same);
void pool2d_shape_init(pool2d_shape_t *s, bool same);

/* Dropout and initialisation draw from one counter-based generator: the value
 * for (key, counter) is a pure function, so a mask is recomputed in backward
 * instead of stored, and any split of a batch over threads or devices draws the
 * same numbers. The GPU plugin implements the same function. */
uint64_t rng_mix(uint64_t key, uint64_t counter);
/* Uniform in [0, 1) with 24 bits. */
float rng_uniform(uint64_t key, uint64_t counter);
/* Derives a key from a seed and a name (FNV-1a of the name mixed with the seed). */
uint64_t rng_key(uint64_t seed, const char *name, uint64_t extra);
/* rng_uniform(key, i) >= rate exactly when rng_mix(key, i) >> 40 >= this:
 * dropout's keep test in integers, the same on every backend. */
uint64_t rng_threshold(float rate);

/* One optimizer update with its constants already worked out (common/optim.c
 * writes the rules down and computes the constants in double, rounded to
 * float once). The update is a backend op so that a store kept on a GPU is
 * updated there. */
typedef enum {
    UPDATE_SGD = 0,
    UPDATE_SGD_MOMENTUM,
    UPDATE_SGD_NESTEROV,
    UPDATE_ADAM,
    UPDATE_RMSPROP,
    UPDATE_RMSPROP_MOMENTUM,
    UPDATE_ADAGRAD,
} update_rule_t;

typedef struct {
    update_rule_t rule;
    float lr;    /* lr_t */
    float mom;   /* momentum */
    float alpha; /* Adam: lr_t * sqrt(1 - beta2^t) / (1 - beta1^t) */
    float b1, one_minus_b1, b2, one_minus_b2;
    float rho, one_minus_rho;
    float eps;
} update_step_t;

/* Elementwise activations beyond ReLU (Keras's definitions; gelu is the exact
 * erf form, Keras's default). */
typedef enum { ACT_FN_SIGMOID = 0, ACT_FN_TANH, ACT_FN_GELU, ACT_FN_SILU } act_fn_t;

/* A point in a backend's queue of copies (a CUDA event); opaque. */
typedef struct backend_event backend_event_t;

typedef struct backend backend_t;

struct backend {
    const char *name;
    /* Backend memory is host memory (the CPU): callers may pass host
     * pointers straight to ops instead of uploading. */
    bool host_memory;

    /* Memory. alloc returns 64-byte aligned memory or NULL. */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*zero)(void *p, size_t bytes);

    /* c[m, n] = alpha * op(a) op(b) + beta * c; op(a) is [m, k], op(b) is [k, n];
     * ta/tb mean a is stored [k, m] / b is stored [n, k]. */
    void (*gemm)(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                 const float *b, float beta, float *c);

    /* Convolution (no bias). Workspace bytes for the three ops together. */
    size_t (*conv2d_workspace)(const conv2d_shape_t *s);
    /* y[n, oh, ow, f] = conv(x[n, h, w, c], w[kh, kw, c, f]) */
    void (*conv2d_forward)(float *y, const float *x, const float *w, const conv2d_shape_t *s,
                           void *ws);
    /* dx[n, h, w, c] = gradient of the loss w.r.t. x, given dy[n, oh, ow, f] (overwrites dx) */
    void (*conv2d_backward_data)(float *dx, const float *dy, const float *w,
                                 const conv2d_shape_t *s, void *ws);
    /* dw[kh, kw, c, f] = gradient w.r.t. the kernel (overwrites dw) */
    void (*conv2d_backward_filter)(float *dw, const float *dy, const float *x,
                                   const conv2d_shape_t *s, void *ws);

    /* y[n, oh, ow, c] = max over each window of x[n, h, w, c] */
    void (*maxpool2d_forward)(float *y, const float *x, const pool2d_shape_t *s);
    /* dx (overwritten): each dy goes to the first position of its window that
     * holds the max (y is the forward output). */
    void (*maxpool2d_backward)(float *dx, const float *dy, const float *x, const float *y,
                               const pool2d_shape_t *s);

    /* y[r, c] += b[c] for rows x cols */
    void (*bias_add)(float *y, const float *b, size_t rows, size_t cols);
    /* db[c] = sum over rows of dy[r, c] (overwrites db) */
    void (*bias_grad)(float *db, const float *dy, size_t rows, size_t cols);

    /* y = max(x, 0); in place allowed */
    void (*relu_forward)(float *y, const float *x, size_t n);
    /* dx = dy where y > 0, else 0; in place (dx == dy) allowed */
    void (*relu_backward)(float *dx, const float *dy, const float *y, size_t n);

    /* probs[r, :] = softmax(logits[r, :]); loss[r] = -log(probs[r, labels[r]]),
     * computed stably from the logits. labels are backend memory, int32. */
    void (*softmax_xent_forward)(float *probs, float *loss, const float *logits,
                                 const int32_t *labels, size_t rows, size_t classes);
    /* dlogits[r, :] = scale * (probs[r, :] - onehot(labels[r])) */
    void (*softmax_xent_backward)(float *dlogits, const float *probs, const int32_t *labels,
                                  size_t rows, size_t classes, float scale);
    /* One sigmoid output per row: probs[r] = sigmoid(logits[r]); loss[r] = binary
     * cross-entropy against labels[r] in {0, 1}, computed stably from the logit
     * (another label gives NaN). */
    void (*sigmoid_bce_forward)(float *probs, float *loss, const float *logits,
                                const int32_t *labels, size_t rows);
    /* dlogits[r] = scale * (probs[r] - labels[r]) */
    void (*sigmoid_bce_backward)(float *dlogits, const float *probs, const int32_t *labels,
                                 size_t rows, float scale);
    /* One linear output per row: y[r] = x[r]; loss[r] = (x[r] - labels[r])^2,
     * the integer label as the target. */
    void (*mse_forward)(float *y, float *loss, const float *x, const int32_t *labels, size_t rows);
    /* dx[r] = scale * 2 (y[r] - labels[r]) */
    void (*mse_backward)(float *dx, const float *y, const int32_t *labels, size_t rows,
                         float scale);

    /* Inverted dropout: element i keeps its value times 1/(1 - rate) when
     * rng_uniform(key, offset + i) >= rate, else becomes 0. In place allowed.
     * backward applies the same mask to dy. */
    void (*dropout_forward)(float *y, const float *x, size_t n, float rate, uint64_t key,
                            uint64_t offset);
    void (*dropout_backward)(float *dx, const float *dy, size_t n, float rate, uint64_t key,
                             uint64_t offset);

    /* y = a * x + y; used to sum gradients. */
    void (*axpy)(float *y, float a, const float *x, size_t n);
    /* y[i] = x[i] * scale for bytes x (pixels to [0, 1]). */
    void (*scale_u8)(float *y, const uint8_t *x, size_t n, float scale);

    /* w[n] and its slots updated with gradient g[n] by rule k->rule; slot0
     * and slot1 are the rule's slots in common/optim.c's order (NULL where it
     * has fewer). w, the slots and g must not overlap. */
    void (*apply_update)(const update_step_t *k, float *w, float *slot0, float *slot1,
                         const float *g, size_t n);

    /* Host memory for buffers that move to and from the backend every step
     * (pulled weights, gradients, batches): page-locked on a GPU, so copies
     * run without the CPU; aligned host memory on the CPU. NULL on failure. */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);

    /* Copies beside the computation. A GPU queues uploads on one copy queue
     * and downloads on another, each beside the compute queue that runs the
     * ops; an event marks where a copy ends. On the CPU the copies happen at
     * once and the events do nothing. event_create returns NULL on failure. */
    backend_event_t *(*event_create)(void);
    void (*event_free)(backend_event_t *e);
    /* Queues dst <- host_src (stay untouched until e is reached), then marks e. */
    void (*upload_async)(void *dst, const void *host_src, size_t bytes, backend_event_t *e);
    /* Queues host_dst <- src after every op queued so far, then marks e. */
    void (*download_async)(void *host_dst, const void *src, size_t bytes, backend_event_t *e);
    /* Ops queued from now on start after e is reached (the host goes on). */
    void (*wait_event)(backend_event_t *e);
    /* The host waits until e is reached. */
    void (*sync_event)(backend_event_t *e);

    /* Ops of the Keras layers beyond the builtin models (kernels/cpu/ops_extra.c,
     * kernels/cuda/ops_extra.cu). */
    /* y = f(x) elementwise; in place allowed. */
    void (*act_forward)(float *y, const float *x, size_t n, act_fn_t f);
    /* dx = dy * f'(x), with y = f(x) from the forward; in place (dx == dy) allowed. */
    void (*act_backward)(float *dx, const float *dy, const float *x, const float *y, size_t n,
                         act_fn_t f);
    /* y[n, oh, ow, c] = mean of the in-image cells of each window of x (padded
     * cells are not counted, as in TensorFlow). */
    void (*avgpool2d_forward)(float *y, const float *x, const pool2d_shape_t *s);
    /* dx (overwritten): each dy spread evenly over its window's in-image cells. */
    void (*avgpool2d_backward)(float *dx, const float *dy, const pool2d_shape_t *s);
    /* y = x * scale + offset; in place allowed. */
    void (*scale_shift)(float *y, const float *x, size_t n, float scale, float offset);
    /* y = a * b elementwise; in place allowed. */
    void (*mul)(float *y, const float *a, const float *b, size_t n);
    /* dst[r, dst_off + j] = src[r, src_off + j] for r < rows, j < cols; rows of
     * dst_cols and src_cols floats (concatenation along the channels and its
     * gradient). */
    void (*copy_cols)(float *dst, size_t dst_cols, size_t dst_off, const float *src,
                      size_t src_cols, size_t src_off, size_t rows, size_t cols);

    /* Embedding (kernels/cpu/ops_embed.c, kernels/cuda/ops_embed.cu): ids[n]
     * are token ids held as floats, table[rows, dim]. y[i] = table[ids[i]]
     * (zeros for an id that is not an integer in [0, rows)). */
    void (*embed_forward)(float *y, const float *ids, const float *table, size_t n, size_t dim,
                          size_t rows);
    /* dtable[ids[i]] += dy[i] for every i (accumulates; the caller zeroes
     * dtable first); ids outside the table are skipped. */
    void (*embed_backward)(float *dtable, const float *dy, const float *ids, size_t n, size_t dim,
                           size_t rows);
    /* Depthwise convolution (Keras's DepthwiseConv2D; kernels/cpu/ops_depthwise.c,
     * kernels/cuda/ops_depthwise.cu): the geometry of conv2d_shape_t with
     * f = c * multiplier and the kernel w[kh, kw, c, multiplier]; output
     * channel ci * multiplier + q is input channel ci convolved with
     * w[:, :, ci, q]. No workspace. */
    void (*depthwise_conv2d_forward)(float *y, const float *x, const float *w,
                                     const conv2d_shape_t *s);
    /* dx[n, h, w, c] (overwritten) from dy[n, oh, ow, f] */
    void (*depthwise_conv2d_backward_data)(float *dx, const float *dy, const float *w,
                                           const conv2d_shape_t *s);
    /* dw[kh, kw, c, multiplier] (overwritten) */
    void (*depthwise_conv2d_backward_filter)(float *dw, const float *dy, const float *x,
                                             const conv2d_shape_t *s);
    /* A layer's bias and relu fused, one pass over its output instead of two
     * (NULL: the caller runs the ops above one after the other; the results
     * are the same floats). */
    /* y[r, c] = max(y[r, c] + b[c], 0): bias_add, then relu_forward. */
    void (*bias_relu)(float *y, const float *b, size_t rows, size_t cols);
    /* dy[r, c] = 0 where y[r, c] <= 0 (in place), then db[c] = sum over rows
     * of dy[r, c] (overwrites db): relu_backward, then bias_grad. */
    void (*relu_bias_grad)(float *db, float *dy, const float *y, size_t rows, size_t cols);
    /* BatchNormalization along the channels of x[rows, c] (kernels/cpu/ops_bn.c,
     * kernels/cuda/ops_bn.cu); sums are accumulated in double. */
    /* out[j] = sum over rows of x[r, j] (mean NULL), or of (x[r, j] - mean[j])^2. */
    void (*bn_stats)(float *out, const float *x, const float *mean, size_t rows, size_t c);
    /* y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel; gamma NULL
     * is 1, beta NULL is 0. In place allowed. */
    void (*bn_forward)(float *y, const float *x, const float *mean, const float *var,
                       const float *gamma, const float *beta, float eps, size_t rows, size_t c);
    /* With xhat = (x - mean) / sqrt(var + eps): sums[j] = sum over rows of
     * dy * xhat (gamma's gradient), sums[c + j] = sum of dy (beta's). */
    void (*bn_backward_sums)(float *sums, const float *dy, const float *x, const float *mean,
                             const float *var, float eps, size_t rows, size_t c);
    /* dx = gamma / sqrt(var + eps) * (dy - sums[c + j] / count - xhat * sums[j] / count):
     * the gradient through batch statistics of `count` rows, given the sums
     * of bn_backward_sums over all of them. In place (dx == dy) allowed. */
    void (*bn_backward_data)(float *dx, const float *dy, const float *x, const float *mean,
                             const float *var, const float *gamma, const float *sums, float eps,
                             size_t count, size_t rows, size_t c);
};

/* be->alloc for memory sized from a validated model: running out is fatal
 * (file, line), as with xmalloc. */
void *backend_xalloc(const backend_t *be, size_t bytes, const char *file, int line);
#define BACKEND_XALLOC(be, bytes) backend_xalloc((be), (bytes), __FILE__, __LINE__)

/* Bumped whenever backend_t changes: a plugin built against another table
 * is refused at load. */
#define BACKEND_ABI 8

/* The CPU backend (always present). Its ops are single-threaded: callers run
 * several in parallel on disjoint data. cpu_backend_init pins OpenBLAS to one
 * thread so that it never starts a pool of its own. */
const backend_t *cpu_backend(void);
void cpu_backend_init(void);
/* The BLAS kernel in use, e.g. "SkylakeX" or "Haswell", for benchmark output;
 * "+avx512" or "+avx2" is appended when the backend's own kernel takes the
 * products it suits (PSTRAIN_CPU_GEMM=openblas leaves them all to OpenBLAS;
 * =avx2 forces the AVX2 kernel on an AVX-512 CPU). */
const char *cpu_backend_blas_core(void);
/* OpenBLAS's own description: version, build options, core. */
const char *cpu_backend_blas_config(void);

/* The backend a `device` setting names: "cpu"; "gpu", the CUDA plugin on
 * the first GPU that CUDA_VISIBLE_DEVICES shows; "auto", that GPU when one is
 * usable, else the CPU. The plugin is $PSTRAIN_CUDA_PLUGIN when set, else
 * libpstrain_cuda.so beside the executable, else wherever the dynamic loader
 * finds it. */
typedef struct {
    const backend_t *be;
    bool gpu;
    char about[256]; /* the device in one phrase: GPU name and libraries, or the BLAS core */
    char why_cpu[PSTRAIN_BACKEND_WHY]; /* auto without a usable GPU: the reason; else "" */
} backend_choice_t;

/* Returns 0 with *out filled, or -1 with err saying why (an unknown device
 * name, or "gpu" with no usable GPU: no plugin, no driver, no device). */
int backend_open(const char *device, backend_choice_t *out, char *err, size_t errlen);

/* The plugin's one exported function: fills *out with its table and about
 * with the device in one phrase; on failure returns a BACKEND_PLUGIN_* code
 * with about saying why. abi and table_size must be BACKEND_ABI and
 * sizeof(backend_t) as the caller was built. Safe to call more than once. */
#define BACKEND_PLUGIN_ENTRY "pstrain_cuda_backend"
enum {
    BACKEND_PLUGIN_OK = 0,
    BACKEND_PLUGIN_NO_DEVICE = 1, /* no GPU visible, or none it can run on */
    BACKEND_PLUGIN_NO_DRIVER = 2, /* no NVIDIA driver, or one too old */
    BACKEND_PLUGIN_ABI = 3,       /* built against another backend_t */
    BACKEND_PLUGIN_ERROR = 4,     /* a library failed to start */
};
typedef int (*backend_plugin_fn)(unsigned abi, size_t table_size, const backend_t **out,
                                 char *about, size_t aboutlen);

#endif

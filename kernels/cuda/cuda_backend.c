/* The CUDA backend plugin (libpstrain_cuda.so): the backend table on one GPU,
 * its entry point pstrain_cuda_backend, memory, copies and events, products
 * through cuBLAS, activations and the bias through cuDNN. Convolutions are
 * in cuda_conv.c, the plugin's own kernels in cuda_kernels.cu.
 *
 * Row-major products on column-major cuBLAS: c[m, n] = op(a) op(b) is, read
 * column-major, c^T[n, m] = op(b)^T op(a)^T, so cuBLAS gets b first, the
 * dimensions swapped and each leading dimension as the row length stored. */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/ops_bn.h"
#include "kernels/cuda/ops_extra.h"
#include "kernels/cuda/ops_embed.h"
#include "kernels/cuda/ops_more.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cuda_state_t cuda;

/* Bytes of bias_grad's partial sums (a conv layer of 64 channels gets 4096
 * row groups). */
#define SCRATCH_BYTES ((size_t)1 << 20)

void cuda_fatal(const char *call, const char *msg, const char *file, int line) {
    fprintf(stderr, "fatal: %s:%d: %s: %s\n", file, line, call, msg);
    fflush(stderr);
    abort();
}

int cuda_int(size_t v, const char *what) {
    if (v > (size_t)INT_MAX) {
        char msg[128];
        snprintf(msg, sizeof msg, "%zu is more than the library takes (%d)", v, INT_MAX);
        cuda_fatal(what, msg, __FILE__, __LINE__);
    }
    return (int)v;
}

/* ---- memory and copies ---- */

/* cudaMalloc aligns to 256 bytes; a zero-byte request still gets a block so
 * that NULL always means failure. */
static void *cu_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: the caller reports it */
        return NULL;
    }
    return p;
}

static void cu_free(void *p) {
    if (p)
        CUDA_CHECK(cudaFree(p));
}

static void *cu_host_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 64, cudaHostAllocPortable) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cu_host_free(void *p) {
    if (p)
        CUDA_CHECK(cudaFreeHost(p));
}

/* Synchronous from the caller's view: the host buffer may change on return. */
static void cu_upload(void *dst, const void *src, size_t bytes) {
    if (!bytes)
        return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda.compute));
    CUDA_CHECK(cudaStreamSynchronize(cuda.compute));
}

/* Waits for every op queued before it. */
static void cu_download(void *dst, const void *src, size_t bytes) {
    if (bytes)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda.compute));
    CUDA_CHECK(cudaStreamSynchronize(cuda.compute));
}

static void cu_zero(void *p, size_t bytes) {
    if (bytes)
        CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda.compute));
}

static backend_event_t *cu_event_create(void) {
    cudaEvent_t e;
    if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return (backend_event_t *)e;
}

static void cu_event_free(backend_event_t *e) {
    if (e)
        CUDA_CHECK(cudaEventDestroy((cudaEvent_t)e));
}

static void cu_upload_async(void *dst, const void *src, size_t bytes, backend_event_t *e) {
    if (bytes)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda.h2d));
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)e, cuda.h2d));
}

/* The copy waits for the compute stream's work so far, not the host. */
static void cu_download_async(void *dst, const void *src, size_t bytes, backend_event_t *e) {
    CUDA_CHECK(cudaEventRecord(cuda.mark, cuda.compute));
    CUDA_CHECK(cudaStreamWaitEvent(cuda.d2h, cuda.mark, 0));
    if (bytes)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda.d2h));
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)e, cuda.d2h));
}

static void cu_wait_event(backend_event_t *e) {
    CUDA_CHECK(cudaStreamWaitEvent(cuda.compute, (cudaEvent_t)e, 0));
}

static void cu_sync_event(backend_event_t *e) {
    CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)e));
}

/* ---- products ---- */

/* c[n] *= beta, with BLAS's rule that beta 0 overwrites (NaN too). */
static void scale_or_zero(float *c, float beta, size_t n) {
    if (beta == 0.0f) {
        cu_zero(c, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i += INT_MAX) {
        size_t len = n - i < INT_MAX ? n - i : INT_MAX;
        CUBLAS_CHECK(cublasSscal(cuda.blas, (int)len, &beta, c + i, 1));
    }
}

static void cu_gemm(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                    const float *b, float beta, float *c) {
    if (m == 0 || n == 0)
        return;
    if (k == 0 || alpha == 0.0f) {
        scale_or_zero(c, beta, m * n);
        return;
    }
    int im = cuda_int(m, "gemm m"), in = cuda_int(n, "gemm n"), ik = cuda_int(k, "gemm k");
    CUBLAS_CHECK(cublasSgemm(cuda.blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                             ta ? CUBLAS_OP_T : CUBLAS_OP_N, in, im, ik, &alpha, b, tb ? ik : in, a,
                             ta ? im : ik, &beta, c, in));
}

static void cu_axpy(float *y, float a, const float *x, size_t n) {
    for (size_t i = 0; i < n; i += INT_MAX) {
        size_t len = n - i < INT_MAX ? n - i : INT_MAX;
        CUBLAS_CHECK(cublasSaxpy(cuda.blas, (int)len, &a, x + i, 1, y + i, 1));
    }
}

/* ---- cuDNN: bias and ReLU on plain rows ---- */

/* Elements per cuDNN call: its descriptors count in int. */
#define DNN_CHUNK ((size_t)1 << 30)

/* desc = NCHW [n, c, 1, 1]: rows of c floats, as row-major [n, c] is. */
static cudnnTensorDescriptor_t rows_desc(size_t n, size_t c) {
    cudnnTensorDescriptor_t d;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                           cuda_int(n, "rows"), cuda_int(c, "columns"), 1, 1));
    return d;
}

/* y[rows, cols] += b[cols]: cuDNN's per-channel add, cols as channels. */
static void cu_bias_add(float *y, const float *b, size_t rows, size_t cols) {
    if (rows == 0 || cols == 0)
        return;
    size_t step = DNN_CHUNK / cols ? DNN_CHUNK / cols : 1;
    cudnnTensorDescriptor_t bd = rows_desc(1, cols);
    const float one = 1.0f;
    for (size_t r = 0; r < rows; r += step) {
        size_t nr = rows - r < step ? rows - r : step;
        cudnnTensorDescriptor_t yd = rows_desc(nr, cols);
        CUDNN_CHECK(cudnnAddTensor(cuda.dnn, &one, bd, b, &one, yd, y + r * cols));
        CUDNN_CHECK(cudnnDestroyTensorDescriptor(yd));
    }
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(bd));
}

static void cu_bias_grad(float *db, const float *dy, size_t rows, size_t cols) {
    cuk_bias_grad(db, dy, rows, cols);
}

static cudnnActivationDescriptor_t relu_desc(void) {
    cudnnActivationDescriptor_t a;
    CUDNN_CHECK(cudnnCreateActivationDescriptor(&a));
    CUDNN_CHECK(
        cudnnSetActivationDescriptor(a, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    return a;
}

/* y = max(x, 0) in chunks of DNN_CHUNK elements; in place allowed. */
static void cu_relu_forward(float *y, const float *x, size_t n) {
    cudnnActivationDescriptor_t a = relu_desc();
    const float one = 1.0f, zero = 0.0f;
    for (size_t i = 0; i < n; i += DNN_CHUNK) {
        size_t len = n - i < DNN_CHUNK ? n - i : DNN_CHUNK;
        cudnnTensorDescriptor_t d = rows_desc(1, len);
        CUDNN_CHECK(cudnnActivationForward(cuda.dnn, a, &one, d, x + i, &zero, d, y + i));
        CUDNN_CHECK(cudnnDestroyTensorDescriptor(d));
    }
    CUDNN_CHECK(cudnnDestroyActivationDescriptor(a));
}

/* dx = dy where y > 0, else 0. cuDNN asks for the forward's input as well;
 * y stands in for it: y > 0 exactly where x > 0. In place allowed. */
static void cu_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    cudnnActivationDescriptor_t a = relu_desc();
    const float one = 1.0f, zero = 0.0f;
    for (size_t i = 0; i < n; i += DNN_CHUNK) {
        size_t len = n - i < DNN_CHUNK ? n - i : DNN_CHUNK;
        cudnnTensorDescriptor_t d = rows_desc(1, len);
        CUDNN_CHECK(cudnnActivationBackward(cuda.dnn, a, &one, d, y + i, d, dy + i, d, y + i, &zero,
                                            d, dx + i));
        CUDNN_CHECK(cudnnDestroyTensorDescriptor(d));
    }
    CUDNN_CHECK(cudnnDestroyActivationDescriptor(a));
}

/* ---- the rest: the plugin's kernels ---- */

static void cu_maxpool2d_forward(float *y, const float *x, const pool2d_shape_t *s) {
    cuk_maxpool_forward(y, x, s);
}

static void cu_maxpool2d_backward(float *dx, const float *dy, const float *x, const float *y,
                                  const pool2d_shape_t *s) {
    cuk_maxpool_backward(dx, dy, x, y, s);
}

static void cu_softmax_xent_forward(float *probs, float *loss, const float *logits,
                                    const int32_t *labels, size_t rows, size_t classes) {
    cuk_softmax_xent_forward(probs, loss, logits, labels, rows, classes);
}

static void cu_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels,
                                     size_t rows, size_t classes, float scale) {
    cuk_softmax_xent_backward(dlogits, probs, labels, rows, classes, scale);
}

/* The CPU's dropout: the same keep test (kernels/rng.c's threshold) and the
 * same scale, computed here on the host in the same float steps. */
static void cu_dropout(float *y, const float *x, size_t n, float rate, uint64_t key,
                       uint64_t offset) {
    float scale = rate < 1.0f ? 1.0f / (1.0f - rate) : 0.0f;
    cuk_dropout(y, x, n, rng_threshold(rate), scale, key, offset);
}

static void cu_scale_u8(float *y, const uint8_t *x, size_t n, float scale) {
    cuk_scale_u8(y, x, n, scale);
}

static void cu_apply_update(const update_step_t *k, float *w, float *slot0, float *slot1,
                            const float *g, size_t n) {
    cuk_apply_update(k, w, slot0, slot1, g, n);
}

static const backend_t cuda_table = {
    .name = "cuda",
    .host_memory = false,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .zero = cu_zero,
    .gemm = cu_gemm,
    .conv2d_workspace = cuda_conv2d_workspace,
    .conv2d_forward = cuda_conv2d_forward,
    .conv2d_backward_data = cuda_conv2d_backward_data,
    .conv2d_backward_filter = cuda_conv2d_backward_filter,
    .maxpool2d_forward = cu_maxpool2d_forward,
    .maxpool2d_backward = cu_maxpool2d_backward,
    .bias_add = cu_bias_add,
    .bias_grad = cu_bias_grad,
    .relu_forward = cu_relu_forward,
    .relu_backward = cu_relu_backward,
    .softmax_xent_forward = cu_softmax_xent_forward,
    .softmax_xent_backward = cu_softmax_xent_backward,
    .sigmoid_bce_forward = cuk_sigmoid_bce_forward,
    .sigmoid_bce_backward = cuk_sigmoid_bce_backward,
    .mse_forward = cuk_mse_forward,
    .mse_backward = cuk_mse_backward,
    .dropout_forward = cu_dropout,
    .dropout_backward = cu_dropout,
    .axpy = cu_axpy,
    .scale_u8 = cu_scale_u8,
    .apply_update = cu_apply_update,
    .host_alloc = cu_host_alloc,
    .host_free = cu_host_free,
    .event_create = cu_event_create,
    .event_free = cu_event_free,
    .upload_async = cu_upload_async,
    .download_async = cu_download_async,
    .wait_event = cu_wait_event,
    .sync_event = cu_sync_event,
    .act_forward = cuk_act_forward,
    .act_backward = cuk_act_backward,
    .avgpool2d_forward = cuk_avgpool2d_forward,
    .avgpool2d_backward = cuk_avgpool2d_backward,
    .scale_shift = cuk_scale_shift,
    .mul = cuk_mul,
    .copy_cols = cuk_copy_cols,
    .embed_forward = cuk_embed_forward,
    .embed_backward = cuk_embed_backward,
    .depthwise_conv2d_forward = cuk_depthwise_conv2d_forward,
    .depthwise_conv2d_backward_data = cuk_depthwise_conv2d_backward_data,
    .depthwise_conv2d_backward_filter = cuk_depthwise_conv2d_backward_filter,
    .bn_stats = cuk_bn_stats,
    .bn_forward = cuk_bn_forward,
    .bn_backward_sums = cuk_bn_backward_sums,
    .bn_backward_data = cuk_bn_backward_data,
};

/* ---- start-up: find the device, start the libraries ---- */

static int say(char *buf, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int say(char *buf, size_t len, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return code;
}

/* A GPU to run on, or why there is none. */
static int find_device(char *why, size_t len) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0))
        return say(why, len, BACKEND_PLUGIN_NO_DEVICE,
                   "no GPU visible (CUDA_VISIBLE_DEVICES=%s%s%s)", visible ? "\"" : "",
                   visible ? visible : "unset", visible ? "\"" : "");
    if (e != cudaSuccess) {
        int driver = 0, runtime = 0;
        cudaDriverGetVersion(&driver);
        cudaRuntimeGetVersion(&runtime);
        cudaGetLastError();
        if (driver == 0)
            return say(why, len, BACKEND_PLUGIN_NO_DRIVER,
                       "no NVIDIA driver (libcuda.so.1 did not load): %s", cudaGetErrorString(e));
        if (e == cudaErrorInsufficientDriver)
            return say(why, len, BACKEND_PLUGIN_NO_DRIVER,
                       "the NVIDIA driver supports CUDA %d.%d, older than the %d.%d this plugin "
                       "was built with",
                       driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
        return say(why, len, BACKEND_PLUGIN_NO_DEVICE, "CUDA cannot list the GPUs: %s",
                   cudaGetErrorString(e));
    }
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cuk_probe()) != cudaSuccess)
        return say(why, len, BACKEND_PLUGIN_NO_DEVICE,
                   "the first visible GPU cannot run this plugin's kernels (built for compute "
                   "capability 8.0 and up): %s",
                   cudaGetErrorString(e));
    return BACKEND_PLUGIN_OK;
}

/* PSTRAIN_CUDA_MATH: tf32 (the default) or fp32. */
static int conv_math(char *why, size_t len) {
    const char *m = getenv("PSTRAIN_CUDA_MATH");
    if (!m || !m[0] || !strcmp(m, "tf32"))
        cuda.conv_math = CUDNN_DEFAULT_MATH;
    else if (!strcmp(m, "fp32"))
        cuda.conv_math = CUDNN_FMA_MATH;
    else
        return say(why, len, BACKEND_PLUGIN_ERROR, "PSTRAIN_CUDA_MATH=%s is not tf32 or fp32", m);
    return BACKEND_PLUGIN_OK;
}

#define TRY(call, lib_msg)                                                                         \
    do {                                                                                           \
        int ok_ = (call) == 0;                                                                     \
        if (!ok_)                                                                                  \
            return say(why, len, BACKEND_PLUGIN_ERROR, "%s: %s", #call, (lib_msg));                \
    } while (0)

static int start_libraries(char *why, size_t len) {
    cudaError_t e;
    cudnnStatus_t d;
    cublasStatus_t b;
    int flags = cudaStreamNonBlocking;
    TRY(e = cudaStreamCreateWithFlags(&cuda.compute, flags), cudaGetErrorString(e));
    TRY(e = cudaStreamCreateWithFlags(&cuda.h2d, flags), cudaGetErrorString(e));
    TRY(e = cudaStreamCreateWithFlags(&cuda.d2h, flags), cudaGetErrorString(e));
    TRY(e = cudaEventCreateWithFlags(&cuda.mark, cudaEventDisableTiming), cudaGetErrorString(e));
    TRY(e = cudaMalloc((void **)&cuda.scratch, SCRATCH_BYTES), cudaGetErrorString(e));
    cuda.scratch_floats = SCRATCH_BYTES / sizeof(float);
    TRY(b = cublasCreate(&cuda.blas), cublasGetStatusString(b));
    TRY(b = cublasSetStream(cuda.blas, cuda.compute), cublasGetStatusString(b));
    TRY(d = cudnnCreate(&cuda.dnn), cudnnGetErrorString(d));
    TRY(d = cudnnSetStream(cuda.dnn, cuda.compute), cudnnGetErrorString(d));
    if (cudnnGetVersion() / 10000 != CUDNN_MAJOR)
        return say(why, len, BACKEND_PLUGIN_ERROR, "cuDNN %zu is loaded, this plugin wants %d.x",
                   cudnnGetVersion(), CUDNN_MAJOR);
    return BACKEND_PLUGIN_OK;
}

/* "NVIDIA H100 80GB HBM3 (compute 9.0, 79.1 GiB), CUDA 13.0 (driver 13.0),
 * cuDNN 9.19.0, conv math tf32" */
static void describe(char *about, size_t len) {
    struct cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    cuda.sm_count = p.multiProcessorCount;
    int driver = 0, runtime = 0;
    CUDA_CHECK(cudaDriverGetVersion(&driver));
    CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    size_t dnn = cudnnGetVersion();
    snprintf(about, len,
             "%s (compute %d.%d, %.1f GiB), CUDA %d.%d (driver %d.%d), cuDNN %zu.%zu.%zu, conv "
             "math %s",
             p.name, p.major, p.minor, (double)p.totalGlobalMem / (1 << 30), runtime / 1000,
             runtime % 1000 / 10, driver / 1000, driver % 1000 / 10, dnn / 10000, dnn / 100 % 100,
             dnn % 100, cuda.conv_math == CUDNN_FMA_MATH ? "fp32" : "tf32");
}

/* The first call's answer, kept for later ones. */
static struct {
    pthread_once_t once;
    int rc;
    char about[512];
} start = {.once = PTHREAD_ONCE_INIT};

static void start_once(void) {
    int rc = conv_math(start.about, sizeof start.about);
    if (rc == BACKEND_PLUGIN_OK)
        rc = find_device(start.about, sizeof start.about);
    if (rc == BACKEND_PLUGIN_OK)
        rc = start_libraries(start.about, sizeof start.about);
    if (rc == BACKEND_PLUGIN_OK)
        describe(start.about, sizeof start.about);
    start.rc = rc;
}

__attribute__((visibility("default"))) int pstrain_cuda_backend(unsigned abi, size_t table_size,
                                                                const backend_t **out, char *about,
                                                                size_t aboutlen) {
    *out = NULL;
    if (abi != BACKEND_ABI || table_size != sizeof(backend_t))
        return say(about, aboutlen, BACKEND_PLUGIN_ABI,
                   "the CUDA plugin was built for another pstrain (backend ABI %d, %zu bytes; "
                   "the program has %u, %zu): rebuild both together",
                   BACKEND_ABI, sizeof(backend_t), abi, table_size);
    pthread_once(&start.once, start_once);
    snprintf(about, aboutlen, "%s", start.about);
    if (start.rc == BACKEND_PLUGIN_OK)
        *out = &cuda_table;
    return start.rc;
}

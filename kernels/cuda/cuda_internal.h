/* What the CUDA plugin's files share: its state, the check macros and the
 * launchers of the kernels in cuda_kernels.cu. Included from C and from
 * CUDA C++. */
#ifndef PSTRAIN_CUDA_INTERNAL_H
#define PSTRAIN_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One device per process: the first that CUDA_VISIBLE_DEVICES shows. Every
 * op runs on `compute`; upload_async and download_async use the copy
 * streams, so that copies in both directions run beside the computation. */
typedef struct {
    cudaStream_t compute, h2d, d2h;
    cudaEvent_t mark; /* the compute stream's position, for download_async */
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    /* CUDNN_DEFAULT_MATH lets cuDNN use TF32 tensor cores for convolutions
     * (PyTorch's and TensorFlow's default); CUDNN_FMA_MATH keeps float32
     * (PSTRAIN_CUDA_MATH=fp32). */
    cudnnMathType_t conv_math;
    /* Partial sums of bias_grad: fixed at start, so that the op never
     * allocates. */
    float *scratch;
    size_t scratch_floats;
    int sm_count;
} cuda_state_t;

extern cuda_state_t cuda;

/* Prints "fatal: FILE:LINE: CALL: MESSAGE" and aborts (exit 134, which the
 * exit-code rule reads as "a restart may cure"). */
void cuda_fatal(const char *call, const char *msg, const char *file, int line)
    __attribute__((noreturn));

#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            cuda_fatal(#call, cudaGetErrorString(e_), __FILE__, __LINE__);                         \
    } while (0)

#define CUDNN_CHECK(call)                                                                          \
    do {                                                                                           \
        cudnnStatus_t s_ = (call);                                                                 \
        if (s_ != CUDNN_STATUS_SUCCESS)                                                            \
            cuda_fatal(#call, cudnnGetErrorString(s_), __FILE__, __LINE__);                        \
    } while (0)

#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            cuda_fatal(#call, cublasGetStatusString(s_), __FILE__, __LINE__);                      \
    } while (0)

/* A size that a library takes as int; larger is fatal, with the name. */
int cuda_int(size_t v, const char *what);

/* ---- kernels (cuda_kernels.cu), queued on cuda.compute ---- */

/* Whether this plugin's kernels run on the current device (built for its
 * architecture): cudaSuccess, or why not. */
cudaError_t cuk_probe(void);
/* dst[cols, rows] = src[rows, cols] transposed */
void cuk_transpose(float *dst, const float *src, size_t rows, size_t cols);
/* dst[n, h + th, w + tw, c] = src[n, h, w, c] placed at (top, left), zeros around */
void cuk_pad(float *dst, const float *src, size_t n, size_t h, size_t w, size_t c, size_t th,
             size_t tw, size_t top, size_t left);
/* dst[n, h, w, c] = the window at (top, left) of src[n, h + th, w + tw, c] */
void cuk_crop(float *dst, const float *src, size_t n, size_t h, size_t w, size_t c, size_t th,
              size_t tw, size_t top, size_t left);
void cuk_maxpool_forward(float *y, const float *x, const pool2d_shape_t *s);
void cuk_maxpool_backward(float *dx, const float *dy, const float *x, const float *y,
                          const pool2d_shape_t *s);
void cuk_bias_grad(float *db, const float *dy, size_t rows, size_t cols);
void cuk_softmax_xent_forward(float *probs, float *loss, const float *logits, const int32_t *labels,
                              size_t rows, size_t classes);
void cuk_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels,
                               size_t rows, size_t classes, float scale);
/* y[i] = x[i] * scale where rng_mix(key, offset + i) >> 40 >= threshold, else 0 */
void cuk_dropout(float *y, const float *x, size_t n, uint64_t threshold, float scale, uint64_t key,
                 uint64_t offset);
void cuk_scale_u8(float *y, const uint8_t *x, size_t n, float scale);
void cuk_apply_update(const update_step_t *k, float *w, float *slot0, float *slot1, const float *g,
                      size_t n);

/* ---- convolutions (cuda_conv.c) ---- */

size_t cuda_conv2d_workspace(const conv2d_shape_t *s);
void cuda_conv2d_forward(float *y, const float *x, const float *w, const conv2d_shape_t *s,
                         void *ws);
void cuda_conv2d_backward_data(float *dx, const float *dy, const float *w, const conv2d_shape_t *s,
                               void *ws);
void cuda_conv2d_backward_filter(float *dw, const float *dy, const float *x,
                                 const conv2d_shape_t *s, void *ws);

#ifdef __cplusplus
}
#endif

#endif

/* CUDA kernels of the one-output losses: binary cross-entropy from the
 * logit and squared error against the integer label, one thread per row,
 * the same formulas as the CPU backend's (tests/test_cuda_more.c compares
 * them). */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/ops_more.h"

#include "kernels/cuda/cuda_launch.cuh"

/* probs = sigmoid(z) without overflow; loss = max(z, 0) - z y + log(1 + exp(-|z|)),
 * NaN for a label other than 0 or 1. */
__global__ void sigmoid_bce_forward_kernel(float *probs, float *loss, const float *logits,
                                           const int32_t *labels, size_t rows) {
    GRID_STRIDE(r, rows) {
        float z = logits[r], e = expf(-fabsf(z));
        probs[r] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
        bool valid = labels[r] == 0 || labels[r] == 1;
        loss[r] = valid ? fmaxf(z, 0.0f) - z * (float)labels[r] + log1pf(e) : nanf("");
    }
}

__global__ void sigmoid_bce_backward_kernel(float *dlogits, const float *probs,
                                            const int32_t *labels, size_t rows, float scale) {
    GRID_STRIDE(r, rows) {
        dlogits[r] = scale * (probs[r] - (float)labels[r]);
    }
}

__global__ void mse_forward_kernel(float *y, float *loss, const float *x, const int32_t *labels,
                                   size_t rows) {
    GRID_STRIDE(r, rows) {
        float d = x[r] - (float)labels[r];
        y[r] = x[r];
        loss[r] = d * d;
    }
}

__global__ void mse_backward_kernel(float *dx, const float *y, const int32_t *labels, size_t rows,
                                    float scale) {
    GRID_STRIDE(r, rows) {
        dx[r] = scale * 2.0f * (y[r] - (float)labels[r]);
    }
}

extern "C" void cuk_sigmoid_bce_forward(float *probs, float *loss, const float *logits,
                                        const int32_t *labels, size_t rows) {
    LAUNCH(sigmoid_bce_forward_kernel, rows, probs, loss, logits, labels, rows);
}

extern "C" void cuk_sigmoid_bce_backward(float *dlogits, const float *probs, const int32_t *labels,
                                         size_t rows, float scale) {
    LAUNCH(sigmoid_bce_backward_kernel, rows, dlogits, probs, labels, rows, scale);
}

extern "C" void cuk_mse_forward(float *y, float *loss, const float *x, const int32_t *labels,
                                size_t rows) {
    LAUNCH(mse_forward_kernel, rows, y, loss, x, labels, rows);
}

extern "C" void cuk_mse_backward(float *dx, const float *y, const int32_t *labels, size_t rows,
                                 float scale) {
    LAUNCH(mse_backward_kernel, rows, dx, y, labels, rows, scale);
}

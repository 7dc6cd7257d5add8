/* The CUDA kernels of the plugin, where no cuDNN or cuBLAS op fits the
 * backend's contract: max pooling (TF's asymmetric 'same' padding, and the
 * gradient to the first maximum of a window), the bias gradient, softmax
 * cross-entropy, dropout with the CPU's counter-based generator, the
 * optimizer update, and the layout helpers of the convolutions. Each has its
 * CPU reference in kernels/cpu/ and a test against it (tests/test_cuda.c).
 * Every kernel walks its elements in a grid-stride loop, so that any size
 * runs on a bounded grid. */
#include "kernels/cuda/cuda_internal.h"

#include <math.h>

#include "kernels/cuda/cuda_launch.cuh"

/* ---- layout helpers ---- */

__global__ void transpose_kernel(float *dst, const float *src, size_t rows, size_t cols) {
    GRID_STRIDE(i, rows * cols) {
        size_t r = i / cols, c = i % cols;
        dst[c * rows + r] = src[i];
    }
}

extern "C" void cuk_transpose(float *dst, const float *src, size_t rows, size_t cols) {
    LAUNCH(transpose_kernel, rows * cols, dst, src, rows, cols);
}

/* Sizes of a padded NHWC tensor: the small tensor [n, h, w, c] sits at
 * (top, left) inside [n, h + th, w + tw, c]. */
struct pad_geom {
    size_t n, h, w, c, hp, wp, top, left;
};

/* The index in the small tensor of element i of the padded one, or -1. */
__device__ static long long pad_source(const pad_geom g, size_t i) {
    size_t ch = i % g.c, rest = i / g.c;
    size_t x = rest % g.wp;
    rest /= g.wp;
    size_t y = rest % g.hp, n = rest / g.hp;
    if (y < g.top || y - g.top >= g.h || x < g.left || x - g.left >= g.w)
        return -1;
    return (long long)(((n * g.h + (y - g.top)) * g.w + (x - g.left)) * g.c + ch);
}

__global__ void pad_kernel(float *dst, const float *src, pad_geom g) {
    GRID_STRIDE(i, g.n * g.hp * g.wp * g.c) {
        long long s = pad_source(g, i);
        dst[i] = s < 0 ? 0.0f : src[s];
    }
}

__global__ void crop_kernel(float *dst, const float *src, pad_geom g) {
    GRID_STRIDE(i, g.n * g.hp * g.wp * g.c) {
        long long s = pad_source(g, i);
        if (s >= 0)
            dst[s] = src[i];
    }
}

static pad_geom make_geom(size_t n, size_t h, size_t w, size_t c, size_t th, size_t tw, size_t top,
                          size_t left) {
    pad_geom g = {n, h, w, c, h + th, w + tw, top, left};
    return g;
}

extern "C" void cuk_pad(float *dst, const float *src, size_t n, size_t h, size_t w, size_t c,
                        size_t th, size_t tw, size_t top, size_t left) {
    pad_geom g = make_geom(n, h, w, c, th, tw, top, left);
    LAUNCH(pad_kernel, g.n * g.hp * g.wp * g.c, dst, src, g);
}

extern "C" void cuk_crop(float *dst, const float *src, size_t n, size_t h, size_t w, size_t c,
                         size_t th, size_t tw, size_t top, size_t left) {
    pad_geom g = make_geom(n, h, w, c, th, tw, top, left);
    LAUNCH(crop_kernel, g.n * g.hp * g.wp * g.c, dst, src, g);
}

/* ---- max pooling ----
 * The CPU's rules exactly: padded cells never win; the max is taken as
 * out = in > out ? in : out from -inf, over the window's in-image cells row
 * by row; backward gives each dy to the first in-image cell of its window
 * (row by row) that equals the forward's max. Backward gathers: one thread
 * per input cell adds the dy of every window that routes to it, in the
 * order the CPU adds them, so the sums agree bit for bit. */

/* In-image taps [lo, hi) of output position o along one axis; start is the
 * input index of tap 0. */
__device__ static void window(size_t o, size_t stride, size_t pad, size_t k, size_t in,
                              long long *start, size_t *lo, size_t *hi) {
    long long s = (long long)(o * stride) - (long long)pad;
    long long l = s < 0 ? -s : 0, h = (long long)in - s;
    l = l < (long long)k ? l : (long long)k;
    h = h < (long long)k ? h : (long long)k;
    *start = s;
    *lo = (size_t)l;
    *hi = (size_t)(h > l ? h : l);
}

__global__ void maxpool_forward_kernel(float *y, const float *x, pool2d_shape_t s) {
    GRID_STRIDE(i, s.n * s.oh * s.ow * s.c) {
        size_t ch = i % s.c, rest = i / s.c;
        size_t ox = rest % s.ow;
        rest /= s.ow;
        size_t oy = rest % s.oh, n = rest / s.oh;
        long long y0, x0;
        size_t ylo, yhi, xlo, xhi;
        window(oy, s.sh, s.pad_top, s.ph, s.h, &y0, &ylo, &yhi);
        window(ox, s.sw, s.pad_left, s.pw, s.w, &x0, &xlo, &xhi);
        const float *img = x + n * s.h * s.w * s.c + ch;
        float m = -INFINITY;
        for (size_t a = ylo; a < yhi; a++)
            for (size_t b = xlo; b < xhi; b++) {
                float v =
                    img[((size_t)(y0 + (long long)a) * s.w + (size_t)(x0 + (long long)b)) * s.c];
                m = v > m ? v : m;
            }
        y[i] = m;
    }
}

/* The outputs [lo, hi) along one axis whose window holds input index p. */
__device__ static void covering(size_t p, size_t stride, size_t pad, size_t k, size_t out,
                                size_t *lo, size_t *hi) {
    long long first = (long long)(p + pad) - (long long)k + 1; /* o * stride >= first */
    size_t l = first <= 0 ? 0 : (size_t)((first + (long long)stride - 1) / (long long)stride);
    size_t h = (p + pad) / stride + 1;
    *lo = l;
    *hi = h < out ? h : out;
}

__global__ void maxpool_backward_kernel(float *dx, const float *dy, const float *x, const float *y,
                                        pool2d_shape_t s) {
    GRID_STRIDE(i, s.n * s.h * s.w * s.c) {
        size_t ch = i % s.c, rest = i / s.c;
        size_t ix = rest % s.w;
        rest /= s.w;
        size_t iy = rest % s.h, n = rest / s.h;
        const float *img = x + n * s.h * s.w * s.c + ch;
        size_t oylo, oyhi, oxlo, oxhi;
        covering(iy, s.sh, s.pad_top, s.ph, s.oh, &oylo, &oyhi);
        covering(ix, s.sw, s.pad_left, s.pw, s.ow, &oxlo, &oxhi);
        float acc = 0.0f;
        for (size_t oy = oylo; oy < oyhi; oy++)
            for (size_t ox = oxlo; ox < oxhi; ox++) {
                size_t out = ((n * s.oh + oy) * s.ow + ox) * s.c + ch;
                float m = y[out];
                long long y0, x0;
                size_t ylo, yhi, xlo, xhi;
                window(oy, s.sh, s.pad_top, s.ph, s.h, &y0, &ylo, &yhi);
                window(ox, s.sw, s.pad_left, s.pw, s.w, &x0, &xlo, &xhi);
                /* The window's first cell equal to its max takes the gradient. */
                bool found = false, mine = false;
                for (size_t a = ylo; a < yhi && !found; a++)
                    for (size_t b = xlo; b < xhi && !found; b++) {
                        size_t cy = (size_t)(y0 + (long long)a), cx = (size_t)(x0 + (long long)b);
                        if (img[(cy * s.w + cx) * s.c] == m) {
                            found = true;
                            mine = cy == iy && cx == ix;
                        }
                    }
                if (mine)
                    acc += dy[out];
            }
        dx[i] = acc;
    }
}

extern "C" void cuk_maxpool_forward(float *y, const float *x, const pool2d_shape_t *s) {
    LAUNCH(maxpool_forward_kernel, s->n * s->oh * s->ow * s->c, y, x, *s);
}

extern "C" void cuk_maxpool_backward(float *dx, const float *dy, const float *x, const float *y,
                                     const pool2d_shape_t *s) {
    LAUNCH(maxpool_backward_kernel, s->n * s->h * s->w * s->c, dx, dy, x, y, *s);
}

/* ---- bias gradient ----
 * db[c] = sum over rows of dy[r, c], in two deterministic passes: blocks of
 * 32 columns x 8 row lanes sum strided rows of one of `parts` row groups
 * into the scratch buffer, then one thread per column adds the groups in
 * order. Enough groups keep every SM busy on a conv layer's 200,000 rows. */

#define BIAS_COLS 32
#define BIAS_LANES 8

__global__ void bias_partial_kernel(float *part, const float *dy, size_t rows, size_t cols,
                                    size_t c0, size_t nc, size_t parts) {
    __shared__ float sums[BIAS_LANES][BIAS_COLS];
    size_t col = blockIdx.x * BIAS_COLS + threadIdx.x;
    size_t group = blockIdx.y;
    float acc = 0.0f;
    if (col < nc)
        for (size_t r = group * BIAS_LANES + threadIdx.y; r < rows; r += parts * BIAS_LANES)
            acc += dy[r * cols + c0 + col];
    sums[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && col < nc) {
        float total = 0.0f;
        for (int k = 0; k < BIAS_LANES; k++)
            total += sums[k][threadIdx.x];
        part[group * nc + col] = total;
    }
}

__global__ void bias_sum_kernel(float *db, const float *part, size_t nc, size_t parts) {
    GRID_STRIDE(col, nc) {
        float total = 0.0f;
        for (size_t g = 0; g < parts; g++)
            total += part[g * nc + col];
        db[col] = total;
    }
}

extern "C" void cuk_bias_grad(float *db, const float *dy, size_t rows, size_t cols) {
    if (rows == 0) {
        if (cols)
            CUDA_CHECK(cudaMemsetAsync(db, 0, cols * sizeof(float), cuda.compute));
        return;
    }
    size_t target = (size_t)(cuda.sm_count > 0 ? cuda.sm_count : 16) * 4;
    for (size_t c0 = 0; c0 < cols; c0 += cuda.scratch_floats) {
        size_t nc = cols - c0 < cuda.scratch_floats ? cols - c0 : cuda.scratch_floats;
        size_t col_blocks = (nc + BIAS_COLS - 1) / BIAS_COLS;
        size_t parts = (target + col_blocks - 1) / col_blocks;
        size_t most = (rows + BIAS_LANES - 1) / BIAS_LANES;
        parts = parts < most ? parts : most;
        parts = parts < cuda.scratch_floats / nc ? parts : cuda.scratch_floats / nc;
        parts = parts < 65535 ? parts : 65535;
        dim3 grid((unsigned)col_blocks, (unsigned)(parts ? parts : 1));
        dim3 block(BIAS_COLS, BIAS_LANES);
        bias_partial_kernel<<<grid, block, 0, cuda.compute>>>(cuda.scratch, dy, rows, cols, c0, nc,
                                                              grid.y);
        CUDA_CHECK(cudaGetLastError());
        LAUNCH(bias_sum_kernel, nc, db + c0, cuda.scratch, nc, (size_t)grid.y);
    }
}

/* ---- softmax cross-entropy: one warp per row ---- */

__device__ static float warp_max(float v) {
    for (int d = 16; d > 0; d /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, d));
    return v;
}

__device__ static float warp_sum(float v) {
    for (int d = 16; d > 0; d /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, d);
    return v;
}

/* loss = log(sum) - (l[label] - max), exact for large logits; a label out of
 * [0, classes) gives NaN, as on the CPU. */
__global__ void softmax_xent_forward_kernel(float *probs, float *loss, const float *logits,
                                            const int32_t *labels, size_t rows, size_t classes) {
    size_t lane = threadIdx.x % 32, warps = (size_t)gridDim.x * (blockDim.x / 32);
    for (size_t r = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
        const float *l = logits + r * classes;
        float *p = probs + r * classes;
        float m = -INFINITY;
        for (size_t j = lane; j < classes; j += 32)
            m = fmaxf(m, l[j]);
        m = warp_max(m);
        float sum = 0.0f;
        for (size_t j = lane; j < classes; j += 32) {
            p[j] = expf(l[j] - m);
            sum += p[j];
        }
        sum = warp_sum(sum);
        for (size_t j = lane; j < classes; j += 32)
            p[j] = p[j] / sum;
        if (lane == 0) {
            int32_t label = labels[r];
            bool valid = label >= 0 && (size_t)label < classes;
            loss[r] = valid ? logf(sum) - (l[label] - m) : NAN;
        }
    }
}

__global__ void softmax_xent_backward_kernel(float *dlogits, const float *probs,
                                             const int32_t *labels, size_t rows, size_t classes,
                                             float scale) {
    GRID_STRIDE(i, rows * classes) {
        size_t r = i / classes, j = i % classes;
        /* scale * p, then - scale: two roundings, as on the CPU (no fma) */
        float v = __fmul_rn(scale, probs[i]);
        if ((long long)labels[r] == (long long)j)
            v = __fsub_rn(v, scale);
        dlogits[i] = v;
    }
}

extern "C" void cuk_softmax_xent_forward(float *probs, float *loss, const float *logits,
                                         const int32_t *labels, size_t rows, size_t classes) {
    if (rows == 0 || classes == 0)
        return;
    size_t warps_per_block = THREADS / 32, blocks = (rows + warps_per_block - 1) / warps_per_block;
    blocks = blocks < 65535 ? blocks : 65535;
    softmax_xent_forward_kernel<<<(unsigned)blocks, THREADS, 0, cuda.compute>>>(
        probs, loss, logits, labels, rows, classes);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void cuk_softmax_xent_backward(float *dlogits, const float *probs, const int32_t *labels,
                                          size_t rows, size_t classes, float scale) {
    LAUNCH(softmax_xent_backward_kernel, rows * classes, dlogits, probs, labels, rows, classes,
           scale);
}

/* ---- dropout ---- */

/* rng_mix of kernels/rng.c, to the bit (tests/test_cuda.c checks masks
 * against the CPU's). */
__device__ static uint64_t rng_mix_dev(uint64_t key, uint64_t counter) {
    uint64_t z = key + (counter + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__global__ void dropout_kernel(float *y, const float *x, size_t n, uint64_t threshold, float scale,
                               uint64_t key, uint64_t offset) {
    GRID_STRIDE(i, n) {
        bool keep = rng_mix_dev(key, offset + i) >> 40 >= threshold;
        y[i] = keep ? __fmul_rn(x[i], scale) : 0.0f;
    }
}

extern "C" void cuk_dropout(float *y, const float *x, size_t n, uint64_t threshold, float scale,
                            uint64_t key, uint64_t offset) {
    LAUNCH(dropout_kernel, n, y, x, n, threshold, scale, key, offset);
}

/* ---- pixels ---- */

__global__ void scale_u8_kernel(float *y, const uint8_t *x, size_t n, float scale) {
    GRID_STRIDE(i, n) {
        y[i] = __fmul_rn((float)x[i], scale);
    }
}

extern "C" void cuk_scale_u8(float *y, const uint8_t *x, size_t n, float scale) {
    LAUNCH(scale_u8_kernel, n, y, x, n, scale);
}

/* ---- the optimizer update: common/optim.c's rules, element by element ---- */

__global__ void update_kernel(update_step_t k, float *w, float *s0, float *s1, const float *g,
                              size_t n) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        switch (k.rule) {
        case UPDATE_SGD:
            w[i] -= k.lr * gi;
            break;
        case UPDATE_SGD_MOMENTUM:
            s0[i] = k.mom * s0[i] - k.lr * gi;
            w[i] += s0[i];
            break;
        case UPDATE_SGD_NESTEROV:
            s0[i] = k.mom * s0[i] - k.lr * gi;
            w[i] += k.mom * s0[i] - k.lr * gi;
            break;
        case UPDATE_ADAM:
            s0[i] = k.b1 * s0[i] + k.one_minus_b1 * gi;
            s1[i] = k.b2 * s1[i] + k.one_minus_b2 * gi * gi;
            w[i] -= k.alpha * s0[i] / (sqrtf(s1[i]) + k.eps);
            break;
        case UPDATE_RMSPROP:
            s0[i] = k.rho * s0[i] + k.one_minus_rho * gi * gi;
            w[i] -= k.lr * gi / sqrtf(s0[i] + k.eps);
            break;
        case UPDATE_RMSPROP_MOMENTUM:
            s0[i] = k.rho * s0[i] + k.one_minus_rho * gi * gi;
            s1[i] = k.mom * s1[i] + k.lr * gi / sqrtf(s0[i] + k.eps);
            w[i] -= s1[i];
            break;
        case UPDATE_ADAGRAD:
            s0[i] += gi * gi;
            w[i] -= k.lr * gi / sqrtf(s0[i] + k.eps);
            break;
        }
    }
}

extern "C" void cuk_apply_update(const update_step_t *k, float *w, float *slot0, float *slot1,
                                 const float *g, size_t n) {
    LAUNCH(update_kernel, n, *k, w, slot0, slot1, g, n);
}

extern "C" cudaError_t cuk_probe(void) {
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, dropout_kernel);
}

/* Embedding on the GPU: one thread per output value gathers forward; the
 * backward adds each value of dy into its table row with atomicAdd (ids
 * repeat within a batch), so its sums may differ from the CPU's in the last
 * bits, by the order of the additions. Ids that are not an integer row of
 * the table read zeros and take no gradient, as on the CPU. */
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/ops_embed.h"

#include "kernels/cuda/cuda_launch.cuh"

__device__ static long row_of_dev(float id, size_t rows) {
    if (!(id >= 0.0f && id < (float)rows) || id != floorf(id))
        return -1;
    return (long)id;
}

__global__ void embed_forward_kernel(float *y, const float *ids, const float *table, size_t n,
                                     size_t dim, size_t rows) {
    GRID_STRIDE(k, n * dim) {
        long r = row_of_dev(ids[k / dim], rows);
        y[k] = r < 0 ? 0.0f : table[(size_t)r * dim + k % dim];
    }
}

__global__ void embed_backward_kernel(float *dtable, const float *dy, const float *ids, size_t n,
                                      size_t dim, size_t rows) {
    GRID_STRIDE(k, n * dim) {
        long r = row_of_dev(ids[k / dim], rows);
        if (r >= 0)
            atomicAdd(&dtable[(size_t)r * dim + k % dim], dy[k]);
    }
}

extern "C" void cuk_embed_forward(float *y, const float *ids, const float *table, size_t n,
                                  size_t dim, size_t rows) {
    LAUNCH(embed_forward_kernel, n * dim, y, ids, table, n, dim, rows);
}

extern "C" void cuk_embed_backward(float *dtable, const float *dy, const float *ids, size_t n,
                                   size_t dim, size_t rows) {
    LAUNCH(embed_backward_kernel, n * dim, dtable, dy, ids, n, dim, rows);
}

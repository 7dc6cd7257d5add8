/* How the plugin's own kernels are launched (cuda_kernels.cu, ops_extra.cu):
 * THREADS per block, a grid bounded by the device's multiprocessors, each
 * kernel walking its elements in a grid-stride loop, so that any size runs
 * on a bounded grid. For .cu files only, after cuda_internal.h. */
#pragma once

#define THREADS 256

/* Blocks for n elements: enough to fill the device, no more. */
static inline unsigned blocks_for(size_t n) {
    size_t b = (n + THREADS - 1) / THREADS;
    size_t cap = (size_t)(cuda.sm_count > 0 ? cuda.sm_count : 16) * 32;
    if (b > cap)
        b = cap;
    return (unsigned)(b ? b : 1);
}

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

/* Launches kernel over n elements on the compute stream and checks the
 * launch (the kernel's own faults surface at the next synchronisation). */
#define LAUNCH(kernel, n, ...)                                                                     \
    do {                                                                                           \
        if ((n) > 0) {                                                                             \
            kernel<<<blocks_for(n), THREADS, 0, cuda.compute>>>(__VA_ARGS__);                      \
            CUDA_CHECK(cudaGetLastError());                                                        \
        }                                                                                          \
    } while (0)

/* The CUDA Embedding ops (kernels/cuda/ops_embed.cu) against the CPU's
 * (which tests/test_embed.c checks against a reference). They need a GPU
 * and skip, saying why, where none is usable. */
#include "test.h"

#include <stdlib.h>

#include "common/base/util.h"
#include "kernels/backend.h"

void test_cuda_embed_ops(void) {
    setenv("PSTRAIN_CUDA_MATH", "fp32", 1);
    backend_choice_t choice;
    char why[PSTRAIN_BACKEND_WHY];
    if (backend_open("gpu", &choice, why, sizeof why)) {
        test_skip("no usable GPU: %s", why);
        return;
    }
    const backend_t *g = choice.be, *c = cpu_backend();
    size_t n = 5003, dim = 37, rows = 211;
    float *ids = xmalloc(n * sizeof(float)), *table = xmalloc(rows * dim * sizeof(float));
    float *dy = xmalloc(n * dim * sizeof(float)), *y = xmalloc(n * dim * sizeof(float));
    float *dt = xcalloc(rows * dim, sizeof(float)), *gy_h = xmalloc(n * dim * sizeof(float));
    float *gdt_h = xmalloc(rows * dim * sizeof(float));
    for (size_t i = 0; i < n; i++) /* repeats, and a few ids outside the table */
        ids[i] = i % 97 == 0 ? (float)rows : (float)(rng_mix(1, i) % rows);
    for (size_t i = 0; i < rows * dim; i++)
        table[i] = 2.0f * rng_uniform(2, i) - 1.0f;
    for (size_t i = 0; i < n * dim; i++)
        dy[i] = 2.0f * rng_uniform(3, i) - 1.0f;
    c->embed_forward(y, ids, table, n, dim, rows);
    c->embed_backward(dt, dy, ids, n, dim, rows);
    float *gids = BACKEND_XALLOC(g, n * sizeof(float)), *gt = BACKEND_XALLOC(g, rows * dim * 4);
    float *gdy = BACKEND_XALLOC(g, n * dim * 4), *gy = BACKEND_XALLOC(g, n * dim * 4);
    float *gdt = BACKEND_XALLOC(g, rows * dim * 4);
    g->upload(gids, ids, n * sizeof(float));
    g->upload(gt, table, rows * dim * 4);
    g->upload(gdy, dy, n * dim * 4);
    g->zero(gdt, rows * dim * 4);
    g->embed_forward(gy, gids, gt, n, dim, rows);
    g->embed_backward(gdt, gdy, gids, n, dim, rows);
    g->download(gy_h, gy, n * dim * 4);
    g->download(gdt_h, gdt, rows * dim * 4);
    CHECK_ARRAY_NEAR("cuda embed_forward", gy_h, y, n * dim, 0.0);
    CHECK_ARRAY_NEAR("cuda embed_backward", gdt_h, dt, rows * dim, 1e-4);
    g->free(gids);
    g->free(gt);
    g->free(gdy);
    g->free(gy);
    g->free(gdt);
    free(ids);
    free(table);
    free(dy);
    free(y);
    free(dt);
    free(gy_h);
    free(gdt_h);
}

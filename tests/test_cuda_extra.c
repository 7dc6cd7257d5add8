/* The CUDA counterparts of the ops of the Keras layers beyond the builtin
 * models (kernels/cuda/ops_extra.cu) against the CPU's (which
 * tests/test_ops_extra.c checks against references), and a model made of
 * those layers run forward and backward on the GPU against the CPU. They
 * need a GPU and skip, saying why, where none is usable. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "kernels/backend.h"
#include "test_helpers.h"

static float *host_floats(size_t n, uint64_t seed) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = 4.0f * rng_uniform(seed, i) - 2.0f;
    return p;
}

void test_cuda_extra_activations(void) {
    TEST_NEED_GPU(g);
    const backend_t *c = cpu_backend();
    size_t n = 100003;
    float *x = host_floats(n, 1), *dy = host_floats(n, 2);
    float *y = xmalloc(n * sizeof(float)), *dx = xmalloc(n * sizeof(float));
    float *gx = test_upload(g, x, n * sizeof(float)), *gdy = test_upload(g, dy, n * sizeof(float)),
          *gy = test_upload(g, x, n * sizeof(float));
    for (int f = ACT_FN_SIGMOID; f <= ACT_FN_SILU; f++) {
        c->act_forward(y, x, n, (act_fn_t)f);
        c->act_backward(dx, dy, x, y, n, (act_fn_t)f);
        g->act_forward(gy, gx, n, (act_fn_t)f);
        g->upload(gdy, dy, n * sizeof(float));
        g->act_backward(gdy, gdy, gx, gy, n, (act_fn_t)f);
        float *hy = test_download(g, gy, n), *hdx = test_download(g, gdy, n);
        CHECK_ARRAY_NEAR("act_forward", hy, y, n, 1e-6);
        CHECK_ARRAY_NEAR("act_backward", hdx, dx, n, 1e-6);
        free(hy);
        free(hdx);
    }
    g->free(gx);
    g->free(gdy);
    g->free(gy);
    free(x);
    free(dy);
    free(y);
    free(dx);
}

void test_cuda_extra_avgpool_scale(void) {
    TEST_NEED_GPU(g);
    const backend_t *c = cpu_backend();
    static const size_t cases[][7] = {
        /* h, w, c, pool, stride, same, n */
        {28, 28, 32, 2, 2, 0, 4},
        {7, 9, 5, 3, 2, 1, 3},
        {6, 6, 64, 6, 6, 0, 5},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const size_t *q = cases[k];
        pool2d_shape_t s = {.n = q[6], .h = q[0], .w = q[1], .c = q[2], .ph = q[3], .pw = q[3]};
        s.sh = s.sw = q[4];
        pool2d_shape_init(&s, q[5] != 0);
        size_t nx = s.n * s.h * s.w * s.c, ny = s.n * s.oh * s.ow * s.c;
        float *x = host_floats(nx, 3), *dy = host_floats(ny, 4);
        float *y = xmalloc(ny * sizeof(float)), *dx = xmalloc(nx * sizeof(float));
        c->avgpool2d_forward(y, x, &s);
        c->avgpool2d_backward(dx, dy, &s);
        float *gx = test_upload(g, x, nx * sizeof(float)),
              *gdy = test_upload(g, dy, ny * sizeof(float));
        float *gy = test_upload(g, y, ny * sizeof(float)),
              *gdx = test_upload(g, x, nx * sizeof(float));
        g->avgpool2d_forward(gy, gx, &s);
        g->avgpool2d_backward(gdx, gdy, &s);
        float *hy = test_download(g, gy, ny), *hdx = test_download(g, gdx, nx);
        CHECK_ARRAY_NEAR("avgpool2d_forward", hy, y, ny, 1e-6);
        CHECK_ARRAY_NEAR("avgpool2d_backward", hdx, dx, nx, 1e-6);
        c->scale_shift(y, y, ny, 0.5f, -0.25f);
        g->scale_shift(gy, gy, ny, 0.5f, -0.25f);
        free(hy);
        hy = test_download(g, gy, ny);
        CHECK_ARRAY_NEAR("scale_shift", hy, y, ny, 1e-6);
        free(hy);
        free(hdx);
        g->free(gx);
        g->free(gdy);
        g->free(gy);
        g->free(gdx);
        free(x);
        free(dy);
        free(y);
        free(dx);
    }
}

void test_cuda_extra_mul_copy_cols(void) {
    TEST_NEED_GPU(g);
    const backend_t *c = cpu_backend();
    size_t rows = 1001, n = rows * 8;
    float *a = host_floats(n, 7), *b = host_floats(n, 8), *y = xmalloc(n * sizeof(float));
    float *ga = test_upload(g, a, n * sizeof(float)), *gb = test_upload(g, b, n * sizeof(float)),
          *gy = test_upload(g, a, n * sizeof(float));
    c->mul(y, a, b, n);
    g->mul(gy, ga, gb, n);
    float *h = test_download(g, gy, n);
    CHECK_ARRAY_NEAR("mul", h, y, n, 0.0);
    free(h);
    /* columns [3, 8) of a's rows of 8 into columns [2, 7) of rows of 9 */
    float *d = xmalloc(rows * 9 * sizeof(float)), *gd = BACKEND_XALLOC(g, rows * 9 * sizeof(float));
    memset(d, 0, rows * 9 * sizeof(float));
    g->upload(gd, d, rows * 9 * sizeof(float));
    c->copy_cols(d, 9, 2, a, 8, 3, rows, 5);
    g->copy_cols(gd, 9, 2, ga, 8, 3, rows, 5);
    h = test_download(g, gd, rows * 9);
    CHECK_ARRAY_NEAR("copy_cols", h, d, rows * 9, 0.0);
    free(h);
    g->free(ga);
    g->free(gb);
    g->free(gy);
    g->free(gd);
    free(a);
    free(b);
    free(y);
    free(d);
}

void test_cuda_extra_model(void) {
    TEST_NEED_GPU(g);
    int32_t labels[6] = {0, 1, 2, 3, 4, 0};
    check_gpu_model(g,
                    "{\"input\": [12, 10, 3], \"layers\": [{\"type\": \"rescaling\", "
                    "\"scale\": 2, \"offset\": -1}, {\"type\": \"conv2d\", \"filters\": 6, "
                    "\"kernel_size\": 3, \"padding\": \"same\", \"activation\": \"gelu\"}, "
                    "{\"type\": \"avg_pool2d\"}, {\"type\": \"conv2d\", \"filters\": 8, "
                    "\"kernel_size\": 3, \"activation\": \"silu\"}, {\"type\": \"activation\", "
                    "\"activation\": \"tanh\"}, {\"type\": \"reshape\", \"target_shape\": [4, "
                    "6, 4]}, {\"type\": \"global_max_pool2d\"}, {\"type\": \"dense\", "
                    "\"units\": 8, \"activation\": \"sigmoid\"}, {\"type\": \"rescaling\", "
                    "\"scale\": 3}, {\"type\": \"reshape\", \"target_shape\": [2, 2, 2]}, "
                    "{\"type\": \"global_avg_pool2d\"}, {\"type\": \"dense\", \"units\": 5, "
                    "\"activation\": \"softmax\"}]}",
                    labels, 6);
}

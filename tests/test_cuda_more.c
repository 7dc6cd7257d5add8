/* The CUDA kernels of binary cross-entropy, squared error
 * (kernels/cuda/ops_loss.cu) and the depthwise convolution
 * (kernels/cuda/ops_depthwise.cu) against the CPU's (which
 * tests/test_depthwise.c and tests/test_model_loss.c check against
 * references), and a model with a DepthwiseConv2D and L2 regularizers run
 * forward and backward on the GPU against the CPU. They need a GPU and skip,
 * saying why, where none is usable. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "kernels/backend.h"
#include "test_helpers.h"

static float *host_floats(size_t n, uint64_t seed, float scale) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = scale * (2.0f * rng_uniform(seed, i) - 1.0f);
    return p;
}

void test_cuda_more_losses(void) {
    TEST_NEED_GPU(g);
    const backend_t *c = cpu_backend();
    size_t rows = 10007;
    float *z = host_floats(rows, 1, 30.0f); /* large logits: the stable forms matter */
    int32_t *labels = xmalloc(rows * sizeof(int32_t));
    for (size_t r = 0; r < rows; r++)
        labels[r] = (int32_t)(rng_mix(2, r) % 2);
    float *p = xmalloc(rows * sizeof(float)), *l = xmalloc(rows * sizeof(float));
    float *d = xmalloc(rows * sizeof(float));
    float *gz = test_upload(g, z, rows * sizeof(float)),
          *gp = test_upload(g, z, rows * sizeof(float));
    float *gl = test_upload(g, z, rows * sizeof(float)),
          *gd = test_upload(g, z, rows * sizeof(float));
    int32_t *glab = test_upload(g, labels, rows * sizeof(int32_t));
    for (int k = 0; k < 2; k++) {
        const char *what = k ? "mse" : "sigmoid_bce";
        if (k) {
            c->mse_forward(p, l, z, labels, rows);
            c->mse_backward(d, p, labels, rows, 0.25f);
            g->mse_forward(gp, gl, gz, glab, rows);
            g->mse_backward(gd, gp, glab, rows, 0.25f);
        } else {
            c->sigmoid_bce_forward(p, l, z, labels, rows);
            c->sigmoid_bce_backward(d, p, labels, rows, 0.25f);
            g->sigmoid_bce_forward(gp, gl, gz, glab, rows);
            g->sigmoid_bce_backward(gd, gp, glab, rows, 0.25f);
        }
        float *hp = test_download(g, gp, rows), *hl = test_download(g, gl, rows),
              *hd = test_download(g, gd, rows);
        fprintf(stderr, "  %s\n", what);
        CHECK_ARRAY_NEAR("output", hp, p, rows, 1e-6);
        CHECK_ARRAY_NEAR("loss", hl, l, rows, 1e-5);
        CHECK_ARRAY_NEAR("gradient", hd, d, rows, 1e-6);
        free(hp);
        free(hl);
        free(hd);
    }
    g->free(gz);
    g->free(gp);
    g->free(gl);
    g->free(gd);
    g->free(glab);
    free(z);
    free(labels);
    free(p);
    free(l);
    free(d);
}

void test_cuda_more_depthwise(void) {
    TEST_NEED_GPU(g);
    const backend_t *c = cpu_backend();
    static const size_t cases[][8] = {
        /* n, h, w, c, k, mult, stride, same */
        {4, 28, 28, 16, 3, 1, 1, 1},
        {3, 13, 11, 5, 5, 2, 2, 1},
        {2, 9, 9, 8, 3, 3, 2, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const size_t *q = cases[k];
        conv2d_shape_t s = {.n = q[0], .h = q[1], .w = q[2], .c = q[3], .kh = q[4], .kw = q[4]};
        s.f = q[3] * q[5];
        s.sh = s.sw = q[6];
        conv2d_shape_init(&s, q[7] != 0);
        size_t nx = s.n * s.h * s.w * s.c, ny = s.n * s.oh * s.ow * s.f, nw = s.kh * s.kw * s.f;
        float *x = host_floats(nx, 3, 1.0f), *w = host_floats(nw, 4, 1.0f);
        float *dy = host_floats(ny, 5, 1.0f);
        float *y = xmalloc(ny * sizeof(float)), *dx = xmalloc(nx * sizeof(float));
        float *dw = xmalloc(nw * sizeof(float));
        c->depthwise_conv2d_forward(y, x, w, &s);
        c->depthwise_conv2d_backward_data(dx, dy, w, &s);
        c->depthwise_conv2d_backward_filter(dw, dy, x, &s);
        float *gx = test_upload(g, x, nx * sizeof(float)),
              *gw = test_upload(g, w, nw * sizeof(float));
        float *gdy = test_upload(g, dy, ny * sizeof(float)),
              *gy = test_upload(g, dy, ny * sizeof(float));
        float *gdx = test_upload(g, x, nx * sizeof(float)),
              *gdw = test_upload(g, w, nw * sizeof(float));
        g->depthwise_conv2d_forward(gy, gx, gw, &s);
        g->depthwise_conv2d_backward_data(gdx, gdy, gw, &s);
        g->depthwise_conv2d_backward_filter(gdw, gdy, gx, &s);
        float *hy = test_download(g, gy, ny), *hdx = test_download(g, gdx, nx),
              *hdw = test_download(g, gdw, nw);
        describe_conv(&s);
        CHECK_ARRAY_NEAR("depthwise forward", hy, y, ny, 1e-5);
        CHECK_ARRAY_NEAR("depthwise backward_data", hdx, dx, nx, 1e-5);
        CHECK_ARRAY_NEAR("depthwise backward_filter", hdw, dw, nw, 1e-4);
        free(hy);
        free(hdx);
        free(hdw);
        g->free(gx);
        g->free(gw);
        g->free(gdy);
        g->free(gy);
        g->free(gdx);
        g->free(gdw);
        free(x);
        free(w);
        free(dy);
        free(y);
        free(dx);
        free(dw);
    }
}

/* A DepthwiseConv2D with L2 regularizers and a sigmoid head (binary
 * cross-entropy): loss and gradients on the GPU as on the CPU. */
void test_cuda_more_model(void) {
    TEST_NEED_GPU(g);
    int32_t labels[6] = {0, 1, 1, 0, 1, 0};
    check_gpu_model(g,
                    "{\"input\": [10, 9, 3], \"layers\": [{\"type\": \"depthwise_conv2d\", "
                    "\"kernel_size\": 3, \"depth_multiplier\": 2, \"padding\": \"same\", "
                    "\"activation\": \"relu\", \"kernel_regularizer\": {\"l2\": 0.05}, "
                    "\"bias_regularizer\": {\"l2\": 0.1}}, {\"type\": \"conv2d\", \"filters\": "
                    "4, \"kernel_size\": 3, \"strides\": 2, \"activation\": \"tanh\"}, "
                    "{\"type\": \"global_avg_pool2d\"}, {\"type\": \"dense\", \"units\": 1, "
                    "\"activation\": \"sigmoid\", \"kernel_regularizer\": {\"l2\": 0.2}}]}",
                    labels, 6);
}

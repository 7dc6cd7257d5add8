/* The CUDA kernels of BatchNormalization (kernels/cuda/ops_bn.cu) against
 * the CPU's (which tests/test_ops_bn.c checks against references), and a
 * model with BatchNormalization run forward and backward on the GPU against
 * the CPU, in training and in inference. They need a GPU and skip, saying
 * why, where none is usable. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "kernels/backend.h"
#include "test_helpers.h"

static char why[PSTRAIN_BACKEND_WHY];

/* The GPU with float32 convolutions, or NULL with why. */
static const backend_t *gpu(void) {
    setenv("PSTRAIN_CUDA_MATH", "fp32", 1);
    backend_choice_t c;
    return backend_open("gpu", &c, why, sizeof why) ? NULL : c.be;
}

/* A device copy of n host floats. */
static float *dev(const backend_t *g, const float *h, size_t n) {
    float *d = BACKEND_XALLOC(g, n * sizeof(float) + 64);
    g->upload(d, h, n * sizeof(float));
    return d;
}

/* The device's n floats against the CPU's. */
static void check_dev(const backend_t *g, const char *what, const float *d, const float *want,
                      size_t n, double tol) {
    float *h = xmalloc(n * sizeof(float));
    g->download(h, d, n * sizeof(float));
    CHECK_ARRAY_NEAR(what, h, want, n, tol);
    free(h);
}

/* Every op on 3000 rows of 96 channels (three blocks of the sums). */
void test_cuda_bn_ops(void) {
    const backend_t *g = gpu();
    if (!g) {
        test_skip("no usable GPU: %s", why);
        return;
    }
    const backend_t *c = cpu_backend();
    size_t rows = 3000, ch = 96, n = rows * ch;
    float eps = 1e-3f;
    float *x = test_floats(n, 1, 2.0f, 4.0f), *dy = test_floats(n, 2, -1.0f, 1.0f);
    float *gamma = test_floats(ch, 3, 0.5f, 1.5f), *beta = test_floats(ch, 4, -1.0f, 1.0f);
    float *mean = xmalloc(ch * sizeof(float)), *var = xmalloc(ch * sizeof(float));
    float *y = xmalloc(n * sizeof(float)), *dx = xmalloc(n * sizeof(float));
    float *sums = xmalloc(2 * ch * sizeof(float));
    float *gx = dev(g, x, n), *gdy = dev(g, dy, n), *gg = dev(g, gamma, ch), *gb = dev(g, beta, ch);
    float *gm = dev(g, x, ch), *gv = dev(g, x, ch), *gy = dev(g, x, n), *gs = dev(g, x, 2 * ch);
    c->bn_stats(mean, x, NULL, rows, ch);
    g->bn_stats(gm, gx, NULL, rows, ch);
    check_dev(g, "bn_stats sum", gm, mean, ch, 1e-6);
    for (size_t j = 0; j < ch; j++)
        mean[j] /= (float)rows;
    g->upload(gm, mean, ch * sizeof(float));
    c->bn_stats(var, x, mean, rows, ch);
    g->bn_stats(gv, gx, gm, rows, ch);
    check_dev(g, "bn_stats squared deviations", gv, var, ch, 1e-6);
    for (size_t j = 0; j < ch; j++)
        var[j] /= (float)rows;
    g->upload(gv, var, ch * sizeof(float));
    for (int with = 0; with < 2; with++) {
        c->bn_forward(y, x, mean, var, with ? gamma : NULL, with ? beta : NULL, eps, rows, ch);
        g->bn_forward(gy, gx, gm, gv, with ? gg : NULL, with ? gb : NULL, eps, rows, ch);
        check_dev(g, "bn_forward", gy, y, n, 1e-5);
    }
    c->bn_backward_sums(sums, dy, x, mean, var, eps, rows, ch);
    g->bn_backward_sums(gs, gdy, gx, gm, gv, eps, rows, ch);
    check_dev(g, "bn_backward_sums", gs, sums, 2 * ch, 1e-5);
    g->upload(gs, sums, 2 * ch * sizeof(float));
    c->bn_backward_data(dx, dy, x, mean, var, gamma, sums, eps, rows, rows, ch);
    g->bn_backward_data(gdy, gdy, gx, gm, gv, gg, gs, eps, rows, rows, ch); /* in place */
    check_dev(g, "bn_backward_data", gdy, dx, n, 1e-5);
    float *all[] = {gx, gdy, gg, gb, gm, gv, gy, gs};
    for (size_t k = 0; k < PS_ARRAY_LEN(all); k++)
        g->free(all[k]);
    free(x);
    free(dy);
    free(gamma);
    free(beta);
    free(mean);
    free(var);
    free(y);
    free(dx);
    free(sums);
}

/* Probabilities and gradient (with the batch statistics) of a batch on one
 * backend, in training or inference. */
static void run_model(const model_t *m, const backend_t *be, const float *x, const int32_t *labels,
                      size_t n, const float *params, bool training, float *probs, float *grads) {
    model_exec_t *e = model_exec_create(m, be, n);
    size_t in = m->input[0] * m->input[1] * m->input[2];
    be->upload(model_exec_input(e), x, n * in * sizeof(float));
    be->upload(model_exec_labels(e), labels, n * sizeof(int32_t));
    float *p = dev(be, params, m->nparams), *gr = dev(be, params, m->nparams);
    model_forward(e, p, n, training, 7, 0);
    memcpy(probs, model_exec_probs(e, n), n * m->nclasses * sizeof(float));
    if (training) {
        model_backward(e, p, n, 1.0f, gr);
        be->download(grads, gr, m->nparams * sizeof(float));
    }
    be->free(p);
    be->free(gr);
    model_exec_free(e);
}

void test_cuda_bn_model(void) {
    const backend_t *g = gpu();
    if (!g) {
        test_skip("no usable GPU: %s", why);
        return;
    }
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m,
                      "{\"input\": [10, 10, 3], \"layers\": [{\"type\": \"conv2d\", \"filters\": "
                      "8, \"kernel_size\": 3, \"padding\": \"same\", \"name\": \"c\"}, {\"type\": "
                      "\"batch_normalization\"}, {\"type\": \"activation\", \"activation\": "
                      "\"relu\", \"name\": \"r\"}, {\"type\": \"conv2d\", \"filters\": 8, "
                      "\"kernel_size\": 3, \"padding\": \"same\"}, {\"type\": "
                      "\"batch_normalization\", \"name\": \"b\"}, {\"type\": \"add\", \"inputs\": "
                      "[\"b\", \"r\"]}, {\"type\": \"global_avg_pool2d\"}, {\"type\": \"dense\", "
                      "\"units\": 4, \"activation\": \"softmax\"}]}",
                      err, sizeof err) == 0);
    size_t n = 6, in = 300;
    float *x = test_floats(n * in, 5, 0.0f, 1.0f), *params = xmalloc(m.nparams * sizeof(float));
    int32_t labels[6] = {0, 1, 2, 3, 0, 1};
    model_init_params(&m, 3, params);
    /* Moving statistics away from their start, for inference. */
    for (size_t v = 0; v < m.nvars; v++)
        for (size_t j = 0; m.vars[v].moving && j < m.vars[v].size; j++)
            params[m.vars[v].offset + j] += 0.5f * rng_uniform(6, j);
    float *pc = xmalloc(n * 4 * sizeof(float)), *pg = xmalloc(n * 4 * sizeof(float));
    float *gc = xmalloc(m.nparams * sizeof(float)), *gg = xmalloc(m.nparams * sizeof(float));
    for (int training = 0; training < 2; training++) {
        run_model(&m, cpu_backend(), x, labels, n, params, training, pc, gc);
        run_model(&m, g, x, labels, n, params, training, pg, gg);
        CHECK_ARRAY_NEAR(training ? "probabilities, training" : "probabilities, inference", pg, pc,
                         n * 4, 1e-5);
    }
    CHECK_ARRAY_NEAR("gradient and batch statistics", gg, gc, m.nparams, 1e-4);
    free(x);
    free(params);
    free(pc);
    free(pg);
    free(gc);
    free(gg);
    model_free(&m);
}

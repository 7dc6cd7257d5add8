/* Helpers that several test files share (tests/test_helpers.h). */
#include "test_helpers.h"

#include "common/base/util.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

conv2d_shape_t conv_case_shape(const conv_case_t *t) {
    conv2d_shape_t s = {.n = t->n,
                        .h = t->h,
                        .w = t->w,
                        .c = t->c,
                        .kh = t->kh,
                        .kw = t->kw,
                        .f = t->f,
                        .sh = t->sh,
                        .sw = t->sw};
    conv2d_shape_init(&s, t->same);
    return s;
}

pool2d_shape_t pool_case_shape(const pool_case_t *t) {
    pool2d_shape_t s = {.n = t->n,
                        .h = t->h,
                        .w = t->w,
                        .c = t->c,
                        .ph = t->p,
                        .pw = t->p,
                        .sh = t->stride,
                        .sw = t->stride};
    pool2d_shape_init(&s, t->same);
    return s;
}

void describe_conv(const conv2d_shape_t *s) {
    fprintf(stderr, "  conv n=%zu h=%zu w=%zu c=%zu k=%zux%zu f=%zu stride=%zux%zu pad=%zu,%zu\n",
            s->n, s->h, s->w, s->c, s->kh, s->kw, s->f, s->sh, s->sw, s->pad_top, s->pad_left);
}

void describe_pool(const pool2d_shape_t *s) {
    fprintf(stderr, "  pool n=%zu h=%zu w=%zu c=%zu pool=%zux%zu stride=%zux%zu pad=%zu,%zu\n",
            s->n, s->h, s->w, s->c, s->ph, s->pw, s->sh, s->sw, s->pad_top, s->pad_left);
}

double fixed_batch_loss(model_exec_t *e, const float *params, size_t n) {
    double loss;
    size_t correct;
    model_forward(e, params, n, true, 7, 0);
    model_loss(e, n, &loss, &correct, NULL);
    return loss;
}

double central_difference(model_exec_t *e, float *params, size_t idx, float h, size_t n) {
    float saved = params[idx];
    params[idx] = saved + h;
    double up = fixed_batch_loss(e, params, n);
    params[idx] = saved - h;
    double down = fixed_batch_loss(e, params, n);
    params[idx] = saved;
    return (up - down) / (2.0 * (double)h);
}

int test_ps_start(test_ps_t *e, bool sync, const rpc_options_t *opt) {
    ps_shard_opts_t o = {
        .index = 0, .nps = 1, .sync = sync, .replicas = 1, .max_workers = 2, .seed = 1};
    optim_defaults(&o.optim, OPTIM_SGD);
    return test_ps_start_model(e, "mlp", &o, opt);
}

int test_ps_start_model(test_ps_t *e, const char *spec, const ps_shard_opts_t *o,
                        const rpc_options_t *opt) {
    char err[PS_ERRLEN];
    memset(e, 0, sizeof *e);
    if (strchr(spec, '{') ? model_parse(&e->m, spec, err, sizeof err)
                          : model_load(&e->m, spec, err, sizeof err))
        goto fail;
    ps_service_init(&e->svc, 1);
    if (ps_shard_init(&e->svc.shard, &e->m, o, err, sizeof err))
        goto fail;
    rpc_server_config_t sc = {.addr = "127.0.0.1:0",
                              .methods = ps_service_methods,
                              .n_methods = ps_service_nmethods,
                              .msg_methods = ps_service_msg_methods,
                              .n_msg_methods = ps_service_n_msg_methods,
                              .ctx = &e->svc,
                              .on_cancel = ps_service_on_cancel};
    if (opt)
        sc.opt = *opt;
    if (rpc_server_start(&e->server, &sc, err, sizeof err))
        goto fail;
    snprintf(e->addr, sizeof e->addr, "127.0.0.1:%d", rpc_server_port(e->server));
    if (rpc_channel_create(&e->ch, e->addr, opt, err, sizeof err))
        goto fail;
    return 0;
fail:
    fprintf(stderr, "%s\n", err);
    return -1;
}

void test_ps_stop(test_ps_t *e) {
    if (e->ch)
        rpc_channel_destroy(e->ch);
    rpc_server_stop(e->server);
    ps_service_free(&e->svc);
    model_free(&e->m);
}

const backend_t *test_gpu(char *why, size_t len) {
    setenv("PSTRAIN_CUDA_MATH", "fp32", 1);
    backend_choice_t c;
    return backend_open("gpu", &c, why, len) ? NULL : c.be;
}

void *test_upload(const backend_t *be, const void *h, size_t bytes) {
    void *d = BACKEND_XALLOC(be, bytes + 64);
    be->upload(d, h, bytes);
    return d;
}

float *test_download(const backend_t *be, const float *d, size_t n) {
    float *h = xmalloc(n * sizeof(float));
    be->download(h, d, n * sizeof(float));
    return h;
}

/* Loss (model_loss's sum) and gradient (into grads, host) of a batch of n
 * examples x (host) with labels on backend be at params (host), in training
 * mode with dropout seed 7. */
static void run_model(const model_t *m, const backend_t *be, const float *x, const int32_t *labels,
                      size_t n, const float *params, float *grads, double *loss) {
    model_exec_t *e = model_exec_create(m, be, n);
    size_t in = m->input[0] * m->input[1] * m->input[2];
    be->upload(model_exec_input(e), x, n * in * sizeof(float));
    be->upload(model_exec_labels(e), labels, n * sizeof(int32_t));
    float *p = test_upload(be, params, m->nparams * sizeof(float));
    float *gr = test_upload(be, params, m->nparams * sizeof(float));
    size_t right;
    model_forward(e, p, n, true, 7, 0);
    model_loss(e, n, loss, &right, NULL);
    model_backward(e, p, n, 1.0f, gr);
    be->download(grads, gr, m->nparams * sizeof(float));
    be->free(p);
    be->free(gr);
    model_exec_free(e);
}

void check_gpu_model(const backend_t *g, const char *spec, const int32_t *labels, size_t n) {
    model_t m;
    char err[PS_ERRLEN];
    if (model_parse(&m, spec, err, sizeof err)) {
        test_fail(__FILE__, __LINE__, "spec: %s", err);
        return;
    }
    size_t in = m.input[0] * m.input[1] * m.input[2];
    float *x = xmalloc(n * in * sizeof(float)), *params = xmalloc(m.nparams * sizeof(float));
    for (size_t i = 0; i < n * in; i++)
        x[i] = 4.0f * rng_uniform(5, i) - 2.0f;
    model_init_params(&m, 3, params);
    /* Biases start at zero; move them so that their gradients count. */
    for (size_t i = 0; i < m.nparams; i++)
        params[i] += 0.05f * (rng_uniform(9, i) - 0.5f);
    float *gc = xmalloc(m.nparams * sizeof(float)), *gg = xmalloc(m.nparams * sizeof(float));
    double lc, lg;
    run_model(&m, cpu_backend(), x, labels, n, params, gc, &lc);
    run_model(&m, g, x, labels, n, params, gg, &lg);
    if (fabs(lg - lc) > 1e-4 * fmax(1.0, fabs(lc)))
        test_fail(__FILE__, __LINE__, "loss on the GPU %.9g, on the CPU %.9g", lg, lc);
    else if (test_compare("gradient", gg, gc, m.nparams, 1e-4))
        test_fail(__FILE__, __LINE__, "gradients differ");
    free(x);
    free(params);
    free(gc);
    free(gg);
    model_free(&m);
}

float *test_floats(size_t n, uint64_t seed, float lo, float hi) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * rng_uniform(seed, i);
    return p;
}

/* Helpers that several test files share (tests/test_helpers.h). */
#include "test_helpers.h"

#include "common/base/util.h"

#include <stdio.h>
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

float *test_floats(size_t n, uint64_t seed, float lo, float hi) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * rng_uniform(seed, i);
    return p;
}

/* Helpers that several test files share: the shapes of convolution and
 * pooling test cases, a model's loss on a fixed batch, and a PS served in
 * the test's own process. */
#ifndef PSTRAIN_TEST_HELPERS_H
#define PSTRAIN_TEST_HELPERS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/model/model.h"
#include "common/rpc/rpc.h"
#include "kernels/backend.h"
#include "ps/service.h"

typedef struct {
    size_t n, h, w, c, kh, kw, f, sh, sw;
    bool same;
} conv_case_t;

typedef struct {
    size_t n, h, w, c, p, stride;
    bool same;
} pool_case_t;

/* The geometry of a case (its output size and padding as Keras has them). */
conv2d_shape_t conv_case_shape(const conv_case_t *t);
pool2d_shape_t pool_case_shape(const pool_case_t *t);
/* One line on stderr naming the shape, after a failure. */
void describe_conv(const conv2d_shape_t *s);
void describe_pool(const pool2d_shape_t *s);

/* The summed loss of the n examples in the exec's input, in training mode
 * with a fixed dropout seed, at params (backend memory). */
double fixed_batch_loss(model_exec_t *e, const float *params, size_t n);
/* Fails the test when model_backward of spec under the train.loss name loss
 * differs from central differences (test_model.c). */
void check_gradients_loss(const char *spec, const char *loss, size_t n);
/* Fails the test when n examples split over 3 threads give another loss,
 * accuracy or gradient than on 1 thread, twice over (test_model.c). */
void check_threads_same_gradient(const char *spec, size_t n);
/* n floats uniform in [lo, hi) from rng_uniform(seed, i) (caller frees). */
float *test_floats(size_t n, uint64_t seed, float lo, float hi);

/* One PS of the MLP (SGD, seed 1, one replica, two workers) served on a
 * free loopback port in this process, with a channel to it. */
typedef struct {
    model_t m;
    ps_service_t svc;
    rpc_server_t *server;
    rpc_channel_t *ch;
    char addr[64];
} test_ps_t;

/* sync: train.mode sync; opt: the server's and channel's options (NULL:
 * defaults). 0, or -1 with the error on stderr. */
int test_ps_start(test_ps_t *e, bool sync, const rpc_options_t *opt);
/* The same with a model (a builtin name or a spec's JSON) and the shard's
 * options (o->nps 1). */
int test_ps_start_model(test_ps_t *e, const char *spec, const ps_shard_opts_t *o,
                        const rpc_options_t *opt);
void test_ps_stop(test_ps_t *e);

#endif

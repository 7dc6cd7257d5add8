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
/* The central difference of fixed_batch_loss in params[idx] with step h
 * (params[idx] is left as it was). */
double central_difference(model_exec_t *e, float *params, size_t idx, float h, size_t n);
/* Fails the test when model_backward of spec under the train.loss name loss
 * differs from central differences (test_model.c). */
void check_gradients_loss(const char *spec, const char *loss, size_t n);
/* Fails the test when n examples split over 3 threads give another loss,
 * accuracy or gradient than on 1 thread, twice over (test_model.c). */
void check_threads_same_gradient(const char *spec, size_t n);

/* The GPU backend with float32 math (PSTRAIN_CUDA_MATH=fp32), or NULL with
 * why filled: the CUDA tests skip then (TEST_NEED_GPU). */
const backend_t *test_gpu(char *why, size_t len);
#define TEST_NEED_GPU(var)                                                                         \
    char var##_why_[PSTRAIN_BACKEND_WHY];                                                          \
    const backend_t *var = test_gpu(var##_why_, sizeof var##_why_);                                \
    if (!var) {                                                                                    \
        test_skip("no usable GPU: %s", var##_why_);                                                \
        return;                                                                                    \
    }
/* bytes of host memory h in new backend memory (freed with be->free). */
void *test_upload(const backend_t *be, const void *h, size_t bytes);
/* n floats of backend memory d in new host memory (freed with free). */
float *test_download(const backend_t *be, const float *d, size_t n);
/* Fails the test when spec's loss and gradients on the GPU g differ from the
 * CPU's (1e-4) on n examples with the given labels. */
void check_gpu_model(const backend_t *g, const char *spec, const int32_t *labels, size_t n);
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

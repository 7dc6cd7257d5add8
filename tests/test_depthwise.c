/* The depthwise convolution (kernels/cpu/ops_depthwise.c, Keras's
 * DepthwiseConv2D): the forward against a reference written here in
 * double over the padded input, the two backward ops against central
 * differences of that reference, and the layer in a model (shapes, Keras's
 * variable names, gradients against finite differences). */
#include "test.h"
#include "test_helpers.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "kernels/backend.h"

typedef struct {
    size_t n, h, w, c, k, mult, stride;
    bool same;
} dw_case_t;

static const dw_case_t dw_cases[] = {
    {2, 5, 6, 3, 3, 1, 1, true},
    {1, 7, 5, 2, 3, 2, 2, true},
    {2, 6, 6, 2, 2, 3, 2, false},
    {1, 8, 7, 4, 3, 1, 3, false},
};

static conv2d_shape_t dw_shape(const dw_case_t *t) {
    conv2d_shape_t s = {.n = t->n,
                        .h = t->h,
                        .w = t->w,
                        .c = t->c,
                        .kh = t->k,
                        .kw = t->k,
                        .f = t->c * t->mult,
                        .sh = t->stride,
                        .sw = t->stride};
    conv2d_shape_init(&s, t->same);
    return s;
}

/* sum over outputs of dy * y, with y the depthwise convolution in double
 * (reading x at (oy * sh + ky - pad_top, ...), zero outside). */
static double ref_dot(const conv2d_shape_t *s, const float *x, const float *w, const float *dy) {
    size_t mult = s->f / s->c;
    double sum = 0.0;
    for (size_t n = 0; n < s->n; n++)
        for (size_t oy = 0; oy < s->oh; oy++)
            for (size_t ox = 0; ox < s->ow; ox++)
                for (size_t ci = 0; ci < s->c; ci++)
                    for (size_t q = 0; q < mult; q++) {
                        double y = 0.0;
                        for (size_t ky = 0; ky < s->kh; ky++)
                            for (size_t kx = 0; kx < s->kw; kx++) {
                                long iy = (long)(oy * s->sh + ky) - (long)s->pad_top;
                                long ix = (long)(ox * s->sw + kx) - (long)s->pad_left;
                                if (iy < 0 || ix < 0 || iy >= (long)s->h || ix >= (long)s->w)
                                    continue;
                                y +=
                                    (double)x[((n * s->h + (size_t)iy) * s->w + (size_t)ix) * s->c +
                                              ci] *
                                    w[((ky * s->kw + kx) * s->c + ci) * mult + q];
                            }
                        sum += y * dy[((n * s->oh + oy) * s->ow + ox) * s->f + ci * mult + q];
                    }
    return sum;
}

static float *floats(size_t n, uint64_t seed) {
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        p[i] = 2.0f * rng_uniform(seed, i) - 1.0f;
    return p;
}

/* Central differences of ref_dot with respect to each element of v. */
static void numeric_grad(const conv2d_shape_t *s, float *x, float *w, const float *dy, float *v,
                         size_t nv, float *out) {
    for (size_t i = 0; i < nv; i++) {
        float saved = v[i], h = 1e-2f;
        v[i] = saved + h;
        double up = ref_dot(s, x, w, dy);
        v[i] = saved - h;
        double down = ref_dot(s, x, w, dy);
        v[i] = saved;
        out[i] = (float)((up - down) / (2.0 * (double)h));
    }
}

void test_ops_depthwise_reference(void) {
    const backend_t *be = cpu_backend();
    for (size_t k = 0; k < PS_ARRAY_LEN(dw_cases); k++) {
        conv2d_shape_t s = dw_shape(&dw_cases[k]);
        size_t nx = s.n * s.h * s.w * s.c, ny = s.n * s.oh * s.ow * s.f, nw = s.kh * s.kw * s.f;
        float *x = floats(nx, 1 + k), *w = floats(nw, 2 + k), *dy = floats(ny, 3 + k);
        float *y = xmalloc(ny * sizeof(float)), *dx = xmalloc(nx * sizeof(float));
        float *dw = xmalloc(nw * sizeof(float)), *num_x = xmalloc(nx * sizeof(float));
        float *num_w = xmalloc(nw * sizeof(float)), *onehot = xcalloc(ny, sizeof(float));
        /* forward: each output element is ref_dot against a one-hot dy */
        be->depthwise_conv2d_forward(y, x, w, &s);
        size_t bad = 0;
        for (size_t i = 0; i < ny; i++) {
            onehot[i] = 1.0f;
            double want = ref_dot(&s, x, w, onehot);
            onehot[i] = 0.0f;
            bad += fabs(want - (double)y[i]) > 1e-5 * fmax(1.0, fabs(want));
        }
        if (bad) {
            describe_conv(&s);
            test_fail(__FILE__, __LINE__, "forward: %zu of %zu outputs differ", bad, ny);
            return;
        }
        be->depthwise_conv2d_backward_data(dx, dy, w, &s);
        be->depthwise_conv2d_backward_filter(dw, dy, x, &s);
        numeric_grad(&s, x, w, dy, x, nx, num_x);
        numeric_grad(&s, x, w, dy, w, nw, num_w);
        if (test_compare("backward_data vs finite differences", dx, num_x, nx, 1e-3) ||
            test_compare("backward_filter vs finite differences", dw, num_w, nw, 1e-3)) {
            describe_conv(&s);
            test_fail(__FILE__, __LINE__, "case %zu: gradients differ", k);
            return;
        }
        free(x);
        free(w);
        free(dy);
        free(y);
        free(dx);
        free(dw);
        free(num_x);
        free(num_w);
        free(onehot);
    }
}

#define DW_SPEC                                                                                    \
    "{\"input\": [7, 6, 3], \"layers\": [{\"type\": \"depthwise_conv2d\", \"kernel_size\": 3, "    \
    "\"depth_multiplier\": 2, \"strides\": 2, \"padding\": \"same\", \"activation\": \"tanh\", "   \
    "\"kernel_regularizer\": {\"l2\": 0.05}}, {\"type\": \"depthwise_conv2d\", \"kernel_size\": "  \
    "[2, 3], \"use_bias\": false}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 3, "  \
    "\"activation\": \"softmax\"}]}"

void test_model_depthwise_layer(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_parse(&m, DW_SPEC, err, sizeof err) == 0);
    /* Keras: (4, 3, 6) then (3, 1, 6); kernel [3, 3, 3, 2], bias [6] (Keras 3's names) */
    CHECK_INT_EQ(m.layers[0].out[0], 4);
    CHECK_INT_EQ(m.layers[0].out[1], 3);
    CHECK_INT_EQ(m.layers[0].out[2], 6);
    CHECK_INT_EQ(m.layers[1].out[0], 3);
    CHECK_INT_EQ(m.layers[1].out[1], 1);
    CHECK_INT_EQ(m.layers[1].out[2], 6);
    CHECK(strcmp(m.vars[0].name, "depthwise_conv2d/kernel") == 0);
    CHECK_INT_EQ(m.vars[0].shape[2], 3);
    CHECK_INT_EQ(m.vars[0].shape[3], 2);
    CHECK(strcmp(m.vars[1].name, "depthwise_conv2d/bias") == 0);
    CHECK_INT_EQ(m.vars[1].size, 6);
    CHECK(strcmp(m.vars[2].name, "depthwise_conv2d_1/kernel") == 0);
    CHECK_INT_EQ(m.nparams, 54 + 6 + 36 + 18 * 3 + 3);
    /* the canonical spec and Keras's config round-trip */
    model_t again;
    CHECK(model_parse(&again, m.json, err, sizeof err) == 0);
    CHECK(strcmp(again.json, m.json) == 0);
    model_free(&again);
    char *keras = model_keras_config(&m);
    CHECK_STR_CONTAINS(keras, "\"class_name\":\"DepthwiseConv2D\"");
    CHECK_STR_CONTAINS(keras, "\"depth_multiplier\":2");
    CHECK_STR_CONTAINS(keras, "\"depthwise_regularizer\"");
    CHECK(model_parse(&again, keras, err, sizeof err) == 0);
    CHECK_INT_EQ(again.nparams, m.nparams);
    CHECK_NEAR(again.layers[0].l2[0], 0.05, 1e-7);
    model_free(&again);
    free(keras);
    char name[64];
    model_keras_h5_name(&m, 1, name, sizeof name);
    CHECK(strcmp(name, "depthwise_conv2d_1") == 0);
    model_free(&m);
    /* an image input is needed */
    CHECK(model_parse(&m,
                      "{\"input\": [4], \"layers\": [{\"type\": \"depthwise_conv2d\", "
                      "\"kernel_size\": 1}, {\"type\": \"dense\", \"units\": 2, \"activation\": "
                      "\"softmax\"}]}",
                      err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "needs an image input");
}

void test_model_grad_depthwise(void) {
    check_gradients_loss(DW_SPEC, "auto", 3);
}

/* tf.keras 2.x's to_json() of a DepthwiseConv2D with an L2 depthwise
 * regularizer (its float32-rounded factor) and a Dense with L1L2(l1=0). */
void test_model_keras_tf2_depthwise_l2(void) {
    static const char json[] =
        "{\"class_name\": \"Sequential\", \"config\": {\"name\": \"sequential\", \"layers\": "
        "[{\"class_name\": \"InputLayer\", \"config\": {\"batch_input_shape\": [null, 8, 8, 2], "
        "\"dtype\": \"float32\", \"sparse\": false, \"ragged\": false, \"name\": \"input_1\"}}, "
        "{\"class_name\": \"DepthwiseConv2D\", \"config\": {\"name\": \"dw\", \"trainable\": true, "
        "\"dtype\": \"float32\", \"kernel_size\": [3, 3], \"strides\": [1, 1], \"padding\": "
        "\"valid\", \"data_format\": \"channels_last\", \"dilation_rate\": [1, 1], \"groups\": 1, "
        "\"activation\": \"relu\", \"use_bias\": true, \"bias_initializer\": {\"class_name\": "
        "\"Zeros\", \"config\": {}}, \"bias_regularizer\": null, \"activity_regularizer\": null, "
        "\"bias_constraint\": null, \"depth_multiplier\": 2, \"depthwise_initializer\": "
        "{\"class_name\": \"GlorotUniform\", \"config\": {\"seed\": null}}, "
        "\"depthwise_regularizer\": {\"class_name\": \"L2\", \"config\": {\"l2\": "
        "0.009999999776482582}}, \"depthwise_constraint\": null}}, {\"class_name\": \"Flatten\", "
        "\"config\": {\"name\": \"flatten\", \"trainable\": true, \"dtype\": \"float32\", "
        "\"data_format\": \"channels_last\"}}, {\"class_name\": \"Dense\", \"config\": {\"name\": "
        "\"out\", \"trainable\": true, \"dtype\": \"float32\", \"units\": 2, \"activation\": "
        "\"softmax\", \"use_bias\": true, \"kernel_initializer\": {\"class_name\": "
        "\"GlorotUniform\", \"config\": {\"seed\": null}}, \"bias_initializer\": {\"class_name\": "
        "\"Zeros\", \"config\": {}}, \"kernel_regularizer\": {\"class_name\": \"L1L2\", "
        "\"config\": {\"l1\": 0.0, \"l2\": 0.001}}, \"bias_regularizer\": null, "
        "\"activity_regularizer\": null, \"kernel_constraint\": null, \"bias_constraint\": "
        "null}}]}, \"keras_version\": \"2.15.0\", \"backend\": \"tensorflow\"}";
    model_t m;
    char err[PS_ERRLEN];
    if (model_parse(&m, json, err, sizeof err)) {
        test_fail(__FILE__, __LINE__, "%s", err);
        return;
    }
    CHECK_INT_EQ(m.layers[0].kind, LAYER_DEPTHWISE_CONV2D);
    CHECK_INT_EQ(m.layers[0].out[0], 6);
    CHECK_INT_EQ(m.layers[0].out[2], 4);
    CHECK_NEAR(m.layers[0].l2[0], 0.01, 1e-7);
    CHECK(m.layers[0].l2[1] == 0.0f);
    CHECK_NEAR(m.layers[2].l2[0], 0.001, 1e-7);
    CHECK_INT_EQ(m.nparams, 3 * 3 * 2 * 2 + 4 + 144 * 2 + 2);
    model_free(&m);
    /* a dilated depthwise convolution is one error naming the layer and the key */
    char *bad = xstrdup(json), *p = strstr(bad, "\"dilation_rate\": [1, 1]");
    memcpy(p, "\"dilation_rate\": [2, 2]", strlen("\"dilation_rate\": [2, 2]"));
    CHECK(model_parse(&m, bad, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "layer \"dw\" (DepthwiseConv2D): \"dilation_rate\"");
    free(bad);
}

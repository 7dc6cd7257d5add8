/* The model: a JSON spec with Keras's layer names and defaults, validated,
 * with shapes inferred and variables named and laid out as Keras does; the
 * deterministic initializer; the Keras-style summary; and forward/backward
 * over a backend. Parameters live in one slab (model_t.vars gives each
 * variable's offset), which is what the parameter store holds and what Pull
 * and Push move. */
#ifndef PSTRAIN_MODEL_H
#define PSTRAIN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kernels/backend.h"

#define MODEL_NAME_LEN 64
#define MODEL_MAX_DIMS 4

typedef enum {
    LAYER_CONV2D = 0,
    LAYER_DENSE,
    LAYER_MAX_POOL2D,
    LAYER_DROPOUT,
    LAYER_FLATTEN,
    /* The Keras layers beyond the builtin models (common/model/model_extra.c). */
    LAYER_ACTIVATION,
    LAYER_RESHAPE,
    LAYER_RESCALING,
    LAYER_AVG_POOL2D,
    LAYER_GLOBAL_AVG_POOL2D,
    LAYER_GLOBAL_MAX_POOL2D,
    LAYER_CENTER_CROP,
    /* Merges of a Functional graph (common/model/model_graph.c). */
    LAYER_ADD,
    LAYER_MULTIPLY,
    LAYER_CONCATENATE,
    /* Token ids to vectors, and the pooling of a sequence (common/model/model_embed.c). */
    LAYER_EMBEDDING,
    LAYER_GLOBAL_AVG_POOL1D,
    /* Keras's DepthwiseConv2D (kernels/cpu/ops_depthwise.c). */
    LAYER_DEPTHWISE_CONV2D,
    /* BatchNormalization (common/model/model_bn.c). */
    LAYER_BATCH_NORM,
} layer_kind_t;

#define MODEL_MAX_INPUTS 8

typedef enum {
    ACT_LINEAR = 0,
    ACT_RELU,
    ACT_SOFTMAX,
    ACT_SIGMOID,
    ACT_TANH,
    ACT_GELU,
    ACT_SILU
} activation_t;

/* The loss, from train.loss or, for auto, the last layer's activation. */
typedef enum {
    LOSS_SPARSE_CE = 0,    /* softmax output, integer class labels */
    LOSS_SPARSE_CE_LOGITS, /* linear output; the loss applies softmax (from_logits=True) */
    LOSS_BCE,              /* one sigmoid unit, labels 0 or 1; computed from the logit */
    LOSS_MSE               /* one linear unit, the integer label as the target */
} loss_t;

typedef struct {
    layer_kind_t kind;
    char name[MODEL_NAME_LEN]; /* Keras's automatic name ("conv2d_1") or the spec's */
    activation_t activation;
    bool use_bias;
    size_t units;        /* dense */
    size_t filters;      /* conv2d; depthwise_conv2d: in channels * multiplier */
    size_t multiplier;   /* depthwise_conv2d depth_multiplier */
    size_t kernel[2];    /* conv2d kernel_size */
    size_t pool[2];      /* max_pool2d, avg_pool2d pool_size; global pools: [h, w] */
    size_t strides[2];   /* conv2d (default 1) and the pools (default pool_size) */
    bool same;           /* padding == "same" */
    float rate;          /* dropout */
    float scale, offset; /* rescaling: y = x * scale + offset */
    /* reshape: target_shape as [h, w, c] (flat: [1, 1, n]); center_crop: [H, W, c] */
    size_t target[3];
    bool target_flat;             /* reshape to a vector */
    size_t in[3], out[3];         /* per-example shapes [h, w, c]; flat ones are [1, 1, n] */
    bool flat_in, flat_out;       /* a vector, not an image (after flatten or dense) */
    size_t in_size, out_size;     /* elements per example */
    float l2[2];                  /* L2 regularizer factors of the kernel and the bias (0: none):
                                   * the loss adds l2 * sum(w^2) (common/model/model_reg.c) */
    int kernel_var, bias_var;     /* indexes into model_t.vars, -1 if none (batch_normalization:
                                   * gamma and beta) */
    int moving_var;               /* batch_normalization: moving_mean (moving_variance is the
                                   * next); -1 for other layers */
    double momentum;              /* batch_normalization: of the moving statistics */
    double epsilon;               /* batch_normalization: added to the variance */
    bool bn_center, bn_scale;     /* batch_normalization: with beta, with gamma */
    float bn_init[4];             /* batch_normalization: the values gamma, beta, moving_mean
                                   * and moving_variance start at (0 or 1) */
    int axis;                     /* batch_normalization: as the spec gave it (-1 or the last) */
    size_t ninputs;               /* 1, or more for a merge */
    int inputs[MODEL_MAX_INPUTS]; /* earlier layers whose outputs this layer takes; -1 is the
                                   * model's input (a chain: {i - 1}) */
    size_t input_dim;             /* embedding: rows of the table (token ids 0 .. input_dim - 1) */
    bool seq_in, seq_out;         /* a sequence [steps, features], held as [1, steps, features] */
} layer_t;

typedef struct {
    char name[2 * MODEL_NAME_LEN]; /* "<layer>/kernel", "<layer>/bias" */
    size_t ndim;
    size_t shape[MODEL_MAX_DIMS]; /* Keras layout: conv [kh, kw, cin, cout], dense [in, out] */
    size_t size;                  /* elements */
    size_t offset;                /* elements from the start of the parameter slab */
    float uniform;                /* > 0: uniform in [-uniform, uniform] (embeddings) */
    bool sparse;                  /* an embedding table on the model's input: pulled and
                                   * pushed by the rows a batch touches */
    size_t fan_in, fan_out;       /* for Glorot; 0 for the variables that start at `fill` */
    float fill;                   /* fan_in 0: every element's starting value (biases: 0) */
    /* A moving statistic (BatchNormalization's moving_mean and moving_variance):
     * not trained; what a gradient slab holds for it is the batch's statistic,
     * which updates it as moving = momentum * moving + (1 - momentum) * batch
     * (common/train/moving.h). */
    bool moving;
    double momentum;
} var_t;

typedef struct {
    size_t input[3]; /* [h, w, c]; a flat input [n] is [1, 1, n] */
    bool input_flat;
    size_t nlayers;
    layer_t *layers;
    size_t nvars;
    var_t *vars;
    size_t nparams;  /* total elements of the slab */
    size_t nclasses; /* units of the last layer */
    loss_t loss;     /* what the last layer's activation implies, or model_set_loss's */
    bool graph;      /* some layer takes other than the previous layer's output */
    char *json;      /* the canonical spec, as model_to_json returns it */
} model_t;

/* Parses and validates a spec; errors name the layer (index and type) and
 * the key. The last layer must be dense, its activation one that
 * model_loss_auto accepts (which sets m->loss). */
int model_parse(model_t *m, const char *json_text, char *err, size_t errlen);
/* The train.loss name of a loss. */
const char *model_loss_name(loss_t loss);
/* The loss the last layer implies: softmax (2 or more units): sparse
 * categorical cross-entropy; sigmoid (1 unit): binary cross-entropy; linear
 * (1 unit): mean squared error; linear (2 or more units): sparse categorical
 * cross-entropy from the logits. Fails naming the layer for any other head. */
int model_loss_auto(const model_t *m, loss_t *out, char *err, size_t errlen);
/* Sets the loss by its train.loss name ("auto" keeps model_loss_auto's);
 * fails when the last layer does not fit it. Logs which loss it chose. */
int model_set_loss(model_t *m, const char *name, char *err, size_t errlen);
/* Sets the loss by its train.loss name as train.loss=auto found it in
 * source (e.g. a .keras file's compile config), which the log line names. */
int model_set_loss_from(model_t *m, const char *name, const char *source, char *err, size_t errlen);
/* Labels are 0 .. this - 1: the units of a softmax or logits head, 2 for
 * binary cross-entropy, MODEL_MAX_LABELS for mean squared error. */
#define MODEL_MAX_LABELS 256
size_t model_label_classes(const model_t *m);
/* The class one output row (model_exec_probs) predicts: the largest unit;
 * binary cross-entropy: output >= 0.5; mean squared error: the output
 * rounded to the nearest integer. */
int32_t model_predict_class(const model_t *m, const float *out);
/* Fails when the backend lacks the kernels of the model's loss. */
int model_loss_check_backend(const model_t *m, const backend_t *be, char *err, size_t errlen);

/* A builtin name ("cnn": the Keras MNIST CNN, "mlp": 784-128-128-10) or a file. */
int model_load(model_t *m, const char *name_or_path, char *err, size_t errlen);
void model_free(model_t *m);
/* The canonical spec with every default and name filled in (caller frees). */
char *model_to_json(const model_t *m);
/* Index of a variable by name, or -1. */
int model_find_var(const model_t *m, const char *name);
/* Layer i's variables in Keras's get_weights order (kernel, bias; gamma,
 * beta, moving_mean, moving_variance): their indexes into out, how many. */
#define MODEL_LAYER_MAX_VARS 4
size_t model_layer_vars(const model_t *m, size_t layer, int out[MODEL_LAYER_MAX_VARS]);
/* Elements of the variables that training moves by gradient (all but the
 * moving statistics): Keras's "Trainable params". */
size_t model_trainable_params(const model_t *m);

/* Initial value of elements [begin, end) of variable v (Glorot-uniform for
 * kernels, v->fill for the rest: biases 0), a pure function of (seed, name, index), so any
 * partition of the model over any number of PS starts the same. */
void model_init_var(const var_t *v, uint64_t seed, size_t begin, size_t end, float *out);
void model_init_params(const model_t *m, uint64_t seed, float *params);

/* Floating-point operations per example of the conv and dense layers: a
 * forward pass, and a training step (forward and backward). */
double model_forward_flops(const model_t *m);
double model_train_flops(const model_t *m);

/* The model as Keras 3 serializes it (what a .keras file's config.json
 * holds): a Sequential of the layers with their names, an InputLayer first
 * (a graph: a Functional with each layer's inbound node);
 * keras.models.load_model and model_from_json rebuild it. Caller frees. */
char *model_keras_config(const model_t *m);

/* The name under which Keras 3 saves layer i's weights in a .keras file's
 * model.weights.h5 (layers/<name>/vars): not the layer's own name but its
 * class in snake case, numbered per class in order ("conv2d", "conv2d_1"),
 * so that files stay loadable whatever the layers are called. */
void model_keras_h5_name(const model_t *m, size_t layer, char *out, size_t len);

/* Embedding tables (common/model/model_embed.c). A table is sparse (var_t)
 * when its layer takes the model's input, whose values are then its token
 * ids. */
bool model_has_sparse(const model_t *m);
/* The layer whose table variable v is, or -1. */
int model_var_layer(const model_t *m, size_t v);
/* Checks that every input value of the n examples x[n, input size] that an
 * embedding layer reads as a token id is an integer in [0, input_dim);
 * otherwise one error naming the layer, the example (counted from first),
 * the position and the value. */
int model_check_ids(const model_t *m, const float *x, size_t n, size_t first, char *err,
                    size_t errlen);
/* The distinct rows of sparse variable v that the n examples x touch, in
 * ascending order, into rows (room for min(input_dim, n * steps)); mark is
 * scratch of input_dim bytes, all zero, and left so. Out-of-range ids are
 * skipped (model_check_ids reports them). Returns the count. */
size_t model_sparse_rows(const model_t *m, size_t v, const float *x, size_t n, uint64_t *rows,
                         uint8_t *mark);

/* Keras's model.summary() table. */
void model_summary(const model_t *m, FILE *out);

/* Buffers for running the model on up to max_batch examples on one backend;
 * one per thread. */
typedef struct model_exec model_exec_t;

model_exec_t *model_exec_create(const model_t *m, const backend_t *be, size_t max_batch);
void model_exec_free(model_exec_t *e);
/* Called with a layer's index: before its forward, and after its backward
 * (its variables' gradients are then complete). */
typedef void (*model_hook_fn)(void *arg, size_t layer);
void model_exec_set_hooks(model_exec_t *e, model_hook_fn before_forward,
                          model_hook_fn after_backward, void *arg);
/* When several execs split one batch (threads), BatchNormalization's batch
 * statistics are the whole batch's: at each such layer every exec calls
 * reduce with its partial sums in buf (len floats, backend memory), which
 * returns with the sums over all of them in buf and the number of examples
 * in the whole batch. Without it an exec's batch is its own n examples. */
typedef size_t (*model_reduce_fn)(void *arg, float *buf, size_t len);
void model_exec_set_reduce(model_exec_t *e, model_reduce_fn reduce, void *arg);

/* Backend buffers for one batch of input and labels, filled by the caller. */
float *model_exec_input(model_exec_t *e);
int32_t *model_exec_labels(model_exec_t *e);
/* Runs on the caller's buffers of max_batch examples from now on (a device
 * trainer's second batch slot, filled while the first computes); NULL goes
 * back to the exec's own. The caller keeps them until then. */
void model_exec_set_input(model_exec_t *e, float *input, int32_t *labels);

/* Runs the layers on the n examples in model_exec_input, against the labels
 * in model_exec_labels (fill them with any valid class when there are none:
 * only the loss depends on them). When training,
 * dropout draws its mask from dropout_seed and the example's position
 * (example_offset + i) in the whole batch, so a batch split over threads drops
 * the same units as the whole batch. Returns the softmax output [n, classes]
 * (backend memory). */
const float *model_forward(model_exec_t *e, const float *params, size_t n, bool training,
                           uint64_t dropout_seed, uint64_t example_offset);
/* After model_forward: the summed loss of the n examples against the labels
 * in model_exec_labels, the count predicted right and, when pred is not NULL,
 * each example's predicted class (binary cross-entropy: output >= 0.5; mean
 * squared error: the output rounded to the nearest integer, so "accuracy" is
 * the share whose rounded output equals the label). */
void model_loss(model_exec_t *e, size_t n, double *loss_sum, size_t *correct, int32_t *pred);
/* After model_forward: the softmax output of the n examples, on the host. */
const float *model_exec_probs(model_exec_t *e, size_t n);
/* After model_forward: gradients of (loss_sum * scale) w.r.t. every parameter into
 * grads (a slab like params, overwritten). A moving statistic's place holds
 * the batch's statistic instead (mean; biased variance, as Keras), times
 * this exec's share of the batch (n over the batch's examples), so that the
 * execs that split a batch sum to it. */
void model_backward(model_exec_t *e, const float *params, size_t n, float scale, float *grads);

#endif

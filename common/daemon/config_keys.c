/* The configuration table: every key, one row each, with its dotted name,
 * type, where it lives in config_t, its default as text, bounds or choices,
 * and one line of help (what --help and docs/configuration.md print). */
#include <math.h>

#include "common/base/util.h"
#include "common/daemon/config_internal.h"

#define INT_KEY(n, field, d, lo, hi, h)                                                            \
    {                                                                                              \
        .name = n, .type = KEY_INT, .offset = offsetof(config_t, field), .def = d, .imin = lo,     \
        .imax = hi, .help = h                                                                      \
    }
#define FLOAT_KEY(n, field, d, lo, hi, fl, h)                                                      \
    {                                                                                              \
        .name = n, .type = KEY_FLOAT, .offset = offsetof(config_t, field), .def = d, .fmin = lo,   \
        .fmax = hi, .flags = fl, .help = h                                                         \
    }
#define BOOL_KEY(n, field, d, h)                                                                   \
    { .name = n, .type = KEY_BOOL, .offset = offsetof(config_t, field), .def = d, .help = h }
#define STRING_KEY(n, field, d, h)                                                                 \
    {                                                                                              \
        .name = n, .type = KEY_STRING, .offset = offsetof(config_t, field), .def = d, .imin = 1,   \
        .imax = CONFIG_STR - 1, .help = h                                                          \
    }
/* A string that may be empty (an optional path). */
#define OPT_STRING_KEY(n, field, h)                                                                \
    {                                                                                              \
        .name = n, .type = KEY_STRING, .offset = offsetof(config_t, field), .def = "", .imin = 0,  \
        .imax = CONFIG_STR - 1, .help = h                                                          \
    }
#define ENUM_KEY(n, field, d, ch, h)                                                               \
    {                                                                                              \
        .name = n, .type = KEY_ENUM, .offset = offsetof(config_t, field), .def = d, .choices = ch, \
        .help = h                                                                                  \
    }

const config_key_t config_keys[] = {
    STRING_KEY("model", model, "cnn",
               "builtin model \"cnn\" or \"mlp\", or the path of a JSON model file (pstrain's "
               "or Keras's to_json()) or of a Keras .keras file (its config.json)"),
    ENUM_KEY("device", device, "cpu", "cpu|gpu|auto",
             "where a worker computes: cpu; gpu (an error when no GPU backend loads); auto (a GPU "
             "when one is usable, else the CPU)"),
    INT_KEY("threads", threads, "0", 0, 256, "compute threads of a worker; 0 = one per CPU"),
    STRING_KEY("data.dir", data.dir, "/usr/share/datasets/fashion-mnist",
               "directory holding the dataset files"),
    BOOL_KEY("data.shuffle", data.shuffle, "true", "reshuffle the training examples every epoch"),
    INT_KEY("data.prefetch", data.prefetch, "4", 1, 64,
            "batches decoded ahead of the training step"),
    OPT_STRING_KEY("data.train", data.train,
                   "training data: a file, a glob of files or a folder (docs/data.md); \"\" = "
                   "data.dir's IDX train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz]"),
    OPT_STRING_KEY("data.val", data.val,
                   "validation data, evaluated during training (as data.train); \"\" = none, "
                   "or data.val_split"),
    OPT_STRING_KEY("data.test", data.test,
                   "test data, evaluated at the end (as data.train); \"\" = data.dir's IDX "
                   "t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz]"),
    ENUM_KEY("data.format", data.format, "auto", "auto|idx|tfrecord|images|csv",
             "format of data.train/val/test; auto: from the names (*.tfrecord[s], *.tfrec, *.csv, "
             "*idx3-ubyte*, folders of class folders)"),
    STRING_KEY("data.image_feature", data.image_feature, "image",
               "tf.Example: the bytes feature holding the image (PNG, JPEG or raw pixels)"),
    STRING_KEY("data.label_feature", data.label_feature, "label",
               "tf.Example: the int64 feature holding the label"),
    OPT_STRING_KEY("data.label_column", data.label_column,
                   "CSV: the label column's header name or 0-based number; \"\" = the last"),
    ENUM_KEY("data.csv_header", data.csv_header, "names", "names|none|skip",
             "CSV's first line: column names, data, or a line to skip (scikit-learn's CSVs)"),
    FLOAT_KEY("data.val_split", data.val_split, "0", 0, 1, MAX_EXCL,
              "fraction of data.train held out (seeded by train.seed) as validation data when "
              "data.val is \"\"; 0 = none"),
    BOOL_KEY("data.stream", data.stream, "false",
             "stream TFRecord or image-folder training data from disk through a shuffle buffer "
             "(memory holds data.shuffle_buffer examples, not the data set); standalone and "
             "cluster workers"),
    INT_KEY("data.shuffle_buffer", data.shuffle_buffer, "10000", 1, 10000000,
            "data.stream: examples in the shuffle buffer (as tf.data's shuffle(buffer_size))"),
    BOOL_KEY("data.augment_flip", data.augment_flip, "false",
             "training images: random horizontal flip (seeded per epoch and worker)"),
    INT_KEY("data.augment_crop_pad", data.augment_crop_pad, "0", 0, 64,
            "training images: zero-pad by this many pixels and crop back at random; 0 = off"),
    FLOAT_KEY("data.augment_translate", data.augment_translate, "0", 0, 0.5, 0,
              "training images: random shift by up to this fraction of height and width, zero "
              "fill; 0 = off"),
    INT_KEY("train.batch_size", train.batch_size, "64", 1, 65536, "examples in a worker's batch"),
    INT_KEY("train.epochs", train.epochs, "3", 0, 1000000,
            "passes over the training data (when train.max_steps is 0)"),
    INT_KEY("train.max_steps", train.max_steps, "0", 0, NO_LIMIT,
            "global steps to train for; 0 = train.epochs decides"),
    ENUM_KEY("train.optimizer", train.optimizer, "sgd", "sgd|adam|rmsprop|adagrad",
             "update rule, with Keras's semantics"),
    FLOAT_KEY("train.learning_rate", train.learning_rate, "0.01", 0, HUGE_VAL, MIN_EXCL,
              "learning rate before decay (Keras uses 0.001 for adam, rmsprop, adagrad)"),
    FLOAT_KEY("train.momentum", train.momentum, "0.9", 0, 1, MAX_EXCL,
              "SGD momentum (decay of the velocity); 0 = plain SGD"),
    BOOL_KEY("train.nesterov", train.nesterov, "false", "Nesterov momentum (SGD)"),
    FLOAT_KEY("train.decay", train.decay, "0", 0, HUGE_VAL, 0,
              "learning rate = learning_rate / (1 + decay * step) (Keras's legacy decay)"),
    FLOAT_KEY("train.beta1", train.beta1, "0.9", 0, 1, MAX_EXCL, "Adam: decay of the first moment"),
    FLOAT_KEY("train.beta2", train.beta2, "0.999", 0, 1, MAX_EXCL,
              "Adam: decay of the second moment"),
    FLOAT_KEY("train.epsilon", train.epsilon, "1e-7", 0, HUGE_VAL, MIN_EXCL,
              "Adam, RMSprop, Adagrad: added to the denominator"),
    FLOAT_KEY("train.rho", train.rho, "0.9", 0, 1, MAX_EXCL,
              "RMSprop: decay of the mean square gradient"),
    FLOAT_KEY("train.initial_accumulator", train.initial_accumulator, "0.1", 0, HUGE_VAL, 0,
              "Adagrad: starting value of the accumulator"),
    BOOL_KEY("train.pipeline", train.pipeline, "false",
             "async: push and pull one step while the next computes (its gradient is one step "
             "staler)"),
    BOOL_KEY("train.overlap", train.overlap, "true",
             "async: move a CNN's dense head (its pull and push) while the convolutions compute"),
    ENUM_KEY("train.mode", train.mode, "async", "async|sync|ssp",
             "async: each push applies at once; sync: pushes of a step are averaged; ssp: async, "
             "but no worker runs more than train.staleness steps ahead of the slowest live one"),
    INT_KEY("train.replicas_to_aggregate", train.replicas_to_aggregate, "0", 0, NO_LIMIT,
            "sync mode: gradients averaged per step; 0 = number of workers"),
    INT_KEY("train.seed", train.seed, "42", 0, NO_LIMIT,
            "seed of the initial weights, shuffling and dropout"),
    OPT_STRING_KEY("train.warm_start_from", train.warm_start_from,
                   "export, checkpoint, model_dir, .keras or .weights.h5 file whose weights "
                   "start a new run (when model_dir holds no checkpoint)"),
    STRING_KEY("train.warm_start_vars", train.warm_start_vars, ".*",
               "POSIX extended regex: the variables train.warm_start_from initialises (the rest "
               "start from the initializer)"),
    INT_KEY("train.staleness", train.staleness, "3", 0, 1000000,
            "ssp mode: steps a worker may run ahead of the slowest live worker (one that pushed "
            "within cluster.dead_after_secs)"),
    INT_KEY("train.synthetic_step_ms", train.synthetic_step_ms, "0", 0, 3600000,
            "benchmarks: a cluster worker reads no data and, instead of computing, sleeps this "
            "many ms a step and pushes a small weight-decay gradient of the real model's shapes; "
            "0 = compute"),
    ENUM_KEY("train.staleness_lr", train.staleness_lr, "auto", "auto|off|inverse|momentum",
             "async, ssp: a push computed on weights `s` updates old moves them by "
             "learning_rate / s (inverse; fresh pushes, s <= 1, at the full rate; auto: off "
             "where train.async_momentum is dana, else inverse), at the full "
             "rate (off), or (momentum) with the momentum lowered by what asynchrony adds, "
             "s / (1 + s) for the pushes' mean staleness s, and below zero the rate instead"),
    ENUM_KEY("train.async_momentum", train.async_momentum, "auto", "auto|off|dana",
             "async, ssp, SGD with momentum: dana = the PS keeps a momentum per worker and "
             "workers pull the weights as they will be once every worker's next update has "
             "landed (DANA; memory: workers x the PS's weights); off = one momentum; auto = "
             "dana with 2 workers or more where it applies (no nesterov, no "
             "rpc.push_topk_momentum, no sparse embedding rows, under 4 GiB), else off"),
    ENUM_KEY("train.lr_scaling", train.lr_scaling, "off", "off|linear",
             "sync: linear = each step's learning rate times the pushes it averages (Goyal et "
             "al.), reached over train.warmup_steps"),
    INT_KEY("train.warmup_steps", train.warmup_steps, "0", 0, NO_LIMIT,
            "sync, train.lr_scaling=linear: global steps over which the rate rises linearly "
            "from learning_rate to its scaled value"),
    INT_KEY("train.backup_workers", train.backup_workers, "0", 0, NO_LIMIT,
            "sync, train.replicas_to_aggregate 0: a step averages the first pushes of all "
            "workers but this many; the slowest ones' pushes come too late and are dropped "
            "(backup workers)"),
    ENUM_KEY("train.loss", train.loss, "auto",
             "auto|sparse_categorical_crossentropy|sparse_categorical_crossentropy_from_logits|"
             "binary_crossentropy|mean_squared_error|categorical_crossentropy|"
             "categorical_crossentropy_from_logits",
             "loss (Keras JSON does not carry it; categorical_crossentropy is the sparse one "
             "with the class index standing for the one-hot label); auto: the loss a .keras model "
             "file was "
             "compiled with, else by the last Dense layer: softmax: "
             "sparse_categorical_crossentropy, sigmoid with 1 unit: binary_crossentropy (labels "
             "0/1, accuracy at 0.5), linear with 1 unit: mean_squared_error (the integer label "
             "as the target; accuracy: the rounded output equals it), linear with 2 or more "
             "units: sparse_categorical_crossentropy_from_logits. A loss the last layer does not "
             "fit is an error"),
    STRING_KEY("checkpoint.model_dir", checkpoint.model_dir, "runs/default",
               "directory of checkpoints, exports and event files"),
    INT_KEY("checkpoint.every_steps", checkpoint.every_steps, "0", 0, NO_LIMIT,
            "checkpoint every this many global steps; 0 = by time only"),
    FLOAT_KEY("checkpoint.every_secs", checkpoint.every_secs, "60", 0, HUGE_VAL, 0,
              "checkpoint when this many seconds passed since the last; 0 = by steps only"),
    INT_KEY("checkpoint.keep", checkpoint.keep, "5", 1, 1000, "newest checkpoints kept"),
    INT_KEY("eval.batch_size", eval.batch_size, "64", 1, 65536,
            "examples in an evaluation batch; at most train.batch_size, whose buffers it reuses"),
    BOOL_KEY("eval.every_epoch", eval.every_epoch, "true",
             "evaluate on the test set after each epoch"),
    FLOAT_KEY("rpc.deadline_secs", rpc.deadline_secs, "30", 0, 86400, MIN_EXCL,
              "deadline of one RPC (a sync pull waits for its step at most this long)"),
    FLOAT_KEY("rpc.retry_max_secs", rpc.retry_max_secs, "2", 0, 3600, MIN_EXCL,
              "longest wait between retries of an unreachable peer (backoff doubles up to it)"),
    INT_KEY("rpc.max_message_mb", rpc.max_message_mb, "256", 1, 2047,
            "largest RPC message sent or received, MiB"),
    BOOL_KEY("rpc.shm", rpc.shm, "true",
             "a worker or master on a PS's host moves tensors to and from it through shared "
             "memory instead of gRPC (not with TLS)"),
    BOOL_KEY("rpc.stream", rpc.stream, "false",
             "calls to a PS on another host over a plain TCP connection beside gRPC, framed by "
             "pstrain (both sides must set it; not with TLS)"),
    INT_KEY("rpc.stream_port", rpc.stream_port, "0", 0, 65535,
            "port of a PS's TCP stream (rpc.stream), on the host of its cluster address; 0 = "
            "any free port"),
    INT_KEY("rpc.stream_max_connections", rpc.stream_max_connections, "1024", 1, 1000000,
            "tensor stream connections a PS holds at once (Unix socket and TCP together); the "
            "next client is answered RESOURCE_EXHAUSTED"),
    INT_KEY("train.apply_threads", train.apply_threads, "0", 0, 64,
            "threads of a PS that split the NaN check and optimizer update of a dense tensor of "
            "64Ki values or more (bit-identical to one thread); 0 = as many as rpc.stream_threads "
            "gives"),
    INT_KEY("rpc.stream_threads", rpc.stream_threads, "0", 0, 64,
            "loop threads of a PS's tensor stream: its TCP connections spread over them (socket "
            "reads and writes on several cores; handlers stay serialized); 0 = half the online "
            "CPUs, 1 to 4"),
    OPT_STRING_KEY("rpc.stream_allowed_uids", rpc.stream_allowed_uids,
                   "uids besides the PS's own whose local processes may use its shared memory "
                   "(rpc.shm), comma-separated; others are refused PERMISSION_DENIED"),
    ENUM_KEY("rpc.wire_dtype", rpc.wire_dtype, "fp32", "fp32|bf16|fp16",
             "a worker's pushes and pulls of tensors of 1024 values or more over the network "
             "(gRPC, rpc.stream): fp32, bf16 or fp16 (half the bytes; each push's rounding error "
             "is kept on the worker and added to its next push; fp16 clamps values beyond "
             "+-65504, with a warning); shared memory (rpc.shm) always carries fp32"),
    FLOAT_KEY("rpc.push_topk", rpc.push_topk, "0", 0, 1, 0,
              "a worker pushes only this fraction of each tensor of 1024 values or more, the "
              "values of largest magnitude with their indices, and keeps the rest for its next "
              "pushes (error feedback); 0 = every value"),
    BOOL_KEY("rpc.push_topk_momentum", rpc.push_topk_momentum, "false",
             "rpc.push_topk, async and ssp, SGD with momentum: the worker applies train.momentum "
             "before it chooses the values (momentum correction) and the PS applies them as "
             "plain SGD steps; false: the PS applies its momentum to them as to zeros elsewhere"),
    OPT_STRING_KEY(
        "tls.ca", tls.ca,
        "PEM file of the cluster CA; with tls.cert and tls.key: mutual TLS on every RPC"),
    OPT_STRING_KEY("tls.cert", tls.cert, "PEM certificate of this process, signed by tls.ca"),
    OPT_STRING_KEY("tls.key", tls.key, "PEM private key of tls.cert"),
    FLOAT_KEY("cluster.heartbeat_secs", cluster.heartbeat_secs, "1", 0, 3600, MIN_EXCL,
              "seconds between a worker's or PS's heartbeats to the master"),
    INT_KEY("log.summary_steps", log.summary_steps, "100", 1, NO_LIMIT,
            "global steps between training scalars in the TensorBoard event file"),
    FLOAT_KEY("cluster.dead_after_secs", cluster.dead_after_secs, "5", 0, 86400, MIN_EXCL,
              "the master marks a role dead after this long without a heartbeat"),
    FLOAT_KEY("cluster.stall_secs", cluster.stall_secs, "120", 0, HUGE_VAL, 0,
              "no global-step progress this long: the master restores every PS from the last "
              "checkpoint; 0 = never"),
    ENUM_KEY("log.level", log.level, "info", "debug|info|warn|error", "least severe level logged"),
    FLOAT_KEY("log.every_secs", log.every_secs, "5", 0, HUGE_VAL, MIN_EXCL,
              "seconds between progress lines"),
    BOOL_KEY("train.sparse_embeddings", train.sparse_embeddings, "true",
             "a worker pulls and pushes only the rows of an embedding table (on the model's "
             "input) that its batch reads, and the update changes only those rows and their "
             "optimizer slots; false: the tables move and update whole"),
};

const size_t config_nkeys = PS_ARRAY_LEN(config_keys);

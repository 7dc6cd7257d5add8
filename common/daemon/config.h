/* Every knob of every role lives in one table (common/config.c): name, type,
 * default, bounds, help. Defaults train the Fashion-MNIST CNN with no file at
 * all; `--config FILE` (JSON) overrides only the keys it names; `--set
 * key=value` overrides that. An unknown key or a bad value is an error that
 * names the key. */
#ifndef PSTRAIN_CONFIG_H
#define PSTRAIN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_STR 256

typedef struct {
    char model[CONFIG_STR];  /* builtin name ("cnn", "mlp") or a JSON model file */
    char device[CONFIG_STR]; /* cpu | gpu | auto */
    int64_t threads;         /* compute threads of a worker; 0 = one per CPU */
    struct {
        char dir[CONFIG_STR];
        bool shuffle;
        int64_t prefetch;
        char train[CONFIG_STR], val[CONFIG_STR], test[CONFIG_STR]; /* "" = none / data.dir's IDX */
        char format[CONFIG_STR]; /* idx|tfrecord|images|csv|auto */
        char image_feature[CONFIG_STR], label_feature[CONFIG_STR]; /* tf.Example */
        char label_column[CONFIG_STR];                             /* CSV; "" = the last */
        char csv_header[CONFIG_STR];                               /* names|none|skip */
        double val_split;                                          /* 0 = none */
        bool augment_flip; /* the loader's augmentation (augment.h) */
        int64_t augment_crop_pad;
        double augment_translate;
        bool stream;            /* TFRecord training data streamed (stream.h) */
        int64_t shuffle_buffer; /* examples the stream's shuffle buffer holds */
    } data;
    struct {
        int64_t batch_size;
        int64_t epochs;
        int64_t max_steps; /* 0 = run `epochs` epochs */
        char optimizer[CONFIG_STR];
        double learning_rate;
        double momentum;
        bool nesterov;
        double decay;
        double beta1, beta2, epsilon, rho, initial_accumulator;
        char mode[CONFIG_STR]; /* async | sync */
        bool pipeline;
        bool overlap;
        int64_t replicas_to_aggregate;
        int64_t seed;
        char warm_start_from[CONFIG_STR]; /* "" = none */
        char warm_start_vars[CONFIG_STR]; /* regex of the variables warm-started */
        int64_t staleness;                /* ssp: steps ahead of the slowest live worker */
        int64_t synthetic_step_ms;        /* > 0: a worker sleeps instead of computing */
        char staleness_lr[CONFIG_STR];    /* auto | off | inverse | momentum (async, ssp) */
        char async_momentum[CONFIG_STR];  /* auto | off | dana (async, ssp; ps/dana.h) */
        char lr_scaling[CONFIG_STR];      /* off | linear (sync) */
        int64_t warmup_steps;             /* sync, lr_scaling linear */
        int64_t backup_workers;           /* sync: pushes of a step not waited for */
        char loss[CONFIG_STR];            /* auto | one of model_loss_name's */
        bool sparse_embeddings;           /* embedding tables move by the rows a batch reads */
        int64_t apply_threads;            /* PS: threads splitting a large tensor's update */
    } train;
    struct {
        char model_dir[CONFIG_STR];
        int64_t every_steps; /* 0 = by time only */
        double every_secs;   /* 0 = by steps only */
        int64_t keep;
    } checkpoint;
    struct {
        int64_t batch_size;
        bool every_epoch;
    } eval;
    struct {
        double deadline_secs;
        double retry_max_secs;
        int64_t max_message_mb;
        bool stream;
        int64_t stream_port;
        int64_t stream_max_connections;
        int64_t stream_threads;
        bool shm;
        char stream_allowed_uids[CONFIG_STR]; /* "" = only the PS's own uid */
        char wire_dtype[CONFIG_STR];          /* fp32 | bf16 | fp16: tensors on the wire */
        double push_topk;                     /* fraction of large tensors pushed; 0 = all */
        bool push_topk_momentum;              /* momentum correction of top-k pushes */
    } rpc;
    struct {
        char ca[CONFIG_STR], cert[CONFIG_STR], key[CONFIG_STR];
    } tls;
    struct {
        double heartbeat_secs;
        double dead_after_secs;
        double stall_secs;
    } cluster;
    struct {
        char level[CONFIG_STR];
        double every_secs;
        int64_t summary_steps;
    } log;
} config_t;

void config_defaults(config_t *c);
/* Sets one key from its text form, checking type, bounds and choices. */
int config_set(config_t *c, const char *key, const char *value, char *err, size_t errlen);
/* Applies a JSON file: nested objects ({"train": {"batch_size": 32}}) or dotted
 * keys ({"train.batch_size": 32}); JSON types must fit the key's type (a float
 * key also takes an integer). On an error c is unchanged. */
int config_load_file(config_t *c, const char *path, char *err, size_t errlen);
/* Consumes --config FILE, --set key=value (and --set=..., --config=...) from
 * argv in order (files first, then every --set, whatever their order), leaving
 * other arguments in place and updating *argc (argv[*argc] = NULL). Arguments
 * after a bare "--" are not looked at. On an error neither c nor argv changes. */
int config_parse_args(config_t *c, int *argc, char **argv, char *err, size_t errlen);
/* Lists every key with its type, default, bounds or choices, and help. */
void config_print_help(FILE *out);
/* The effective configuration as one JSON object with dotted keys (caller frees). */
char *config_to_json(const config_t *c);
/* The text of one key's current value, in the form config_set takes; -1 for
 * an unknown key or a buf too small for the value. */
int config_get(const config_t *c, const char *key, char *buf, size_t buflen);

/* Compute threads: the `threads` key, or one per CPU when it is 0. */
size_t config_threads(const config_t *c);
/* Pushes one global step averages: 1 in async mode; in sync mode
 * train.replicas_to_aggregate, or when it is 0 every worker but
 * train.backup_workers (at least 1). */
size_t config_replicas(const config_t *c, size_t nworkers);

#endif

/* The configuration table and everything that reads or writes through it.
 *
 * Each key is one row of `keys[]`: its dotted name, type, where it lives in
 * config_t, its default as text, bounds or choices, and one line of help.
 * Every way of setting a key (defaults, --set, a JSON file) goes through the
 * same checks, so a default cannot be something --set would refuse, and every
 * error is one line that starts with the key's name. Files and command lines
 * are applied to a copy that replaces the caller's config only when every key
 * was accepted, so a failed load changes nothing. */
#include "common/daemon/config.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

typedef enum { KEY_INT, KEY_FLOAT, KEY_BOOL, KEY_STRING, KEY_ENUM } key_type_t;

/* Float bounds are inclusive unless these flags say otherwise. */
#define MIN_EXCL 1u
#define MAX_EXCL 2u

typedef struct {
    const char *name;
    key_type_t type;
    size_t offset;   /* of the field in config_t */
    const char *def; /* default, in the text form config_set takes */
    int64_t imin;    /* ints: bounds; strings: minimum length */
    int64_t imax;
    double fmin, fmax; /* floats: bounds, see MIN_EXCL/MAX_EXCL */
    unsigned flags;
    const char *choices; /* enums: "a|b|c" */
    const char *help;
} config_key_t;

#define NO_LIMIT INT64_MAX

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

static const config_key_t keys[] = {
    STRING_KEY("model", model, "cnn",
               "builtin model \"cnn\" or \"mlp\", or the path of a JSON model file"),
    ENUM_KEY("device", device, "cpu", "cpu|gpu|auto",
             "where a worker computes: cpu; gpu (an error when no GPU backend loads); auto (a GPU "
             "when one is usable, else the CPU)"),
    INT_KEY("threads", threads, "0", 0, 256, "compute threads of a worker; 0 = one per CPU"),
    STRING_KEY("data.dir", data.dir, "/usr/share/datasets/fashion-mnist",
               "directory holding the dataset files"),
    BOOL_KEY("data.shuffle", data.shuffle, "true", "reshuffle the training examples every epoch"),
    INT_KEY("data.prefetch", data.prefetch, "4", 1, 64,
            "batches decoded ahead of the training step"),
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
    ENUM_KEY("train.mode", train.mode, "async", "async|sync",
             "async: each push applies at once; sync: pushes of a step are averaged"),
    INT_KEY("train.replicas_to_aggregate", train.replicas_to_aggregate, "0", 0, NO_LIMIT,
            "sync mode: gradients averaged per step; 0 = number of workers"),
    INT_KEY("train.seed", train.seed, "42", 0, NO_LIMIT,
            "seed of the initial weights, shuffling and dropout"),
    OPT_STRING_KEY("train.warm_start_from", train.warm_start_from,
                   "export, checkpoint or model_dir whose weights start a new run (when "
                   "model_dir holds no checkpoint)"),
    STRING_KEY("train.warm_start_vars", train.warm_start_vars, ".*",
               "POSIX extended regex: the variables train.warm_start_from initialises (the rest "
               "start from the initializer)"),
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
};

#define NKEYS PS_ARRAY_LEN(keys)

/* ---- lookup and suggestions ---- */

static const config_key_t *find_key(const char *name) {
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* True when some key lives under "prefix." (a section such as "train"). */
static bool is_section(const char *prefix) {
    size_t n = strlen(prefix);
    for (size_t i = 0; i < NKEYS; i++)
        if (strncmp(keys[i].name, prefix, n) == 0 && keys[i].name[n] == '.')
            return true;
    return false;
}

#define EDIT_MAX 64

/* Levenshtein distance; names longer than EDIT_MAX count as far from all. */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > EDIT_MAX || lb > EDIT_MAX)
        return SIZE_MAX;
    size_t row[EDIT_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = PS_MIN(best, up + 1);
            best = PS_MIN(best, row[j - 1] + 1);
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const char *last_segment(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* Writes " (did you mean X?)" for a key that is a typo away from `name`, or
 * " (did you mean X or Y?)" when `name` is a key without its section. */
static void suggest(const char *name, char *out, size_t outlen) {
    const config_key_t *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < NKEYS; i++) {
        size_t d = edit_distance(name, keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = &keys[i];
        }
    }
    size_t limit = PS_MAX((size_t)2, strlen(name) / 4);
    if (best && best_d <= limit) {
        snprintf(out, outlen, " (did you mean %s?)", best->name);
        return;
    }
    const char *found[2] = {NULL, NULL};
    size_t nfound = 0;
    for (size_t i = 0; i < NKEYS && nfound < 2; i++)
        if (strcmp(last_segment(keys[i].name), last_segment(name)) == 0)
            found[nfound++] = keys[i].name;
    if (nfound == 1)
        snprintf(out, outlen, " (did you mean %s?)", found[0]);
    else if (nfound == 2)
        snprintf(out, outlen, " (did you mean %s or %s?)", found[0], found[1]);
    else
        out[0] = '\0';
}

/* Copies s into out for an error message: control characters become '?' so
 * the message stays on one line, and a long value is cut with "...". */
static const char *shown(const char *s, char *out, size_t outlen) {
    size_t n = 0, keep = outlen - 4;
    for (; s[n] && n < keep; n++)
        out[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    if (s[n]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

static int unknown_key(const char *name, char *err, size_t errlen) {
    char hint[160], buf[80];
    suggest(name, hint, sizeof hint);
    return ps_errf(err, errlen, "unknown config key \"%s\"%s", shown(name, buf, sizeof buf), hint);
}

/* ---- checked stores, shared by text and JSON ---- */

static void *field(config_t *c, const config_key_t *k) {
    return (char *)c + k->offset;
}

static const void *cfield(const config_t *c, const config_key_t *k) {
    return (const char *)c + k->offset;
}

static int store_int(config_t *c, const config_key_t *k, int64_t v, char *err, size_t errlen) {
    if (v < k->imin)
        return ps_errf(err, errlen, "%s: %" PRId64 " is below the minimum %" PRId64, k->name, v,
                       k->imin);
    if (v > k->imax)
        return ps_errf(err, errlen, "%s: %" PRId64 " is above the maximum %" PRId64, k->name, v,
                       k->imax);
    *(int64_t *)field(c, k) = v;
    return 0;
}

static int store_float(config_t *c, const config_key_t *k, double v, char *err, size_t errlen) {
    if (!isfinite(v))
        return ps_errf(err, errlen, "%s: %g is not a finite number", k->name, v);
    if ((k->flags & MIN_EXCL) && v <= k->fmin)
        return ps_errf(err, errlen, "%s: %g must be greater than %g", k->name, v, k->fmin);
    if (v < k->fmin)
        return ps_errf(err, errlen, "%s: %g is below the minimum %g", k->name, v, k->fmin);
    if ((k->flags & MAX_EXCL) && v >= k->fmax)
        return ps_errf(err, errlen, "%s: %g must be less than %g", k->name, v, k->fmax);
    if (v > k->fmax)
        return ps_errf(err, errlen, "%s: %g is above the maximum %g", k->name, v, k->fmax);
    *(double *)field(c, k) = v;
    return 0;
}

/* True when s is exactly one of the '|'-separated choices. */
static bool is_choice(const char *choices, const char *s) {
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, s, n) == 0)
            return true;
        p += len;
        if (*p == '|')
            p++;
    }
    return false;
}

/* Strings and enums. */
static int store_text(config_t *c, const config_key_t *k, const char *s, char *err, size_t errlen) {
    char buf[80];
    size_t n = strlen(s);
    if (k->type == KEY_ENUM && !is_choice(k->choices, s))
        return ps_errf(err, errlen, "%s: \"%s\" is not one of %s", k->name,
                       shown(s, buf, sizeof buf), k->choices);
    if (k->type == KEY_STRING && n < (size_t)k->imin)
        return ps_errf(err, errlen, "%s: must not be empty", k->name);
    if (n > CONFIG_STR - 1)
        return ps_errf(err, errlen, "%s: value is %zu bytes long, longer than the limit %d",
                       k->name, n, CONFIG_STR - 1);
    memcpy(field(c, k), s, n + 1);
    return 0;
}

/* ---- text ---- */

static int set_int_text(config_t *c, const config_key_t *k, const char *s, char *err,
                        size_t errlen) {
    char buf[80];
    const char *digits = s + (s[0] == '-' || s[0] == '+');
    if (!digits[0] || digits[strspn(digits, "0123456789")] != '\0')
        return ps_errf(err, errlen, "%s: \"%s\" is not an integer", k->name,
                       shown(s, buf, sizeof buf));
    int64_t v;
    if (ps_parse_i64(s, &v) != 0)
        return s[0] == '-' ? ps_errf(err, errlen, "%s: %s is below the minimum %" PRId64, k->name,
                                     shown(s, buf, sizeof buf), k->imin)
                           : ps_errf(err, errlen, "%s: %s is above the maximum %" PRId64, k->name,
                                     shown(s, buf, sizeof buf), k->imax);
    return store_int(c, k, v, err, errlen);
}

static int set_float_text(config_t *c, const config_key_t *k, const char *s, char *err,
                          size_t errlen) {
    char buf[80];
    double v;
    /* strtod also takes leading blanks, "inf", "nan" and hex; a config value takes none. */
    bool looks_numeric = s[0] != '\0' && strchr("+-.0123456789", s[0]) && !strpbrk(s, "xX");
    if (!looks_numeric || ps_parse_f64(s, &v) != 0)
        return ps_errf(err, errlen, "%s: \"%s\" is not a finite number", k->name,
                       shown(s, buf, sizeof buf));
    return store_float(c, k, v, err, errlen);
}

static int set_bool_text(config_t *c, const config_key_t *k, const char *s, char *err,
                         size_t errlen) {
    char buf[80];
    bool *b = field(c, k);
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *b = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *b = false;
    else
        return ps_errf(err, errlen, "%s: \"%s\" is not a boolean (true, false, 1 or 0)", k->name,
                       shown(s, buf, sizeof buf));
    return 0;
}

static int set_text(config_t *c, const config_key_t *k, const char *s, char *err, size_t errlen) {
    switch (k->type) {
    case KEY_INT:
        return set_int_text(c, k, s, err, errlen);
    case KEY_FLOAT:
        return set_float_text(c, k, s, err, errlen);
    case KEY_BOOL:
        return set_bool_text(c, k, s, err, errlen);
    case KEY_STRING:
    case KEY_ENUM:
        return store_text(c, k, s, err, errlen);
    }
    return ps_errf(err, errlen, "%s: key of unknown type", k->name);
}

void config_defaults(config_t *c) {
    char err[PS_ERRLEN];
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        if (set_text(c, &keys[i], keys[i].def, err, sizeof err) != 0) {
            /* Only an edit of the table can get here, and the tests check it. */
            fprintf(stderr, "fatal: bad default in the config table: %s\n", err);
            abort();
        }
    }
}

int config_set(config_t *c, const char *key, const char *value, char *err, size_t errlen) {
    const config_key_t *k = find_key(key);
    if (!k)
        return unknown_key(key, err, errlen);
    return set_text(c, k, value, err, errlen);
}

/* Shortest "%.Ng" text that reads back as the same double. */
static void format_float(double v, char *buf, size_t buflen) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, buflen, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static int format_value(const config_t *c, const config_key_t *k, char *buf, size_t buflen) {
    char num[32];
    int n = 0;
    switch (k->type) {
    case KEY_INT:
        n = snprintf(buf, buflen, "%" PRId64, *(const int64_t *)cfield(c, k));
        break;
    case KEY_FLOAT:
        format_float(*(const double *)cfield(c, k), num, sizeof num);
        n = snprintf(buf, buflen, "%s", num);
        break;
    case KEY_BOOL:
        n = snprintf(buf, buflen, "%s", *(const bool *)cfield(c, k) ? "true" : "false");
        break;
    case KEY_STRING:
    case KEY_ENUM:
        n = snprintf(buf, buflen, "%s", (const char *)cfield(c, k));
        break;
    }
    return n >= 0 && (size_t)n < buflen ? 0 : -1;
}

int config_get(const config_t *c, const char *key, char *buf, size_t buflen) {
    const config_key_t *k = find_key(key);
    if (!k || buflen == 0)
        return -1;
    return format_value(c, k, buf, buflen);
}

/* ---- JSON files ---- */

static const char *type_wanted(const config_key_t *k) {
    switch (k->type) {
    case KEY_INT:
        return "an integer";
    case KEY_FLOAT:
        return "a number";
    case KEY_BOOL:
        return "true or false";
    case KEY_STRING:
        return "a string";
    case KEY_ENUM:
        return k->choices;
    }
    return "?";
}

static int set_json(config_t *c, const config_key_t *k, json_object *v, char *err, size_t errlen) {
    json_type t = json_object_get_type(v);
    switch (k->type) {
    case KEY_INT:
        /* json-c keeps integers above INT64_MAX as uint64 and clamps get_int64. */
        if (t == json_type_int && json_object_get_int64(v) == INT64_MAX &&
            json_object_get_uint64(v) > (uint64_t)INT64_MAX)
            return ps_errf(err, errlen, "%s: %" PRIu64 " is above the maximum %" PRId64, k->name,
                           json_object_get_uint64(v), k->imax);
        if (t == json_type_int)
            return store_int(c, k, json_object_get_int64(v), err, errlen);
        break;
    case KEY_FLOAT:
        if (t == json_type_int || t == json_type_double)
            return store_float(c, k, json_object_get_double(v), err, errlen);
        break;
    case KEY_BOOL:
        if (t == json_type_boolean) {
            *(bool *)field(c, k) = json_object_get_boolean(v);
            return 0;
        }
        break;
    case KEY_STRING:
    case KEY_ENUM:
        if (t == json_type_string)
            return store_text(c, k, json_object_get_string(v), err, errlen);
        break;
    }
    char buf[80];
    const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    return ps_errf(err, errlen, "%s: expected %s%s, got %s", k->name,
                   k->type == KEY_ENUM ? "one of " : "", type_wanted(k),
                   shown(text, buf, sizeof buf));
}

/* Applies the members of obj, whose keys are below `prefix` ("" at the top):
 * an object under a section name is walked, anything else must be a key. */
static int apply_object(config_t *c, json_object *obj, const char *prefix, char *err,
                        size_t errlen) {
    struct json_object_iterator it = json_object_iter_begin(obj);
    struct json_object_iterator end = json_object_iter_end(obj);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *member = json_object_iter_peek_name(&it);
        json_object *v = json_object_iter_peek_value(&it);
        char name[256];
        int n = snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", member);
        if (n < 0 || (size_t)n >= sizeof name)
            return unknown_key(member, err, errlen);
        const config_key_t *k = find_key(name);
        int rc;
        if (!k && json_object_get_type(v) == json_type_object && is_section(name))
            rc = apply_object(c, v, name, err, errlen);
        else if (!k)
            rc = unknown_key(name, err, errlen);
        else
            rc = set_json(c, k, v, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Line and column (from 1) of byte offset `off` of text. */
static void position(const char *text, size_t off, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Parses text as exactly one JSON object (blanks around it allowed). */
static json_object *parse_json(const char *path, const char *text, size_t len, char *err,
                               size_t errlen) {
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        ps_errf(err, errlen, "%s: cannot allocate a JSON parser", path);
        return NULL;
    }
    /* The terminating NUL goes in too: it ends a bare top-level literal. */
    json_object *root = json_tokener_parse_ex(tok, text, (int)len + 1);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    size_t line, col;
    position(text, end, &line, &col);
    if (jerr == json_tokener_continue) {
        ps_errf(err, errlen, "%s: not JSON: unexpected end of data at line %zu, column %zu", path,
                line, col);
        return NULL;
    }
    if (jerr != json_tokener_success) {
        ps_errf(err, errlen, "%s: not JSON: %s at line %zu, column %zu", path,
                json_tokener_error_desc(jerr), line, col);
        json_object_put(root);
        return NULL;
    }
    if (text[end + strspn(text + end, " \t\r\n")] != '\0') {
        position(text, end + strspn(text + end, " \t\r\n"), &line, &col);
        ps_errf(err, errlen, "%s: not JSON: text after the top-level value at line %zu, column %zu",
                path, line, col);
        json_object_put(root);
        return NULL;
    }
    if (!root || json_object_get_type(root) != json_type_object) {
        ps_errf(err, errlen, "%s: expected a JSON object at the top level", path);
        json_object_put(root);
        return NULL;
    }
    return root;
}

/* Loads into c directly; callers pass a scratch copy. */
static int load_file(config_t *c, const char *path, char *err, size_t errlen) {
    char *text = NULL;
    size_t len = 0;
    if (ps_read_file(path, &text, &len, err, errlen) != 0)
        return -1;
    if (len >= INT32_MAX || strlen(text) != len) {
        free(text);
        return ps_errf(err, errlen, "%s: not JSON: the file is too large or holds NUL bytes", path);
    }
    json_object *root = parse_json(path, text, len, err, errlen);
    free(text);
    if (!root)
        return -1;
    char inner[PS_ERRLEN];
    int rc = apply_object(c, root, "", inner, sizeof inner);
    json_object_put(root);
    if (rc != 0)
        return ps_errf(err, errlen, "%s: %s", path, inner);
    return 0;
}

int config_load_file(config_t *c, const char *path, char *err, size_t errlen) {
    config_t tmp = *c;
    if (load_file(&tmp, path, err, errlen) != 0)
        return -1;
    *c = tmp;
    return 0;
}

/* ---- command line ---- */

/* What one argument is: not ours, or a --config / --set with its value. */
typedef enum { ARG_OTHER, ARG_CONFIG, ARG_SET } arg_kind_t;

/* Classifies argv[*i]; for a flag whose value is the next argument, advances
 * *i past it. Fails when that argument is missing. */
static int classify(int argc, char **argv, int *i, arg_kind_t *kind, const char **value, char *err,
                    size_t errlen) {
    static const struct {
        const char *flag;
        arg_kind_t kind;
    } flags[] = {{"--config", ARG_CONFIG}, {"--set", ARG_SET}};
    const char *a = argv[*i];
    *kind = ARG_OTHER;
    for (size_t f = 0; f < PS_ARRAY_LEN(flags); f++) {
        size_t n = strlen(flags[f].flag);
        if (strncmp(a, flags[f].flag, n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        *kind = flags[f].kind;
        if (a[n] == '=') {
            *value = a + n + 1;
            return 0;
        }
        if (*i + 1 >= argc)
            return ps_errf(err, errlen, "%s needs an argument (%s)", flags[f].flag,
                           flags[f].kind == ARG_SET ? "key=value" : "a JSON file");
        *value = argv[++*i];
        return 0;
    }
    return 0;
}

/* Applies one "key=value". */
static int apply_set(config_t *c, const char *kv, char *err, size_t errlen) {
    char buf[80];
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return ps_errf(err, errlen, "--set \"%s\": expected key=value", shown(kv, buf, sizeof buf));
    char key[256];
    size_t n = (size_t)(eq - kv);
    if (n >= sizeof key)
        return unknown_key(kv, err, errlen);
    memcpy(key, kv, n);
    key[n] = '\0';
    return config_set(c, key, eq + 1, err, errlen);
}

/* Applies every file of the marked arguments, then every set, into c. */
static int apply_args(config_t *c, const arg_kind_t *kinds, const char **values, int argc,
                      char *err, size_t errlen) {
    for (int i = 0; i < argc; i++)
        if (kinds[i] == ARG_CONFIG && load_file(c, values[i], err, errlen) != 0)
            return -1;
    for (int i = 0; i < argc; i++)
        if (kinds[i] == ARG_SET && apply_set(c, values[i], err, errlen) != 0)
            return -1;
    return 0;
}

/* Arguments after a bare "--" are left alone, as is the "--" itself. On an
 * error neither c nor argv changes. */
int config_parse_args(config_t *c, int *argc, char **argv, char *err, size_t errlen) {
    int n = *argc;
    arg_kind_t *kinds = xcalloc((size_t)PS_MAX(n, 1), sizeof *kinds);
    const char **values = xcalloc((size_t)PS_MAX(n, 1), sizeof *values);
    bool *consumed = xcalloc((size_t)PS_MAX(n, 1), sizeof *consumed);
    config_t tmp = *c;
    int rc = 0;
    for (int i = 1; i < n && strcmp(argv[i], "--") != 0; i++) {
        int first = i;
        arg_kind_t kind;
        const char *value = NULL;
        if ((rc = classify(n, argv, &i, &kind, &value, err, errlen)) != 0)
            goto done;
        kinds[first] = kind;
        values[first] = value;
        for (int j = first; j <= i && kind != ARG_OTHER; j++)
            consumed[j] = true;
    }
    if ((rc = apply_args(&tmp, kinds, values, n, err, errlen)) != 0)
        goto done;
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (!consumed[i])
            argv[kept++] = argv[i];
    argv[kept] = NULL;
    *argc = kept;
    *c = tmp;
done:
    free(consumed);
    free(values);
    free(kinds);
    return rc;
}

/* ---- help and JSON output ---- */

static void range_text(const config_key_t *k, char *buf, size_t buflen) {
    char lo[32], hi[32];
    buf[0] = '\0';
    switch (k->type) {
    case KEY_INT:
        if (k->imax == NO_LIMIT)
            snprintf(buf, buflen, ">= %" PRId64, k->imin);
        else
            snprintf(buf, buflen, "%" PRId64 "..%" PRId64, k->imin, k->imax);
        break;
    case KEY_FLOAT:
        format_float(k->fmin, lo, sizeof lo);
        format_float(k->fmax, hi, sizeof hi);
        if (isinf(k->fmax))
            snprintf(buf, buflen, "%s %s", k->flags & MIN_EXCL ? ">" : ">=", lo);
        else
            snprintf(buf, buflen, "%s%s, %s%s", k->flags & MIN_EXCL ? "(" : "[", lo, hi,
                     k->flags & MAX_EXCL ? ")" : "]");
        break;
    case KEY_BOOL:
        snprintf(buf, buflen, "true|false");
        break;
    case KEY_ENUM:
        snprintf(buf, buflen, "%s", k->choices);
        break;
    case KEY_STRING:
        break;
    }
}

static const char *type_name(key_type_t t) {
    static const char *const names[] = {"int", "float", "bool", "string", "enum"};
    return names[t];
}

/* A table of every key, without an introduction (each program's usage has
 * its own). Defaults are printed as config_get shows them, so that help,
 * config_get and config_to_json agree on the text of every value. */
void config_print_help(FILE *out) {
    config_t defaults;
    config_defaults(&defaults);
    char def[NKEYS][CONFIG_STR];
    int wname = 0, wdef = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        format_value(&defaults, &keys[i], def[i], sizeof def[i]);
        wname = PS_MAX(wname, (int)strlen(keys[i].name));
        wdef = PS_MAX(wdef, (int)strlen(def[i]));
    }
    fprintf(out, "  %-*s  %-6s  %-*s  %s\n", wname, "KEY", "TYPE", wdef, "DEFAULT", "RANGE");
    for (size_t i = 0; i < NKEYS; i++) {
        char range[128];
        range_text(&keys[i], range, sizeof range);
        bool ranged = range[0] != '\0'; /* no padding at the end of a row without a range */
        fprintf(out, "  %-*s  %-6s  %-*s%s%s\n", wname, keys[i].name, type_name(keys[i].type),
                ranged ? wdef : 0, def[i], ranged ? "  " : "", range);
        fprintf(out, "      %s\n", keys[i].help);
    }
}

static json_object *json_value(const config_t *c, const config_key_t *k) {
    char num[40];
    switch (k->type) {
    case KEY_INT:
        return json_object_new_int64(*(const int64_t *)cfield(c, k));
    case KEY_FLOAT:
        /* Shortest text that reads back exactly, and always looks like a float. */
        format_float(*(const double *)cfield(c, k), num, sizeof num);
        if (!strpbrk(num, ".e"))
            strcat(num, ".0");
        return json_object_new_double_s(*(const double *)cfield(c, k), num);
    case KEY_BOOL:
        return json_object_new_boolean(*(const bool *)cfield(c, k));
    case KEY_STRING:
    case KEY_ENUM:
        return json_object_new_string(cfield(c, k));
    }
    return NULL;
}

char *config_to_json(const config_t *c) {
    json_object *obj = json_object_new_object();
    for (size_t i = 0; i < NKEYS; i++)
        json_object_object_add(obj, keys[i].name, json_value(c, &keys[i]));
    char *s = xstrdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(obj);
    return s;
}

size_t config_replicas(const config_t *c, size_t nworkers) {
    if (strcmp(c->train.mode, "sync") != 0)
        return 1;
    return c->train.replicas_to_aggregate ? (size_t)c->train.replicas_to_aggregate : nworkers;
}

size_t config_threads(const config_t *c) {
    return c->threads ? (size_t)c->threads : (size_t)ps_cpu_count();
}

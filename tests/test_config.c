/* Tests of the configuration table: defaults, parsing of every type with its
 * error messages, JSON files, command-line arguments, help and JSON output. */
#include "test.h"

#include <json-c/json.h>
#include <stdlib.h>

#include "common/daemon/config.h"
#include "common/base/util.h"

/* Writes text to a file in the test's directory and returns its path. */
static const char *write_tmp(const char *name, const char *text) {
    static char path[4][512];
    static int next;
    char *p = path[next++ % 4];
    snprintf(p, sizeof path[0], "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (!f)
        return NULL;
    fputs(text, f);
    fclose(f);
    return p;
}

/* config_set must fail with a message containing want, naming the key. */
#define CHECK_SET_FAILS(c, key, value, want)                                                       \
    do {                                                                                           \
        char err_[PS_ERRLEN] = "";                                                                 \
        CHECK_INT_EQ(config_set((c), (key), (value), err_, sizeof err_), -1);                      \
        CHECK_STR_CONTAINS(err_, (key));                                                           \
        CHECK_STR_CONTAINS(err_, (want));                                                          \
        CHECK(strchr(err_, '\n') == NULL);                                                         \
    } while (0)

#define CHECK_SET_OK(c, key, value)                                                                \
    do {                                                                                           \
        char err_[PS_ERRLEN] = "";                                                                 \
        if (config_set((c), (key), (value), err_, sizeof err_) != 0) {                             \
            test_fail(__FILE__, __LINE__, "config_set(%s, %s): %s", (key), (value), err_);         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

void test_config_defaults(void) {
    config_t c;
    memset(&c, 0xAB, sizeof c);
    config_defaults(&c);
    CHECK(strcmp(c.model, "cnn") == 0);
    CHECK(strcmp(c.device, "cpu") == 0);
    CHECK_INT_EQ(c.threads, 0);
    CHECK(strcmp(c.data.dir, "/usr/share/datasets/fashion-mnist") == 0);
    CHECK(c.data.shuffle);
    CHECK_INT_EQ(c.data.prefetch, 4);
    CHECK_INT_EQ(c.train.batch_size, 64);
    CHECK_INT_EQ(c.train.epochs, 3);
    CHECK_INT_EQ(c.train.max_steps, 0);
    CHECK(strcmp(c.train.optimizer, "sgd") == 0);
    CHECK(c.train.learning_rate == 0.01);
    CHECK(c.train.momentum == 0.9);
    CHECK(!c.train.nesterov);
    CHECK(c.train.decay == 0.0);
    CHECK(c.train.beta1 == 0.9);
    CHECK(c.train.beta2 == 0.999);
    CHECK(c.train.epsilon == 1e-7);
    CHECK(c.train.rho == 0.9);
    CHECK(c.train.initial_accumulator == 0.1);
    CHECK(strcmp(c.train.mode, "async") == 0);
    CHECK_INT_EQ(c.train.replicas_to_aggregate, 0);
    CHECK_INT_EQ(c.train.seed, 42);
    CHECK(strcmp(c.checkpoint.model_dir, "runs/default") == 0);
    CHECK_INT_EQ(c.eval.batch_size, 64);
    CHECK(c.eval.every_epoch);
    CHECK(strcmp(c.log.level, "info") == 0);
    CHECK(c.log.every_secs == 5.0);
}

void test_config_set_int(void) {
    config_t c;
    config_defaults(&c);
    CHECK_SET_OK(&c, "train.batch_size", "32");
    CHECK_INT_EQ(c.train.batch_size, 32);
    CHECK_SET_OK(&c, "train.batch_size", "65536");
    CHECK_INT_EQ(c.train.batch_size, 65536);
    CHECK_SET_OK(&c, "train.max_steps", "9223372036854775807");
    CHECK_INT_EQ(c.train.max_steps, INT64_MAX);
    CHECK_SET_FAILS(&c, "train.batch_size", "abc", "\"abc\" is not an integer");
    CHECK_SET_FAILS(&c, "train.batch_size", "12x", "\"12x\" is not an integer");
    CHECK_SET_FAILS(&c, "train.batch_size", "1.5", "is not an integer");
    CHECK_SET_FAILS(&c, "train.batch_size", "", "is not an integer");
    CHECK_SET_FAILS(&c, "train.batch_size", " 8", "is not an integer");
    CHECK_SET_FAILS(&c, "train.batch_size", "0x10", "is not an integer");
    CHECK_SET_FAILS(&c, "train.batch_size", "0", "0 is below the minimum 1");
    CHECK_SET_FAILS(&c, "train.batch_size", "65537", "65537 is above the maximum 65536");
    CHECK_SET_FAILS(&c, "threads", "257", "above the maximum 256");
    CHECK_SET_FAILS(&c, "train.seed", "-1", "-1 is below the minimum 0");
    CHECK_SET_FAILS(&c, "train.max_steps", "99999999999999999999", "above the maximum");
    CHECK_SET_FAILS(&c, "train.epochs", "-99999999999999999999", "below the minimum 0");
    /* A refused value leaves the old one. */
    CHECK_INT_EQ(c.train.batch_size, 65536);
}

void test_config_set_float(void) {
    config_t c;
    config_defaults(&c);
    CHECK_SET_OK(&c, "train.learning_rate", "0.5");
    CHECK(c.train.learning_rate == 0.5);
    CHECK_SET_OK(&c, "train.learning_rate", "1e-3");
    CHECK(c.train.learning_rate == 1e-3);
    CHECK_SET_OK(&c, "train.decay", "2");
    CHECK(c.train.decay == 2.0);
    CHECK_SET_OK(&c, "train.momentum", "0");
    CHECK(c.train.momentum == 0.0);
    CHECK_SET_FAILS(&c, "train.learning_rate", "fast", "\"fast\" is not a finite number");
    CHECK_SET_FAILS(&c, "train.learning_rate", "0.1x", "is not a finite number");
    CHECK_SET_FAILS(&c, "train.learning_rate", "inf", "is not a finite number");
    CHECK_SET_FAILS(&c, "train.learning_rate", "nan", "is not a finite number");
    CHECK_SET_FAILS(&c, "train.learning_rate", "1e999", "is not a finite number");
    CHECK_SET_FAILS(&c, "train.learning_rate", "", "is not a finite number");
    CHECK_SET_FAILS(&c, "train.learning_rate", "0", "0 must be greater than 0");
    CHECK_SET_FAILS(&c, "train.learning_rate", "-0.1", "must be greater than 0");
    CHECK_SET_FAILS(&c, "train.momentum", "1", "1 must be less than 1");
    CHECK_SET_FAILS(&c, "train.momentum", "-0.5", "-0.5 is below the minimum 0");
    CHECK_SET_FAILS(&c, "train.decay", "-1", "-1 is below the minimum 0");
    CHECK_SET_FAILS(&c, "train.epsilon", "0", "must be greater than 0");
    CHECK_SET_FAILS(&c, "log.every_secs", "0", "must be greater than 0");
    CHECK(c.train.learning_rate == 1e-3);
    CHECK(c.train.momentum == 0.0);
}

void test_config_set_bool(void) {
    config_t c;
    config_defaults(&c);
    CHECK_SET_OK(&c, "train.nesterov", "true");
    CHECK(c.train.nesterov);
    CHECK_SET_OK(&c, "train.nesterov", "0");
    CHECK(!c.train.nesterov);
    CHECK_SET_OK(&c, "train.nesterov", "1");
    CHECK(c.train.nesterov);
    CHECK_SET_OK(&c, "data.shuffle", "false");
    CHECK(!c.data.shuffle);
    CHECK_SET_FAILS(&c, "data.shuffle", "yes", "\"yes\" is not a boolean");
    CHECK_SET_FAILS(&c, "data.shuffle", "TRUE", "is not a boolean");
    CHECK_SET_FAILS(&c, "data.shuffle", "", "is not a boolean");
    CHECK(!c.data.shuffle);
}

void test_config_set_enum(void) {
    config_t c;
    config_defaults(&c);
    CHECK_SET_OK(&c, "train.optimizer", "adam");
    CHECK(strcmp(c.train.optimizer, "adam") == 0);
    CHECK_SET_OK(&c, "train.mode", "sync");
    CHECK(strcmp(c.train.mode, "sync") == 0);
    CHECK_SET_OK(&c, "device", "auto");
    CHECK_SET_OK(&c, "log.level", "debug");
    char err[PS_ERRLEN];
    CHECK_INT_EQ(config_set(&c, "train.optimizer", "adamw", err, sizeof err), -1);
    CHECK(strcmp(err, "train.optimizer: \"adamw\" is not one of sgd|adam|rmsprop|adagrad") == 0);
    /* Neither a prefix, a case change nor a blank is a choice. */
    CHECK_SET_FAILS(&c, "train.optimizer", "ada", "is not one of");
    CHECK_SET_FAILS(&c, "train.optimizer", "SGD", "is not one of");
    CHECK_SET_FAILS(&c, "train.optimizer", "sgd ", "is not one of");
    CHECK_SET_FAILS(&c, "train.optimizer", "", "is not one of");
    CHECK_SET_FAILS(&c, "device", "tpu", "is not one of cpu|gpu|auto");
    CHECK_SET_FAILS(&c, "train.mode", "semi", "is not one of async|sync");
    CHECK(strcmp(c.train.optimizer, "adam") == 0);
}

void test_config_set_string(void) {
    config_t c;
    config_defaults(&c);
    CHECK_SET_OK(&c, "model", "mlp");
    CHECK(strcmp(c.model, "mlp") == 0);
    CHECK_SET_OK(&c, "checkpoint.model_dir", "/tmp/run 1");
    CHECK(strcmp(c.checkpoint.model_dir, "/tmp/run 1") == 0);
    char longest[CONFIG_STR], too_long[CONFIG_STR + 1];
    memset(longest, 'a', sizeof longest - 1);
    longest[sizeof longest - 1] = '\0';
    memset(too_long, 'b', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = '\0';
    CHECK_SET_OK(&c, "data.dir", longest);
    CHECK(strcmp(c.data.dir, longest) == 0);
    CHECK_SET_FAILS(&c, "data.dir", too_long, "longer than the limit 255");
    CHECK_SET_FAILS(&c, "model", "", "must not be empty");
    CHECK(strcmp(c.data.dir, longest) == 0);
    CHECK(strcmp(c.model, "mlp") == 0);
}

void test_config_unknown_key(void) {
    config_t c;
    config_defaults(&c);
    char err[PS_ERRLEN];
    CHECK_INT_EQ(config_set(&c, "train.batchsize", "1", err, sizeof err), -1);
    CHECK(strcmp(err, "unknown config key \"train.batchsize\" (did you mean train.batch_size?)") ==
          0);
    CHECK_INT_EQ(config_set(&c, "trian.optimizer", "adam", err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "did you mean train.optimizer?");
    CHECK_INT_EQ(config_set(&c, "batch_size", "1", err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "did you mean train.batch_size or eval.batch_size?");
    CHECK_INT_EQ(config_set(&c, "completely.different", "1", err, sizeof err), -1);
    CHECK(strcmp(err, "unknown config key \"completely.different\"") == 0);
    CHECK_INT_EQ(config_set(&c, "train", "1", err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "unknown config key \"train\"");
    /* A key with a newline in it still makes a one-line message. */
    CHECK_INT_EQ(config_set(&c, "a\nb", "1", err, sizeof err), -1);
    CHECK(strchr(err, '\n') == NULL);
}

void test_config_get(void) {
    config_t c;
    config_defaults(&c);
    char buf[CONFIG_STR];
    CHECK_INT_EQ(config_get(&c, "train.batch_size", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "64") == 0);
    CHECK_INT_EQ(config_get(&c, "train.learning_rate", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "0.01") == 0);
    CHECK_INT_EQ(config_get(&c, "train.epsilon", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "1e-07") == 0);
    CHECK_INT_EQ(config_get(&c, "data.shuffle", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "true") == 0);
    CHECK_INT_EQ(config_get(&c, "train.optimizer", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "sgd") == 0);
    CHECK_INT_EQ(config_get(&c, "data.dir", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "/usr/share/datasets/fashion-mnist") == 0);
    CHECK_INT_EQ(config_get(&c, "train.batchsize", buf, sizeof buf), -1);
    CHECK_INT_EQ(config_get(&c, "data.dir", buf, 8), -1);
    CHECK_SET_OK(&c, "train.learning_rate", "0.1");
    CHECK_INT_EQ(config_get(&c, "train.learning_rate", buf, sizeof buf), 0);
    CHECK(strcmp(buf, "0.1") == 0);
}

/* Every key's text from config_get goes back through config_set unchanged:
 * the defaults and the text forms agree for each row of the table. */
void test_config_get_set_roundtrip(void) {
    config_t c, d;
    config_defaults(&c);
    config_defaults(&d);
    CHECK_SET_OK(&c, "train.learning_rate", "0.123456789012345678");
    CHECK_SET_OK(&c, "train.decay", "3.3333333333333335e-05");
    char *json = config_to_json(&c);
    json_object *obj = json_tokener_parse(json);
    free(json);
    CHECK(obj != NULL);
    size_t nkeys = 0;
    json_object_object_foreach(obj, key, val) {
        (void)val;
        char text[CONFIG_STR], again[CONFIG_STR], err[PS_ERRLEN];
        CHECK_INT_EQ(config_get(&c, key, text, sizeof text), 0);
        if (config_set(&d, key, text, err, sizeof err) != 0) {
            test_fail(__FILE__, __LINE__, "%s=%s: %s", key, text, err);
            break;
        }
        CHECK_INT_EQ(config_get(&d, key, again, sizeof again), 0);
        CHECK(strcmp(text, again) == 0);
        nkeys++;
    }
    json_object_put(obj);
    CHECK_INT_EQ(nkeys, 49);
    CHECK(d.train.learning_rate == c.train.learning_rate);
    CHECK(d.train.decay == c.train.decay);
}

void test_config_file_nested(void) {
    const char *path = write_tmp("nested.json", "{\"train\": {\"batch_size\": 32, \"optimizer\": "
                                                "\"adam\", \"learning_rate\": 0.002},\n"
                                                " \"data\": {\"shuffle\": false}, \"model\": "
                                                "\"mlp\"}\n");
    CHECK(path != NULL);
    config_t c, want;
    config_defaults(&c);
    config_defaults(&want);
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(config_load_file(&c, path, err, sizeof err), 0);
    CHECK_INT_EQ(c.train.batch_size, 32);
    CHECK(strcmp(c.train.optimizer, "adam") == 0);
    CHECK(c.train.learning_rate == 0.002);
    CHECK(!c.data.shuffle);
    CHECK(strcmp(c.model, "mlp") == 0);
    /* Everything the file does not name keeps its default. */
    want.train.batch_size = 32;
    strcpy(want.train.optimizer, "adam");
    want.train.learning_rate = 0.002;
    want.data.shuffle = false;
    strcpy(want.model, "mlp");
    CHECK(memcmp(&c, &want, sizeof c) == 0);
}

void test_config_file_dotted(void) {
    const char *path =
        write_tmp("dotted.json", "{\"train.epochs\": 7, \"eval.every_epoch\": false, "
                                 "\"train\": {\"momentum\": 0}, \"log.level\": "
                                 "\"warn\", \"train.decay\": 1}");
    CHECK(path != NULL);
    config_t c, want;
    config_defaults(&c);
    config_defaults(&want);
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(config_load_file(&c, path, err, sizeof err), 0);
    want.train.epochs = 7;
    want.eval.every_epoch = false;
    want.train.momentum = 0.0;
    strcpy(want.log.level, "warn");
    want.train.decay = 1.0;
    CHECK(memcmp(&c, &want, sizeof c) == 0);
    /* An empty object changes nothing. */
    path = write_tmp("empty.json", "  {}  \n");
    CHECK_INT_EQ(config_load_file(&c, path, err, sizeof err), 0);
    CHECK(memcmp(&c, &want, sizeof c) == 0);
}

/* Loads text as a file and expects an error containing each of want[]. */
static int load_fails(const char *text, const char *want1, const char *want2, char *err,
                      size_t errlen) {
    const char *path = write_tmp("bad.json", text);
    config_t c, before;
    config_defaults(&c);
    before = c;
    if (!path || config_load_file(&c, path, err, errlen) != -1)
        return 0;
    return memcmp(&c, &before, sizeof c) == 0 && strstr(err, path) && strstr(err, want1) &&
           (!want2 || strstr(err, want2)) && !strchr(err, '\n');
}

#define CHECK_LOAD_FAILS(text, want1, want2)                                                       \
    do {                                                                                           \
        char err_[PS_ERRLEN] = "";                                                                 \
        if (!load_fails((text), (want1), (want2), err_, sizeof err_)) {                            \
            test_fail(__FILE__, __LINE__, "loading %s: wanted an error with \"%s\", got \"%s\"",   \
                      (text), (want1), err_);                                                      \
            return;                                                                                \
        }                                                                                          \
    } while (0)

void test_config_file_type_mismatch(void) {
    CHECK_LOAD_FAILS("{\"train\": {\"batch_size\": \"32\"}}", "train.batch_size",
                     "expected an integer");
    CHECK_LOAD_FAILS("{\"train.batch_size\": 32.5}", "train.batch_size", "expected an integer");
    CHECK_LOAD_FAILS("{\"train.batch_size\": 0}", "train.batch_size", "below the minimum 1");
    CHECK_LOAD_FAILS("{\"train.max_steps\": 18446744073709551615}", "train.max_steps",
                     "above the maximum");
    CHECK_LOAD_FAILS("{\"train.learning_rate\": \"0.1\"}", "train.learning_rate",
                     "expected a number");
    CHECK_LOAD_FAILS("{\"train.momentum\": 1}", "train.momentum", "must be less than 1");
    CHECK_LOAD_FAILS("{\"data.shuffle\": 1}", "data.shuffle", "expected true or false");
    CHECK_LOAD_FAILS("{\"model\": 5}", "model", "expected a string");
    CHECK_LOAD_FAILS("{\"model\": null}", "model", "expected a string");
    CHECK_LOAD_FAILS("{\"train.optimizer\": \"adamw\"}", "train.optimizer",
                     "is not one of sgd|adam|rmsprop|adagrad");
    CHECK_LOAD_FAILS("{\"train.optimizer\": [\"adam\"]}", "train.optimizer",
                     "expected one of sgd|adam|rmsprop|adagrad, got [\"adam\"]");
    CHECK_LOAD_FAILS("{\"train\": 5}", "unknown config key \"train\"", NULL);
    CHECK_LOAD_FAILS("{\"train\": {\"batch_size\": {\"value\": 1}}}", "train.batch_size",
                     "expected an integer");
    /* A float key takes an integer. */
    const char *path = write_tmp("int_for_float.json", "{\"train\": {\"learning_rate\": 1}}");
    config_t c;
    config_defaults(&c);
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(config_load_file(&c, path, err, sizeof err), 0);
    CHECK(c.train.learning_rate == 1.0);
}

void test_config_file_not_json(void) {
    CHECK_LOAD_FAILS("train.batch_size = 32\n", "not JSON", "line 1");
    CHECK_LOAD_FAILS("{\"train\": {\"batch_size\": 32,,}}", "not JSON", "line 1, column");
    CHECK_LOAD_FAILS("{\n  \"train\": {\n    \"batch_size\": 32\n", "not JSON", "end of data");
    CHECK_LOAD_FAILS("{\n  \"a\": 1,\n  \"b\": ]\n}", "not JSON", "line 3");
    CHECK_LOAD_FAILS("{} {}", "not JSON", "text after");
    CHECK_LOAD_FAILS("", "not JSON", NULL);
    CHECK_LOAD_FAILS("[1, 2]", "expected a JSON object", NULL);
    CHECK_LOAD_FAILS("null", "expected a JSON object", NULL);
    char err[PS_ERRLEN] = "";
    config_t c;
    config_defaults(&c);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no-such-file.json", test_tmpdir());
    CHECK_INT_EQ(config_load_file(&c, missing, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, missing);
}

void test_config_file_unknown_key(void) {
    CHECK_LOAD_FAILS("{\"train\": {\"batchsize\": 32}}",
                     "unknown config key \"train.batchsize\" (did you mean train.batch_size?)",
                     NULL);
    CHECK_LOAD_FAILS("{\"train.batch_size\": 32, \"trainer\": {\"x\": 1}}",
                     "unknown config key \"trainer\"", NULL);
    CHECK_LOAD_FAILS("{\"nonsense\": {}}", "unknown config key \"nonsense\"", NULL);
}

/* Runs config_parse_args on a copy of args (NULL-terminated). */
static int parse(config_t *c, const char **args, int *argc, char **argv, char *err, size_t errlen) {
    int n = 0;
    for (; args[n]; n++)
        argv[n] = (char *)args[n];
    argv[n] = NULL;
    *argc = n;
    return config_parse_args(c, argc, argv, err, errlen);
}

void test_config_args_order(void) {
    const char *file = write_tmp("args.json", "{\"train\": {\"batch_size\": 32, \"epochs\": 9}}");
    char fileeq[600];
    snprintf(fileeq, sizeof fileeq, "--config=%s", file);
    /* The --set comes first on the command line, the file still applies first. */
    const char *args[] = {"prog",
                          "--set",
                          "train.batch_size=16",
                          "-v",
                          fileeq,
                          "input.txt",
                          "--set=train.batch_size=8",
                          "--set",
                          "model=mlp",
                          "--x",
                          NULL};
    char *argv[16];
    int argc;
    config_t c;
    config_defaults(&c);
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(parse(&c, args, &argc, argv, err, sizeof err), 0);
    CHECK_INT_EQ(c.train.batch_size, 8); /* the last --set wins */
    CHECK_INT_EQ(c.train.epochs, 9);
    CHECK(strcmp(c.model, "mlp") == 0);
    CHECK_INT_EQ(argc, 4);
    CHECK(strcmp(argv[0], "prog") == 0);
    CHECK(strcmp(argv[1], "-v") == 0);
    CHECK(strcmp(argv[2], "input.txt") == 0);
    CHECK(strcmp(argv[3], "--x") == 0);
    CHECK(argv[4] == NULL);

    /* Two files apply in order; --config FILE as two arguments; values may hold '='. */
    const char *file2 = write_tmp("args2.json", "{\"train.epochs\": 4, \"model\": \"cnn\"}");
    const char *args2[] = {"prog", "--set", "data.dir=/a=b", "--config", file2, "--config",
                           file,   "--",    "--set",         "model=x",  NULL};
    config_defaults(&c);
    CHECK_INT_EQ(parse(&c, args2, &argc, argv, err, sizeof err), 0);
    CHECK_INT_EQ(c.train.epochs, 9);
    CHECK_INT_EQ(c.train.batch_size, 32);
    CHECK(strcmp(c.data.dir, "/a=b") == 0);
    CHECK(strcmp(c.model, "cnn") == 0);
    /* Nothing after "--" is consumed. */
    CHECK_INT_EQ(argc, 4);
    CHECK(strcmp(argv[1], "--") == 0);
    CHECK(strcmp(argv[2], "--set") == 0);
    CHECK(strcmp(argv[3], "model=x") == 0);
    CHECK(argv[4] == NULL);

    /* No arguments of ours: nothing changes. */
    const char *args3[] = {"prog", "--settings", "--configure", NULL};
    CHECK_INT_EQ(parse(&c, args3, &argc, argv, err, sizeof err), 0);
    CHECK_INT_EQ(argc, 3);
    CHECK(argv[3] == NULL);
}

/* Expects config_parse_args to fail with want in the message, changing
 * neither the config nor argv. */
static int args_fail(const char **args, const char *want, char *err, size_t errlen) {
    char *argv[16];
    int argc;
    config_t c, before;
    config_defaults(&c);
    before = c;
    if (parse(&c, args, &argc, argv, err, errlen) != -1)
        return 0;
    int n = 0;
    for (; args[n]; n++)
        if (argv[n] != args[n])
            return 0;
    return argc == n && argv[n] == NULL && memcmp(&c, &before, sizeof c) == 0 &&
           strstr(err, want) && !strchr(err, '\n');
}

#define CHECK_ARGS_FAIL(want, ...)                                                                 \
    do {                                                                                           \
        const char *args_[] = {"prog", __VA_ARGS__, NULL};                                         \
        char err_[PS_ERRLEN] = "";                                                                 \
        if (!args_fail(args_, (want), err_, sizeof err_)) {                                        \
            test_fail(__FILE__, __LINE__, "wanted an error with \"%s\", got \"%s\"", (want),       \
                      err_);                                                                       \
            return;                                                                                \
        }                                                                                          \
    } while (0)

void test_config_args_errors(void) {
    CHECK_ARGS_FAIL("--set \"train.batch_size\": expected key=value", "--set", "train.batch_size");
    CHECK_ARGS_FAIL("expected key=value", "--set=model");
    CHECK_ARGS_FAIL("expected key=value", "--set", "=5");
    CHECK_ARGS_FAIL("--set needs an argument", "--set=train.epochs=2", "--set");
    CHECK_ARGS_FAIL("--config needs an argument", "x", "--config");
    CHECK_ARGS_FAIL("unknown config key \"train.batchsize\" (did you mean train.batch_size?)",
                    "--set", "train.batchsize=3");
    CHECK_ARGS_FAIL("train.batch_size: \"abc\" is not an integer", "--set", "train.batch_size=abc");
    CHECK_ARGS_FAIL("no-such.json", "--set", "train.epochs=2", "--config", "no-such.json");
    /* A bad --set after a good file still leaves everything as it was. */
    const char *file = write_tmp("good.json", "{\"train.epochs\": 5}");
    CHECK_ARGS_FAIL("train.seed", "--config", file, "--set", "train.seed=-2");
}

void test_config_help(void) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    config_print_help(f);
    fclose(f);
    /* Every key appears at the start of its row, with its default. */
    config_t c;
    config_defaults(&c);
    char *json = config_to_json(&c);
    json_object *obj = json_tokener_parse(json);
    free(json);
    size_t nkeys = 0;
    json_object_object_foreach(obj, key, val) {
        (void)val;
        char row[300], line[600], def[CONFIG_STR];
        snprintf(row, sizeof row, "\n  %s ", key);
        const char *at = strstr(text, row);
        if (!at || config_get(&c, key, def, sizeof def) != 0) {
            test_fail(__FILE__, __LINE__, "help has no row for %s", key);
            break;
        }
        snprintf(line, sizeof line, "%.*s", (int)strcspn(at + 1, "\n"), at + 1);
        if (!strstr(line, def)) {
            test_fail(__FILE__, __LINE__, "help row \"%s\" lacks the default %s", line, def);
            break;
        }
        nkeys++;
    }
    json_object_put(obj);
    CHECK_INT_EQ(nkeys, 49);
    CHECK_STR_CONTAINS(text, "train.batch_size");
    CHECK_STR_CONTAINS(text, "1..65536");
    CHECK_STR_CONTAINS(text, "sgd|adam|rmsprop|adagrad");
    CHECK_STR_CONTAINS(text, "/usr/share/datasets/fashion-mnist");
    CHECK_STR_CONTAINS(text, "[0, 1)");
    CHECK_STR_CONTAINS(text, "> 0");
    /* Columns line up: the type of every row starts in the same column. */
    const char *batch = strstr(text, "\n  train.batch_size ");
    const char *model = strstr(text, "\n  model ");
    CHECK(batch && model);
    CHECK_INT_EQ(strstr(batch, "int") - batch, strstr(model, "string") - model);
    free(text);
}

void test_config_to_json_roundtrip(void) {
    config_t c, d;
    config_defaults(&c);
    CHECK_SET_OK(&c, "train.batch_size", "128");
    CHECK_SET_OK(&c, "train.optimizer", "rmsprop");
    CHECK_SET_OK(&c, "train.learning_rate", "0.3333333333333333");
    CHECK_SET_OK(&c, "train.decay", "1");
    CHECK_SET_OK(&c, "train.max_steps", "9007199254740993"); /* not exact as a double */
    CHECK_SET_OK(&c, "data.shuffle", "false");
    CHECK_SET_OK(&c, "data.dir", "/data/with \"quotes\" and \\ slash/");
    CHECK_SET_OK(&c, "checkpoint.model_dir", "gs://bucket/run");
    char *json = config_to_json(&c);
    CHECK(json != NULL);
    CHECK_STR_CONTAINS(json, "\"train.batch_size\"");
    /* A float is written as one even when it is whole; '/' is not escaped. */
    const char *decay = strstr(json, "\"train.decay\":");
    CHECK(decay != NULL);
    decay += strlen("\"train.decay\":");
    CHECK(strncmp(decay + strspn(decay, " "), "1.0", 3) == 0);
    CHECK_STR_CONTAINS(json, "\"gs://bucket/run\"");
    const char *path = write_tmp("effective.json", json);
    free(json);
    config_defaults(&d);
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(config_load_file(&d, path, err, sizeof err), 0);
    CHECK(memcmp(&c, &d, sizeof c) == 0);
    CHECK_INT_EQ(d.train.max_steps, 9007199254740993LL);
}

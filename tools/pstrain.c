/* pstrain: the user's command-line tool: the model's summary, the cluster's
 * status, the configuration keys, and export, evaluate, predict and inspect
 * of trained models (tools/models.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/daemon/config.h"
#include "common/daemon/daemon.h"
#include "common/base/exitcode.h"
#include "common/model/model.h"
#include "common/train/model_file.h"
#include "common/rpc/rpc.h"
#include "common/base/util.h"
#include "pstrain.pb-c.h"
#include "tools/make_tfrecord.h"
#include "tools/models.h"
#include "tools/status.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: pstrain COMMAND [ARGS]\n\n"
            "commands:\n"
            "  summary [--model NAME|FILE]  print the model's layer table, as Keras's\n"
            "                               model.summary() does (default model: cnn)\n"
            "  status [--master HOST:PORT] [--set tls.ca=...]\n"
            "                               the master's view of the cluster: every role,\n"
            "                               its state, step, loss and accuracy, and the\n"
            "                               global step; without --master, the local\n"
            "                               cluster's (runlogs/master.addr, or\n"
            "                               $PSTRAIN_RUNLOGS); \"no cluster running\" if none\n"
            "  top [--master HOST:PORT] [--interval SECS] [--count N]\n"
            "                               the same, refreshed in place every SECS (2)\n"
            "                               with images/s and ETA, until training ends\n"
            "  export --checkpoint DIR --out DIR\n"
            "                               write a checkpoint (or a model_dir's latest) as\n"
            "                               an export: model.json, weights.safetensors,\n"
            "                               weights.npz and model.keras (Keras 3)\n"
            "  evaluate --model DIR|FILE.keras [--set data.test=PATH] [--set data.format=F]\n"
            "                               loss and accuracy (per class too) of an export,\n"
            "                               checkpoint or .keras file on the test set:\n"
            "                               data.test (any format of docs/data.md), else\n"
            "                               data.dir's IDX t10k-* files\n"
            "  predict --model DIR|FILE.keras [--labels FILE] [--summary] [--probs] IMAGES...\n"
            "                               class (and its name, from class_names.json) and\n"
            "                               probability of every image of IDX files and of\n"
            "                               PNG and JPEG files, and every row of CSV files\n"
            "                               (the label last); with labels, the accuracy;\n"
            "                               with --probs, every class's probability\n"
            "  make-tfrecord --input PATH --out PREFIX [--shards N] [--gzip] [--format F]\n"
            "                [--shape H,W,C] [--image-feature N] [--label-feature N]\n"
            "                [--label-column C] [--csv-header names|none|skip]\n"
            "                [--encode raw|png]\n"
            "                               convert IDX, image folders, CSV or TFRecord to\n"
            "                               TFRecord files of tf.train.Example, images as raw\n"
            "                               pixels or PNG bytes (docs/data.md)\n"
            "  inspect PATH                 the manifest, files, metadata and tensors of a\n"
            "                               model_dir, checkpoint, export or .safetensors,\n"
            "                               and whether each file's checksums verify\n"
            "  sweep SPEC [--out DIR]       a hyper-parameter sweep of runs (docs/sweeps.md):\n"
            "                               a results table, results.csv, training_log.md\n"
            "  report MODEL_DIR... [--out FILE]\n"
            "                               one self-contained HTML page: curves, confusion\n"
            "                               matrix, per-class accuracy, cluster timeline\n"
            "  config                       list every configuration key: type, default,\n"
            "                               range and meaning (docs/configuration.md)\n"
            "  version                      print the version\n"
            "  help                         this text\n");
}

static int cmd_summary(int argc, char **argv) {
    const char *model_name = "cnn";
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            model_name = argv[++i];
        else if (!strncmp(argv[i], "--model=", 8))
            model_name = argv[i] + 8;
        else {
            fprintf(stderr,
                    "pstrain summary: unknown argument \"%s\" (usage: pstrain summary "
                    "[--model NAME|FILE])\n",
                    argv[i]);
            return EXIT_USAGE;
        }
    }
    model_t m;
    char err[PS_ERRLEN];
    if (model_file_load(&m, model_name, err, sizeof err)) {
        log_print(stderr, "pstrain summary: %s", err);
        return EXIT_USAGE;
    }
    model_summary(&m, stdout);
    model_free(&m);
    return EXIT_OK;
}

/* sweep and report are Python programs of the source tree's scripts/
 * (PSTRAIN_SCRIPTS overrides where): run with the arguments given. */
static int run_script(const char *name, int argc, char **argv) {
    const char *dir = getenv("PSTRAIN_SCRIPTS");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir && dir[0] ? dir : PSTRAIN_SCRIPTS_DIR, name);
    char **args = xcalloc((size_t)argc + 3, sizeof *args);
    args[0] = "python3";
    args[1] = path;
    for (int i = 0; i < argc; i++)
        args[i + 2] = argv[i];
    execvp("python3", args);
    fprintf(stderr, "pstrain: cannot run python3 %s: %s\n", path, strerror(errno));
    free(args);
    return EXIT_USAGE;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "summary"))
        return cmd_summary(argc - 2, argv + 2);
    if (!strcmp(cmd, "export"))
        return cmd_export(argc - 2, argv + 2);
    if (!strcmp(cmd, "evaluate"))
        return cmd_evaluate(argc - 2, argv + 2);
    if (!strcmp(cmd, "predict"))
        return cmd_predict(argc - 2, argv + 2);
    if (!strcmp(cmd, "make-tfrecord"))
        return cmd_make_tfrecord(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "status"))
        return cmd_status(argc - 2, argv + 2);
    if (!strcmp(cmd, "top"))
        return cmd_top(argc - 2, argv + 2);
    if (!strcmp(cmd, "sweep"))
        return run_script("sweep.py", argc - 2, argv + 2);
    if (!strcmp(cmd, "report"))
        return run_script("report.py", argc - 2, argv + 2);
    if (!strcmp(cmd, "config")) {
        config_print_help(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("pstrain %s\n", PS_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return EXIT_OK;
    }
    fprintf(stderr, "pstrain: unknown command \"%s\" (see pstrain help)\n", cmd);
    return EXIT_USAGE;
}

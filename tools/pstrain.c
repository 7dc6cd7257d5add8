/* pstrain: the user's command-line tool (summary now; status, export,
 * predict, evaluate and inspect join it with their issues). */
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/exitcode.h"
#include "common/model.h"
#include "common/util.h"

static void usage(FILE *out) {
    fprintf(out, "usage: pstrain COMMAND [ARGS]\n\n"
                 "commands:\n"
                 "  summary [--model NAME|FILE]  print the model's layer table, as Keras's\n"
                 "                               model.summary() does (default model: cnn)\n"
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
    if (model_load(&m, model_name, err, sizeof err)) {
        fprintf(stderr, "pstrain summary: %s\n", err);
        return EXIT_USAGE;
    }
    model_summary(&m, stdout);
    model_free(&m);
    return EXIT_OK;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "summary"))
        return cmd_summary(argc - 2, argv + 2);
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

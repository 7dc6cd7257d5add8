/* pstrain: the user's command-line tool: the model's summary, the cluster's
 * status, the configuration keys, and export, evaluate, predict and inspect
 * of trained models (tools/models.c). */
#include <stdio.h>
#include <string.h>

#include "common/daemon/config.h"
#include "common/daemon/daemon.h"
#include "common/base/exitcode.h"
#include "common/model/model.h"
#include "common/rpc/rpc.h"
#include "common/base/util.h"
#include "pstrain.pb-c.h"
#include "tools/models.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: pstrain COMMAND [ARGS]\n\n"
            "commands:\n"
            "  summary [--model NAME|FILE]  print the model's layer table, as Keras's\n"
            "                               model.summary() does (default model: cnn)\n"
            "  status --master HOST:PORT [--set tls.ca=...]\n"
            "                               the master's view of the cluster: every role,\n"
            "                               its state and step, and the global step\n"
            "  export --checkpoint DIR --out DIR\n"
            "                               write a checkpoint (or a model_dir's latest) as\n"
            "                               an export: model.json, weights.safetensors,\n"
            "                               weights.npz and model.keras (Keras 3)\n"
            "  evaluate --model DIR [--set data.dir=DIR]\n"
            "                               loss and accuracy (per class too) of an export or\n"
            "                               checkpoint on the test set\n"
            "  predict --model DIR [--labels FILE] [--summary] [--probs] IMAGES...\n"
            "                               class and probability of every image of IDX\n"
            "                               files; with --labels, the accuracy; with\n"
            "                               --probs, every class's probability\n"
            "  inspect PATH                 the manifest, files, metadata and tensors of a\n"
            "                               model_dir, checkpoint, export or .safetensors\n"
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

static void print_status(const Pstrain__StatusResponse *r) {
    printf("global step %llu of %llu%s\n", (unsigned long long)r->global_step,
           (unsigned long long)r->target_steps, r->done ? " (training is over)" : "");
    if (r->final_accuracy >= 0)
        printf("final test loss %.4f accuracy %.4f\n", r->final_loss, r->final_accuracy);
    printf("%-10s %-22s %-8s %-8s %-10s %s\n", "ROLE", "ADDRESS", "STATE", "PID", "LAST BEAT",
           "STEP");
    for (size_t i = 0; i < r->n_members; i++) {
        const Pstrain__Member *m = r->members[i];
        char name[32], beat[32];
        snprintf(name, sizeof name, "%s%u", m->role, m->index);
        if (m->last_beat_secs >= 0)
            snprintf(beat, sizeof beat, "%.1fs ago", m->last_beat_secs);
        else
            snprintf(beat, sizeof beat, "never");
        printf("%-10s %-22s %-8s %-8d %-10s %llu\n", name, m->address, m->state, m->pid, beat,
               (unsigned long long)m->step);
    }
}

static int cmd_status(int argc, char **argv) {
    config_t cfg;
    char err[PS_ERRLEN];
    config_defaults(&cfg);
    argc++, argv--; /* config_parse_args keeps argv[0] */
    if (config_parse_args(&cfg, &argc, argv, err, sizeof err)) {
        fprintf(stderr, "pstrain status: %s\n", err);
        return EXIT_USAGE;
    }
    const char *master = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--master") && i + 1 < argc)
            master = argv[++i];
        else if (!strncmp(argv[i], "--master=", 9))
            master = argv[i] + 9;
        else {
            fprintf(stderr,
                    "pstrain status: unknown argument \"%s\" (usage: pstrain status "
                    "--master HOST:PORT)\n",
                    argv[i]);
            return EXIT_USAGE;
        }
    }
    if (!master) {
        fprintf(stderr, "pstrain status: --master HOST:PORT is required\n");
        return EXIT_USAGE;
    }
    rpc_options_t o = daemon_rpc_options(&cfg);
    rpc_channel_t *ch;
    if (rpc_channel_create(&ch, master, &o, err, sizeof err)) {
        fprintf(stderr, "pstrain status: %s\n", err);
        return EXIT_USAGE;
    }
    Pstrain__StatusRequest req = PSTRAIN__STATUS_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = pstrain__status_request__pack(&req, buf);
    rpc_buf_t resp = {0};
    int rc = EXIT_OK;
    if (rpc_call(ch, "/pstrain.Master/Status", buf, len, cfg.rpc.deadline_secs, &resp, err,
                 sizeof err) != RPC_OK) {
        fprintf(stderr, "pstrain status: %s\n", err);
        rc = EXIT_UNAVAILABLE;
    } else {
        Pstrain__StatusResponse *r = pstrain__status_response__unpack(NULL, resp.len, resp.data);
        if (!r) {
            fprintf(stderr, "pstrain status: %s sent a malformed StatusResponse\n", master);
            rc = EXIT_DATAERR;
        } else {
            print_status(r);
            pstrain__status_response__free_unpacked(r, NULL);
        }
    }
    rpc_buf_free(&resp);
    rpc_channel_destroy(ch);
    return rc;
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
    if (!strcmp(cmd, "inspect"))
        return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "status"))
        return cmd_status(argc - 2, argv + 2);
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

/* pstrain-worker: computes gradients. Without TF_CONFIG it trains alone, with
 * the parameter store linked in (TensorFlow's local Estimator path). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/exitcode.h"
#include "common/log.h"
#include "common/util.h"
#include "kernels/backend.h"
#include "worker/local.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    stop_requested = sig;
}

static void usage(FILE *out) {
    fprintf(out, "usage: pstrain-worker [--config FILE] [--set key=value]... "
                 "[--print-config KEY] [--help] [--version]\n\n"
                 "Computes gradients for pstrain. With no TF_CONFIG in the environment it\n"
                 "trains alone in this process and evaluates on the test set after each\n"
                 "epoch, writing <checkpoint.model_dir>/eval_results.json.\n"
                 "--print-config KEY prints the value KEY has after --config and --set.\n"
                 "SIGINT or SIGTERM stops training after the current step.\n\n"
                 "Configuration keys (--set key=value, or a JSON --config file):\n");
    config_print_help(out);
}

int main(int argc, char **argv) {
    config_t cfg;
    char err[PS_ERRLEN];
    config_defaults(&cfg);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return EXIT_OK;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("pstrain-worker %s\n", PS_VERSION);
            return EXIT_OK;
        }
    }
    if (config_parse_args(&cfg, &argc, argv, err, sizeof err)) {
        fprintf(stderr, "pstrain-worker: %s\n", err);
        return EXIT_USAGE;
    }
    if (argc == 3 && !strcmp(argv[1], "--print-config")) {
        char value[CONFIG_STR];
        if (config_get(&cfg, argv[2], value, sizeof value)) {
            fprintf(stderr, "pstrain-worker: unknown config key \"%s\"\n", argv[2]);
            return EXIT_USAGE;
        }
        printf("%s\n", value);
        return EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "pstrain-worker: unknown argument \"%s\" (see --help)\n", argv[1]);
        return EXIT_USAGE;
    }
    log_set_level(cfg.log.level);
    const char *tf_config = getenv("TF_CONFIG");
    if (tf_config && tf_config[0]) {
        fprintf(stderr, "pstrain-worker: TF_CONFIG is set, but this build trains only "
                        "standalone; unset TF_CONFIG to train in one process\n");
        return EXIT_USAGE;
    }
    log_init("worker", -1);
    if (!strcmp(cfg.device, "gpu")) {
        log_error("device=gpu: this build has no GPU backend (built without CUDA); use "
                  "device=cpu or device=auto");
        return EXIT_USAGE;
    }
    if (!strcmp(cfg.device, "auto"))
        log_info("device=auto: this build has no GPU backend; using the CPU");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    cpu_backend_init();
    log_info("pstrain-worker %s standalone, pid %d, BLAS core %s", PS_VERSION, (int)getpid(),
             cpu_backend_blas_core());
    return local_train(&cfg, &stop_requested);
}

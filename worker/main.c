/* pstrain-worker: computes gradients. With TF_CONFIG it is one worker of a
 * cluster; without, it trains alone with the parameter store linked in
 * (TensorFlow's local Estimator path). */
#include <string.h>

#include "common/daemon/daemon.h"
#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/base/util.h"
#include "kernels/backend.h"
#include "worker/cluster.h"
#include "worker/local.h"

static void describe(FILE *out) {
    fprintf(out, "Computes gradients for pstrain. With TF_CONFIG (task type worker) it pulls the\n"
                 "model from every PS, computes the gradient of a batch of its shard of the\n"
                 "training data and pushes it back. With no TF_CONFIG it trains alone in this\n"
                 "process and evaluates on the test set after each epoch, writing\n"
                 "<checkpoint.model_dir>/eval_results.json.\n"
                 "SIGINT or SIGTERM stops it after the current step.\n"
                 "  --print-config KEY prints the value KEY has after --config and --set.\n");
}

/* --print-config KEY: the effective value of one key, for scripts. */
static int print_config(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--print-config") != 0)
            continue;
        config_t cfg;
        char err[PS_ERRLEN], value[CONFIG_STR];
        config_defaults(&cfg);
        int n = argc;
        char *key = argv[i + 1];
        for (int j = i; j + 2 < argc; j++)
            argv[j] = argv[j + 2];
        n -= 2;
        argv[n] = NULL;
        if (config_parse_args(&cfg, &n, argv, err, sizeof err)) {
            fprintf(stderr, "pstrain-worker: %s\n", err);
            return EXIT_USAGE;
        }
        if (config_get(&cfg, key, value, sizeof value)) {
            fprintf(stderr, "pstrain-worker: unknown config key \"%s\"\n", key);
            return EXIT_USAGE;
        }
        printf("%s\n", value);
        return EXIT_OK;
    }
    return -1;
}

/* The backend `device` names. device=gpu without a usable GPU is permanent
 * (a restart finds no GPU either): EXIT_NODEVICE; device=auto without one
 * says why in one line and computes on the CPU. */
static int open_device(const config_t *cfg, const backend_t **be) {
    char err[PS_ERRLEN];
    backend_choice_t choice;
    if (backend_open(cfg->device, &choice, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_NODEVICE;
    }
    if (choice.why_cpu[0])
        log_info("device=auto: no usable GPU (%s); using the CPU", choice.why_cpu);
    log_info("%s backend: %s", choice.gpu ? "GPU" : "CPU", choice.about);
    *be = choice.be;
    return 0;
}

int main(int argc, char **argv) {
    int rc = print_config(argc, argv);
    if (rc >= 0)
        return rc;
    rpc_tune_malloc();
    daemon_t d;
    rc = daemon_parse(&d, "pstrain-worker", CLUSTER_WORKER, false, argc, argv, describe);
    if (rc >= 0)
        return rc;
    cpu_backend_init();
    const backend_t *be = NULL;
    if ((rc = daemon_start(&d)) != 0 || (rc = open_device(&d.cfg, &be)) != 0) {
        daemon_finish(&d);
        return rc;
    }
    rc = d.have_cluster ? cluster_train(&d, be) : local_train(&d.cfg, be, &daemon_stop_signal);
    daemon_finish(&d);
    return rc;
}

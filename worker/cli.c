/* The worker's command line and device, apart from its main so that main.c
 * only wires the steps together. */
#include "worker/cli.h"

#include <stdio.h>
#include <string.h>

#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/base/util.h"

/* --print-config KEY: the effective value of one key, for scripts. */
int worker_print_config(int argc, char **argv) {
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
            log_print(stderr, "pstrain-worker: %s", err);
            return EXIT_USAGE;
        }
        if (config_get(&cfg, key, value, sizeof value)) {
            log_print(stderr, "pstrain-worker: unknown config key \"%s\"", key);
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
int worker_open_device(const config_t *cfg, const backend_t **be) {
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

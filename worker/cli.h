/* What pstrain-worker does before it trains: answer --print-config, and open
 * the compute backend the config names. */
#ifndef PSTRAIN_WORKER_CLI_H
#define PSTRAIN_WORKER_CLI_H

#include "common/daemon/config.h"
#include "kernels/backend.h"

/* With --print-config KEY among argv, prints the value KEY has after
 * --config and --set and returns an exit code (EXIT_USAGE for an unknown key
 * or a bad flag); without it, -1. May reorder argv. */
int worker_print_config(int argc, char **argv);

/* Opens the backend cfg->device names into *be: 0, or EXIT_NODEVICE (logged)
 * when device=gpu finds no usable GPU, which a restart would not cure. */
int worker_open_device(const config_t *cfg, const backend_t **be);

#endif

/* Standalone training: the whole model in one process, the parameter store
 * and optimizer linked in. */
#ifndef PSTRAIN_WORKER_LOCAL_H
#define PSTRAIN_WORKER_LOCAL_H

#include <signal.h>

#include "common/daemon/config.h"
#include "kernels/backend.h"

/* Trains as the config says on backend be; returns an exit code
 * (common/exitcode.h). A non-zero *stop (a signal number) ends training
 * after the current step. */
int local_train(const config_t *cfg, const backend_t *be, volatile sig_atomic_t *stop);

#endif

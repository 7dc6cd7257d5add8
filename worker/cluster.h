/* Training as one worker of a cluster described by TF_CONFIG. */
#ifndef PSTRAIN_WORKER_CLUSTER_H
#define PSTRAIN_WORKER_CLUSTER_H

#include "common/daemon/daemon.h"
#include "kernels/backend.h"

/* Trains on backend be until the global step reaches its target, the master
 * says training is over, or a stop signal; returns an exit code
 * (common/exitcode.h). */
int cluster_train(daemon_t *d, const backend_t *be);

#endif

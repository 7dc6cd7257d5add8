/* Training as one worker of a cluster described by TF_CONFIG. */
#ifndef PSTRAIN_WORKER_CLUSTER_H
#define PSTRAIN_WORKER_CLUSTER_H

#include "common/daemon/daemon.h"
#include "common/peers/psclient.h"
#include "kernels/backend.h"

/* Trains on backend be until the global step reaches its target, the master
 * says training is over, or a stop signal; returns an exit code
 * (common/exitcode.h). */
int cluster_train(daemon_t *d, const backend_t *be);

/* The worker's exit code for how its pulls and pushes ended: stopped is a
 * clean exit, a refusal is permanent (EXIT_USAGE: the roles disagree on
 * the model or the cluster), an unreachable PS may pass (EXIT_UNAVAILABLE). */
int cluster_exit_code(psclient_status_t s);

#endif

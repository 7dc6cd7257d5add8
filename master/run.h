/* The master's daemon logic, apart from its main: its state and service,
 * the data, the loop that follows the global step (liveness, recovery,
 * checkpoints, summaries), the evaluator, the end of training. */
#ifndef PSTRAIN_MASTER_RUN_H
#define PSTRAIN_MASTER_RUN_H

#include "common/daemon/daemon.h"

/* Runs the master until training is over or a signal stops it; returns the
 * daemon's exit code (common/base/exitcode.h). */
int master_run(daemon_t *d);

#endif

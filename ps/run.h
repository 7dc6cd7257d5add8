/* The parameter server's daemon logic, apart from its main: the shard and
 * its starting weights (model_dir's latest checkpoint, else
 * train.warm_start_from, else the initializer), the RPC server, heartbeats
 * to the master. Threads: the caller's runs the loop that publishes the
 * shard's step to the heartbeat thread; the RPC server's threads own the
 * service (rpc.h). */
#ifndef PSTRAIN_PS_RUN_H
#define PSTRAIN_PS_RUN_H

#include "common/daemon/daemon.h"
#include "common/model/model.h"

/* Serves until the master says training is over or a signal stops it;
 * returns the daemon's exit code (common/base/exitcode.h). */
int ps_run(daemon_t *d, const model_t *m);

#endif

/* pstrain-master --evaluate-only: the evaluator task. Follows model_dir's
 * manifest and evaluates each new latest checkpoint (eval_results.json,
 * export/best, eval events), without connecting to the training cluster;
 * exits 0 after the final checkpoint is evaluated, or on SIGTERM/SIGINT. */
#ifndef PSTRAIN_MASTER_FOLLOW_H
#define PSTRAIN_MASTER_FOLLOW_H

#include "common/daemon/daemon.h"

int follow_main(daemon_t *d);

#endif

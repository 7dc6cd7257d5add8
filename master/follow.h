/* pstrain-master --evaluate-only: the evaluator task. Follows model_dir's
 * manifest and evaluates each new latest checkpoint (eval_results.json,
 * export/best, eval events), without connecting to the training cluster:
 * on the validation set when there is one (data.val or data.val_split, as
 * the master would), else on the test set; the final checkpoint on the
 * test set too. Exits 0 after the final checkpoint is evaluated, or on
 * SIGTERM/SIGINT. */
#ifndef PSTRAIN_MASTER_FOLLOW_H
#define PSTRAIN_MASTER_FOLLOW_H

#include "common/daemon/daemon.h"

int follow_main(daemon_t *d);

#endif

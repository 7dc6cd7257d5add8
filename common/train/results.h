/* <model_dir>/eval_results.json: the latest evaluation, for people and
 * scripts (written atomically, so a reader never sees half a file). */
#ifndef PSTRAIN_RESULTS_H
#define PSTRAIN_RESULTS_H

#include <stdint.h>

#include "common/train/trainer.h"

typedef struct {
    uint64_t global_step;
    double epoch;                      /* epochs done, fractional */
    double elapsed_secs;               /* training time so far */
    double train_loss, train_accuracy; /* running means of the last epoch */
    const char *set;                   /* the evaluated set: "validation" or "test" (NULL) */
} results_context_t;

int results_write(const char *model_dir, const eval_metrics_t *e, const results_context_t *ctx,
                  char *err, size_t errlen);

#endif

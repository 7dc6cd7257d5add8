/* Evaluation of checkpoints, on a thread of its own so that the master's
 * loop (steps, beats, checkpoints) never waits for it. Each job names a
 * checkpoint of model_dir; the thread reads its weights from the files (the
 * very bytes a later `pstrain evaluate` reads), evaluates them on the
 * validation set when there is one (data.val or data.val_split) and else on
 * the test set, logs loss, accuracy and per-class accuracy, rewrites
 * <model_dir>/eval_results.json (its "set" says which) and keeps the most
 * accurate model on that set as the export <model_dir>/export/best/. The
 * final job evaluates the test set as well, after the validation set.
 * TensorBoard gets test scalars in <model_dir>/eval/ and validation
 * scalars in <model_dir>/validation/. When jobs come faster than evaluations,
 * the newest wins (TensorFlow's evaluator does the same). The final job may
 * also export to <model_dir>/export/<step>/. */
#ifndef PSTRAIN_MASTER_EVALUATOR_H
#define PSTRAIN_MASTER_EVALUATOR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/daemon/config.h"
#include "common/data/dataset.h"
#include "common/model/model.h"
#include "common/train/results.h"

typedef struct {
    const model_t *model;
    const dataset_t *test;
    const dataset_t *val; /* validation set; NULL or n = 0: none */
    const config_t *cfg;
    /* Fills what results_write records beside the metrics (training loss,
     * epoch, elapsed time) for a step; NULL leaves them 0. Runs on the
     * evaluator's thread. */
    void (*context)(void *arg, uint64_t step, results_context_t *out);
    void *arg;
} evaluator_opts_t;

typedef struct evaluator evaluator_t;

evaluator_t *evaluator_create(const evaluator_opts_t *o);
/* Waits for the job in progress, then stops the thread. */
void evaluator_free(evaluator_t *e);

/* Queues checkpoint ckpt-<step> (replacing a queued one that was not
 * started) and returns its ticket. evaluate false only exports (an
 * evaluator task evaluates instead); export_final marks the final job: it
 * also writes export/<step>/ and evaluates the test set even when there is
 * a validation set. */
uint64_t evaluator_submit(evaluator_t *e, uint64_t step, bool evaluate, bool export_final);
/* Queues the final checkpoint's evaluation without the export (the master
 * exports; an evaluator task evaluates): the validation set when there is
 * one, then the test set. */
uint64_t evaluator_submit_final(evaluator_t *e, uint64_t step);
/* Waits until the job of a ticket is done, or was replaced by a newer one
 * and that is done; 0 when it ran and did all it was asked, else -1 (the
 * failure was logged). */
int evaluator_wait(evaluator_t *e, uint64_t ticket);
/* No job queued or running. */
bool evaluator_idle(evaluator_t *e);
/* The last evaluation: its step, loss and accuracy; false before one. */
bool evaluator_last(evaluator_t *e, uint64_t *step, double *loss, double *accuracy);

#endif

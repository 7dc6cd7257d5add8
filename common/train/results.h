/* <model_dir>/eval_results.json: the latest evaluation, for people and
 * scripts (written atomically, so a reader never sees half a file), with
 * its confusion matrix; <model_dir>/eval_history.jsonl: every evaluation,
 * one JSON object a line, appended. */
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
    const char *const *class_names;    /* [nclasses], or NULL: none known */
} results_context_t;

/* Fashion-MNIST's ten class names when data_dir is the built-in data set
 * (its folder is named fashion-mnist) and the model has ten classes; else
 * NULL. */
const char *const *results_default_class_names(const char *data_dir, size_t nclasses);

/* The confusion matrix as a JSON object: "classes" (names, or indices as
 * text) and "matrix" (rows: the true class, columns: the predicted). */
struct json_object *results_confusion_json(const eval_metrics_t *e, const char *const *class_names);

/* Writes eval_results.json and appends the evaluation to eval_history.jsonl. */
int results_write(const char *model_dir, const eval_metrics_t *e, const results_context_t *ctx,
                  char *err, size_t errlen);

#endif

#include "common/train/results.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

static json_object *rounded(double x) {
    /* Full precision: `pstrain evaluate` must reproduce these to the last digit. */
    return json_object_new_double(x);
}

const char *const *results_default_class_names(const char *data_dir, size_t nclasses) {
    static const char *const fashion[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                            "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                            "Bag",         "Ankle boot"};
    size_t n = data_dir ? strlen(data_dir) : 0;
    while (n > 0 && data_dir[n - 1] == '/')
        n--;
    size_t base = n;
    while (base > 0 && data_dir[base - 1] != '/')
        base--;
    if (nclasses == 10 && n - base == strlen("fashion-mnist") &&
        !strncmp(data_dir + base, "fashion-mnist", n - base))
        return fashion;
    return NULL;
}

json_object *results_confusion_json(const eval_metrics_t *e, const char *const *class_names) {
    json_object *o = json_object_new_object(), *names = json_object_new_array();
    json_object *rows = json_object_new_array();
    for (size_t c = 0; c < e->nclasses; c++) {
        char index[24];
        snprintf(index, sizeof index, "%zu", c);
        json_object_array_add(names, json_object_new_string(class_names ? class_names[c] : index));
        json_object *row = json_object_new_array();
        for (size_t p = 0; p < e->nclasses; p++)
            json_object_array_add(
                row, json_object_new_int64(e->confusion ? (int64_t)e->confusion[c * e->nclasses + p]
                                                        : 0));
        json_object_array_add(rows, row);
    }
    json_object_object_add(o, "classes", names);
    json_object_object_add(o, "matrix", rows);
    return o;
}

static json_object *per_class(const eval_metrics_t *e) {
    json_object *pc = json_object_new_array();
    for (size_t c = 0; c < e->nclasses; c++) {
        double acc =
            e->class_total[c] ? (double)e->class_correct[c] / (double)e->class_total[c] : 0.0;
        json_object_array_add(pc, rounded(acc));
    }
    return pc;
}

/* One line of eval_history.jsonl: step, set, loss, accuracy, per class,
 * the time (Unix seconds) and the training time so far. */
static int append_history(const char *model_dir, const eval_metrics_t *e,
                          const results_context_t *ctx, char *err, size_t errlen) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/eval_history.jsonl", model_dir);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "step", json_object_new_int64((int64_t)ctx->global_step));
    json_object_object_add(o, "set", json_object_new_string(ctx->set ? ctx->set : "test"));
    json_object_object_add(o, "loss", rounded(e->loss));
    json_object_object_add(o, "accuracy", rounded(e->accuracy));
    json_object_object_add(o, "per_class_accuracy", per_class(e));
    json_object_object_add(o, "train_loss", rounded(ctx->train_loss));
    json_object_object_add(o, "train_accuracy", rounded(ctx->train_accuracy));
    json_object_object_add(o, "epoch", rounded(ctx->epoch));
    json_object_object_add(o, "time", json_object_new_double(ps_wall_now()));
    json_object_object_add(o, "elapsed_secs", rounded(ctx->elapsed_secs));
    FILE *f = fopen(path, "a");
    int rc = 0;
    if (!f || fprintf(f, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) < 0)
        rc = ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    if (f && fclose(f) && rc == 0)
        rc = ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    json_object_put(o);
    return rc;
}

int results_write(const char *model_dir, const eval_metrics_t *e, const results_context_t *ctx,
                  char *err, size_t errlen) {
    if (ps_mkdirs(model_dir, err, errlen) || append_history(model_dir, e, ctx, err, errlen))
        return -1;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "global_step", json_object_new_int64((int64_t)ctx->global_step));
    json_object_object_add(o, "epoch", rounded(ctx->epoch));
    json_object_object_add(o, "set", json_object_new_string(ctx->set ? ctx->set : "test"));
    json_object_object_add(o, "loss", rounded(e->loss));
    json_object_object_add(o, "accuracy", rounded(e->accuracy));
    json_object_object_add(o, "examples", json_object_new_int64((int64_t)e->n));
    json_object_object_add(o, "per_class_accuracy", per_class(e));
    if (ctx->class_names) {
        json_object *names = json_object_new_array();
        for (size_t c = 0; c < e->nclasses; c++)
            json_object_array_add(names, json_object_new_string(ctx->class_names[c]));
        json_object_object_add(o, "class_names", names);
    }
    json_object_object_add(o, "confusion_matrix", results_confusion_json(e, ctx->class_names));
    json_object_object_add(o, "train_loss", rounded(ctx->train_loss));
    json_object_object_add(o, "train_accuracy", rounded(ctx->train_accuracy));
    json_object_object_add(o, "elapsed_secs", rounded(ctx->elapsed_secs));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/eval_results.json", model_dir);
    return ps_write_json_atomic(path, o, err, errlen);
}

#include "common/train/results.h"

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

int results_write(const char *model_dir, const eval_metrics_t *e, const results_context_t *ctx,
                  char *err, size_t errlen) {
    if (ps_mkdirs(model_dir, err, errlen))
        return -1;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "global_step", json_object_new_int64((int64_t)ctx->global_step));
    json_object_object_add(o, "epoch", rounded(ctx->epoch));
    json_object_object_add(o, "set", json_object_new_string(ctx->set ? ctx->set : "test"));
    json_object_object_add(o, "loss", rounded(e->loss));
    json_object_object_add(o, "accuracy", rounded(e->accuracy));
    json_object_object_add(o, "examples", json_object_new_int64((int64_t)e->n));
    json_object *pc = json_object_new_array();
    for (size_t c = 0; c < e->nclasses; c++) {
        double acc =
            e->class_total[c] ? (double)e->class_correct[c] / (double)e->class_total[c] : 0.0;
        json_object_array_add(pc, rounded(acc));
    }
    json_object_object_add(o, "per_class_accuracy", pc);
    json_object_object_add(o, "train_loss", rounded(ctx->train_loss));
    json_object_object_add(o, "train_accuracy", rounded(ctx->train_accuracy));
    json_object_object_add(o, "elapsed_secs", rounded(ctx->elapsed_secs));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/eval_results.json", model_dir);
    return ps_write_json_atomic(path, o, err, errlen);
}

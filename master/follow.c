#include "follow.h"

#include <string.h>

#include "common/daemon/datasets.h"
#include "common/train/checkpoint.h"
#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/train/model_file.h"
#include "common/train/trainer.h"
#include "common/base/util.h"
#include "master/evaluator.h"

/* How often the manifest is read. */
#define FOLLOW_POLL_S 0.5

/* What the evaluator task reads: the test set, and the validation set
 * (data.val, or the same seeded data.val_split hold-out the workers leave
 * out) with the training set's size for the epoch of each result. */
typedef struct {
    const daemon_t *d;
    model_t model;
    dataset_t test, val;
    size_t train_examples; /* 0: not read (no validation set) */
} follow_t;

/* The validation set, when one is configured: the training set is read
 * (or, with data.stream, counted) as the master reads it. */
static int load_val(follow_t *f, char *err, size_t errlen) {
    const config_t *c = &f->d->cfg;
    dataset_t train;
    if (!c->data.val[0] && c->data.val_split <= 0)
        return 0;
    int rc = c->data.stream ? datasets_count_stream(c, &f->model, &train, &f->val, err, errlen)
                            : datasets_load_train(c, &f->model, &train, &f->val, err, errlen);
    if (rc)
        return rc;
    f->train_examples = train.n;
    dataset_free(&train);
    return 0;
}

/* The epoch of a step, as the master reckons it: a step takes a batch from
 * each of the replicas. */
static void results_context(void *arg, uint64_t step, results_context_t *out) {
    const follow_t *f = arg;
    const config_t *c = &f->d->cfg;
    size_t per_step =
        (size_t)c->train.batch_size * config_replicas(c, f->d->cluster.jobs[CLUSTER_WORKER].span);
    *out = (results_context_t){.global_step = step};
    if (f->train_examples)
        out->epoch = (double)step * (double)per_step / (double)f->train_examples;
}

static int follow(evaluator_t *ev, const char *model_dir) {
    uint64_t submitted = 0, ticket = 0;
    bool have = false, final = false;
    char err[PS_ERRLEN];
    while (!daemon_stop_signal) {
        ckpt_manifest_t man;
        int rc = ckpt_manifest_read(model_dir, &man, err, sizeof err);
        if (rc < 0)
            log_warn("%s", err); /* being replaced; read again */
        /* The final checkpoint is evaluated on the test set as well. */
        if (rc == 0 && (!have || man.latest != submitted || (man.final && !final))) {
            ticket = man.final ? evaluator_submit_final(ev, man.latest)
                               : evaluator_submit(ev, man.latest, true, false);
            submitted = man.latest;
            final = man.final;
            have = true;
        }
        if (rc == 0 && final && submitted == man.latest) {
            evaluator_wait(ev, ticket);
            log_info("evaluated the final checkpoint ckpt-%llu: done",
                     (unsigned long long)man.latest);
            return EXIT_OK;
        }
        ps_sleep(FOLLOW_POLL_S);
    }
    log_info("stopping on signal %d", (int)daemon_stop_signal);
    return EXIT_OK;
}

int follow_main(daemon_t *d) {
    const config_t *c = &d->cfg;
    char err[PS_ERRLEN];
    follow_t f = {.d = d};
    if (model_file_load(&f.model, c->model, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    if (datasets_load_test(c, &f.model, &f.test, err, sizeof err) ||
        load_val(&f, err, sizeof err)) {
        log_error("%s", err);
        dataset_free(&f.test);
        model_free(&f.model);
        return EXIT_DATAERR;
    }
    log_info("evaluating the checkpoints of %s as they come (%zu validation and %zu test "
             "examples)",
             c->checkpoint.model_dir, f.val.n, f.test.n);
    evaluator_opts_t eo = {.model = &f.model,
                           .test = &f.test,
                           .val = &f.val,
                           .cfg = c,
                           .context = results_context,
                           .arg = &f};
    evaluator_t *ev = evaluator_create(&eo);
    int rc = follow(ev, c->checkpoint.model_dir);
    evaluator_free(ev);
    dataset_free(&f.val);
    dataset_free(&f.test);
    model_free(&f.model);
    return rc;
}

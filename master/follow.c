#include "follow.h"

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

static int follow(evaluator_t *ev, const char *model_dir) {
    uint64_t submitted = 0, ticket = 0;
    bool have = false;
    char err[PS_ERRLEN];
    while (!daemon_stop_signal) {
        ckpt_manifest_t man;
        int rc = ckpt_manifest_read(model_dir, &man, err, sizeof err);
        if (rc < 0)
            log_warn("%s", err); /* being replaced; read again */
        if (rc == 0 && (!have || man.latest != submitted)) {
            ticket = evaluator_submit(ev, man.latest, true, false);
            submitted = man.latest;
            have = true;
        }
        if (rc == 0 && man.final && have && submitted == man.latest) {
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
    model_t m;
    if (model_file_load(&m, c->model, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    dataset_t test;
    if (datasets_load_test(c, &m, &test, err, sizeof err)) {
        log_error("%s", err);
        model_free(&m);
        return EXIT_DATAERR;
    }
    log_info("evaluating the checkpoints of %s as they come", c->checkpoint.model_dir);
    evaluator_opts_t eo = {.model = &m, .test = &test, .cfg = c};
    evaluator_t *ev = evaluator_create(&eo);
    int rc = follow(ev, c->checkpoint.model_dir);
    evaluator_free(ev);
    dataset_free(&test);
    model_free(&m);
    return rc;
}

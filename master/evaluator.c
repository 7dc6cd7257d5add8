#include "evaluator.h"

#include <json-c/json.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/train/checkpoint.h"
#include "common/formats/events.h"
#include "common/train/export.h"
#include "common/base/failpoint.h"
#include "common/base/log.h"
#include "common/train/trainer.h"
#include "common/base/util.h"
#include "kernels/backend.h"

typedef struct {
    uint64_t step, ticket;
    bool evaluate, export_final;
    bool test; /* the test set too, after a validation set */
} job_t;

struct evaluator {
    evaluator_opts_t o;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool have_job, busy, stop;
    job_t job;
    uint64_t tickets;     /* jobs submitted */
    uint64_t done_ticket; /* the last job finished */
    bool done_ok;
    bool have_last;
    uint64_t last_step;
    double last_loss, last_accuracy;
    double best_accuracy; /* of export/best, -1 when none */
    trainer_t *trainer;
    float *params;
    events_sink_t events;     /* model_dir/eval/, opened at the first evaluation */
    events_sink_t val_events; /* model_dir/validation/, as a standalone worker's */
};

/* A validation set exists (data.val or data.val_split): checkpoints are
 * evaluated on it during training, and the best export is chosen by it. */
static bool has_val(const evaluator_t *e) {
    return e->o.val && e->o.val->n > 0;
}

/* The set the best export is chosen by. */
static const char *best_set(const evaluator_t *e) {
    return has_val(e) ? "validation" : "test";
}

/* The accuracy export/best was kept for, so a restarted master keeps it;
 * -1 when it was measured on another set than `set` (an eval.json without
 * "set" is from the test set), since the two do not compare. */
static double read_best(const char *model_dir, const char *set) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/export/best/eval.json", model_dir);
    json_object *o = json_object_from_file(path), *acc, *was;
    double best = -1.0;
    const char *of =
        o && json_object_object_get_ex(o, "set", &was) ? json_object_get_string(was) : "test";
    if (o && strcmp(of ? of : "", set) == 0 && json_object_object_get_ex(o, "accuracy", &acc))
        best = json_object_get_double(acc);
    json_object_put(o);
    return best;
}

static int write_best(const evaluator_t *e, const eval_metrics_t *em, uint64_t step, char *err,
                      size_t errlen) {
    const char *md = e->o.cfg->checkpoint.model_dir;
    char dir[PATH_MAX], path[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/export/best", md);
    if (export_write(e->o.model, e->params, step, dir, err, errlen))
        return -1;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "global_step", json_object_new_int64((int64_t)step));
    json_object_object_add(o, "accuracy", json_object_new_double(em->accuracy));
    json_object_object_add(o, "loss", json_object_new_double(em->loss));
    json_object_object_add(o, "set", json_object_new_string(best_set(e)));
    snprintf(path, sizeof path, "%s/eval.json", dir);
    return ps_write_json_atomic(path, o, err, errlen);
}

static void log_metrics(uint64_t step, const char *set, const eval_metrics_t *em, double secs) {
    char per_class[512];
    size_t n = 0;
    for (size_t c = 0; c < em->nclasses && n < sizeof per_class; c++) {
        double a =
            em->class_total[c] ? (double)em->class_correct[c] / (double)em->class_total[c] : 0.0;
        n += (size_t)snprintf(per_class + n, sizeof per_class - n, "%s%.3f", c ? " " : "", a);
    }
    log_info("evaluation of ckpt-%llu on %s: loss: %.4f - accuracy: %.4f - per class: %s (%zu "
             "examples, %.1fs)",
             (unsigned long long)step, set, em->loss, em->accuracy, per_class, em->n, secs);
}

/* Evaluates the loaded weights on the validation or the test set, records
 * the result and, on the set the best export is chosen by, keeps the best. */
static int evaluate(evaluator_t *e, uint64_t step, bool validation) {
    const config_t *c = e->o.cfg;
    const char *set = validation ? "validation" : "test";
    eval_metrics_t em;
    double t0 = ps_now();
    trainer_evaluate(e->trainer, e->params, validation ? e->o.val : e->o.test,
                     (size_t)c->eval.batch_size, &em);
    log_metrics(step, set, &em, ps_now() - t0);
    results_context_t ctx = {.global_step = step};
    if (e->o.context)
        e->o.context(e->o.arg, step, &ctx);
    ctx.global_step = step;
    ctx.set = set;
    ctx.class_names = results_default_class_names(c->data.dir, em.nclasses);
    char err[PS_ERRLEN];
    int rc = results_write(c->checkpoint.model_dir, &em, &ctx, err, sizeof err);
    if (rc == 0 && strcmp(set, best_set(e)) == 0 && em.accuracy > e->best_accuracy) {
        rc = write_best(e, &em, step, err, sizeof err);
        if (rc == 0) {
            log_info("ckpt-%llu is the most accurate so far: exported to %s/export/best",
                     (unsigned long long)step, c->checkpoint.model_dir);
            e->best_accuracy = em.accuracy;
        }
    }
    if (rc)
        log_error("evaluation of ckpt-%llu: %s", (unsigned long long)step, err);
    /* model_dir/eval/ as Estimator's; model_dir/validation/ as Keras names it */
    events_sink_eval(validation ? &e->val_events : &e->events, step, em.loss, em.accuracy);
    pthread_mutex_lock(&e->mu);
    e->have_last = true;
    e->last_step = step;
    e->last_loss = em.loss;
    e->last_accuracy = em.accuracy;
    pthread_mutex_unlock(&e->mu);
    eval_metrics_free(&em);
    return rc;
}

static int run_job(evaluator_t *e, const job_t *j) {
    const char *md = e->o.cfg->checkpoint.model_dir;
    char dir[PATH_MAX], err[PS_ERRLEN];
    ckpt_dir(dir, sizeof dir, md, j->step);
    if (ckpt_load_params(e->o.model, dir, e->params, NULL, err, sizeof err)) {
        log_warn("cannot evaluate ckpt-%llu: %s", (unsigned long long)j->step, err);
        return -1;
    }
    failpoint("evaluate"); /* a test stops here: SIGTERM must not wait for us */
    /* With a validation set, each checkpoint is evaluated on it; the final
     * one on it too (it may be the best) and then on the test set. */
    int rc = 0;
    if (j->evaluate && has_val(e))
        rc = evaluate(e, j->step, true);
    if (j->evaluate && (j->test || !has_val(e)) && evaluate(e, j->step, false))
        rc = -1;
    if (j->export_final) {
        char out[PATH_MAX];
        snprintf(out, sizeof out, "%s/export/%llu", md, (unsigned long long)j->step);
        if (export_write(e->o.model, e->params, j->step, out, err, sizeof err)) {
            log_error("export of ckpt-%llu: %s", (unsigned long long)j->step, err);
            rc = -1;
        } else {
            log_info("exported ckpt-%llu to %s", (unsigned long long)j->step, out);
        }
    }
    return rc;
}

static void *loop(void *arg) {
    evaluator_t *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->have_job && !e->stop)
            pthread_cond_wait(&e->cv, &e->mu);
        if (!e->have_job)
            break;
        job_t j = e->job;
        e->have_job = false;
        e->busy = true;
        pthread_mutex_unlock(&e->mu);
        int rc = run_job(e, &j);
        pthread_mutex_lock(&e->mu);
        e->busy = false;
        e->done_ticket = j.ticket;
        e->done_ok = rc == 0;
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

evaluator_t *evaluator_create(const evaluator_opts_t *o) {
    evaluator_t *e = xcalloc(1, sizeof *e);
    e->o = *o;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->best_accuracy = read_best(o->cfg->checkpoint.model_dir, best_set(e));
    char eval_dir[PATH_MAX];
    snprintf(eval_dir, sizeof eval_dir, "%s/eval", o->cfg->checkpoint.model_dir);
    events_sink_init(&e->events, eval_dir, "eval scalars");
    snprintf(eval_dir, sizeof eval_dir, "%s/validation", o->cfg->checkpoint.model_dir);
    events_sink_init(&e->val_events, eval_dir, "validation scalars");
    size_t batch = (size_t)o->cfg->train.batch_size;
    e->trainer = trainer_create(o->model, cpu_backend(), config_threads(o->cfg), batch);
    e->params = xalloc_aligned(o->model->nparams * sizeof(float));
    pthread_create(&e->thread, NULL, loop, e);
    return e;
}

void evaluator_free(evaluator_t *e) {
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    e->have_job = false;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    trainer_free(e->trainer);
    free(e->params);
    events_sink_close(&e->events);
    events_sink_close(&e->val_events);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static uint64_t submit(evaluator_t *e, const job_t *j) {
    pthread_mutex_lock(&e->mu);
    uint64_t ticket = ++e->tickets;
    e->job = *j;
    e->job.ticket = ticket;
    e->have_job = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return ticket;
}

uint64_t evaluator_submit(evaluator_t *e, uint64_t step, bool evaluate_it, bool export_final) {
    job_t j = {
        .step = step, .evaluate = evaluate_it, .export_final = export_final, .test = export_final};
    return submit(e, &j);
}

uint64_t evaluator_submit_final(evaluator_t *e, uint64_t step) {
    job_t j = {.step = step, .evaluate = true, .test = true};
    return submit(e, &j);
}

int evaluator_wait(evaluator_t *e, uint64_t ticket) {
    pthread_mutex_lock(&e->mu);
    while (e->done_ticket < ticket && !e->stop)
        pthread_cond_wait(&e->cv, &e->mu);
    int rc = e->done_ticket == ticket && e->done_ok ? 0 : -1;
    pthread_mutex_unlock(&e->mu);
    return rc;
}

bool evaluator_idle(evaluator_t *e) {
    pthread_mutex_lock(&e->mu);
    bool idle = !e->have_job && !e->busy;
    pthread_mutex_unlock(&e->mu);
    return idle;
}

bool evaluator_last(evaluator_t *e, uint64_t *step, double *loss, double *accuracy) {
    pthread_mutex_lock(&e->mu);
    bool have = e->have_last;
    *step = e->last_step;
    *loss = e->last_loss;
    *accuracy = e->last_accuracy;
    pthread_mutex_unlock(&e->mu);
    return have;
}

#include "local.h"

#include <math.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <limits.h>

#include "common/daemon/daemon.h"
#include "common/daemon/record.h"
#include "common/daemon/datasets.h"
#include "common/train/checkpoint.h"
#include "common/data/dataset.h"
#include "common/data/stream.h"
#include "common/base/exitcode.h"
#include "common/formats/events.h"
#include "common/train/export.h"
#include "common/base/log.h"
#include "common/model/model.h"
#include "common/train/results.h"
#include "common/train/store.h"
#include "common/train/model_file.h"
#include "common/train/trainer.h"
#include "common/base/util.h"
#include "worker/progress.h"

typedef struct {
    model_t model;
    dataset_t train, val, test; /* val.n = 0: no validation set */
    struct data_stream *stream; /* data.stream: the training data, and train is empty */
    store_t store;
    trainer_t *trainer;
    loader_t *loader;
    const batch_t *next; /* fetched (and staged on a device) during the last step */
    events_sink_t train_events, eval_events; /* TensorBoard: model_dir/, model_dir/eval/ */
    events_sink_t val_events;                /* model_dir/validation/, as Keras names it */
} local_t;

/* Running means over the current epoch, as Keras's progress bar shows. */
typedef struct {
    progress_means_t means;
    double start, last_log;
    size_t images_since_log;
} epoch_stats_t;

/* The training data's shape and class names, streamed or in memory. */
static const dataset_t *train_shape(const local_t *L) {
    return L->stream ? data_stream_shape(L->stream) : &L->train;
}

/* Loads the model and both splits and checks that they fit each other. */
static int load_inputs(local_t *L, const config_t *c, char *err, size_t errlen) {
    if (model_open(&L->model, c->model, c->train.loss, err, errlen))
        return EXIT_USAGE;
    if (c->data.stream) {
        L->stream = datasets_open_stream(c, &L->model, 0, 1, &L->val, err, errlen);
        if (!L->stream)
            return EXIT_DATAERR;
    } else if (datasets_load_train(c, &L->model, &L->train, &L->val, err, errlen)) {
        return EXIT_DATAERR;
    }
    if (datasets_load_test(c, &L->model, &L->test, err, errlen))
        return EXIT_DATAERR;
    if (datasets_write_class_names(train_shape(L), c->checkpoint.model_dir, err, errlen))
        return EXIT_IOERR;
    return 0;
}

/* The trainer's prefetch hook: the next batch, staged while a step computes. */
static void prefetch(void *arg) {
    local_t *L = arg;
    L->next = loader_next(L->loader);
    trainer_stage(L->trainer, L->next->x, L->next->y, L->next->n);
}

typedef struct {
    local_t *L;
    bool unchecked;
} resume_t;

/* ckpt_try_fn: restores one checkpoint (verified first: a damaged one
 * changes nothing). */
static int try_resume(void *arg, const char *dir, uint64_t step, char *err, size_t errlen) {
    resume_t *r = arg;
    (void)step;
    ckpt_restore_opts_t o = {.pattern = NULL, .slots = true, .unchecked = &r->unchecked};
    return ckpt_restore_store(&r->L->store, dir, &o, NULL, err, errlen);
}

static void resume_bad(void *arg, uint64_t step, const char *why) {
    (void)arg;
    log_warn("%s: ckpt-%llu does not verify; trying the one before", why, (unsigned long long)step);
}

/* The newest checkpoint that verifies, dropping newer damaged ones from the
 * manifest (this process owns it); none is a permanent error. */
static int resume(local_t *L, const config_t *c, const ckpt_manifest_t *man, char *err,
                  size_t errlen) {
    resume_t r = {.L = L};
    uint64_t step;
    const char *md = c->checkpoint.model_dir;
    char dir[PATH_MAX];
    if (ckpt_try_newest(md, man, try_resume, resume_bad, &r, &step, err, errlen))
        return EXIT_DATAERR;
    for (size_t i = man->nkept; i-- > 0 && man->kept[i] > step;)
        if (ckpt_manifest_drop(md, man->kept[i], err, errlen))
            return EXIT_IOERR;
    ckpt_dir(dir, sizeof dir, md, step);
    if (r.unchecked)
        log_warn("%s has no checksums (written before pstrain kept them): restored with NaN and "
                 "Inf checks only",
                 dir);
    log_info("resumed from %s: step %llu", dir, (unsigned long long)L->store.iterations);
    return 0;
}

/* The starting point: model_dir's newest checkpoint that verifies (resume, optimizer
 * slots and step included), else train.warm_start_from, else the
 * initializer. */
static int load_start(local_t *L, const config_t *c, char *err, size_t errlen) {
    ckpt_manifest_t man;
    int mrc = ckpt_manifest_read(c->checkpoint.model_dir, &man, err, errlen);
    if (mrc < 0)
        return EXIT_DATAERR;
    if (mrc == 0)
        return resume(L, c, &man, err, errlen);
    if (!c->train.warm_start_from[0])
        return 0;
    ckpt_restore_opts_t o = {.pattern = c->train.warm_start_vars, .slots = false};
    if (ckpt_restore_store(&L->store, c->train.warm_start_from, &o, NULL, err, errlen))
        return EXIT_DATAERR;
    log_info("warm-started the variables matching \"%s\" from %s", c->train.warm_start_vars,
             c->train.warm_start_from);
    return 0;
}

static int setup(local_t *L, const config_t *c, const backend_t *be, char *err, size_t errlen) {
    int rc = load_inputs(L, c, err, errlen);
    if (rc)
        return rc;
    optim_cfg_t oc;
    if (daemon_optim_config(&oc, c, err, errlen))
        return EXIT_USAGE;
    store_init_full(&L->store, &L->model, &oc, (uint64_t)c->train.seed);
    if ((rc = load_start(L, c, err, errlen)) != 0)
        return rc;
    size_t threads = config_threads(c);
    size_t batch = (size_t)c->train.batch_size;
    /* Evaluation reuses the training batch's buffers (eval batches are capped
     * at train.batch_size), which keeps peak memory at one batch's worth. */
    if (model_loss_check_backend(&L->model, be, err, errlen))
        return EXIT_USAGE;
    L->trainer = trainer_create(&L->model, be, threads, batch);
    trainer_attach_store(L->trainer, &L->store);
    /* Batches in the backend's host memory (page-locked for a GPU). */
    loader_opts_t lo = {.batch_size = batch,
                        .seed = (uint64_t)c->train.seed,
                        .shard = 0,
                        .nshards = 1,
                        .shuffle = c->data.shuffle,
                        .prefetch = (size_t)c->data.prefetch,
                        .start_step = L->store.iterations,
                        .alloc = be->host_alloc,
                        .free = be->host_free,
                        .augment = datasets_augment(c)};
    L->loader = L->stream ? loader_create_stream(L->stream, &lo, err, errlen)
                          : loader_create(&L->train, &lo, err, errlen);
    if (!L->loader)
        return EXIT_USAGE;
    if (!be->host_memory)
        trainer_set_prefetch(L->trainer, prefetch, L);
    return 0;
}

static void teardown(local_t *L) {
    if (L->loader)
        loader_free(L->loader);
    data_stream_close(L->stream);
    trainer_free(L->trainer);
    if (L->store.w)
        store_free(&L->store);
    dataset_free(&L->train);
    dataset_free(&L->val);
    dataset_free(&L->test);
    model_free(&L->model);
    events_sink_close(&L->train_events);
    events_sink_close(&L->eval_events);
    events_sink_close(&L->val_events);
}

/* "epoch 1/3  300/938 [=========>....................] - ETA: 25s - loss: 0.5123 -
 *  accuracy: 0.8123 - 1520 images/s" */
static void log_progress(const epoch_stats_t *es, uint64_t epoch, uint64_t epochs, size_t step,
                         size_t steps, double images_per_sec) {
    char bar[32], eta[32];
    progress_bar(bar, step, steps);
    progress_format_eta(eta, sizeof eta, progress_eta(ps_now() - es->start, step, steps));
    log_info("epoch %llu/%llu %5zu/%zu [%s] - ETA: %s - loss: %.4f - accuracy: %.4f - %.0f "
             "images/s",
             (unsigned long long)epoch + 1, (unsigned long long)epochs, step, steps, bar, eta,
             progress_loss(&es->means), progress_accuracy(&es->means), images_per_sec);
}

/* Evaluates on the validation set during training (when there is one) and
 * on the test set at the end (final) or when there is no validation set. */
static int evaluate(local_t *L, const config_t *c, uint64_t step, double epoch, double elapsed,
                    const epoch_stats_t *es, bool final) {
    char err[PS_ERRLEN];
    eval_metrics_t em;
    double t0 = ps_now();
    bool val = !final && L->val.n > 0;
    trainer_evaluate(L->trainer, L->store.w, val ? &L->val : &L->test, (size_t)c->eval.batch_size,
                     &em);
    log_info("eval on %s at step %llu (epoch %.2f): loss: %.4f - accuracy: %.4f (%zu examples, "
             "%.1fs)",
             val ? "validation" : "test", (unsigned long long)step, epoch, em.loss, em.accuracy,
             em.n, ps_now() - t0);
    results_context_t ctx = {.global_step = step,
                             .epoch = epoch,
                             .elapsed_secs = elapsed,
                             .train_loss = progress_loss(&es->means),
                             .train_accuracy = progress_accuracy(&es->means),
                             .class_names = results_default_class_names(c->data.dir, em.nclasses),
                             .set = val ? "validation" : "test"};
    events_sink_eval(val ? &L->val_events : &L->eval_events, step, em.loss, em.accuracy);
    int rc = results_write(c->checkpoint.model_dir, &em, &ctx, err, sizeof err);
    eval_metrics_free(&em);
    if (rc) {
        log_error("cannot write eval results: %s", err);
        return EXIT_IOERR;
    }
    return 0;
}

static int checkpoint(local_t *L, const config_t *c, uint64_t step, bool final) {
    char err[PS_ERRLEN];
    double t0 = ps_now();
    trainer_sync_store(L->trainer); /* a device's weights and slots to the host store */
    if (ckpt_take_local(&L->store, c->checkpoint.model_dir, step, (size_t)c->checkpoint.keep, final,
                        err, sizeof err)) {
        log_error("checkpoint at step %llu: %s", (unsigned long long)step, err);
        return EXIT_IOERR;
    }
    log_info("checkpoint %s/ckpt-%llu written in %.0f ms%s", c->checkpoint.model_dir,
             (unsigned long long)step, 1e3 * (ps_now() - t0), final ? " (final)" : "");
    if (!final)
        return 0;
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/export/%llu", c->checkpoint.model_dir, (unsigned long long)step);
    if (export_write(&L->model, L->store.w, step, out, err, sizeof err)) {
        log_error("export: %s", err);
        return EXIT_IOERR;
    }
    if (datasets_write_class_names(train_shape(L), out, err, sizeof err)) {
        log_error("export: %s", err);
        return EXIT_IOERR;
    }
    log_info("exported the model to %s", out);
    return 0;
}

/* Training scalars for TensorBoard every log.summary_steps steps, as the
 * master writes them for a cluster: loss and accuracy (means over the steps
 * since the last summary), learning rate, steps and examples per second. */
typedef struct {
    uint64_t step; /* of the last summary */
    double time, loss_sum, correct;
    size_t n;
} summary_t;

static void summarize(local_t *L, const config_t *c, summary_t *sum, uint64_t step,
                      const step_metrics_t *sm) {
    sum->loss_sum += sm->loss * (double)sm->n;
    sum->correct += sm->accuracy * (double)sm->n;
    sum->n += sm->n;
    if (step < sum->step + (uint64_t)c->log.summary_steps)
        return;
    double now = ps_now(), dt = now - sum->time;
    events_sink_train(&L->train_events, step, sum->loss_sum / (double)sum->n,
                      sum->correct / (double)sum->n, optim_lr(&L->store.opt, step),
                      dt > 0 ? (double)(step - sum->step) / dt : 0.0,
                      dt > 0 ? (double)sum->n / dt : 0.0);
    *sum = (summary_t){.step = step, .time = now};
}

static int train_loop(local_t *L, const config_t *c, volatile sig_atomic_t *stop) {
    size_t spe = loader_steps_per_epoch(L->loader);
    uint64_t total = progress_total_steps(c->train.max_steps, c->train.epochs, spe);
    uint64_t epochs = progress_epochs(total, spe);
    epoch_stats_t es = {.start = ps_now()};
    es.last_log = es.start;
    double train_start = es.start;
    bool evaluated_last = false;
    uint64_t step = L->store.iterations, last_ckpt = step;
    double last_ckpt_time = ps_now();
    summary_t sum = {.step = step, .time = ps_now()};
    for (; step < total && !*stop; step++) {
        /* The prefetch hook may fetch the next batch during the step, which
         * ends this one: what the loop needs of it is copied first. */
        const batch_t *next = L->next ? L->next : loader_next(L->loader);
        batch_t b = *next;
        L->next = NULL;
        if (b.n == 0) { /* a streamed file changed under the run */
            log_error("%s", loader_error(L->loader));
            int rc = step > last_ckpt ? checkpoint(L, c, step, false) : EXIT_OK;
            return rc ? rc : EXIT_DATAERR;
        }
        step_metrics_t sm;
        uint64_t dropout_seed = rng_key((uint64_t)c->train.seed, "dropout", step);
        trainer_step(L->trainer, b.x, b.y, b.n, dropout_seed, &sm);
        progress_add(&es.means, sm.loss, sm.accuracy, sm.n);
        es.images_since_log += sm.n;
        summarize(L, c, &sum, step + 1, &sm);
        double now = ps_now();
        bool epoch_end = progress_epoch_end(b.step_in_epoch, spe, step, total);
        if (progress_log_due(now, es.last_log, c->log.every_secs) || epoch_end) {
            log_progress(&es, b.epoch, epochs, (size_t)b.step_in_epoch + 1, spe,
                         progress_rate(es.images_since_log, now - es.last_log));
            es.last_log = now;
            es.images_since_log = 0;
        }
        evaluated_last = false;
        if (progress_eval_due(epoch_end, c->eval.every_epoch, step, total)) {
            double epoch = (double)(step + 1) / (double)spe;
            int rc = evaluate(L, c, step + 1, epoch, ps_now() - train_start, &es, false);
            if (rc)
                return rc;
            evaluated_last = L->val.n == 0;
        }
        if (b.step_in_epoch + 1 == spe) {
            es = (epoch_stats_t){.start = ps_now()};
            es.last_log = es.start;
        }
        if (step + 1 < total && ckpt_due(c->checkpoint.every_steps, c->checkpoint.every_secs,
                                         step + 1, last_ckpt, last_ckpt_time, ps_now())) {
            int rc = checkpoint(L, c, step + 1, false);
            if (rc)
                return rc;
            last_ckpt = step + 1;
            last_ckpt_time = ps_now();
        }
    }
    if (*stop) {
        log_info("stopping on signal %d after step %llu: checkpoint first", (int)*stop,
                 (unsigned long long)step);
        return step > last_ckpt ? checkpoint(L, c, step, false) : EXIT_OK;
    }
    if (!evaluated_last) {
        int rc =
            evaluate(L, c, step, (double)step / (double)spe, ps_now() - train_start, &es, true);
        if (rc)
            return rc;
    }
    return checkpoint(L, c, step, true);
}

int local_train(const config_t *cfg, const backend_t *be, volatile sig_atomic_t *stop) {
    if (cfg->train.synthetic_step_ms > 0) {
        log_error("train.synthetic_step_ms needs a cluster (TF_CONFIG): a worker alone has no PS "
                  "to measure");
        return EXIT_USAGE;
    }
    char err[PS_ERRLEN];
    local_t L;
    memset(&L, 0, sizeof L);
    char eval_dir[PATH_MAX];
    snprintf(eval_dir, sizeof eval_dir, "%s/eval", cfg->checkpoint.model_dir);
    events_sink_init(&L.train_events, cfg->checkpoint.model_dir, "training scalars");
    events_sink_init(&L.eval_events, eval_dir, "eval scalars");
    snprintf(eval_dir, sizeof eval_dir, "%s/validation", cfg->checkpoint.model_dir);
    events_sink_init(&L.val_events, eval_dir, "validation scalars");
    int rc = setup(&L, cfg, be, err, sizeof err);
    if (rc) {
        log_error("%s", err);
        teardown(&L);
        return rc;
    }
    if (daemon_record_run(cfg, "pstrain-worker", NULL, err, sizeof err))
        log_warn("the run's record: %s", err);
    log_info("model %s: %zu parameters; %zu training, %zu validation and %zu test examples; "
             "batch %lld on %zu %s thread%s; %zu steps per epoch",
             cfg->model, L.model.nparams, L.stream ? loader_shard_size(L.loader) : L.train.n,
             L.val.n, L.test.n, (long long)cfg->train.batch_size, trainer_threads(L.trainer),
             be->name, trainer_threads(L.trainer) == 1 ? "" : "s",
             loader_steps_per_epoch(L.loader));
    rc = train_loop(&L, cfg, stop);
    teardown(&L);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        log_info("peak RSS %.1f MiB", (double)ru.ru_maxrss / 1024.0);
    return rc;
}

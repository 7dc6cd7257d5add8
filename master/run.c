#include "master/run.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/base/util.h"
#include "common/daemon/record.h"
#include "common/data/dataset.h"
#include "common/daemon/datasets.h"
#include "common/formats/events.h"
#include "common/peers/psclient.h"
#include "common/train/optim.h"
#include "common/train/results.h"
#include "common/train/model_file.h"
#include "common/train/trainer.h"
#include "master/checkpointer.h"
#include "master/evaluator.h"
#include "master/master.h"
#include "master/recovery.h"

/* One master's run. Threads: the caller's runs serve(), the loop; the RPC
 * server's threads run master/service.c; the evaluator has its own. They
 * share only state (master_t, which owns its lock) and, read-only once
 * start() returns, the model, the test and validation sets and the counts
 * below. */
typedef struct {
    daemon_t *d;
    master_t state;
    model_t model;
    dataset_t test;
    dataset_t val; /* data.val, or what data.val_split holds out; n = 0: none */
    size_t train_examples;
    psclient_t *ps;
    rpc_server_t *server;
    checkpointer_t ckpt;
    evaluator_t *ev;
    recovery_t recovery;
    events_sink_t events; /* training scalars, model_dir/events.out.tfevents.* */
    optim_cfg_t optim;
    uint64_t summary_step;
    double summary_time;
    Pstrain__Caller caller;
    double started;
    uint64_t log_step; /* the global step and time of the last progress line */
    double log_time;
} master_run_t;

/* The data sets, loaded after the server listens (they take a second).
 * The validation set is the one the workers leave out of training: the
 * same datasets_load_train, whose hold-out is seeded by train.seed. With
 * data.stream the training records are only counted. */
static int load_data(master_run_t *r) {
    char err[PS_ERRLEN];
    const config_t *c = &r->d->cfg;
    dataset_t train;
    if (datasets_load_test(c, &r->model, &r->test, err, sizeof err) ||
        (c->data.stream ? datasets_count_stream(c, &r->model, &train, &r->val, err, sizeof err)
                        : datasets_load_train(c, &r->model, &train, &r->val, err, sizeof err))) {
        log_error("%s", err);
        return EXIT_DATAERR;
    }
    r->train_examples = train.n;
    log_info("%zu training, %zu validation and %zu test examples", train.n, r->val.n, r->test.n);
    int rc = datasets_write_class_names(&train, c->checkpoint.model_dir, err, sizeof err);
    dataset_free(&train);
    if (rc) {
        log_error("%s", err);
        return EXIT_IOERR;
    }
    return 0;
}

/* Examples one global step consumes: a batch, or in sync mode a batch from
 * each of the replicas averaged. */
static size_t examples_per_step(const master_run_t *r) {
    const config_t *c = &r->d->cfg;
    size_t nworkers = r->d->cluster.jobs[CLUSTER_WORKER].span;
    return (size_t)c->train.batch_size * config_replicas(c, nworkers);
}

static uint64_t target_steps(const master_run_t *r) {
    const config_t *c = &r->d->cfg;
    return trainer_target_steps(c->train.max_steps, c->train.epochs, r->train_examples,
                                examples_per_step(r), 1);
}

static int start_server(master_run_t *r) {
    char err[PS_ERRLEN];
    rpc_server_config_t sc = {.addr = r->d->self,
                              .methods = master_methods,
                              .n_methods = master_nmethods,
                              .ctx = &r->state,
                              .opt = daemon_rpc_options(&r->d->cfg)};
    if (rpc_server_start(&r->server, &sc, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    log_info("listening on %s", r->d->self);
    Pstrain__Caller init = PSTRAIN__CALLER__INIT;
    r->caller = init;
    r->caller.role = "master";
    psclient_options_t po = daemon_psclient_options(r->d);
    r->ps = psclient_create(&po, &r->model, &r->caller, NULL, NULL, err, sizeof err);
    if (!r->ps) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    return 0;
}

/* What eval_results.json records beside the metrics: the workers' running
 * training loss and accuracy from their last beats, the epoch, the time. */
static void results_context(void *arg, uint64_t step, results_context_t *out) {
    master_run_t *r = arg;
    double loss, accuracy;
    master_train_metrics(&r->state, &loss, &accuracy);
    *out = (results_context_t){.global_step = step,
                               .train_loss = loss,
                               .train_accuracy = accuracy,
                               .epoch = (double)step * (double)examples_per_step(r) /
                                        (double)(r->train_examples ? r->train_examples : 1),
                               .elapsed_secs = ps_now() - r->started};
}

/* Training scalars for TensorBoard every log.summary_steps global steps:
 * the workers' loss and accuracy (means of their last beats), the learning
 * rate, global steps and examples per second. */
static void maybe_summary(master_run_t *r, uint64_t step) {
    const config_t *c = &r->d->cfg;
    double now = ps_now();
    if (step < r->summary_step + (uint64_t)c->log.summary_steps)
        return;
    results_context_t ctx;
    results_context(r, step, &ctx);
    double dt = now - r->summary_time, steps = (double)(step - r->summary_step);
    events_sink_train(&r->events, step, ctx.train_loss, ctx.train_accuracy,
                      optim_lr(&r->optim, step), dt > 0 ? steps / dt : 0.0,
                      dt > 0 ? steps * (double)examples_per_step(r) / dt : 0.0);
    r->summary_step = step;
    r->summary_time = now;
}

/* The master evaluates checkpoints itself unless TF_CONFIG has an evaluator
 * task, which then does (TensorFlow's rule). */
static bool evaluates(const master_run_t *r) {
    return r->d->cluster.jobs[CLUSTER_EVALUATOR].n == 0;
}

static void start_evaluator(master_run_t *r) {
    evaluator_opts_t eo = {.model = &r->model,
                           .test = &r->test,
                           .val = &r->val,
                           .cfg = &r->d->cfg,
                           .context = results_context,
                           .arg = r};
    r->ev = evaluator_create(&eo);
}

static void maybe_checkpoint(master_run_t *r, uint64_t step) {
    if (!checkpointer_due(&r->ckpt, step, ps_now()))
        return;
    char err[PS_ERRLEN];
    if (checkpointer_take(&r->ckpt, step, false, err, sizeof err)) {
        log_warn("checkpoint at step %llu failed (trying again later): %s",
                 (unsigned long long)step, err);
        return;
    }
    if (evaluates(r))
        evaluator_submit(r->ev, step, true, false);
}

/* The final checkpoint: without it the trained model is lost. Tried
 * FINAL_ATTEMPTS times, waiting 1, 2, 4, ... s between tries. */
#define FINAL_ATTEMPTS 5

static int final_checkpoint(master_run_t *r, uint64_t step) {
    char err[PS_ERRLEN];
    double wait = 1.0;
    for (int attempt = 1; attempt <= FINAL_ATTEMPTS; attempt++) {
        if (checkpointer_take(&r->ckpt, step, true, err, sizeof err) == 0)
            return 0;
        log_error("final checkpoint at step %llu, attempt %d of %d: %s", (unsigned long long)step,
                  attempt, FINAL_ATTEMPTS, err);
        if (attempt == FINAL_ATTEMPTS || daemon_stop_signal)
            break;
        ps_sleep(wait);
        wait *= 2;
    }
    return EXIT_IOERR;
}

/* Evaluates (unless an evaluator task does) and exports the final checkpoint. */
static int evaluate_final(master_run_t *r, uint64_t step) {
    uint64_t ticket = evaluator_submit(r->ev, step, evaluates(r), true);
    if (evaluator_wait(r->ev, ticket))
        return EXIT_IOERR;
    uint64_t at;
    double loss, acc;
    if (evaluates(r) && evaluator_last(r->ev, &at, &loss, &acc) && at == step) {
        log_info("final evaluation at global step %llu: loss: %.4f - accuracy: %.4f",
                 (unsigned long long)step, loss, acc);
        master_set_final(&r->state, loss, acc);
    }
    return EXIT_OK;
}

/* Workers still beating after training ended; they stop on their next beat. */
static size_t workers_alive(master_run_t *r) {
    return master_workers_beating(&r->state, 2.0 * r->d->cfg.cluster.heartbeat_secs, ps_now());
}

static int finish(master_run_t *r, uint64_t step) {
    log_info("global step %llu reached the target %llu: finishing", (unsigned long long)step,
             (unsigned long long)master_target(&r->state));
    master_set_done(&r->state, step);
    int rc = final_checkpoint(r, step);
    if (rc != 0) {
        /* The PS still hold the trained model: they are not told training
         * is over, and a restarted master takes the final checkpoint. */
        log_error("no final checkpoint at step %llu: the PS keep the model; exiting %d so that a "
                  "restarted master finishes",
                  (unsigned long long)step, rc);
        return rc;
    }
    psclient_shutdown(r->ps, "training is over", r->d->cfg.rpc.deadline_secs);
    rc = evaluate_final(r, step);
    /* Give workers a few beats to hear that training is over. */
    double until = ps_now() + 3.0 * r->d->cfg.cluster.heartbeat_secs;
    while (ps_now() < until && workers_alive(r) > 0 && !daemon_stop_signal)
        ps_sleep(0.05);
    return rc;
}

/* A master restarted after the final checkpoint: training is over. Tells
 * any PS still up to exit, and makes sure of the evaluation and export. */
static int already_done(master_run_t *r) {
    uint64_t step = r->ckpt.last_step;
    log_info("ckpt-%llu is final: training is already over", (unsigned long long)step);
    master_set_done(&r->state, step);
    psclient_shutdown(r->ps, "training is over", 2.0);
    return evaluate_final(r, step);
}

/* Stopped by a signal: the cluster trains on without us, and a restarted
 * master resumes from this checkpoint's step. */
static void checkpoint_on_stop(master_run_t *r) {
    log_info("stopping on signal %d: checkpoint first", (int)daemon_stop_signal);
    int64_t step = psclient_poll_step(r->ps, 1.0);
    char err[PS_ERRLEN];
    if (step > 0 && (uint64_t)step > r->ckpt.last_step &&
        checkpointer_take(&r->ckpt, (uint64_t)step, false, err, sizeof err))
        log_warn("checkpoint on stop failed: %s", err);
}

/* ETA as "1h02m", "3m05s" or "42s" into buf. */
static void format_eta(char *buf, size_t len, double secs) {
    long s = (long)(secs + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%ldh%02ldm", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, len, "%lds", s);
}

/* The progress line, every log.every_secs: global step/target, workers
 * alive, the workers' mean training loss and accuracy, images/s over all
 * workers (the global step's rate times the examples each step takes) and
 * the time left at that rate. scripts/train_local_dist.sh shows it as is. */
static void log_progress(master_run_t *r, uint64_t step) {
    double now = ps_now(), loss, acc, dt = now - r->log_time;
    uint64_t target = master_target(&r->state);
    char rate_eta[96] = "", metrics[64] = "";
    /* Under half a second (the first poll) says nothing about the rate. */
    if (dt >= 0.5 && step > r->log_step) {
        double rate = (double)(step - r->log_step) / dt;
        char eta[32];
        format_eta(eta, sizeof eta, target > step ? (double)(target - step) / rate : 0.0);
        snprintf(rate_eta, sizeof rate_eta, ", %.0f images/s, ETA %s",
                 rate * (double)examples_per_step(r), eta);
    }
    if (master_train_metrics(&r->state, &loss, &acc))
        snprintf(metrics, sizeof metrics, ", loss %.4f, accuracy %.4f", loss, acc);
    log_info("global step %llu/%llu, %u workers alive%s%s", (unsigned long long)step,
             (unsigned long long)target, master_live_workers(&r->state, now), metrics, rate_eta);
    if (dt >= 0.5) {
        r->log_step = step;
        r->log_time = now;
    }
}

static int serve(master_run_t *r) {
    r->summary_time = r->started;
    events_sink_init(&r->events, r->d->cfg.checkpoint.model_dir, "training scalars");
    r->summary_step = r->ckpt.last_step;
    if (checkpointer_training_over(&r->ckpt, master_target(&r->state)))
        return already_done(r);
    r->log_step = r->ckpt.last_step;
    r->log_time = ps_now();
    double last_log = 0.0;
    while (!daemon_stop_signal) {
        int64_t step = psclient_poll_step(r->ps, 1.0);
        master_check_liveness(&r->state, ps_now());
        recovery_tick(&r->recovery, step);
        if (r->recovery.fatal) {
            log_error("giving up on the rollback: %s", r->recovery.fatal_err);
            return EXIT_DATAERR;
        }
        if (step >= 0) {
            if (master_advance(&r->state, (uint64_t)step))
                return finish(r, (uint64_t)step);
            maybe_checkpoint(r, (uint64_t)step);
            maybe_summary(r, (uint64_t)step);
        }
        if (ps_now() - last_log >= r->d->cfg.log.every_secs && step >= 0) {
            log_progress(r, (uint64_t)step);
            last_log = ps_now();
        }
        ps_sleep(0.1);
    }
    checkpoint_on_stop(r);
    return EXIT_OK;
}

/* Everything before the loop: the state, the server, the data, the
 * checkpointer, recovery, the evaluator, the target. */
static int start(master_run_t *r) {
    char err[PS_ERRLEN];
    const daemon_t *d = r->d;
    /* Until the data is loaded the target is unknown: nothing finishes. */
    master_init(&r->state, &d->cluster, d->cfg.cluster.dead_after_secs, UINT64_MAX);
    int rc = start_server(r);
    if (rc == 0)
        rc = load_data(r);
    if (rc == 0 && daemon_record_config(d, err, sizeof err))
        log_warn("the run's record: %s", err);
    if (rc == 0 && daemon_optim_config(&r->optim, &d->cfg, err, sizeof err)) {
        log_error("%s", err);
        rc = EXIT_USAGE;
    }
    if (rc == 0 && (checkpointer_init(&r->ckpt, r->ps, &d->cfg, &r->model, err, sizeof err) ||
                    checkpointer_verify(&r->ckpt, err, sizeof err))) {
        log_error("%s", err);
        rc = EXIT_DATAERR;
    }
    if (rc != 0)
        return rc;
    recovery_init(&r->recovery, r->ps, &d->cfg);
    r->recovery.ckpt = &r->ckpt;
    /* Before the evaluator's thread starts: it reads the time. */
    r->started = ps_now();
    start_evaluator(r);
    master_set_target(&r->state, target_steps(r));
    log_info("target %llu global steps (%s mode)", (unsigned long long)master_target(&r->state),
             d->cfg.train.mode);
    if (r->ckpt.last_step > 0 && !checkpointer_training_over(&r->ckpt, master_target(&r->state)))
        log_info("resumed from ckpt-%llu (step %llu of %llu)",
                 (unsigned long long)r->ckpt.last_step, (unsigned long long)r->ckpt.last_step,
                 (unsigned long long)master_target(&r->state));
    return 0;
}

/* In reverse order of start: the evaluator's thread reads the state and
 * the model, the server's threads the state. */
static void stop(master_run_t *r) {
    evaluator_free(r->ev);
    events_sink_close(&r->events);
    if (r->recovery.stats)
        recovery_free(&r->recovery);
    psclient_free(r->ps);
    rpc_server_stop(r->server);
    master_free(&r->state);
    dataset_free(&r->val);
    dataset_free(&r->test);
}

/* Stopped by a signal while the evaluator is busy: the checkpoint is taken,
 * and an evaluation of the CNN can outlast the grace a supervisor gives
 * (stop.sh's 10 s, then SIGKILL). The master returns without joining it;
 * the evaluator's thread, the model, the test set and the state it reads
 * are left to the process's exit, which follows at once. */
static bool leave_evaluation(master_run_t *r) {
    if (!daemon_stop_signal || !r->ev || evaluator_idle(r->ev))
        return false;
    log_info("stopping during an evaluation: not waiting for it");
    events_sink_close(&r->events);
    return true;
}

int master_run(daemon_t *d) {
    master_run_t *r = xcalloc(1, sizeof *r);
    r->d = d;
    char err[PS_ERRLEN];
    int rc = EXIT_USAGE;
    if (model_open(&r->model, d->cfg.model, d->cfg.train.loss, err, sizeof err)) {
        log_error("%s", err);
        free(r);
        return rc;
    }
    rc = start(r);
    if (rc == 0)
        rc = serve(r);
    if (leave_evaluation(r))
        return rc;
    stop(r);
    model_free(&r->model);
    free(r);
    return rc;
}

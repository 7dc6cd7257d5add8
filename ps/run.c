/* The parameter server's life once its daemon has started: the shard, its
 * starting weights, the RPC server, the heartbeats to the master and the
 * loop that reports the step until the master or a signal ends it. */
#include "ps/run.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/base/util.h"
#include "common/peers/heartbeat.h"
#include "common/rpc/rpc.h"
#include "ps/service.h"

/* One line naming the learning-rate rule of the mode, when one is on, and
 * one for dana. */
static void log_lr_rules(const ps_shard_t *sh, const config_t *c) {
    if (sh->dana)
        log_info("%s: a momentum per worker (train.async_momentum dana), %zu of them, %.2f MiB; "
                 "workers pull the look-ahead weights",
                 c->train.mode, sh->dana->nworkers,
                 (double)sh->dana->nworkers * (double)sh->dana->size * 4.0 / (1 << 20));
    if (sh->sync && sh->lr_linear)
        log_info("sync: learning rate times the pushes averaged per step (linear scaling), "
                 "reached over %llu warm-up steps",
                 (unsigned long long)sh->warmup_steps);
    else if (!sh->sync && sh->staleness_lr == PS_STALENESS_LR_INVERSE)
        log_info("%s: a push computed s updates ago moves the weights by learning_rate / s",
                 c->train.mode);
    else if (!sh->sync && sh->staleness_lr == PS_STALENESS_LR_MOMENTUM)
        log_info("%s: momentum and learning rate follow the mean staleness s of the pushes "
                 "(asynchrony adds momentum s / (1 + s); train.staleness_lr momentum)",
                 c->train.mode);
}

/* Async: how stale the pushes were, for the operator comparing runs. */
static void log_staleness(const ps_shard_t *sh) {
    if (sh->sync || !sh->pushes)
        return;
    log_info("pushes applied: %llu, staleness mean %.2f, max %llu", (unsigned long long)sh->pushes,
             (double)sh->staleness_sum / (double)sh->pushes, (unsigned long long)sh->staleness_max);
    if (sh->staleness_lr == PS_STALENESS_LR_MOMENTUM) {
        double mu, scale;
        ps_staleness_momentum(sh->store.opt.momentum, sh->stale_mean.mean, &mu, &scale);
        log_info("staleness_lr momentum at the end: mean staleness %.2f, momentum %.3f, rate x%.3f",
                 sh->stale_mean.mean, mu, scale);
    }
}

static ps_staleness_lr_t staleness_lr_of(const char *name) {
    return !strcmp(name, "inverse")    ? PS_STALENESS_LR_INVERSE
           : !strcmp(name, "momentum") ? PS_STALENESS_LR_MOMENTUM
           : !strcmp(name, "auto")     ? PS_STALENESS_LR_AUTO
                                       : PS_STALENESS_LR_OFF;
}

/* train.async_momentum auto, async or ssp, and no dana: one line saying why. */
static void log_dana_skipped(const ps_shard_t *sh, const ps_shard_opts_t *o) {
    char why[PS_ERRLEN];
    if (sh->sync || sh->dana || !o->dana_auto)
        return;
    if (ps_shard_dana_check(o, sh->store.size, why, sizeof why) == 0)
        snprintf(why, sizeof why, "one worker: nothing is stale");
    log_info("train.async_momentum auto: one momentum (%s)", why);
}

static int init_shard(ps_service_t *s, const daemon_t *d, const model_t *m) {
    char err[PS_ERRLEN];
    const config_t *c = &d->cfg;
    ps_shard_opts_t o = {.index = d->cluster.task_index,
                         .nps = (int)d->cluster.jobs[CLUSTER_PS].span,
                         .sync = !strcmp(c->train.mode, "sync"),
                         .replicas = config_replicas(c, d->cluster.jobs[CLUSTER_WORKER].span),
                         .max_workers = d->cluster.jobs[CLUSTER_WORKER].span,
                         .seed = (uint64_t)c->train.seed,
                         .staleness_lr = staleness_lr_of(c->train.staleness_lr),
                         .lr_linear = !strcmp(c->train.lr_scaling, "linear"),
                         .warmup_steps = (uint64_t)c->train.warmup_steps,
                         .sparse_sgd = daemon_topk_momentum(c) > 0,
                         .apply_threads = c->train.apply_threads > 0
                                              ? (int)c->train.apply_threads
                                              : rpc_stream_threads((int)c->rpc.stream_threads),
                         .dana = !strcmp(c->train.async_momentum, "dana"),
                         .dana_auto = !strcmp(c->train.async_momentum, "auto"),
                         .sparse_rows = c->train.sparse_embeddings && model_has_sparse(m)};
    if (daemon_optim_config(&o.optim, c, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    if (ps_shard_init(&s->shard, m, &o, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    log_info("holding %zu partitions, %.2f MiB of weights, %zu optimizer slots; mode %s; %d apply "
             "thread%s, %d stream thread%s",
             s->shard.store.nparts, (double)s->shard.store.size * 4.0 / (1 << 20),
             optim_nslots(&o.optim), c->train.mode, o.apply_threads,
             o.apply_threads == 1 ? "" : "s", rpc_stream_threads((int)c->rpc.stream_threads),
             rpc_stream_threads((int)c->rpc.stream_threads) == 1 ? "" : "s");
    log_lr_rules(&s->shard, c);
    log_dana_skipped(&s->shard, &o);
    s->model_dir = c->checkpoint.model_dir;
    s->nps = o.nps;
    s->configured_replicas = s->shard.replicas;
    if (!strcmp(c->train.mode, "ssp")) {
        s->ssp = xcalloc(1, sizeof *s->ssp);
        ps_ssp_init(s->ssp, o.max_workers, (uint64_t)c->train.staleness,
                    c->cluster.dead_after_secs);
        log_info("ssp: a worker's pull waits while it is over %lld steps ahead of the slowest "
                 "worker that pushed in the last %.1fs",
                 (long long)c->train.staleness, c->cluster.dead_after_secs);
    }
    return 0;
}

typedef struct {
    ps_service_t *s;
    const config_t *c;
} reset_ctx_t;

static int warm_start(ps_service_t *s, const config_t *c, char *err, size_t errlen) {
    if (!c->train.warm_start_from[0])
        return 0;
    if (ps_shard_warm_start(&s->shard, c->train.warm_start_from, c->train.warm_start_vars, err,
                            errlen))
        return -1;
    log_info("warm-started the variables matching \"%s\" from %s", c->train.warm_start_vars,
             c->train.warm_start_from);
    return 0;
}

/* Restore with no checkpoint yet: the weights the run started with. */
static int reset_to_start(void *arg, char *err, size_t errlen) {
    reset_ctx_t *r = arg;
    ps_shard_reset(&r->s->shard);
    return warm_start(r->s, r->c, err, errlen);
}

typedef struct {
    ps_service_t *s;
    bool unchecked;
} resume_t;

/* ckpt_try_fn: restores one checkpoint (verified on the way). */
static int try_resume(void *arg, const char *dir, uint64_t step, char *err, size_t errlen) {
    resume_t *r = arg;
    (void)step;
    return ps_shard_restore(&r->s->shard, dir, &r->unchecked, err, errlen);
}

/* ckpt_bad_fn: a checkpoint that does not verify. Every PS reads the same
 * files, so every PS falls back to the same older checkpoint. */
static void resume_bad(void *arg, uint64_t step, const char *why) {
    (void)arg;
    log_warn("%s: ckpt-%llu does not verify; trying the one before", why, (unsigned long long)step);
}

/* The newest checkpoint of model_dir that verifies; none is a permanent
 * error (the PS cannot rebuild the model it held). */
static int resume(ps_service_t *s, const config_t *c, const ckpt_manifest_t *man) {
    char err[PS_ERRLEN], dir[PATH_MAX];
    resume_t r = {.s = s};
    uint64_t step;
    if (ckpt_try_newest(c->checkpoint.model_dir, man, try_resume, resume_bad, &r, &step, err,
                        sizeof err)) {
        log_error("cannot resume: %s", err);
        return EXIT_DATAERR;
    }
    ckpt_dir(dir, sizeof dir, c->checkpoint.model_dir, step);
    if (r.unchecked)
        log_warn("%s has no checksums (written before pstrain kept them): restored with NaN and "
                 "Inf checks only",
                 dir);
    s->origin_step = ps_shard_step(&s->shard);
    log_info("resumed from %s: step %llu", dir, (unsigned long long)ps_shard_step(&s->shard));
    return 0;
}

/* The starting weights: the newest checkpoint of model_dir that verifies (a
 * resumed run or a restarted PS), else train.warm_start_from, else the
 * initializer. */
static int load_start(ps_service_t *s, const config_t *c) {
    char err[PS_ERRLEN];
    ckpt_manifest_t man;
    int mrc = ckpt_manifest_read(c->checkpoint.model_dir, &man, err, sizeof err);
    if (mrc < 0) {
        log_error("%s", err);
        return EXIT_DATAERR;
    }
    if (mrc == 0)
        return resume(s, c, &man);
    if (warm_start(s, c, err, sizeof err)) {
        log_error("warm start: %s", err);
        return EXIT_DATAERR;
    }
    return 0;
}

static int serve(daemon_t *d, ps_service_t *s) {
    char err[PS_ERRLEN];
    rpc_server_config_t sc = {.addr = d->self,
                              .methods = ps_service_methods,
                              .n_methods = ps_service_nmethods,
                              .msg_methods = ps_service_msg_methods,
                              .n_msg_methods = ps_service_n_msg_methods,
                              .ctx = s,
                              .on_cancel = ps_service_on_cancel,
                              .on_tick = ps_service_on_tick,
                              .tick_s = 0.05,
                              .opt = daemon_rpc_options(&d->cfg)};
    rpc_server_t *server;
    s->max_wait_s = d->cfg.rpc.deadline_secs;
    if (rpc_server_start(&server, &sc, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    int sport = rpc_server_stream_port(server);
    bool shm = d->cfg.rpc.shm && !d->cfg.tls.ca[0];
    char tcp[64] = "";
    if (sport)
        snprintf(tcp, sizeof tcp, "%sover TCP on port %d", shm ? " and " : "", sport);
    log_info("listening on %s%s%s%s", d->self, shm || sport ? "; tensors also " : "",
             shm ? "through shared memory on this host" : "", tcp);
    rpc_options_t co = daemon_rpc_options(&d->cfg);
    rpc_channel_t *master = NULL;
    heartbeat_t *hb = NULL;
    heartbeat_progress_t progress = {0};
    const cluster_addr_t *ma = cluster_find(&d->cluster, CLUSTER_MASTER, 0);
    if (ma && rpc_channel_create(&master, ma->text, &co, err, sizeof err) == 0) {
        heartbeat_opts_t ho = {.role = "ps",
                               .index = d->cluster.task_index,
                               .incarnation = s->incarnation,
                               .address = d->self,
                               .interval_s = d->cfg.cluster.heartbeat_secs,
                               .deadline_s = d->cfg.cluster.heartbeat_secs * 2,
                               .master = master};
        hb = heartbeat_start(&ho, &progress);
    }
    while (!daemon_stop_signal && !atomic_load(&s->shutdown)) {
        atomic_store(&progress.step, ps_shard_step(&s->shard));
        if (hb)
            atomic_store(&s->live_workers, heartbeat_live_workers(hb));
        ps_sleep(0.02);
    }
    if (daemon_stop_signal)
        log_info("stopping on signal %d: finishing calls in flight", (int)daemon_stop_signal);
    else
        log_info("training is over: exiting");
    heartbeat_stop(hb);
    if (master)
        rpc_channel_destroy(master);
    rpc_server_stop(server);
    log_staleness(&s->shard); /* the server's threads, which changed it, are gone */
    return EXIT_OK;
}

int ps_run(daemon_t *d, const model_t *m) {
    ps_service_t s;
    memset(&s, 0, sizeof s);
    ps_service_init(&s, (uint64_t)(ps_wall_now() * 1e6));
    int rc = init_shard(&s, d, m);
    reset_ctx_t reset = {.s = &s, .c = &d->cfg};
    s.reset = reset_to_start;
    s.reset_arg = &reset;
    if (rc == 0)
        rc = load_start(&s, &d->cfg);
    if (rc == 0)
        rc = serve(d, &s);
    ps_service_free(&s);
    return rc;
}

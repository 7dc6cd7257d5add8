/* A worker in a cluster: pulls the model from every PS at once, computes the
 * gradient of its batch, pushes each partition's gradient to the PS that
 * holds it, and beats to the master; rides out unreachable peers by retrying
 * with capped backoff. */
#include "cluster.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/data/dataset.h"
#include "common/data/stream.h"
#include "common/daemon/datasets.h"
#include "common/base/exitcode.h"
#include "common/peers/heartbeat.h"
#include "common/base/log.h"
#include "common/model/model.h"
#include "common/peers/psclient.h"
#include "common/rpc/wire.h"
#include "common/train/model_file.h"
#include "common/train/trainer.h"
#include "common/base/util.h"
#include "pstrain.pb-c.h"
#include "worker/progress.h"
#include "worker/synthetic.h"

typedef struct {
    daemon_t *d;
    const backend_t *be;
    model_t model;
    dataset_t train;
    struct data_stream *stream; /* data.stream: the training data, and train is empty */
    bool data_failed;           /* a streamed batch did not read: nothing more is pushed */
    psclient_t *ps;
    trainer_t *trainer;
    loader_t *loader;
    const batch_t *next;         /* fetched (and staged on a device) during the last step */
    float *params[2], *grads[2]; /* two of each for the pipeline; the backend's host memory */
    rpc_channel_t *master;
    heartbeat_t *hb;
    heartbeat_progress_t progress;
    uint64_t target, stale, global_step;
    bool sync;
    bool synthetic; /* train.synthetic_step_ms: no data, no trainer, a sleep for compute */
    bool ssp;       /* train.mode ssp: async pushes, pulls the PS may hold back */
    bool rows;      /* embedding tables move by the rows of each batch (train.sparse_embeddings) */
    uint64_t rows_touched;  /* over the run: rows of the tables pulled (and pushed) */
    uint64_t pulls, pushes; /* serial loop: the calls made (each to every PS) */
    Pstrain__Caller caller;
    char err[PS_ERRLEN]; /* why a pull or push of the training thread failed */
} worker_t;

static bool should_stop(void *arg) {
    const worker_t *w = arg;
    return daemon_stop_signal || (w->hb && heartbeat_done(w->hb));
}

int cluster_exit_code(psclient_status_t s) {
    switch (s) {
    case PSCLIENT_OK:
    case PSCLIENT_STOPPED:
        return EXIT_OK;
    case PSCLIENT_INVALID:
        return EXIT_USAGE;
    case PSCLIENT_UNREACHABLE:
        return EXIT_UNAVAILABLE;
    }
    return EXIT_USAGE;
}

/* psclient's events, as log lines. */
static void on_retrying(void *arg, const char *err, double max_sleep_s) {
    log_warn("%s; retrying with backoff up to %.1fs", err, max_sleep_s);
}

static void on_recovered(void *arg, const char *method) {
    log_info("%s: every PS answered again", method);
}

static void on_transport(void *arg, size_t ps, const char *transport, int port) {
    if (strcmp(transport, "shm") == 0)
        log_info("ps%zu: pushes and pulls through shared memory (same host)", ps);
    else if (port)
        log_info("ps%zu: pushes and pulls over its tensor stream (TCP port %d)", ps, port);
    else
        log_info("ps%zu: pushes and pulls over gRPC", ps);
}

static int connect_peers(worker_t *w) {
    char err[PS_ERRLEN];
    const cluster_t *c = &w->d->cluster;
    Pstrain__Caller init = PSTRAIN__CALLER__INIT;
    w->caller = init;
    w->caller.role = "worker";
    w->caller.index = (uint32_t)c->task_index;
    w->caller.incarnation = (uint64_t)(ps_wall_now() * 1e6);
    psclient_options_t po = daemon_psclient_options(w->d);
    w->ps = psclient_create(&po, &w->model, &w->caller, should_stop, w, err, sizeof err);
    if (!w->ps) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    if (po.wire_bf16 || po.wire_fp16)
        log_info("tensors of %d values or more travel as %s (rpc.wire_dtype) to a PS over "
                 "the network, as float32 through shared memory; the rounding of each push "
                 "kept and added to the next",
                 WIRE_BF16_MIN_VALUES, po.wire_fp16 ? "fp16" : "bfloat16");
    if (po.push_topk > 0)
        log_info("pushes of tensors of %d values or more carry the largest %g of their values "
                 "(rpc.push_topk), the rest kept and added to the next",
                 WIRE_BF16_MIN_VALUES, po.push_topk);
    psclient_events_t ev = {
        .retrying = on_retrying, .recovered = on_recovered, .transport = on_transport};
    psclient_set_events(w->ps, &ev);
    rpc_options_t o = daemon_rpc_options(&w->d->cfg);
    const cluster_addr_t *m = cluster_find(c, CLUSTER_MASTER, 0);
    if (rpc_channel_create(&w->master, m->text, &o, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    return 0;
}

/* The trainer's prefetch hook: the next batch, staged while a step computes. */
static void prefetch(void *arg) {
    worker_t *w = arg;
    w->next = loader_next(w->loader);
    trainer_stage(w->trainer, w->next->x, w->next->y, w->next->n);
}

/* Weights and gradients in the backend's host memory: page-locked on a GPU,
 * so that their copies run beside the computation. */
static float *host_buffer(const backend_t *be, size_t floats) {
    float *p = be->host_alloc(floats * sizeof(float));
    if (!p) {
        fprintf(stderr, "fatal: backend %s could not allocate %zu bytes of host memory\n", be->name,
                floats * sizeof(float));
        abort();
    }
    return p;
}

/* Where this worker's data resumes when the PS restored a checkpoint (or it
 * restarted mid-run): the batches it took for the global steps so far. Each
 * async step is one worker's batch; each sync step takes one from each of
 * `replicas` workers. */
static uint64_t resume_batches(worker_t *w, size_t nworkers, size_t replicas) {
    int64_t step = psclient_poll_step(w->ps, w->d->cfg.rpc.deadline_secs);
    if (step <= 0)
        return 0;
    uint64_t batches = progress_resume_batches((uint64_t)step, replicas, nworkers);
    log_info("global step %lld: this worker's data resumes at batch %llu", (long long)step,
             (unsigned long long)batches);
    return batches;
}

/* data.stream: this worker's share of the training data as a stream
 * (stream.h shards it as the in-memory loader does). */
static int open_stream(worker_t *w, size_t nworkers) {
    char err[PS_ERRLEN];
    const config_t *c = &w->d->cfg;
    w->stream = datasets_open_stream(c, &w->model, (size_t)w->d->cluster.task_index, nworkers, NULL,
                                     err, sizeof err);
    if (!w->stream) {
        log_error("%s", err);
        return EXIT_DATAERR;
    }
    log_info("streaming %zu of the %zu training examples (this worker's share) through a "
             "shuffle buffer of %lld",
             data_stream_size(w->stream), data_stream_total(w->stream),
             (long long)c->data.shuffle_buffer);
    return 0;
}

/* This worker's training data: its share of the files (TFRecord files at
 * least as many as the workers), else the whole set; or a stream. */
static int load_data(worker_t *w) {
    char err[PS_ERRLEN];
    const config_t *c = &w->d->cfg;
    const cluster_t *cl = &w->d->cluster;
    size_t nworkers = cl->jobs[CLUSTER_WORKER].span;
    if (c->data.stream)
        return open_stream(w, nworkers);
    dataset_t val; /* what data.val_split holds out; the master evaluates */
    if (datasets_load_train_shard(c, &w->model, (size_t)cl->task_index, nworkers, &w->train, &val,
                                  err, sizeof err)) {
        log_error("%s", err);
        return EXIT_DATAERR;
    }
    dataset_free(&val);
    if (w->train.file_shard)
        log_info("reading %zu of the %zu training examples: this worker's share of the files",
                 w->train.n, w->train.total);
    return 0;
}

/* The loader over this worker's data: a stream shards itself, and so does
 * a file shard. */
static int create_loader(worker_t *w, loader_opts_t *lo, size_t nworkers) {
    char err[PS_ERRLEN];
    bool own = w->stream || w->train.file_shard;
    lo->shard = own ? 0 : (size_t)w->d->cluster.task_index;
    lo->nshards = own ? 1 : nworkers;
    w->loader = w->stream ? loader_create_stream(w->stream, lo, err, sizeof err)
                          : loader_create(&w->train, lo, err, sizeof err);
    if (!w->loader) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    return 0;
}

static void alloc_buffers(worker_t *w) {
    for (size_t i = 0; i < 2; i++) {
        w->params[i] = host_buffer(w->be, w->model.nparams);
        w->grads[i] = host_buffer(w->be, w->model.nparams);
    }
}

static int setup(worker_t *w) {
    char err[PS_ERRLEN];
    const config_t *c = &w->d->cfg;
    const cluster_t *cl = &w->d->cluster;
    if (model_open(&w->model, c->model, c->train.loss, err, sizeof err) ||
        model_loss_check_backend(&w->model, w->be, err, sizeof err)) {
        log_error("%s", err);
        return EXIT_USAGE;
    }
    w->synthetic = c->train.synthetic_step_ms > 0;
    int rc = w->synthetic ? 0 : load_data(w);
    if (rc || (rc = connect_peers(w)) != 0)
        return rc;
    size_t nworkers = cl->jobs[CLUSTER_WORKER].span;
    w->sync = !strcmp(c->train.mode, "sync");
    w->ssp = !strcmp(c->train.mode, "ssp");
    size_t replicas = config_replicas(c, nworkers);
    if (w->synthetic) {
        /* Without data, train.epochs has no length here: the master's
         * target (through the heartbeat) ends the run. */
        w->target = c->train.max_steps > 0 ? (uint64_t)c->train.max_steps : UINT64_MAX;
        alloc_buffers(w);
        return 0;
    }
    size_t total = w->stream ? data_stream_total(w->stream) : w->train.total;
    w->target = trainer_target_steps(c->train.max_steps, c->train.epochs, total,
                                     (size_t)c->train.batch_size, replicas);
    size_t batch = (size_t)c->train.batch_size;
    size_t threads = config_threads(c);
    w->trainer = trainer_create(&w->model, w->be, threads, batch);
    loader_opts_t lo = {.batch_size = batch,
                        .seed = (uint64_t)c->train.seed,
                        .shuffle = c->data.shuffle,
                        .prefetch = (size_t)c->data.prefetch,
                        .start_step = resume_batches(w, nworkers, replicas),
                        .alloc = w->be->host_alloc,
                        .free = w->be->host_free,
                        .augment = datasets_augment(c)};
    if ((rc = create_loader(w, &lo, nworkers)) != 0)
        return rc;
    alloc_buffers(w);
    if (!w->be->host_memory)
        trainer_set_prefetch(w->trainer, prefetch, w);
    /* A sync PS sums whole partitions: the tables move whole there. */
    w->rows = c->train.sparse_embeddings && model_has_sparse(&w->model) && !w->sync;
    if (w->rows)
        log_info("embedding tables move by the rows each batch reads (train.sparse_embeddings); "
                 "pull, compute and push run one after the other");
    return 0;
}

static void start_heartbeat(worker_t *w) {
    heartbeat_opts_t ho = {.role = "worker",
                           .index = w->d->cluster.task_index,
                           .incarnation = w->caller.incarnation,
                           .address = w->d->self ? w->d->self : "",
                           .interval_s = w->d->cfg.cluster.heartbeat_secs,
                           .deadline_s = w->d->cfg.cluster.heartbeat_secs * 2,
                           .master = w->master};
    w->hb = heartbeat_start(&ho, &w->progress);
}

static void teardown(worker_t *w) {
    heartbeat_stop(w->hb);
    if (w->loader)
        loader_free(w->loader);
    data_stream_close(w->stream);
    trainer_free(w->trainer);
    psclient_free(w->ps);
    if (w->master)
        rpc_channel_destroy(w->master);
    for (size_t i = 0; i < 2; i++) {
        if (w->params[i])
            w->be->host_free(w->params[i]);
        if (w->grads[i])
            w->be->host_free(w->grads[i]);
    }
    dataset_free(&w->train);
    model_free(&w->model);
}

/* A thread that moves weights and gradients while the compute threads run:
 * one job at a time, posted by one thread and waited for by any. */
typedef struct courier courier_t;
typedef psclient_status_t (*courier_job_fn)(courier_t *c, char *err, size_t errlen);

struct courier {
    worker_t *w;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    courier_job_fn job; /* the job posted or running, NULL when idle */
    bool quit;
    psclient_status_t rc; /* the first job that failed, PSCLIENT_OK while none */
    char err[PS_ERRLEN];  /* its error */
    const float *grads;   /* what the jobs move */
    float *params;
    const uint8_t *head_mask;
};

static void *courier_main(void *arg) {
    courier_t *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->job && !c->quit)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->quit)
            break;
        courier_job_fn job = c->job;
        pthread_mutex_unlock(&c->mu);
        char err[PS_ERRLEN];
        psclient_status_t rc = job(c, err, sizeof err);
        pthread_mutex_lock(&c->mu);
        if (rc != PSCLIENT_OK && c->rc == PSCLIENT_OK) {
            c->rc = rc;
            memcpy(c->err, err, sizeof c->err);
        }
        c->job = NULL;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void courier_start(courier_t *c, worker_t *w) {
    memset(c, 0, sizeof *c);
    c->w = w;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (pthread_create(&c->thread, NULL, courier_main, c) != 0) {
        fprintf(stderr, "fatal: pthread_create failed\n");
        abort();
    }
}

/* Waits for the job in flight; returns the first failure of any job, its
 * error in c->err. */
static psclient_status_t courier_wait(courier_t *c) {
    pthread_mutex_lock(&c->mu);
    while (c->job)
        pthread_cond_wait(&c->cv, &c->mu);
    psclient_status_t rc = c->rc;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Posts a job once the previous one is done. */
static void courier_post(courier_t *c, courier_job_fn job) {
    pthread_mutex_lock(&c->mu);
    while (c->job)
        pthread_cond_wait(&c->cv, &c->mu);
    c->job = job;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static psclient_status_t courier_stop(courier_t *c) {
    psclient_status_t rc = courier_wait(c);
    pthread_mutex_lock(&c->mu);
    c->quit = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    return rc;
}

/* Running figures of the run, logged every log.every_secs. */
typedef struct {
    double start, last_log;
    progress_means_t means;
    size_t since_log, local_steps;
    double pull_s, compute_s, push_s; /* time spent in each, serial mode */
} run_stats_t;

static void account(worker_t *w, run_stats_t *r, const step_metrics_t *sm) {
    r->local_steps++;
    if (r->local_steps == 1)
        log_info("first step done at global step %llu", (unsigned long long)w->global_step);
    progress_add(&r->means, sm->loss, sm->accuracy, sm->n);
    r->since_log += sm->n;
    atomic_store(&w->progress.step, w->global_step);
    atomic_store(&w->progress.examples, (uint64_t)r->means.n);
    atomic_store(&w->progress.loss, progress_loss(&r->means));
    atomic_store(&w->progress.accuracy, progress_accuracy(&r->means));
    double now = ps_now();
    if (!progress_log_due(now, r->last_log, w->d->cfg.log.every_secs))
        return;
    log_info("global step %llu/%llu - local step %zu - loss: %.4f - accuracy: %.4f - %.0f "
             "images/s - stale %llu",
             (unsigned long long)w->global_step, (unsigned long long)w->target, r->local_steps,
             progress_loss(&r->means), progress_accuracy(&r->means),
             progress_rate(r->since_log, now - r->last_log), (unsigned long long)w->stale);
    r->last_log = now;
    r->since_log = 0;
}

/* A synthetic step: the gradient of a weight decay, then a sleep for the
 * rest of train.synthetic_step_ms. Its metrics count a batch, at loss 0. */
static void synthetic_step(worker_t *w, const float *params, float *grads, step_metrics_t *sm) {
    double start = ps_now();
    synthetic_gradient(grads, params, w->model.nparams);
    synthetic_wait(start, (double)w->d->cfg.train.synthetic_step_ms);
    *sm = (step_metrics_t){.n = (size_t)w->d->cfg.train.batch_size};
}

/* The gradient of the next batch at params into grads. The prefetch hook
 * may fetch the batch after it during the step (which ends this one).
 * False when a streamed batch did not read (one error line): nothing is
 * computed, and the caller pushes nothing more. */
static bool compute(worker_t *w, const float *params, float *grads, step_metrics_t *sm) {
    if (w->synthetic) {
        synthetic_step(w, params, grads, sm);
        return true;
    }
    const batch_t *b = w->next ? w->next : loader_next(w->loader);
    w->next = NULL;
    if (b->n == 0) {
        log_error("%s", loader_error(w->loader));
        w->data_failed = true;
        return false;
    }
    uint64_t seed = rng_key((uint64_t)w->d->cfg.train.seed, "dropout",
                            b->step * 1000003ull + (uint64_t)w->d->cluster.task_index);
    trainer_gradient(w->trainer, params, b->x, b->y, b->n, seed, grads, sm);
    return true;
}

/* Pull, compute, push, one after the other (sync mode, or no pipeline). */
static psclient_status_t train_serial(worker_t *w, run_stats_t *r) {
    psclient_status_t s = PSCLIENT_OK;
    while (!should_stop(w)) {
        double t0 = ps_now();
        if (w->rows) { /* the batch first: its token ids say which rows to pull */
            if (!w->next)
                w->next = loader_next(w->loader);
            w->rows_touched += psclient_set_batch(w->ps, w->next->x, w->next->n);
        }
        if ((s = psclient_pull(w->ps, w->params[0], w->sync, w->err, sizeof w->err)) != 0)
            return s;
        w->pulls++;
        w->global_step = psclient_step(w->ps, 0);
        if (progress_target_reached(w->global_step, w->target))
            break;
        step_metrics_t sm;
        double t1 = ps_now();
        if (!compute(w, w->params[0], w->grads[0], &sm))
            break;
        double t2 = ps_now();
        size_t stale = 0;
        if ((s = psclient_push(w->ps, w->grads[0], &stale, w->err, sizeof w->err)) != 0)
            return s;
        w->pushes++;
        r->pull_s += t1 - t0;
        r->compute_s += t2 - t1;
        r->push_s += ps_now() - t2;
        w->stale += stale > 0;
        account(w, r, &sm);
    }
    return s;
}

/* The pipeline's job: push one step's gradient, pull for a later step. */
static psclient_status_t push_then_pull(courier_t *c, char *err, size_t errlen) {
    size_t stale = 0;
    psclient_status_t s = psclient_push(c->w->ps, c->grads, &stale, err, errlen);
    return s != PSCLIENT_OK ? s : psclient_pull(c->w->ps, c->params, false, err, errlen);
}

/* The courier's first failure as the training thread's. */
static psclient_status_t courier_failure(worker_t *w, courier_t *c, psclient_status_t s) {
    if (s != PSCLIENT_OK)
        memcpy(w->err, c->err, sizeof w->err);
    return s;
}

/* Step k computes while step k-1's push and the pull for step k+1 run:
 * compute waits only for what is slower, and each gradient is computed on
 * weights one step older than in train_serial. */
static psclient_status_t train_pipelined(worker_t *w, run_stats_t *r) {
    psclient_status_t s = psclient_pull(w->ps, w->params[0], false, w->err, sizeof w->err);
    if (s != PSCLIENT_OK)
        return s;
    w->global_step = psclient_step(w->ps, 0);
    psclient_tag_previous_pull(w->ps, true); /* each gradient is one pull behind */
    courier_t c;
    courier_start(&c, w);
    size_t cur = 0, g = 0;
    bool pending = false;
    while (!should_stop(w) && !progress_target_reached(w->global_step, w->target)) {
        step_metrics_t sm;
        if (!compute(w, w->params[cur], w->grads[g], &sm))
            break; /* the push in flight is of a batch read whole: it goes on */
        if (pending) {
            if ((s = courier_wait(&c)) != PSCLIENT_OK)
                break;
            w->global_step = psclient_step(w->ps, 0);
            cur ^= 1;
        }
        c.grads = w->grads[g];
        c.params = w->params[cur ^ 1];
        courier_post(&c, push_then_pull);
        pending = true;
        g ^= 1;
        account(w, r, &sm);
    }
    return courier_failure(w, &c, courier_stop(&c));
}

/* Overlap: the head of the model (its dense layers after the last conv or
 * pool layer, nearly all the bytes of a CNN) moves on a thread of its own
 * while the convolutions compute: its pull runs during the conv forward, its
 * push during the conv backward. Each step still computes on the weights of
 * every earlier push (nothing is staler than in train_serial). */
static psclient_status_t pull_head(courier_t *c, char *err, size_t errlen) {
    return psclient_pull_vars(c->w->ps, c->params, false, c->head_mask, err, errlen);
}

static psclient_status_t push_head(courier_t *c, char *err, size_t errlen) {
    size_t stale = 0;
    return psclient_push_vars(c->w->ps, c->grads, c->head_mask, true, &stale, err, errlen);
}

/* Compute threads, before the head's forward: the head's pull is the job in
 * flight. After a failed pull they go on with the old head; the step is then
 * thrown away. */
static void overlap_wait_head(void *arg) {
    courier_wait(arg);
}

/* The last compute thread past the head's backward. */
static void overlap_head_grads(void *arg) {
    courier_post(arg, push_head);
}

/* The first layer with variables after the last conv or pool layer, when
 * there is one and some variables come before it; else 0 (no overlap). */
static size_t head_layer(const model_t *m) {
    size_t last_spatial = m->nlayers;
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].kind == LAYER_CONV2D || m->layers[i].kind == LAYER_MAX_POOL2D)
            last_spatial = i;
    if (last_spatial == m->nlayers)
        return 0;
    for (size_t i = last_spatial + 1; i < m->nlayers; i++)
        if (m->layers[i].kernel_var > 0)
            return i;
    return 0;
}

/* One overlapped step; *done once the target is reached. */
static psclient_status_t overlapped_step(worker_t *w, courier_t *c, const uint8_t *early,
                                         run_stats_t *r, bool *done) {
    psclient_status_t s =
        psclient_pull_vars(w->ps, w->params[0], false, early, w->err, sizeof w->err);
    if (s != PSCLIENT_OK)
        return s;
    w->global_step = psclient_step(w->ps, 0);
    if ((*done = progress_target_reached(w->global_step, w->target)))
        return PSCLIENT_OK;
    courier_post(c, pull_head);
    step_metrics_t sm;
    bool computed = compute(w, w->params[0], w->grads[0], &sm);
    if ((s = courier_wait(c)) != PSCLIENT_OK)
        return courier_failure(w, c, s);
    if ((*done = !computed))
        return PSCLIENT_OK;
    size_t stale;
    s = psclient_push_vars(w->ps, w->grads[0], early, false, &stale, w->err, sizeof w->err);
    if (s != PSCLIENT_OK)
        return s;
    account(w, r, &sm);
    return PSCLIENT_OK;
}

static psclient_status_t train_overlapped(worker_t *w, run_stats_t *r, size_t head) {
    const model_t *m = &w->model;
    size_t first_head_var = (size_t)m->layers[head].kernel_var;
    uint8_t *head_mask = xcalloc(m->nvars, 1), *early = xcalloc(m->nvars, 1);
    for (size_t v = 0; v < m->nvars; v++) {
        head_mask[v] = v >= first_head_var;
        early[v] = !head_mask[v];
    }
    courier_t c;
    courier_start(&c, w);
    c.params = w->params[0];
    c.grads = w->grads[0];
    c.head_mask = head_mask;
    trainer_overlap_t to = {.head = head,
                            .head_begin = m->vars[first_head_var].offset,
                            .wait_head_params = overlap_wait_head,
                            .head_grads_ready = overlap_head_grads,
                            .arg = &c};
    trainer_set_overlap(w->trainer, &to);
    log_info("moving the head (layer %s on, %.2f MiB) while the layers below compute",
             m->layers[head].name, (double)(m->nparams - to.head_begin) * 4.0 / (1 << 20));
    psclient_status_t s = PSCLIENT_OK;
    bool done = false;
    while (!done && !should_stop(w) && (s = overlapped_step(w, &c, early, r, &done)) == 0)
        ;
    trainer_set_overlap(w->trainer, NULL);
    /* The head's last push may still fail after the loop: a failure then
     * stands as much as one during it. */
    psclient_status_t last = courier_failure(w, &c, courier_stop(&c));
    free(head_mask);
    free(early);
    return s != PSCLIENT_OK ? s : last;
}

/* Message bytes a pull and a push, every PS together (the serial loop
 * counts its pulls and pushes; the others count steps); returns the pulls. */
static double bytes_a_step(const worker_t *w, size_t steps, double *pulled, double *pushed) {
    uint64_t in, out;
    psclient_bytes(w->ps, &in, &out);
    double pulls = (double)(w->pulls ? w->pulls : steps),
           pushes = (double)(w->pushes ? w->pushes : steps);
    *pulled = (double)in / pulls;
    *pushed = (double)out / pushes;
    return pulls;
}

/* What rpc.wire_dtype and rpc.push_topk save: bytes a step. */
static void log_wire(const worker_t *w, size_t steps) {
    double pulled, pushed;
    bytes_a_step(w, steps, &pulled, &pushed);
    log_info("bytes a step: pulled %.0f, pushed %.0f (the model's weights are %zu bytes)", pulled,
             pushed, w->model.nparams * sizeof(float));
}

/* What the embedding tables' rows cost on the wire, against the tables
 * whole: bytes of a pull and of a push. */
static void log_rows(const worker_t *w, size_t steps) {
    double pulled, pushed, pulls = bytes_a_step(w, steps, &pulled, &pushed);
    size_t table_bytes = 0;
    for (size_t v = 0; v < w->model.nvars; v++)
        if (w->model.vars[v].sparse)
            table_bytes += w->model.vars[v].size * sizeof(float);
    if (w->rows)
        log_info("embedding rows: %.1f rows a step; bytes a step: pulled %.0f, pushed %.0f (the "
                 "tables whole are %zu bytes each way)",
                 (double)w->rows_touched / pulls, pulled, pushed, table_bytes);
    else
        log_info("embedding tables moved whole: bytes a step: pulled %.0f, pushed %.0f (the "
                 "tables are %zu bytes)",
                 pulled, pushed, table_bytes);
}

static void log_end(const worker_t *w, const run_stats_t *r) {
    if (daemon_stop_signal)
        log_info("stopping on signal %d after local step %zu", (int)daemon_stop_signal,
                 r->local_steps);
    else
        log_info("training is over at global step %llu (%zu local steps, %llu stale, %.0f "
                 "images/s over the run)",
                 (unsigned long long)w->global_step, r->local_steps, (unsigned long long)w->stale,
                 progress_rate(r->means.n, ps_now() - r->start));
    if (r->local_steps && model_has_sparse(&w->model))
        log_rows(w, r->local_steps);
    else if (r->local_steps)
        log_wire(w, r->local_steps);
    if (r->local_steps && r->compute_s > 0)
        log_info("per step: pull %.1f ms, compute %.1f ms, push %.1f ms",
                 1e3 * r->pull_s / (double)r->local_steps,
                 1e3 * r->compute_s / (double)r->local_steps,
                 1e3 * r->push_s / (double)r->local_steps);
}

static int train(worker_t *w) {
    run_stats_t r = {.start = ps_now()};
    r.last_log = r.start;
    size_t head = w->synthetic ? 0 : head_layer(&w->model);
    /* ssp runs the serial loop, as sync does: its bound holds at whole pulls;
     * so do embedding rows, whose batch must be known before its pull. */
    progress_loop_t loop = progress_loop(w->sync || w->ssp || w->rows, w->d->cfg.train.pipeline,
                                         w->d->cfg.train.overlap, head);
    psclient_status_t s = loop == PROGRESS_PIPELINED    ? train_pipelined(w, &r)
                          : loop == PROGRESS_OVERLAPPED ? train_overlapped(w, &r, head)
                                                        : train_serial(w, &r);
    if (w->data_failed && (s == PSCLIENT_OK || s == PSCLIENT_STOPPED)) {
        log_info("global step %llu: no gradient of the batch that did not read was pushed (%zu "
                 "local steps pushed); the PS keep the model",
                 (unsigned long long)w->global_step, r.local_steps);
        return EXIT_DATAERR;
    }
    if (s == PSCLIENT_OK || s == PSCLIENT_STOPPED)
        log_end(w, &r);
    else
        log_error("%s", w->err);
    return cluster_exit_code(s);
}

/* The banner of the run: what this worker trains on, against how many PS. */
static void log_start(const worker_t *w) {
    const daemon_t *d = w->d;
    size_t nworkers = d->cluster.jobs[CLUSTER_WORKER].span;
    if (w->synthetic)
        log_info("worker %d of %zu: synthetic, %lld ms a step and no data, %zu PS, mode %s",
                 d->cluster.task_index, nworkers, (long long)d->cfg.train.synthetic_step_ms,
                 psclient_nps(w->ps), d->cfg.train.mode);
    else
        log_info("worker %d of %zu: %zu examples in its shard, %zu PS, mode %s, target %llu "
                 "global steps",
                 d->cluster.task_index, nworkers, loader_shard_size(w->loader), psclient_nps(w->ps),
                 d->cfg.train.mode, (unsigned long long)w->target);
}

int cluster_train(daemon_t *d, const backend_t *be) {
    worker_t w;
    memset(&w, 0, sizeof w);
    w.d = d;
    w.be = be;
    int rc = setup(&w);
    if (rc == 0) {
        start_heartbeat(&w);
        log_start(&w);
        rc = train(&w);
    }
    teardown(&w);
    return rc;
}

#include "common/peers/heartbeat.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/rpc/msg.h"
#include "pstrain.pb-c.h"
#include "common/base/util.h"

struct heartbeat {
    heartbeat_opts_t o;
    heartbeat_progress_t *progress;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stop;
    atomic_bool done;
    _Atomic uint64_t global_step;
    _Atomic uint32_t live_workers;
    bool registered, warned;
    rpc_buf_t req, resp;
};

static void fill_caller(const heartbeat_t *h, Pstrain__Caller *c) {
    Pstrain__Caller init = PSTRAIN__CALLER__INIT;
    *c = init;
    c->role = (char *)h->o.role;
    c->index = (uint32_t)h->o.index;
    c->incarnation = h->o.incarnation;
}

/* One call to the master; logs the first failure and the recovery. */
static int call_master(heartbeat_t *h, const char *method) {
    char err[PS_ERRLEN];
    int code = rpc_call(h->o.master, method, h->req.data, h->req.len, h->o.deadline_s, &h->resp,
                        err, sizeof err);
    if (code != RPC_OK && !h->warned) {
        log_warn("master unreachable (%s); training goes on, retrying every %.1fs", err,
                 h->o.interval_s);
        h->warned = true;
    } else if (code == RPC_OK && h->warned) {
        log_info("master reachable again");
        h->warned = false;
    }
    return code;
}

static void do_register(heartbeat_t *h) {
    Pstrain__Caller caller;
    fill_caller(h, &caller);
    Pstrain__RegisterRequest r = PSTRAIN__REGISTER_REQUEST__INIT;
    r.caller = &caller;
    r.address = (char *)h->o.address;
    r.pid = (int32_t)getpid();
    msg_pack(&h->req, &r.base);
    if (call_master(h, "/pstrain.Master/Register") != RPC_OK)
        return;
    Pstrain__RegisterResponse *resp =
        pstrain__register_response__unpack(NULL, h->resp.len, h->resp.data);
    if (!resp) {
        log_warn("master sent a malformed RegisterResponse");
        return;
    }
    h->registered = true;
    if (resp->done)
        atomic_store(&h->done, true);
    atomic_store(&h->global_step, resp->global_step);
    pstrain__register_response__free_unpacked(resp, NULL);
    log_info("registered with the master");
}

static void do_beat(heartbeat_t *h) {
    Pstrain__Caller caller;
    fill_caller(h, &caller);
    Pstrain__HeartbeatRequest r = PSTRAIN__HEARTBEAT_REQUEST__INIT;
    r.caller = &caller;
    r.step = atomic_load(&h->progress->step);
    r.examples = atomic_load(&h->progress->examples);
    r.loss = atomic_load(&h->progress->loss);
    r.accuracy = atomic_load(&h->progress->accuracy);
    msg_pack(&h->req, &r.base);
    int code = call_master(h, "/pstrain.Master/Heartbeat");
    if (code == RPC_NOT_FOUND) {
        /* A restarted master does not know us yet. */
        h->registered = false;
        return;
    }
    if (code != RPC_OK)
        return;
    Pstrain__HeartbeatResponse *resp =
        pstrain__heartbeat_response__unpack(NULL, h->resp.len, h->resp.data);
    if (!resp)
        return;
    if (resp->done)
        atomic_store(&h->done, true);
    atomic_store(&h->global_step, resp->global_step);
    atomic_store(&h->live_workers, resp->live_workers);
    pstrain__heartbeat_response__free_unpacked(resp, NULL);
}

static void *beat_main(void *arg) {
    heartbeat_t *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        pthread_mutex_unlock(&h->mu);
        if (!h->registered)
            do_register(h);
        else
            do_beat(h);
        pthread_mutex_lock(&h->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        double t = (double)until.tv_sec + (double)until.tv_nsec * 1e-9 + h->o.interval_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
        if (!h->stop)
            pthread_cond_timedwait(&h->wake, &h->mu, &until);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

heartbeat_t *heartbeat_start(const heartbeat_opts_t *o, heartbeat_progress_t *progress) {
    heartbeat_t *h = xcalloc(1, sizeof *h);
    h->o = *o;
    h->progress = progress;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->wake, NULL);
    if (pthread_create(&h->thread, NULL, beat_main, h) != 0) {
        fprintf(stderr, "fatal: pthread_create failed\n");
        abort();
    }
    return h;
}

bool heartbeat_done(const heartbeat_t *h) {
    return atomic_load(&h->done);
}

uint64_t heartbeat_global_step(const heartbeat_t *h) {
    return atomic_load(&h->global_step);
}

uint32_t heartbeat_live_workers(const heartbeat_t *h) {
    return atomic_load(&h->live_workers);
}

void heartbeat_stop(heartbeat_t *h) {
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = true;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->wake);
    rpc_buf_free(&h->req);
    rpc_buf_free(&h->resp);
    free(h);
}

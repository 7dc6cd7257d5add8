#include "master.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/log.h"
#include "common/rpc/msg.h"
#include "common/base/util.h"
#include "pstrain.pb-c.h"

static const char *state_names[] = {"unknown", "alive", "dead", "done"};

void master_init(master_t *m, const cluster_t *c, double dead_after_s, uint64_t target) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    const cluster_job_t *ps = &c->jobs[CLUSTER_PS], *wk = &c->jobs[CLUSTER_WORKER];
    m->nmembers = ps->n + wk->n;
    m->members = xcalloc(m->nmembers, sizeof *m->members);
    size_t k = 0;
    const cluster_job_t *jobs[2] = {ps, wk};
    cluster_role_t roles[2] = {CLUSTER_PS, CLUSTER_WORKER};
    for (size_t j = 0; j < 2; j++) {
        for (size_t i = 0; i < jobs[j]->n; i++, k++) {
            m->members[k].role = roles[j];
            m->members[k].index = jobs[j]->addr[i].index;
            snprintf(m->members[k].address, sizeof m->members[k].address, "%s",
                     jobs[j]->addr[i].text);
        }
    }
    m->dead_after_s = dead_after_s;
    m->target = target;
    m->started = ps_now();
}

void master_free(master_t *m) {
    free(m->members);
    rpc_buf_free(&m->pack);
    pthread_mutex_destroy(&m->mu);
}

static member_t *find_member(master_t *m, const Pstrain__Caller *c) {
    if (!c)
        return NULL;
    cluster_role_t role = !strcmp(c->role, "ps")       ? CLUSTER_PS
                          : !strcmp(c->role, "worker") ? CLUSTER_WORKER
                                                       : CLUSTER_NROLES;
    for (size_t i = 0; i < m->nmembers; i++)
        if (m->members[i].role == role && m->members[i].index == (int)c->index)
            return &m->members[i];
    return NULL;
}

void master_check_liveness(master_t *m) {
    double now = ps_now();
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nmembers; i++) {
        member_t *x = &m->members[i];
        if (x->state == MEMBER_ALIVE && now - x->last_beat > m->dead_after_s) {
            x->state = MEMBER_DEAD;
            log_warn("%s%d missed its heartbeats for %.1fs: marked dead",
                     cluster_role_name(x->role), x->index, now - x->last_beat);
        }
    }
    pthread_mutex_unlock(&m->mu);
}

/* A worker not heard from yet counts as alive for the first dead_after_s
 * (it is starting), so sync training does not start on too few replicas. */
uint32_t master_live_workers(master_t *m) {
    uint32_t n = 0;
    bool starting = ps_now() - m->started < m->dead_after_s;
    for (size_t i = 0; i < m->nmembers; i++) {
        const member_t *x = &m->members[i];
        n += x->role == CLUSTER_WORKER &&
             (x->state == MEMBER_ALIVE || (x->state == MEMBER_UNKNOWN && starting));
    }
    return n;
}

static void handle_register(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    master_t *m = ctx;
    Pstrain__RegisterRequest *req = pstrain__register_request__unpack(NULL, len, data);
    if (!req) {
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, "register: malformed RegisterRequest", NULL, 0);
        return;
    }
    pthread_mutex_lock(&m->mu);
    member_t *x = find_member(m, req->caller);
    if (!x) {
        char msg[160];
        snprintf(msg, sizeof msg, "register: %s %u is not in the cluster spec",
                 req->caller ? req->caller->role : "?", req->caller ? req->caller->index : 0);
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, msg, NULL, 0);
    } else {
        if (x->incarnation && x->incarnation != req->caller->incarnation)
            log_info("%s%d restarted (pid %d)", req->caller->role, x->index, req->pid);
        else
            log_info("%s%d registered (pid %d)", req->caller->role, x->index, req->pid);
        x->incarnation = req->caller->incarnation;
        x->pid = req->pid;
        x->state = MEMBER_ALIVE;
        x->last_beat = ps_now();
        Pstrain__RegisterResponse resp = PSTRAIN__REGISTER_RESPONSE__INIT;
        resp.global_step = m->global_step;
        resp.done = m->done;
        msg_reply(call, &m->pack, &resp.base);
    }
    pthread_mutex_unlock(&m->mu);
    pstrain__register_request__free_unpacked(req, NULL);
}

static void handle_heartbeat(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    master_t *m = ctx;
    Pstrain__HeartbeatRequest *req = pstrain__heartbeat_request__unpack(NULL, len, data);
    if (!req) {
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, "heartbeat: malformed HeartbeatRequest", NULL,
                       0);
        return;
    }
    pthread_mutex_lock(&m->mu);
    member_t *x = find_member(m, req->caller);
    if (!x || x->incarnation != req->caller->incarnation) {
        /* Not registered with this master (it restarted, or the role did). */
        rpc_call_reply(call, RPC_NOT_FOUND, "heartbeat: register first", NULL, 0);
    } else {
        if (x->state == MEMBER_DEAD)
            log_info("%s%d is beating again", req->caller->role, x->index);
        x->state = MEMBER_ALIVE;
        x->last_beat = ps_now();
        x->step = req->step;
        x->examples = req->examples;
        x->loss = req->loss;
        x->accuracy = req->accuracy;
        Pstrain__HeartbeatResponse resp = PSTRAIN__HEARTBEAT_RESPONSE__INIT;
        resp.global_step = m->global_step;
        resp.done = m->done;
        resp.live_workers = master_live_workers(m);
        msg_reply(call, &m->pack, &resp.base);
    }
    pthread_mutex_unlock(&m->mu);
    pstrain__heartbeat_request__free_unpacked(req, NULL);
}

static void handle_status(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    master_t *m = ctx;
    Pstrain__StatusRequest *req = pstrain__status_request__unpack(NULL, len, data);
    if (!req) {
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, "status: malformed StatusRequest", NULL, 0);
        return;
    }
    pstrain__status_request__free_unpacked(req, NULL);
    pthread_mutex_lock(&m->mu);
    Pstrain__Member *ms = xcalloc(m->nmembers, sizeof *ms);
    Pstrain__Member **mp = xcalloc(m->nmembers, sizeof *mp);
    double now = ps_now();
    for (size_t i = 0; i < m->nmembers; i++) {
        const member_t *x = &m->members[i];
        Pstrain__Member init = PSTRAIN__MEMBER__INIT;
        ms[i] = init;
        ms[i].role = (char *)cluster_role_name(x->role);
        ms[i].index = (uint32_t)x->index;
        ms[i].address = (char *)x->address;
        ms[i].state = (char *)state_names[x->state];
        ms[i].last_beat_secs = x->last_beat > 0 ? now - x->last_beat : -1.0;
        ms[i].step = x->step;
        ms[i].incarnation = x->incarnation;
        ms[i].pid = x->pid;
        mp[i] = &ms[i];
    }
    Pstrain__StatusResponse resp = PSTRAIN__STATUS_RESPONSE__INIT;
    resp.global_step = m->global_step;
    resp.target_steps = m->target;
    resp.done = m->done;
    resp.n_members = m->nmembers;
    resp.members = mp;
    resp.final_accuracy = m->have_final ? m->final_accuracy : -1.0;
    resp.final_loss = m->have_final ? m->final_loss : -1.0;
    msg_reply(call, &m->pack, &resp.base);
    pthread_mutex_unlock(&m->mu);
    free(ms);
    free(mp);
}

const rpc_method_t master_methods[] = {
    {"/pstrain.Master/Register", handle_register},
    {"/pstrain.Master/Heartbeat", handle_heartbeat},
    {"/pstrain.Master/Status", handle_status},
};
const size_t master_nmethods = PS_ARRAY_LEN(master_methods);

/* The master's RPC service: unpacks, asks master_t (which takes its own
 * lock), answers. The handlers run one at a time on the server's threads
 * (rpc.h), which is what lets them share master_t.pack. */
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/rpc/msg.h"
#include "master/master.h"
#include "pstrain.pb-c.h"

static const char *state_names[] = {"unknown", "alive", "dead", "done"};

static cluster_role_t caller_role(const Pstrain__Caller *c) {
    if (!strcmp(c->role, "ps"))
        return CLUSTER_PS;
    if (!strcmp(c->role, "worker"))
        return CLUSTER_WORKER;
    return CLUSTER_NROLES;
}

static void handle_register(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    master_t *m = ctx;
    Pstrain__RegisterRequest *req = pstrain__register_request__unpack(NULL, len, data);
    if (!req || !req->caller) {
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, "register: malformed RegisterRequest", NULL, 0);
        if (req)
            pstrain__register_request__free_unpacked(req, NULL);
        return;
    }
    const Pstrain__Caller *c = req->caller;
    master_answer_t a;
    if (master_register(m, caller_role(c), (int)c->index, c->incarnation, req->pid, ps_now(), &a) !=
        RPC_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "register: %s %u is not in the cluster spec", c->role, c->index);
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, msg, NULL, 0);
    } else {
        Pstrain__RegisterResponse resp = PSTRAIN__REGISTER_RESPONSE__INIT;
        resp.global_step = a.global_step;
        resp.done = a.done;
        msg_reply(call, &m->pack, &resp.base);
    }
    pstrain__register_request__free_unpacked(req, NULL);
}

static void handle_heartbeat(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    master_t *m = ctx;
    Pstrain__HeartbeatRequest *req = pstrain__heartbeat_request__unpack(NULL, len, data);
    if (!req || !req->caller) {
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, "heartbeat: malformed HeartbeatRequest", NULL,
                       0);
        if (req)
            pstrain__heartbeat_request__free_unpacked(req, NULL);
        return;
    }
    const Pstrain__Caller *c = req->caller;
    master_beat_t b = {.incarnation = c->incarnation,
                       .step = req->step,
                       .examples = req->examples,
                       .loss = req->loss,
                       .accuracy = req->accuracy};
    master_answer_t a;
    if (master_heartbeat(m, caller_role(c), (int)c->index, &b, ps_now(), &a) != RPC_OK) {
        /* Not registered with this master (it restarted, or the role did). */
        rpc_call_reply(call, RPC_NOT_FOUND, "heartbeat: register first", NULL, 0);
    } else {
        Pstrain__HeartbeatResponse resp = PSTRAIN__HEARTBEAT_RESPONSE__INIT;
        resp.global_step = a.global_step;
        resp.done = a.done;
        resp.live_workers = a.live_workers;
        msg_reply(call, &m->pack, &resp.base);
    }
    pstrain__heartbeat_request__free_unpacked(req, NULL);
}

static void fill_member(Pstrain__Member *out, const member_t *x, double now) {
    Pstrain__Member init = PSTRAIN__MEMBER__INIT;
    *out = init;
    out->role = (char *)cluster_role_name(x->role);
    out->index = (uint32_t)x->index;
    out->address = (char *)x->address;
    out->state = (char *)state_names[x->state];
    out->last_beat_secs = x->last_beat > 0 ? now - x->last_beat : -1.0;
    out->step = x->step;
    out->incarnation = x->incarnation;
    out->pid = x->pid;
    out->examples = x->examples;
    out->loss = x->loss;
    out->accuracy = x->accuracy;
}

static void handle_status(void *ctx, rpc_call_t *call, const uint8_t *data, size_t len) {
    master_t *m = ctx;
    Pstrain__StatusRequest *req = pstrain__status_request__unpack(NULL, len, data);
    if (!req) {
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, "status: malformed StatusRequest", NULL, 0);
        return;
    }
    pstrain__status_request__free_unpacked(req, NULL);
    member_t *members = xcalloc(m->nmembers, sizeof *members);
    Pstrain__Member *ms = xcalloc(m->nmembers, sizeof *ms);
    Pstrain__Member **mp = xcalloc(m->nmembers, sizeof *mp);
    master_summary_t sum;
    master_snapshot(m, members, &sum);
    double now = ps_now();
    for (size_t i = 0; i < m->nmembers; i++) {
        fill_member(&ms[i], &members[i], now);
        mp[i] = &ms[i];
    }
    Pstrain__StatusResponse resp = PSTRAIN__STATUS_RESPONSE__INIT;
    resp.global_step = sum.global_step;
    resp.target_steps = sum.target;
    resp.done = sum.done;
    resp.n_members = m->nmembers;
    resp.members = mp;
    resp.final_accuracy = sum.have_final ? sum.final_accuracy : -1.0;
    resp.final_loss = sum.have_final ? sum.final_loss : -1.0;
    msg_reply(call, &m->pack, &resp.base);
    free(members);
    free(ms);
    free(mp);
}

const rpc_method_t master_methods[] = {
    {"/pstrain.Master/Register", handle_register},
    {"/pstrain.Master/Heartbeat", handle_heartbeat},
    {"/pstrain.Master/Status", handle_status},
};
const size_t master_nmethods = PS_ARRAY_LEN(master_methods);

#include "master.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/log.h"
#include "common/base/util.h"

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

static member_t *find_locked(master_t *m, cluster_role_t role, int index) {
    for (size_t i = 0; i < m->nmembers; i++)
        if (m->members[i].role == role && m->members[i].index == index)
            return &m->members[i];
    return NULL;
}

static uint32_t live_workers_locked(const master_t *m, double now) {
    uint32_t n = 0;
    bool starting = now - m->started < m->dead_after_s;
    for (size_t i = 0; i < m->nmembers; i++) {
        const member_t *x = &m->members[i];
        n += x->role == CLUSTER_WORKER &&
             (x->state == MEMBER_ALIVE || (x->state == MEMBER_UNKNOWN && starting));
    }
    return n;
}

static void answer_locked(const master_t *m, double now, master_answer_t *out) {
    *out = (master_answer_t){.global_step = m->global_step,
                             .done = m->done,
                             .live_workers = live_workers_locked(m, now)};
}

int master_register(master_t *m, cluster_role_t role, int index, uint64_t incarnation, int32_t pid,
                    double now, master_answer_t *out) {
    pthread_mutex_lock(&m->mu);
    member_t *x = find_locked(m, role, index);
    if (x) {
        const char *name = cluster_role_name(role);
        if (x->incarnation && x->incarnation != incarnation)
            log_info("%s%d restarted (pid %d)", name, index, pid);
        else
            log_info("%s%d registered (pid %d)", name, index, pid);
        x->incarnation = incarnation;
        x->pid = pid;
        x->state = MEMBER_ALIVE;
        x->last_beat = now;
        answer_locked(m, now, out);
    }
    pthread_mutex_unlock(&m->mu);
    return x ? RPC_OK : RPC_INVALID_ARGUMENT;
}

int master_heartbeat(master_t *m, cluster_role_t role, int index, const master_beat_t *b,
                     double now, master_answer_t *out) {
    pthread_mutex_lock(&m->mu);
    member_t *x = find_locked(m, role, index);
    bool known = x && x->incarnation == b->incarnation;
    if (known) {
        if (x->state == MEMBER_DEAD)
            log_info("%s%d is beating again", cluster_role_name(role), index);
        x->state = MEMBER_ALIVE;
        x->last_beat = now;
        x->step = b->step;
        x->examples = b->examples;
        x->loss = b->loss;
        x->accuracy = b->accuracy;
        answer_locked(m, now, out);
    }
    pthread_mutex_unlock(&m->mu);
    return known ? RPC_OK : RPC_NOT_FOUND;
}

size_t master_check_liveness(master_t *m, double now) {
    size_t n = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nmembers; i++) {
        member_t *x = &m->members[i];
        if (x->state == MEMBER_ALIVE && now - x->last_beat > m->dead_after_s) {
            x->state = MEMBER_DEAD;
            n++;
            log_warn("%s%d missed its heartbeats for %.1fs: marked dead",
                     cluster_role_name(x->role), x->index, now - x->last_beat);
        }
    }
    pthread_mutex_unlock(&m->mu);
    return n;
}

member_state_t master_member_state(master_t *m, cluster_role_t role, int index) {
    pthread_mutex_lock(&m->mu);
    const member_t *x = find_locked(m, role, index);
    member_state_t s = x ? x->state : MEMBER_UNKNOWN;
    pthread_mutex_unlock(&m->mu);
    return s;
}

uint32_t master_live_workers(master_t *m, double now) {
    pthread_mutex_lock(&m->mu);
    uint32_t n = live_workers_locked(m, now);
    pthread_mutex_unlock(&m->mu);
    return n;
}

size_t master_workers_beating(master_t *m, double within_s, double now) {
    size_t n = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nmembers; i++) {
        const member_t *x = &m->members[i];
        n += x->role == CLUSTER_WORKER && x->state == MEMBER_ALIVE && now - x->last_beat < within_s;
    }
    pthread_mutex_unlock(&m->mu);
    return n;
}

bool master_train_metrics(master_t *m, double *loss, double *accuracy) {
    double tl = 0.0, ta = 0.0;
    size_t nw = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nmembers; i++) {
        const member_t *x = &m->members[i];
        if (x->role == CLUSTER_WORKER && x->examples > 0) {
            tl += x->loss;
            ta += x->accuracy;
            nw++;
        }
    }
    pthread_mutex_unlock(&m->mu);
    *loss = nw ? tl / (double)nw : 0.0;
    *accuracy = nw ? ta / (double)nw : 0.0;
    return nw > 0;
}

void master_set_target(master_t *m, uint64_t target) {
    pthread_mutex_lock(&m->mu);
    m->target = target;
    pthread_mutex_unlock(&m->mu);
}

uint64_t master_target(master_t *m) {
    pthread_mutex_lock(&m->mu);
    uint64_t t = m->target;
    pthread_mutex_unlock(&m->mu);
    return t;
}

bool master_advance(master_t *m, uint64_t step) {
    pthread_mutex_lock(&m->mu);
    m->global_step = step;
    bool reached = step >= m->target;
    pthread_mutex_unlock(&m->mu);
    return reached;
}

void master_set_done(master_t *m, uint64_t step) {
    pthread_mutex_lock(&m->mu);
    m->done = true;
    m->global_step = step;
    pthread_mutex_unlock(&m->mu);
}

bool master_done(master_t *m) {
    pthread_mutex_lock(&m->mu);
    bool d = m->done;
    pthread_mutex_unlock(&m->mu);
    return d;
}

void master_set_final(master_t *m, double loss, double accuracy) {
    pthread_mutex_lock(&m->mu);
    m->have_final = true;
    m->final_loss = loss;
    m->final_accuracy = accuracy;
    pthread_mutex_unlock(&m->mu);
}

void master_snapshot(master_t *m, member_t *out, master_summary_t *sum) {
    pthread_mutex_lock(&m->mu);
    memcpy(out, m->members, m->nmembers * sizeof *out);
    *sum = (master_summary_t){.global_step = m->global_step,
                              .target = m->target,
                              .done = m->done,
                              .have_final = m->have_final,
                              .final_loss = m->final_loss,
                              .final_accuracy = m->final_accuracy};
    pthread_mutex_unlock(&m->mu);
}

/* The master's state: every role of the cluster spec with what its beats
 * said, the global step, and the end of training.
 *
 * Threads: the RPC handlers (Register, Heartbeat, Status) run on the
 * server's threads, the main loop advances the step and checks liveness,
 * the evaluator's thread reads the workers' metrics. master_t owns its lock:
 * every function below takes it, callers never do. */
#ifndef PSTRAIN_MASTER_H
#define PSTRAIN_MASTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/daemon/daemon.h"

typedef enum { MEMBER_UNKNOWN = 0, MEMBER_ALIVE, MEMBER_DEAD, MEMBER_DONE } member_state_t;

typedef struct {
    cluster_role_t role;
    int index;
    char address[CLUSTER_ADDR_LEN];
    member_state_t state;
    double last_beat; /* ps_now() of the last Register or Heartbeat, 0 before one */
    uint64_t step, incarnation, examples;
    int32_t pid;
    double loss, accuracy;
} member_t;

typedef struct {
    pthread_mutex_t mu; /* guards every field below but pack; master.c only */
    member_t *members;  /* every ps, then every worker, of the cluster spec */
    size_t nmembers;    /* fixed by master_init: any thread may read it */
    double dead_after_s;
    double started; /* ps_now() at master_init */
    uint64_t global_step, target;
    bool done;
    bool have_final;
    double final_loss, final_accuracy;
    rpc_buf_t pack; /* the handlers' answers; they run one at a time (rpc.h) */
} master_t;

/* What a Register or Heartbeat is answered. */
typedef struct {
    uint64_t global_step;
    bool done;
    uint32_t live_workers;
} master_answer_t;

/* What a Heartbeat reports. */
typedef struct {
    uint64_t incarnation, step, examples;
    double loss, accuracy;
} master_beat_t;

/* target: global steps to train (UINT64_MAX until known). */
void master_init(master_t *m, const cluster_t *c, double dead_after_s, uint64_t target);
void master_free(master_t *m);

/* A role (re)starts: alive from now, with its incarnation. RPC_OK, or
 * RPC_INVALID_ARGUMENT when the spec has no such role and index. */
int master_register(master_t *m, cluster_role_t role, int index, uint64_t incarnation, int32_t pid,
                    double now, master_answer_t *out);
/* A beat: alive from now. RPC_NOT_FOUND when the role did not register
 * with this incarnation (this master restarted, or the role did). */
int master_heartbeat(master_t *m, cluster_role_t role, int index, const master_beat_t *b,
                     double now, master_answer_t *out);
/* Marks members whose beats stopped for dead_after_s as dead; how many. */
size_t master_check_liveness(master_t *m, double now);
member_state_t master_member_state(master_t *m, cluster_role_t role, int index);
/* Workers whose beats arrive; one not heard from yet counts for the first
 * dead_after_s after master_init (it is starting). */
uint32_t master_live_workers(master_t *m, double now);
/* Alive workers that beat within the last within_s seconds. */
size_t master_workers_beating(master_t *m, double within_s, double now);
/* The mean training loss and accuracy of the workers' last beats; false
 * (and zeros) before any worker reported examples. */
bool master_train_metrics(master_t *m, double *loss, double *accuracy);

void master_set_target(master_t *m, uint64_t target);
uint64_t master_target(master_t *m);
/* The global step moved to step; true when it reached the target. */
bool master_advance(master_t *m, uint64_t step);
/* Training is over at step: every answer from now on says done. */
void master_set_done(master_t *m, uint64_t step);
bool master_done(master_t *m);
/* The final evaluation, for Status. */
void master_set_final(master_t *m, double loss, double accuracy);

/* Everything Status reports. */
typedef struct {
    uint64_t global_step, target;
    bool done, have_final;
    double final_loss, final_accuracy;
} master_summary_t;

/* Copies every member (out has m->nmembers entries) and the summary, as of
 * one moment. */
void master_snapshot(master_t *m, member_t *out, master_summary_t *sum);

/* The master's service (master/service.c): Register, Heartbeat, Status,
 * with a master_t as the server's ctx. */
extern const rpc_method_t master_methods[];
extern const size_t master_nmethods;

#endif

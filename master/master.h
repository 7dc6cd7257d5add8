/* The master's state: every role of the cluster spec with what its beats
 * said, the global step, and the end of training. Its RPC handlers run on
 * the server thread; the main loop reads and writes under the same lock. */
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
    pthread_mutex_t mu;
    member_t *members; /* every ps, then every worker, of the cluster spec */
    size_t nmembers;
    double dead_after_s;
    double started; /* ps_now() at master_init */
    uint64_t global_step, target;
    bool done;
    bool have_final;
    double final_loss, final_accuracy;
    rpc_buf_t pack;
} master_t;

void master_init(master_t *m, const cluster_t *c, double dead_after_s, uint64_t target);
void master_free(master_t *m);
/* Marks members whose beats stopped as dead (called by the main loop). */
void master_check_liveness(master_t *m);
/* Workers whose beats arrive. */
uint32_t master_live_workers(master_t *m);

extern const rpc_method_t master_methods[];
extern const size_t master_nmethods;

#endif

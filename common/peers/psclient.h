/* A client of every parameter server at once: pulls the whole model (one call
 * per PS, all in flight together) into a parameter slab, checking every
 * tensor against the placement all roles compute; pushes a gradient slab cut
 * into each PS's partitions; retries unreachable PS with capped backoff.
 * Used by workers, and by the master for Save, Restore, Stats and Shutdown. */
#ifndef PSTRAIN_PSCLIENT_H
#define PSTRAIN_PSCLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <signal.h>

#include "common/model/model.h"
#include "common/rpc/rpc.h"
#include "pstrain.pb-c.h"

typedef struct psclient psclient_t;

/* Returns true when a retry loop should give up (a stop signal, training over). */
typedef bool (*psclient_stop_fn)(void *arg);

/* Where the PS are and how to call them: plain values, so that this layer
 * needs neither the config table nor TF_CONFIG (daemon_psclient_options
 * fills them from both). */
typedef struct {
    const char *const *addrs; /* PS i's "host:port", nps of them; copied */
    size_t nps;
    rpc_options_t rpc;
    double deadline_secs;                   /* of every call */
    double retry_max_secs;                  /* the backoff's cap */
    const volatile sig_atomic_t *stop_flag; /* non-zero: stop retrying; NULL: none */
} psclient_options_t;

psclient_t *psclient_create(const psclient_options_t *o, const model_t *m,
                            const Pstrain__Caller *caller, psclient_stop_fn stop, void *arg,
                            char *err, size_t errlen);
void psclient_free(psclient_t *p);
size_t psclient_nps(const psclient_t *p);

/* Pulls every partition into params (a model slab). With wait_next, each PS
 * answers once it has passed the step of our last pull (sync mode).
 * Returns 0; 1 when stopped; or an exit code for a permanent error (the
 * error is logged). */
int psclient_pull(psclient_t *p, float *params, bool wait_next);
/* Updates applied by PS `ps` at our last pull; ps 0's is the global step. */
uint64_t psclient_step(const psclient_t *p, size_t ps);
/* Pushes grads (a model slab), each PS tagged with its step at our last
 * pull. *stale counts the PS that dropped it as stale (sync). Returns as
 * psclient_pull. */
int psclient_push(psclient_t *p, const float *grads, size_t *stale);
/* The same for the variables whose mask entry ([model nvars]) is set; mask
 * NULL means all. A partial push (async) is applied without counting a step:
 * the rest of the step follows in a push that is not partial. */
int psclient_pull_vars(psclient_t *p, float *params, bool wait_next, const uint8_t *mask);
int psclient_push_vars(psclient_t *p, const float *grads, const uint8_t *mask, bool partial,
                       size_t *stale);
/* Asks every PS to exit (best effort, bounded by the deadline). */
void psclient_shutdown(psclient_t *p, const char *reason, double deadline_s);
/* Every PS writes its part of checkpoint ckpt-<step> (Save), or replaces its
 * state with it (Restore), all at once, without retrying; 0 when every PS
 * answered OK, else -1 with the first failure in err. */
int psclient_save(psclient_t *p, uint64_t step, double deadline_s, char *err, size_t errlen);
typedef enum { PSCLIENT_RESTORE_CKPT, PSCLIENT_RESTORE_INITIAL, PSCLIENT_ADOPT } psclient_restore_t;
int psclient_restore(psclient_t *p, uint64_t step, uint64_t lineage, psclient_restore_t how,
                     double deadline_s, char *err, size_t errlen);
typedef struct {
    uint64_t step, lineage, origin_step, incarnation;
} psclient_stats_t;
/* Stats of every PS at once (out has psclient_nps entries), without
 * retrying; 0 when every PS answered. */
int psclient_stats(psclient_t *p, double deadline_s, psclient_stats_t *out);
/* PS 0's step by Stats, without waiting or retrying; -1 when unreachable. */
int64_t psclient_poll_step(psclient_t *p, double deadline_s);

#endif

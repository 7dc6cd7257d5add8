/* A client of every parameter server at once. Workers pull the whole model
 * (one call per PS, all in flight together) into a parameter slab, each
 * tensor checked against the placement every role computes, and push a
 * gradient slab cut into each PS's partitions, retrying a PS that cannot be
 * reached with capped backoff (rpc_backoff_t). The master never pulls or
 * pushes: it polls PS 0's step, has every PS Save or Restore a checkpoint
 * at once, reads their Stats to recover a cluster, and shuts them down.
 *
 * Errors: pulls and pushes return a psclient_status_t and fill the caller's
 * err; nothing here logs an error or exits (what the caller should be told
 * of retries comes through psclient_events_t). */
#ifndef PSTRAIN_PSCLIENT_H
#define PSTRAIN_PSCLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <signal.h>

#include "common/model/model.h"
#include "common/rpc/rpc.h"
#include "pstrain.pb-c.h"

typedef struct psclient psclient_t;

/* How a pull or a push ended. */
typedef enum {
    PSCLIENT_OK = 0,
    /* The stop flag or callback ended the retries: not a failure of the
     * cluster (a signal, or training is over). */
    PSCLIENT_STOPPED,
    /* Permanent: a PS refused the call (any status but UNAVAILABLE,
     * DEADLINE_EXCEEDED and CANCELLED), or answered with tensors that the
     * placement does not give it (another model or cluster spec). */
    PSCLIENT_INVALID,
    /* A PS stayed unreachable for retry_max_total_secs. */
    PSCLIENT_UNREACHABLE,
} psclient_status_t;

/* "ok", "stopped", "invalid" or "unreachable". */
const char *psclient_status_name(psclient_status_t s);

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
    double retry_max_total_secs;            /* give up after this long; 0: retry until stopped */
    const volatile sig_atomic_t *stop_flag; /* non-zero: stop retrying; NULL: none */
    /* Pushes (and pulls) of tensors of WIRE_BF16_MIN_VALUES or more go as
     * bfloat16; each push's rounding error (the residual) stays here and is
     * added to the same values' next push (error feedback), so that no part
     * of a gradient is lost, only delayed. */
    bool wire_bf16;
    /* The same with IEEE half precision (rpc.wire_dtype fp16; wins over
     * wire_bf16): values over 65504 are clamped and counted
     * (psclient_fp16_clamped), the clamp's remainder kept as residual. */
    bool wire_fp16;
    /* rpc.push_topk: in (0, 1], a push of a partition of WIRE_BF16_MIN_VALUES
     * values or more carries only that fraction of its values, those of
     * largest magnitude (gradient plus residual), with their indices; the
     * rest is the residual, added to the next push. 0: dense pushes. */
    double push_topk;
    /* With push_topk: momentum correction (codec_topk_feedback) at this
     * momentum, for a PS that applies sparse values as plain SGD steps
     * (rpc.push_topk_momentum); 0: none. */
    double push_topk_momentum;
} psclient_options_t;

/* What the caller is told while pulls and pushes go on; any may be NULL.
 * Called on the thread that pulls or pushes. */
typedef struct {
    /* A pull or push found a PS unreachable and retries, sleeping at most
     * max_sleep_s between attempts; once per pull or push, err the first
     * failure. */
    void (*retrying)(void *arg, const char *err, double max_sleep_s);
    /* Every PS answered again after retrying (method: the gRPC method). */
    void (*recovered)(void *arg, const char *method);
    /* PS ps's pulls and pushes go over transport now ("grpc", "stream" or
     * "shm"; port: the tensor stream's TCP port, 0 over gRPC). */
    void (*transport)(void *arg, size_t ps, const char *transport, int port);
    void *arg;
} psclient_events_t;

/* stop and arg: an optional stop callback (NULL for none), checked between
 * retries beside o->stop_flag. */
psclient_t *psclient_create(const psclient_options_t *o, const model_t *m,
                            const Pstrain__Caller *caller, psclient_stop_fn stop, void *arg,
                            char *err, size_t errlen);
void psclient_free(psclient_t *p);
/* Replaces the events (all NULL at create). */
void psclient_set_events(psclient_t *p, const psclient_events_t *ev);
size_t psclient_nps(const psclient_t *p);

/* Embedding tables (var_t.sparse): from now on, pulls ask for the rows of
 * each table that the n examples x[n, input size] read and nothing else of
 * it, and pushes send those rows' gradients (the rest of the table's
 * gradient is zero); x NULL moves the tables whole again. Returns the rows
 * touched (0 for a model without tables). Call before the step's pull. */
size_t psclient_set_batch(psclient_t *p, const float *x, size_t n);
/* Bytes of every pull answer and push message so far, all PS together. */
void psclient_bytes(const psclient_t *p, uint64_t *pulled, uint64_t *pushed);

/* Pulls every partition into params (a model slab). With wait_next, each PS
 * answers once it has passed the step of our last pull (sync mode). On a
 * status other than PSCLIENT_OK, err says what happened; params may then be
 * partly written. */
psclient_status_t psclient_pull(psclient_t *p, float *params, bool wait_next, char *err,
                                size_t errlen);
/* With on, each push is tagged with every PS's step at the pull before the
 * last (off: at the last pull): for a caller whose gradients come from the
 * weights of the pull before the last (the one-step pipeline), so that a PS
 * measures their staleness (train.staleness_lr) from the weights they were
 * computed on. */
void psclient_tag_previous_pull(psclient_t *p, bool on);
/* Updates applied by PS `ps` at our last pull; ps 0's is the global step. */
uint64_t psclient_step(const psclient_t *p, size_t ps);
/* Pushes grads (a model slab), each PS tagged with its step at our last
 * pull. *stale counts the PS that dropped it as stale (sync). A push that
 * is retried keeps its number, so no PS applies it twice. Returns as
 * psclient_pull. */
psclient_status_t psclient_push(psclient_t *p, const float *grads, size_t *stale, char *err,
                                size_t errlen);
/* The same for the variables whose mask entry ([model nvars]) is set; mask
 * NULL means all. A partial push (async) is applied without counting a step:
 * the rest of the step follows in a push that is not partial. */
psclient_status_t psclient_pull_vars(psclient_t *p, float *params, bool wait_next,
                                     const uint8_t *mask, char *err, size_t errlen);
psclient_status_t psclient_push_vars(psclient_t *p, const float *grads, const uint8_t *mask,
                                     bool partial, size_t *stale, char *err, size_t errlen);

/* Values that rpc.wire_dtype fp16 clamped to +-65504 in this client's
 * pushes so far. */
uint64_t psclient_fp16_clamped(const psclient_t *p);

/* Asks every PS to exit, without retrying, bounded by deadline_s (best
 * effort: a PS that does not answer is logged as a warning). */
void psclient_shutdown(psclient_t *p, const char *reason, double deadline_s);
/* Every PS writes its part of checkpoint ckpt-<step> (Save), or replaces its
 * state with it (Restore), all at once, without retrying; 0 when every PS
 * answered OK, else -1 with the first failure in err. */
int psclient_save(psclient_t *p, uint64_t step, double deadline_s, char *err, size_t errlen);
typedef enum { PSCLIENT_RESTORE_CKPT, PSCLIENT_RESTORE_INITIAL, PSCLIENT_ADOPT } psclient_restore_t;
/* Restore: as psclient_save, but PSCLIENT_RESTORE_REFUSED when a PS
 * answered that it cannot restore (FAILED_PRECONDITION), not that it was
 * out of reach. */
#define PSCLIENT_RESTORE_REFUSED (-2)
int psclient_restore(psclient_t *p, uint64_t step, uint64_t lineage, psclient_restore_t how,
                     double deadline_s, char *err, size_t errlen);
typedef struct {
    uint64_t step, lineage, origin_step, incarnation;
} psclient_stats_t;
/* Stats of every PS at once (out has psclient_nps entries), without
 * retrying; 0 when every PS answered, else -1. */
int psclient_stats(psclient_t *p, double deadline_s, psclient_stats_t *out);
/* PS 0's step by Stats (the global step), without waiting or retrying; -1
 * when unreachable. Workers ask it once, to resume their data. */
int64_t psclient_poll_step(psclient_t *p, double deadline_s);

#endif

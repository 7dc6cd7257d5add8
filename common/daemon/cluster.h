/* The cluster spec: TF_CONFIG, read exactly as TensorFlow and Kubeflow's TFJob
 * write it, e.g.
 *   {"cluster": {"master": ["h0:2222"], "ps": ["h1:2222"], "worker": ["h3:2222"]},
 *    "task": {"type": "worker", "index": 0}, "environment": "cloud"}
 * Roles are master (or its synonym chief: exactly one address), ps (at least
 * one), worker (at least one) and evaluator (at most one, optional). A role
 * may be a list of "host:port" strings (the dense form) or TFJob's sparse form,
 * an object mapping task indexes to addresses: {"worker": {"3": "h:2222"}}.
 * Every mistake is reported as one line naming the key and what was wanted. */
#ifndef PSTRAIN_CLUSTER_H
#define PSTRAIN_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CLUSTER_MASTER = 0, /* spelled "master" or "chief" */
    CLUSTER_PS,
    CLUSTER_WORKER,
    CLUSTER_EVALUATOR,
    CLUSTER_NROLES,
} cluster_role_t;

/* Task indexes are below this, so that a typo such as "worker": {"1000000000": ...}
 * cannot make a reader size an array by it. */
#define CLUSTER_MAX_TASKS 100000

/* A DNS name is at most 253 characters; an IPv6 literal with a zone fits too. */
#define CLUSTER_HOST_LEN 256
/* "[" host "]:" port and the NUL. */
#define CLUSTER_ADDR_LEN (CLUSTER_HOST_LEN + 9)

typedef struct {
    int index;                   /* task index: the list position, or the sparse form's key */
    char host[CLUSTER_HOST_LEN]; /* hostname, IPv4, or IPv6 without its brackets */
    int port;                    /* 1..65535 */
    char text[CLUSTER_ADDR_LEN]; /* "host:port" as given (IPv6 in brackets), for gRPC */
} cluster_addr_t;

/* The tasks of one role, sorted by index. In the dense form index i is at
 * addr[i] and n == span; the sparse form may leave indexes out (TFJob lists
 * only some workers), so look tasks up with cluster_find. Parameter servers
 * are never sparse with holes: every role must reach every PS. */
typedef struct {
    bool present;         /* the role's key was in "cluster" */
    bool sparse;          /* given as {"index": "host:port"} */
    size_t n;             /* tasks listed */
    size_t span;          /* highest index + 1 (0 when none) */
    cluster_addr_t *addr; /* n entries, ascending index */
} cluster_job_t;

typedef struct {
    cluster_job_t jobs[CLUSTER_NROLES];
    bool chief_spelling; /* the cluster named the master "chief" */
    cluster_role_t task_role;
    bool task_chief_spelling; /* task.type was "chief" */
    int task_index;
    /* Whether this task is listed in "cluster": false only for an evaluator
     * outside the training cluster, which is how TensorFlow and TFJob run it. */
    bool task_listed;
    char *environment; /* "environment" (TFJob writes "cloud"), or NULL */
    char *rpc_layer;   /* "rpc_layer" ("grpc", "grpc+tls", ...), or NULL */
    char *model_dir;   /* "model_dir", or NULL */
} cluster_t;

/* Parses TF_CONFIG text. On error fills err with one line starting with
 * "TF_CONFIG: ", leaves c empty (nothing to free) and returns -1. Unknown
 * top-level keys (session_master, service, ...) and unknown keys inside
 * "task" are ignored, as TensorFlow ignores them; an unknown role inside
 * "cluster" is an error. */
int cluster_parse(cluster_t *c, const char *json, char *err, size_t errlen);
/* Parses the file when path is not NULL (errors then start with the path),
 * else the environment variable TF_CONFIG, which must be set and not empty. */
int cluster_load(cluster_t *c, const char *path, char *err, size_t errlen);
void cluster_free(cluster_t *c);

/* Checks that the task is of the role this program runs; a daemon calls it
 * first and exits 2 on failure. CLUSTER_MASTER accepts master and chief
 * tasks; an evaluator task passes only CLUSTER_EVALUATOR, so pstrain-master
 * asks for CLUSTER_EVALUATOR when run with --evaluate-only. program names the
 * program in the message (NULL: "this program"). */
int cluster_expect_role(const cluster_t *c, cluster_role_t role, const char *program, char *err,
                        size_t errlen);

/* "master", "ps", "worker", "evaluator". */
const char *cluster_role_name(cluster_role_t role);
/* The task's type as spelled in TF_CONFIG ("chief" or "master" for the master). */
const char *cluster_task_type(const cluster_t *c);
/* The task with this index of a role, or NULL when it is not listed. */
const cluster_addr_t *cluster_find(const cluster_t *c, cluster_role_t role, int index);
/* This task's own address, or NULL for an evaluator outside the cluster. */
const cluster_addr_t *cluster_self(const cluster_t *c);

#endif

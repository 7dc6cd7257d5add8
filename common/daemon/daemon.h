/* What every daemon's main does the same way: flags (--config, --set,
 * --tf-config, --pid-file, --help, --version), TF_CONFIG and its role check,
 * the logger, the banner, signals that only set a flag, and the pid file. */
#ifndef PSTRAIN_DAEMON_H
#define PSTRAIN_DAEMON_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/daemon/cluster.h"
#include "common/daemon/config.h"
#include "common/peers/psclient.h"
#include "common/rpc/rpc.h"
#include "common/train/optim.h"

typedef struct {
    const char *program; /* "pstrain-ps" */
    cluster_role_t role;
    config_t cfg;
    cluster_t cluster;
    bool have_cluster;
    const char *pid_file;       /* NULL: none */
    const char *tf_config_file; /* NULL: the environment's TF_CONFIG */
    bool evaluate_only;         /* pstrain-master --evaluate-only */
    bool check_only;            /* --check-config: validate, report, exit */
    const char *self;           /* this task's address, or NULL */
    const char **ps_addrs;      /* the PS's addresses, made by daemon_psclient_options */
} daemon_t;

/* The signal that asked us to stop (SIGTERM, SIGINT), 0 while none has. */
extern volatile sig_atomic_t daemon_stop_signal;

/* Parses flags and TF_CONFIG. Returns -1 to go on, or an exit code to exit
 * with at once (0 after --help or a passed --check-config, 2 on a bad flag,
 * key, model spec or TF_CONFIG, each reported in one line). needs_cluster
 * false lets a worker without TF_CONFIG run standalone. describe prints the
 * program's own help paragraph. */
int daemon_parse(daemon_t *d, const char *program, cluster_role_t role, bool needs_cluster,
                 int argc, char **argv, void (*describe)(FILE *out));
/* Logger, banner, signal handlers, pid file. Returns 0, or an exit code. */
int daemon_start(daemon_t *d);
/* Removes the pid file and frees what daemon_parse made. */
void daemon_finish(daemon_t *d);

/* RPC options (message limits, TLS) from the config. */
rpc_options_t daemon_rpc_options(const config_t *cfg);
/* The retry policy for peers: backoff capped at rpc.retry_max_secs, stopped
 * by a stop signal; max_total_s 0 retries until then. */
rpc_retry_t daemon_retry_policy(const config_t *cfg, double max_total_s);

/* The PS client's options from the cluster spec and the config (the
 * addresses stay d's until daemon_finish). */
psclient_options_t daemon_psclient_options(daemon_t *d);
/* The optimizer the configuration names, with its train.* values. */
int daemon_optim_config(optim_cfg_t *o, const config_t *c, char *err, size_t errlen);
/* The momentum a worker applies to its top-k pushes before choosing their
 * values (rpc.push_topk_momentum: async or ssp, SGD), which the PS then
 * leaves out of their update; 0 when neither does. */
double daemon_topk_momentum(const config_t *c);

#endif

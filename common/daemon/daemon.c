#include "common/daemon/daemon.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/model/model.h"
#include "common/train/model_file.h"
#include "common/daemon/pidfile.h"
#include "common/base/util.h"

volatile sig_atomic_t daemon_stop_signal;

static void on_stop_signal(int sig) {
    daemon_stop_signal = sig;
}

static void usage(const daemon_t *d, FILE *out, void (*describe)(FILE *out)) {
    fprintf(out,
            "usage: %s [--tf-config FILE] [--config FILE] [--set key=value]... "
            "[--pid-file PATH] [--check-config] [--help] [--version]\n\n",
            d->program);
    if (describe)
        describe(out);
    fprintf(out, "\n  --tf-config FILE   read the cluster spec from FILE instead of the TF_CONFIG\n"
                 "                     environment variable\n"
                 "  --pid-file PATH    write this process's pid to PATH (removed on a clean "
                 "exit)\n"
                 "  --config FILE      JSON configuration (only the keys it names)\n"
                 "  --set key=value    one configuration key, over --config\n"
                 "  --check-config     check the flags, configuration, model spec and TF_CONFIG\n"
                 "                     (and the task's role), print what would run, and exit\n"
                 "                     without binding a port or reading data\n\n"
                 "Exit status: 0 when training is done; 1-127 for errors a restart cannot cure\n"
                 "(2: bad flag, configuration or TF_CONFIG; 65: bad data); 128-255 for failures\n"
                 "a restart may cure.\n\n"
                 "Configuration keys:\n");
    config_print_help(out);
}

/* Takes the daemon's own flags out of argv; config_parse_args has taken its. */
static int parse_own_flags(daemon_t *d, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--tf-config") || !strcmp(a, "--pid-file")) && i + 1 < argc) {
            *(a[2] == 't' ? &d->tf_config_file : &d->pid_file) = argv[++i];
        } else if (!strncmp(a, "--tf-config=", 12)) {
            d->tf_config_file = a + 12;
        } else if (!strncmp(a, "--pid-file=", 11)) {
            d->pid_file = a + 11;
        } else if (!strcmp(a, "--check-config")) {
            d->check_only = true;
        } else if (!strcmp(a, "--evaluate-only") && d->role == CLUSTER_MASTER) {
            d->evaluate_only = true;
        } else {
            log_print(stderr, "%s: unknown argument \"%s\" (see --help)", d->program, a);
            return EXIT_USAGE;
        }
    }
    return -1;
}

/* --check-config: what daemon_parse validated, plus the model spec; one
 * line on stdout saying what would run (deployment tools and tests read it). */
static int check_config(daemon_t *d) {
    char err[PS_ERRLEN];
    model_t m;
    int rc = EXIT_OK;
    const cluster_t *c = &d->cluster;
    if (model_file_load(&m, d->cfg.model, err, sizeof err)) {
        log_print(stderr, "%s: %s", d->program, err);
        rc = EXIT_USAGE;
    } else if (d->have_cluster) {
        printf("%s: valid: %s %d at %s; cluster %s=%zu ps=%zu worker=%zu; model %s, %zu "
               "parameters\n",
               d->program, cluster_task_type(c), c->task_index, d->self ? d->self : "-",
               c->chief_spelling ? "chief" : "master", c->jobs[CLUSTER_MASTER].n,
               c->jobs[CLUSTER_PS].n, c->jobs[CLUSTER_WORKER].n, d->cfg.model, m.nparams);
    } else {
        printf("%s: valid: standalone; model %s, %zu parameters\n", d->program, d->cfg.model,
               m.nparams);
    }
    if (rc == EXIT_OK)
        model_free(&m);
    /* Not daemon_finish: the pid file may be a running daemon's. */
    if (d->have_cluster)
        cluster_free(&d->cluster);
    d->have_cluster = false;
    return rc;
}

int daemon_parse(daemon_t *d, const char *program, cluster_role_t role, bool needs_cluster,
                 int argc, char **argv, void (*describe)(FILE *out)) {
    memset(d, 0, sizeof *d);
    d->program = program;
    d->role = role;
    config_defaults(&d->cfg);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(d, stdout, describe);
            return EXIT_OK;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("%s %s\n", program, PS_VERSION);
            return EXIT_OK;
        }
    }
    char err[PS_ERRLEN];
    if (config_parse_args(&d->cfg, &argc, argv, err, sizeof err)) {
        log_print(stderr, "%s: %s", program, err);
        return EXIT_USAGE;
    }
    int rc = parse_own_flags(d, argc, argv);
    if (rc >= 0)
        return rc;
    const config_t *c = &d->cfg;
    if ((c->tls.ca[0] || c->tls.cert[0] || c->tls.key[0]) &&
        !(c->tls.ca[0] && c->tls.cert[0] && c->tls.key[0])) {
        fprintf(stderr,
                "%s: tls.ca, tls.cert and tls.key: set all three for mutual TLS, or "
                "none\n",
                program);
        return EXIT_USAGE;
    }
    if (rpc_parse_uids(c->rpc.stream_allowed_uids, NULL, err, sizeof err) < 0) {
        log_print(stderr, "%s: %s", program, err);
        return EXIT_USAGE;
    }
    const char *env = getenv("TF_CONFIG");
    if (!needs_cluster && !d->tf_config_file && (!env || !env[0]))
        return d->check_only ? check_config(d) : -1;
    if (cluster_load(&d->cluster, d->tf_config_file, err, sizeof err)) {
        log_print(stderr, "%s: %s", program, err);
        return EXIT_USAGE;
    }
    d->have_cluster = true;
    cluster_role_t want = d->evaluate_only ? CLUSTER_EVALUATOR : role;
    if (cluster_expect_role(&d->cluster, want, program, err, sizeof err)) {
        log_print(stderr, "%s: %s", program, err);
        return EXIT_USAGE;
    }
    const cluster_addr_t *self = cluster_self(&d->cluster);
    d->self = self ? self->text : NULL;
    return d->check_only ? check_config(d) : -1;
}

int daemon_start(daemon_t *d) {
    const char *role = d->evaluate_only ? "evaluator" : cluster_role_name(d->role);
    log_init(role, d->have_cluster ? d->cluster.task_index : -1);
    log_set_level(d->cfg.log.level);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    log_info("%s %s starting: pid %d, %s %d, address %s, model_dir %s", d->program, PS_VERSION,
             (int)getpid(), d->have_cluster ? cluster_task_type(&d->cluster) : "standalone",
             d->have_cluster ? d->cluster.task_index : 0, d->self ? d->self : "-",
             d->cfg.checkpoint.model_dir);
    if (d->pid_file) {
        char err[PS_ERRLEN];
        if (pidfile_write(d->pid_file, err, sizeof err)) {
            log_error("%s", err);
            return EXIT_USAGE;
        }
    }
    return 0;
}

void daemon_finish(daemon_t *d) {
    if (d->pid_file)
        pidfile_remove(d->pid_file);
    if (d->have_cluster)
        cluster_free(&d->cluster);
    free(d->ps_addrs);
    d->ps_addrs = NULL;
}

rpc_options_t daemon_rpc_options(const config_t *cfg) {
    rpc_options_t o;
    memset(&o, 0, sizeof o);
    o.max_recv = o.max_send = (size_t)cfg->rpc.max_message_mb << 20;
    o.stream = cfg->rpc.stream;
    o.stream_port = (int)cfg->rpc.stream_port;
    o.stream_max_connections = (int)cfg->rpc.stream_max_connections;
    o.stream_threads = (int)cfg->rpc.stream_threads;
    o.shm = cfg->rpc.shm;
    o.stream_allowed_uids = cfg->rpc.stream_allowed_uids;
    o.stream_max_wait_s = cfg->rpc.deadline_secs;
    if (cfg->tls.ca[0]) {
        o.tls_ca = cfg->tls.ca;
        o.tls_cert = cfg->tls.cert[0] ? cfg->tls.cert : NULL;
        o.tls_key = cfg->tls.key[0] ? cfg->tls.key : NULL;
    }
    return o;
}

rpc_retry_t daemon_retry_policy(const config_t *cfg, double max_total_s) {
    rpc_retry_t r = rpc_retry_default();
    r.max_s = cfg->rpc.retry_max_secs;
    r.max_attempts = 0;
    r.max_total_s = max_total_s;
    r.stop = &daemon_stop_signal;
    return r;
}

psclient_options_t daemon_psclient_options(daemon_t *d) {
    psclient_options_t o;
    memset(&o, 0, sizeof o);
    o.nps = d->cluster.jobs[CLUSTER_PS].span;
    if (!d->ps_addrs) {
        d->ps_addrs = xcalloc(o.nps ? o.nps : 1, sizeof *d->ps_addrs);
        for (size_t i = 0; i < o.nps; i++)
            d->ps_addrs[i] = cluster_find(&d->cluster, CLUSTER_PS, (int)i)->text;
    }
    o.addrs = d->ps_addrs;
    o.rpc = daemon_rpc_options(&d->cfg);
    o.deadline_secs = d->cfg.rpc.deadline_secs;
    o.retry_max_secs = d->cfg.rpc.retry_max_secs;
    o.wire_bf16 = !strcmp(d->cfg.rpc.wire_dtype, "bf16");
    o.wire_fp16 = !strcmp(d->cfg.rpc.wire_dtype, "fp16");
    o.push_topk = d->cfg.rpc.push_topk;
    o.push_topk_momentum = daemon_topk_momentum(&d->cfg);
    o.stop_flag = &daemon_stop_signal;
    return o;
}

double daemon_topk_momentum(const config_t *c) {
    bool sync = !strcmp(c->train.mode, "sync"), sgd = !strcmp(c->train.optimizer, "sgd");
    return c->rpc.push_topk_momentum && !sync && sgd ? c->train.momentum : 0.0;
}

int daemon_optim_config(optim_cfg_t *o, const config_t *c, char *err, size_t errlen) {
    optim_kind_t kind;
    if (optim_kind_from_name(c->train.optimizer, &kind))
        return ps_errf(err, errlen, "train.optimizer: unknown optimizer \"%s\"",
                       c->train.optimizer);
    optim_defaults(o, kind);
    o->learning_rate = c->train.learning_rate;
    o->decay = c->train.decay;
    /* train.momentum is SGD's; RMSprop runs without momentum, as Keras's default. */
    o->momentum = kind == OPTIM_SGD ? c->train.momentum : 0.0;
    o->nesterov = c->train.nesterov;
    o->beta1 = c->train.beta1;
    o->beta2 = c->train.beta2;
    o->epsilon = c->train.epsilon;
    o->rho = c->train.rho;
    o->initial_accumulator = c->train.initial_accumulator;
    return 0;
}

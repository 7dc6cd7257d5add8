/* Push+pull goodput against one real parameter server over loopback: for N
 * MiB of weights (a one-layer model, input 1024, dense N * 256 units), a
 * client pushes an N MiB gradient and pulls the N MiB of weights back, as a
 * worker does each step, through the same psclient code. Goodput counts
 * payload bytes pushed plus pulled per second; medians over --reps rounds.
 * The PS runs as its own process (build/pstrain-ps, started here on a free
 * port). Each push+pull is followed by the same bytes echoed over a plain
 * TCP socket to another process (tcp_echo.h), so that both see the same
 * noise of a shared machine: vs_tcp is the fraction of that ceiling reached.
 * Usage: pstrain-bench-ps [--sizes 1,4,16,64] [--reps N] [--ps-binary PATH] */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/tcp_echo.h"
#include "common/daemon/cluster.h"
#include "common/daemon/daemon.h"
#include "common/base/log.h"
#include "common/peers/psclient.h"
#include "common/rpc/rpc.h"
#include "common/base/util.h"

/* A loopback port nothing listens on now. */
static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* A model of exactly `mib` MiB of kernel (plus a bias of its units). */
static void model_spec(char *buf, size_t len, size_t mib) {
    snprintf(buf, len,
             "{\"input\": [1024], \"layers\": [{\"type\": \"dense\", \"units\": %zu, "
             "\"activation\": \"softmax\"}]}",
             mib * 256);
}

/* The PS under test, and whether it has exited: the client's retries stop
 * on it (a PS that exits for good, e.g. one that cannot resume, would
 * otherwise be retried for ever). */
static volatile pid_t ps_pid = -1;
static volatile sig_atomic_t ps_exited;
static volatile int ps_status;

static void on_sigchld(int sig) {
    (void)sig;
    int saved = errno, status;
    if (ps_pid > 0 && waitpid(ps_pid, &status, WNOHANG) == ps_pid) {
        ps_status = status;
        ps_exited = 1;
    }
    errno = saved;
}

/* Starts pstrain-ps for the model file on addr, with a model_dir of its own
 * (never the checkout's runs/default); returns its pid. */
static pid_t start_ps(const char *bin, const char *tf_config, const char *model_file,
                      const char *model_dir) {
    ps_exited = 0;
    struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("TF_CONFIG", tf_config, 1);
        char set_model[600], set_dir[600];
        snprintf(set_model, sizeof set_model, "model=%s", model_file);
        snprintf(set_dir, sizeof set_dir, "checkpoint.model_dir=%s", model_dir);
        /* It offers every transport; the client picks one. */
        execl(bin, bin, "--set", set_model, "--set", set_dir, "--set", "train.momentum=0", "--set",
              "log.level=warn", "--set", "rpc.stream=true", (char *)NULL);
        perror(bin);
        _exit(127);
    }
    ps_pid = pid;
    on_sigchld(SIGCHLD); /* it may have exited before ps_pid was set */
    return pid;
}

/* What the tensors go over: by default the PS's tensor stream through
 * shared memory (what a worker on the PS's host uses), --tcp its stream over
 * TCP (a worker on another host), --grpc gRPC. */
enum { OVER_SHM, OVER_TCP, OVER_GRPC };
static int transport = OVER_SHM;
static const char *const transport_name[] = {"shm", "stream-tcp", "grpc"};

static int bench_size(const char *bin, size_t mib, int reps) {
    char err[PS_ERRLEN], spec[256], path[] = "/tmp/pstrain-bench-ps-XXXXXX";
    char model_dir[] = "/tmp/pstrain-bench-ps-dir-XXXXXX";
    int fd = mkstemp(path);
    model_spec(spec, sizeof spec, mib);
    if (fd < 0 || write(fd, spec, strlen(spec)) != (ssize_t)strlen(spec) || !mkdtemp(model_dir))
        return -1;
    close(fd);
    int port = free_port();
    char tf[512];
    snprintf(tf, sizeof tf,
             "{\"cluster\": {\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:%d\"], "
             "\"worker\": [\"127.0.0.1:2\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}",
             port);
    pid_t pid = start_ps(bin, tf, path, model_dir);
    config_t cfg;
    config_defaults(&cfg);
    cfg.rpc.stream = transport == OVER_TCP;
    cfg.rpc.shm = transport == OVER_SHM;
    snprintf(cfg.model, sizeof cfg.model, "%s", path);
    model_t m;
    cluster_t cl;
    if (model_load(&m, path, err, sizeof err) || cluster_parse(&cl, tf, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    const char *addr = cluster_find(&cl, CLUSTER_PS, 0)->text;
    psclient_options_t po = {.addrs = &addr,
                             .nps = 1,
                             .rpc = daemon_rpc_options(&cfg),
                             .deadline_secs = cfg.rpc.deadline_secs,
                             .retry_max_secs = cfg.rpc.retry_max_secs,
                             .stop_flag = &ps_exited};
    psclient_t *p = psclient_create(&po, &m, &caller, NULL, NULL, err, sizeof err);
    size_t bytes = m.nparams * sizeof(float);
    float *w = xalloc_aligned(bytes);
    float *g = xcalloc(m.nparams, sizeof(float));
    uint8_t *echo = xmalloc(bytes);
    double *rates = xcalloc((size_t)reps, sizeof *rates);
    double *tcp = xcalloc((size_t)reps, sizeof *tcp);
    int tcp_fd = -1;
    pid_t tcp_pid = tcp_echo_fork(bytes, &tcp_fd);
    /* The first pull waits for the PS to listen. */
    int rc = tcp_pid < 0 ? -1 : (int)psclient_pull(p, w, false, err, sizeof err);
    for (int r = -3; r < reps && rc == 0; r++) {
        double t0 = ps_now();
        size_t stale;
        rc = (int)psclient_push(p, g, &stale, err, sizeof err);
        if (rc == 0)
            rc = (int)psclient_pull(p, w, false, err, sizeof err);
        double dt = ps_now() - t0, dtcp = tcp_echo_round(tcp_fd, g, echo, bytes);
        if (dtcp < 0)
            rc = -1;
        if (r >= 0) {
            rates[r] = 2.0 * (double)bytes / dt / 1e9;
            tcp[r] = 2.0 * (double)bytes / dtcp / 1e9;
        }
    }
    if (ps_exited)
        fprintf(stderr, "pstrain-bench-ps: %s exited (status %d) before the benchmark ended\n", bin,
                WIFEXITED(ps_status) ? WEXITSTATUS(ps_status) : 128 + WTERMSIG(ps_status));
    else if (rc > 0)
        fprintf(stderr, "%s\n", err);
    if (rc == 0) {
        qsort(rates, (size_t)reps, sizeof *rates, cmp_double);
        qsort(tcp, (size_t)reps, sizeof *tcp, cmp_double);
        printf("transport=%s size_mib=%zu goodput_gbps=%.2f best_gbps=%.2f ms_per_push_pull=%.2f "
               "tcp_echo_gbps=%.2f vs_tcp=%.2f\n",
               transport_name[transport], mib, rates[reps / 2], rates[reps - 1],
               2.0 * (double)bytes / rates[reps / 2] / 1e6, tcp[reps / 2],
               rates[reps / 2] / tcp[reps / 2]);
        fflush(stdout);
    }
    tcp_echo_stop(tcp_pid, tcp_fd);
    free(rates);
    free(tcp);
    free(echo);
    free(w);
    free(g);
    psclient_free(p);
    cluster_free(&cl);
    model_free(&m);
    if (!ps_exited) {
        kill(pid, SIGTERM);
        /* The handler may reap it first: then waitpid fails with ECHILD. */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    ps_pid = -1;
    unlink(path);
    ps_remove_flat_dir(model_dir);
    return rc;
}

int main(int argc, char **argv) {
    const char *sizes = "1,4,16,64", *bin = "build/pstrain-ps";
    int reps = 20;
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--grpc")) {
            transport = OVER_GRPC;
        } else if (!strcmp(argv[i], "--tcp")) {
            transport = OVER_TCP;
        } else if (!strcmp(argv[i], "--sizes") && val) {
            sizes = argv[++i];
        } else if (!strcmp(argv[i], "--reps") && val) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--ps-binary") && val) {
            bin = argv[++i];
        } else {
            fprintf(stderr, "usage: pstrain-bench-ps [--sizes 1,4,16,64] [--reps N] "
                            "[--ps-binary PATH] [--tcp | --grpc]\n");
            return 2;
        }
    }
    if (reps < 1 || access(bin, X_OK) != 0) {
        fprintf(stderr, "pstrain-bench-ps: need --reps >= 1 and an executable %s\n", bin);
        return 2;
    }
    rpc_tune_malloc();
    log_init("bench", -1);
    printf("# push+pull against one pstrain-ps over loopback, median of %d (payload both ways)\n",
           reps);
    char *list = xstrdup(sizes);
    int rc = 0;
    for (char *tok = strtok(list, ","); tok && rc == 0; tok = strtok(NULL, ","))
        rc = bench_size(bin, (size_t)atoi(tok), reps);
    free(list);
    return rc ? 1 : 0;
}

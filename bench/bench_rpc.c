/* Push+pull goodput of the gRPC layer over loopback: a client sends N MiB and
 * the server answers with N MiB, for N = 1, 4, 16, 64, the way a worker pushes
 * a gradient and pulls a shard. Goodput counts payload bytes sent plus
 * received per second. The server runs in a forked process (two processes, as
 * in a cluster) unless --inproc.
 *
 * Each line also gives the same echo over a plain TCP socket between the same
 * two processes (1 MiB writes, reads straight into the final buffer), timed
 * call for call alternately with gRPC so that both see the same noise of a
 * shared machine: vs_tcp is the fraction of that ceiling gRPC reaches.
 * Figures are medians over --reps calls after 3 warm-up calls, best in
 * brackets. A first line gives the latency of an empty call.
 *
 * --split K sends each push+pull as K calls of N/K MiB, all in flight at once
 * on the one channel (rpc_fanout), so that one part's copies overlap
 * another's transfer.
 *
 * Usage: pstrain-bench-rpc [--reps N] [--sizes 1,4,16,64] [--split K]
 *                          [--inproc] [--send zc|copy] [--reply zc|copy] [--no-tune] */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/tcp_echo.h"
#include "common/base/log.h"
#include "common/rpc/rpc.h"
#include "common/base/util.h"

#define PUSH_PULL "/pstrain.Bench/PushPull"
#define PING "/pstrain.Bench/Ping"
#define MAX_SIZES 16
#define MAX_SPLIT 64
#define PING_CALLS 2000

typedef struct {
    int reps;
    size_t sizes_mib[MAX_SIZES];
    size_t n_sizes;
    size_t max_bytes;
    int split;
    int inproc;
    int copy_send;
    int copy_reply;
    int tune;
} opts_t;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- The server side ------------------------------------------------------------ */

/* The pulled "shard" lives in a buffer the server keeps, as a parameter
 * server's packed shard would. */
typedef struct {
    uint8_t *shard;
    size_t cap;
    int copy_reply;
    int split;   /* parts of one push+pull in flight at once */
    size_t next; /* the part of the shard the next call fills */
    rpc_server_t *srv;
    int tcp_listener;
    pthread_t tcp_thread;
} server_t;

static void no_release(void *arg) {}

static void on_push_pull(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    server_t *s = ctx;
    if (len > s->cap / (size_t)s->split) {
        rpc_call_reply(call, RPC_INVALID_ARGUMENT, "larger than the shard", NULL, 0);
        return;
    }
    /* Copied: the reply is the request, copied by rpc_call_reply. Zero-copy:
     * the push lands in the shard (one copy too, as packing a shard would be)
     * and that part of the shard goes back lent. The calls in flight at once
     * use different parts; a part is rewritten only by a later push+pull,
     * which starts after this reply was received. */
    if (s->copy_reply) {
        rpc_call_reply(call, RPC_OK, NULL, req, len);
        return;
    }
    uint8_t *part = s->shard + (s->next++ % (size_t)s->split) * (s->cap / (size_t)s->split);
    memcpy(part, req, len);
    rpc_call_reply_zc(call, RPC_OK, NULL, part, len, no_release, NULL);
}

static void on_ping(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    rpc_call_reply(call, RPC_OK, NULL, NULL, 0);
}

static const rpc_method_t methods[] = {{PUSH_PULL, on_push_pull}, {PING, on_ping}};

/* The plain TCP echo, on a thread of the server process. */
static void *tcp_echo(void *arg) {
    server_t *s = arg;
    tcp_echo_serve(s->tcp_listener, s->cap);
    return NULL;
}

/* Starts both servers; ports[0] is gRPC's, ports[1] the TCP echo's. */
static int server_start(server_t *s, const opts_t *o, int ports[2]) {
    memset(s, 0, sizeof *s);
    s->copy_reply = o->copy_reply;
    s->split = o->split;
    s->cap = o->max_bytes;
    s->shard = xmalloc(s->cap);
    memset(s->shard, 0, s->cap);
    rpc_server_config_t c;
    memset(&c, 0, sizeof c);
    c.addr = "127.0.0.1:0";
    c.methods = methods;
    c.n_methods = PS_ARRAY_LEN(methods);
    c.ctx = s;
    c.opt.max_recv = c.opt.max_send = o->max_bytes + ((size_t)1 << 20);
    char err[PS_ERRLEN];
    if (rpc_server_start(&s->srv, &c, err, sizeof err) < 0) {
        fprintf(stderr, "bench: %s\n", err);
        return -1;
    }
    ports[0] = rpc_server_port(s->srv);
    s->tcp_listener = tcp_echo_listen(&ports[1]);
    if (s->tcp_listener < 0)
        return -1;
    pthread_create(&s->tcp_thread, NULL, tcp_echo, s);
    return 0;
}

static void server_stop(server_t *s) {
    shutdown(s->tcp_listener, SHUT_RDWR);
    pthread_join(s->tcp_thread, NULL);
    close(s->tcp_listener);
    rpc_server_stop(s->srv);
    free(s->shard);
}

/* The forked server: reports its ports on out_fd, serves until in_fd closes. */
static int server_process(const opts_t *o, int out_fd, int in_fd) {
    if (o->tune)
        rpc_tune_malloc();
    server_t s;
    int ports[2] = {-1, -1};
    int rc = server_start(&s, o, ports);
    if (write(out_fd, ports, sizeof ports) != (ssize_t)sizeof ports || rc < 0)
        return 1;
    char c;
    while (read(in_fd, &c, 1) < 0 && errno == EINTR) {
    }
    server_stop(&s);
    return 0;
}

/* ---- The client side ------------------------------------------------------------ */

typedef struct {
    const opts_t *o;
    rpc_channel_t *ch;
    int tcp;
    uint8_t *req;
    rpc_buf_t resp[MAX_SPLIT];
    rpc_fanout_t calls[MAX_SPLIT];
    uint8_t *tcp_resp;
} client_t;

/* Parts of the request buffer lent to gRPC for zero-copy sends; it may be
 * changed again only once gRPC has released every part. */
static atomic_int parts_lent;

static void part_released(void *arg) {
    atomic_fetch_sub(&parts_lent, 1);
}

static int wait_released(void) {
    double until = ps_now() + 10;
    while (atomic_load(&parts_lent) > 0 && ps_now() < until)
        sched_yield();
    return atomic_load(&parts_lent) > 0 ? -1 : 0;
}

/* One push+pull over gRPC, in c->o->split parts; seconds, or -1 on an error. */
static double grpc_push_pull(client_t *c, size_t n) {
    if (wait_released() < 0) {
        fprintf(stderr, "bench: gRPC kept the request buffer for 10 s\n");
        return -1;
    }
    c->req[n / 2] ^= 1; /* each push differs */
    size_t k = (size_t)c->o->split, part = n / k;
    double t0 = ps_now();
    for (size_t i = 0; i < k; i++) {
        c->calls[i] = (rpc_fanout_t){.ch = c->ch,
                                     .req = c->req + i * part,
                                     .len = i + 1 < k ? part : n - i * part,
                                     .resp = &c->resp[i]};
        if (!c->o->copy_send)
            c->calls[i].release = part_released;
    }
    if (!c->o->copy_send)
        atomic_store(&parts_lent, (int)k);
    size_t failed = rpc_fanout(c->calls, k, PUSH_PULL, 60);
    double dt = ps_now() - t0;
    for (size_t i = 0; i < k; i++) {
        rpc_fanout_t *f = &c->calls[i];
        if (failed || f->resp->len != f->len || memcmp(f->resp->data, f->req, f->len) != 0) {
            fprintf(stderr, "bench: %zu bytes: %s\n", n, f->code != RPC_OK ? f->err : "bad echo");
            return -1;
        }
    }
    return dt;
}

static double tcp_push_pull(client_t *c, size_t n) {
    return tcp_echo_round(c->tcp, c->req, c->tcp_resp, n);
}

static void summarize(double *t, int reps, double *med, double *best, double *p90) {
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    *med = t[reps / 2];
    *best = t[0];
    *p90 = t[(reps * 9) / 10];
}

static int bench_size(client_t *c, size_t mib) {
    size_t n = mib << 20;
    int reps = c->o->reps;
    double *tg = xcalloc((size_t)reps, sizeof *tg), *tt = xcalloc((size_t)reps, sizeof *tt);
    int rc = 0;
    for (int i = -3; i < reps && rc == 0; i++) {
        double g = grpc_push_pull(c, n), t = tcp_push_pull(c, n);
        rc = g < 0 || t < 0 ? -1 : 0;
        if (i >= 0) {
            tg[i] = g;
            tt[i] = t;
        }
    }
    if (rc == 0) {
        double med, best, p90, tmed, tbest, tp90;
        summarize(tg, reps, &med, &best, &p90);
        summarize(tt, reps, &tmed, &tbest, &tp90);
        double bytes = 2.0 * (double)n;
        printf("size_mib=%zu goodput_gbps=%.2f ms_per_call=%.2f p90_ms=%.2f [best %.2f GB/s] "
               "tcp_echo_gbps=%.2f [best %.2f] vs_tcp=%.2f split=%d reps=%d\n",
               mib, bytes / med / 1e9, med * 1e3, p90 * 1e3, bytes / best / 1e9, bytes / tmed / 1e9,
               bytes / tbest / 1e9, tmed / med, c->o->split, reps);
        fflush(stdout);
    }
    free(tg);
    free(tt);
    return rc;
}

static int bench_ping(client_t *c) {
    double *t = xcalloc(PING_CALLS, sizeof *t);
    char err[PS_ERRLEN];
    int rc = 0;
    for (int i = 0; i < PING_CALLS && rc == 0; i++) {
        double t0 = ps_now();
        rc = rpc_call(c->ch, PING, NULL, 0, 10, &c->resp[0], err, sizeof err) == RPC_OK ? 0 : -1;
        t[i] = ps_now() - t0;
    }
    if (rc < 0)
        fprintf(stderr, "bench: ping: %s\n", err);
    else {
        double med, best, p99;
        qsort(t, PING_CALLS, sizeof *t, cmp_double);
        med = t[PING_CALLS / 2];
        best = t[0];
        p99 = t[PING_CALLS * 99 / 100];
        printf("empty_call_us=%.1f p99_us=%.1f [best %.1f] calls=%d\n", med * 1e6, p99 * 1e6,
               best * 1e6, PING_CALLS);
    }
    free(t);
    return rc;
}

static int run_client(const opts_t *o, const int ports[2]) {
    client_t c;
    memset(&c, 0, sizeof c);
    c.o = o;
    char target[64], err[PS_ERRLEN];
    snprintf(target, sizeof target, "127.0.0.1:%d", ports[0]);
    rpc_options_t opt = {.max_recv = o->max_bytes + ((size_t)1 << 20),
                         .max_send = o->max_bytes + ((size_t)1 << 20)};
    if (rpc_channel_create(&c.ch, target, &opt, err, sizeof err) < 0) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    c.tcp = tcp_echo_connect(ports[1]);
    c.req = xmalloc(o->max_bytes);
    c.tcp_resp = xmalloc(o->max_bytes);
    for (size_t i = 0; i < o->max_bytes; i++)
        c.req[i] = (uint8_t)(i * 2654435761u >> 24);
    int rc = c.tcp < 0 || bench_ping(&c) < 0;
    for (size_t i = 0; i < o->n_sizes && rc == 0; i++)
        rc = bench_size(&c, o->sizes_mib[i]) < 0;
    wait_released();
    if (c.tcp >= 0)
        close(c.tcp);
    for (int i = 0; i < MAX_SPLIT; i++)
        rpc_buf_free(&c.resp[i]);
    free(c.req);
    free(c.tcp_resp);
    rpc_channel_destroy(c.ch);
    return rc;
}

/* ---- main ----------------------------------------------------------------------- */

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--reps N] [--sizes 1,4,16,64] [--split K] [--inproc] "
            "[--send zc|copy] [--reply zc|copy] [--no-tune]\n",
            argv0);
    return -1;
}

static int parse(int argc, char **argv, opts_t *o) {
    static const size_t def[] = {1, 4, 16, 64};
    memset(o, 0, sizeof *o);
    o->reps = 21;
    o->split = 1;
    o->tune = 1;
    o->n_sizes = PS_ARRAY_LEN(def);
    memcpy(o->sizes_mib, def, sizeof def);
    for (int i = 1; i < argc; i++) {
        int more = i + 1 < argc;
        if (strcmp(argv[i], "--reps") == 0 && more) {
            o->reps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--sizes") == 0 && more) {
            o->n_sizes = 0;
            for (char *s = strtok(argv[++i], ","); s && o->n_sizes < MAX_SIZES;
                 s = strtok(NULL, ","))
                o->sizes_mib[o->n_sizes++] = strtoull(s, NULL, 10);
        } else if (strcmp(argv[i], "--split") == 0 && more) {
            o->split = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--inproc") == 0) {
            o->inproc = 1;
        } else if (strcmp(argv[i], "--send") == 0 && more) {
            o->copy_send = strcmp(argv[++i], "copy") == 0;
        } else if (strcmp(argv[i], "--reply") == 0 && more) {
            o->copy_reply = strcmp(argv[++i], "copy") == 0;
        } else if (strcmp(argv[i], "--no-tune") == 0) {
            o->tune = 0;
        } else {
            return usage(argv[0]);
        }
    }
    for (size_t i = 0; i < o->n_sizes; i++) {
        if (o->sizes_mib[i] == 0 || o->sizes_mib[i] > 1024)
            return usage(argv[0]);
        o->max_bytes = PS_MAX(o->max_bytes, o->sizes_mib[i] << 20);
    }
    int ok = o->reps >= 1 && o->n_sizes > 0 && o->split >= 1 && o->split <= MAX_SPLIT;
    return ok ? 0 : usage(argv[0]);
}

int main(int argc, char **argv) {
    opts_t o;
    if (parse(argc, argv, &o) < 0)
        return 2;
    log_init("bench", -1);
    printf("# pstrain-bench-rpc: push+pull echo over loopback, %s, request %s, reply %s, "
           "malloc %s\n",
           o.inproc ? "one process" : "two processes", o.copy_send ? "copied" : "zero-copy",
           o.copy_reply ? "copied" : "zero-copy", o.tune ? "tuned" : "default");
    fflush(stdout);
    if (o.tune)
        rpc_tune_malloc();
    if (o.inproc) {
        server_t s;
        int ports[2] = {-1, -1};
        int rc = server_start(&s, &o, ports) < 0 ? 1 : run_client(&o, ports);
        server_stop(&s);
        return rc;
    }
    int up[2], down[2];
    if (pipe(up) < 0 || pipe(down) < 0)
        return perror("pipe"), 1;
    pid_t pid = fork();
    if (pid < 0)
        return perror("fork"), 1;
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        _exit(server_process(&o, up[1], down[0]));
    }
    close(up[1]);
    close(down[0]);
    int ports[2] = {-1, -1};
    if (read(up[0], ports, sizeof ports) != (ssize_t)sizeof ports || ports[0] < 0 || ports[1] < 0) {
        fprintf(stderr, "bench: the server process did not start\n");
        return 1;
    }
    int rc = run_client(&o, ports);
    close(down[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    return rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

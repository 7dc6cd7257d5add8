/* pstrain status and pstrain top: the master's view of a running cluster.
 * The master comes from --master, else from the master.addr that
 * scripts/train_local_dist.sh writes in $PSTRAIN_RUNLOGS (or ./runlogs). */
#include "tools/status.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/base/util.h"
#include "common/daemon/config.h"
#include "common/daemon/daemon.h"
#include "common/rpc/rpc.h"
#include "pstrain.pb-c.h"

/* What status and top were asked. */
typedef struct {
    config_t cfg;
    const char *master;
    char master_buf[256];
    char source[PATH_MAX]; /* where the address came from, for messages */
    double interval;       /* top: seconds between refreshes */
    long count;            /* top: refreshes, 0 until training ends */
} status_args_t;

/* The local cluster's master address from RUNLOGS/master.addr into a; 0, or
 * -1 when there is none. */
static int master_from_runlogs(status_args_t *a) {
    const char *dir = getenv("PSTRAIN_RUNLOGS");
    snprintf(a->source, sizeof a->source, "%s/master.addr", dir && dir[0] ? dir : "runlogs");
    FILE *f = fopen(a->source, "r");
    if (!f)
        return -1;
    bool ok = fgets(a->master_buf, sizeof a->master_buf, f) != NULL;
    fclose(f);
    a->master_buf[strcspn(a->master_buf, "\r\n")] = '\0';
    if (!ok || !a->master_buf[0])
        return -1;
    a->master = a->master_buf;
    return 0;
}

/* --set/--config flags, --master, and for top --interval and --count. */
static int parse_args(status_args_t *a, const char *cmd, bool top, int argc, char **argv) {
    char err[PS_ERRLEN];
    memset(a, 0, sizeof *a);
    a->interval = 2.0;
    config_defaults(&a->cfg);
    argc++, argv--; /* config_parse_args keeps argv[0] */
    if (config_parse_args(&a->cfg, &argc, argv, err, sizeof err)) {
        log_print(stderr, "pstrain %s: %s", cmd, err);
        return EXIT_USAGE;
    }
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--master") && val) {
            a->master = argv[++i];
        } else if (!strncmp(argv[i], "--master=", 9)) {
            a->master = argv[i] + 9;
        } else if (top && !strcmp(argv[i], "--interval") && val && atof(val) > 0) {
            a->interval = atof(argv[++i]);
        } else if (top && !strcmp(argv[i], "--count") && val && atol(val) >= 0) {
            a->count = atol(argv[++i]);
        } else {
            log_print(stderr, "pstrain %s: unknown or incomplete argument \"%s\" (usage: %s)", cmd,
                      argv[i],
                      top ? "pstrain top [--master HOST:PORT] [--interval SECS] [--count N]"
                          : "pstrain status [--master HOST:PORT]");
            return EXIT_USAGE;
        }
    }
    if (a->master)
        snprintf(a->source, sizeof a->source, "--master");
    else if (master_from_runlogs(a)) {
        log_print(stderr, "pstrain %s: no cluster running (no %s; give --master HOST:PORT)", cmd,
                  a->source);
        return EXIT_UNAVAILABLE;
    }
    return -1;
}

/* One Status call; *out is the caller's to free. An unreachable master is
 * RPC_UNAVAILABLE or RPC_DEADLINE_EXCEEDED. */
static int fetch(rpc_channel_t *ch, const status_args_t *a, Pstrain__StatusResponse **out,
                 char *err, size_t errlen) {
    Pstrain__StatusRequest req = PSTRAIN__STATUS_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = pstrain__status_request__pack(&req, buf);
    rpc_buf_t resp = {0};
    double deadline = a->cfg.rpc.deadline_secs < 5.0 ? a->cfg.rpc.deadline_secs : 5.0;
    int rc = rpc_call(ch, "/pstrain.Master/Status", buf, len, deadline, &resp, err, errlen);
    if (rc == RPC_OK) {
        *out = pstrain__status_response__unpack(NULL, resp.len, resp.data);
        if (!*out) {
            snprintf(err, errlen, "%s sent a malformed StatusResponse", a->master);
            rc = RPC_INTERNAL;
        }
    }
    rpc_buf_free(&resp);
    return rc;
}

/* The one line for an unreachable master, and its exit code. */
static int no_cluster(const status_args_t *a, const char *cmd, int rc, const char *err) {
    if (rc == RPC_UNAVAILABLE || rc == RPC_DEADLINE_EXCEEDED) {
        /* gRPC's status name only: its full text is a dump of addresses. */
        log_print(
            stderr, "pstrain %s: no cluster running: the master at %s (%s) does not answer (%s%s)",
            cmd, a->master, a->source, rc == RPC_UNAVAILABLE ? "UNAVAILABLE" : "DEADLINE_EXCEEDED",
            a->cfg.tls.ca[0] ? "" : "; a TLS cluster wants --set tls.ca=... tls.cert tls.key");
        return EXIT_UNAVAILABLE;
    }
    log_print(stderr, "pstrain %s: %s", cmd, err);
    return rc == RPC_INTERNAL ? EXIT_DATAERR : EXIT_UNAVAILABLE;
}

/* The workers' totals: examples, mean loss and accuracy of those that
 * reported, roles alive. */
typedef struct {
    uint64_t examples;
    double loss, accuracy;
    size_t reporting, alive;
} totals_t;

static totals_t totals(const Pstrain__StatusResponse *r) {
    totals_t t = {0};
    for (size_t i = 0; i < r->n_members; i++) {
        const Pstrain__Member *m = r->members[i];
        if (!strcmp(m->state, "alive"))
            t.alive++;
        if (strcmp(m->role, "worker") || m->examples == 0)
            continue;
        t.examples += m->examples;
        t.loss += m->loss;
        t.accuracy += m->accuracy;
        t.reporting++;
    }
    if (t.reporting) {
        t.loss /= (double)t.reporting;
        t.accuracy /= (double)t.reporting;
    }
    return t;
}

static void print_members(const Pstrain__StatusResponse *r) {
    printf("%-10s %-22s %-8s %-8s %-10s %-10s %-8s %s\n", "ROLE", "ADDRESS", "STATE", "PID",
           "LAST BEAT", "STEP", "LOSS", "ACCURACY");
    for (size_t i = 0; i < r->n_members; i++) {
        const Pstrain__Member *m = r->members[i];
        /* What the master says is a peer's: escaped before the terminal. */
        char name[32], beat[32], loss[16] = "-", acc[16] = "-", role[32], addr[128], state[32];
        snprintf(name, sizeof name, "%s%u", log_escape(m->role, role, sizeof role), m->index);
        if (m->last_beat_secs >= 0)
            snprintf(beat, sizeof beat, "%.1fs ago", m->last_beat_secs);
        else
            snprintf(beat, sizeof beat, "never");
        if (m->examples > 0) {
            snprintf(loss, sizeof loss, "%.4f", m->loss);
            snprintf(acc, sizeof acc, "%.4f", m->accuracy);
        }
        printf("%-10s %-22s %-8s %-8d %-10s %-10llu %-8s %s\n", name,
               log_escape(m->address, addr, sizeof addr), log_escape(m->state, state, sizeof state),
               m->pid, beat, (unsigned long long)m->step, loss, acc);
    }
}

static void print_status(const Pstrain__StatusResponse *r) {
    printf("global step %llu of %llu%s\n", (unsigned long long)r->global_step,
           (unsigned long long)r->target_steps, r->done ? " (training is over)" : "");
    if (r->final_accuracy >= 0)
        printf("final test loss %.4f accuracy %.4f\n", r->final_loss, r->final_accuracy);
    print_members(r);
}

/* Parses the command's arguments and opens a channel to the master: -1 with
 * *ch set, or the exit code to return. */
static int open_master(status_args_t *a, const char *cmd, bool top, int argc, char **argv,
                       rpc_channel_t **ch) {
    int rc = parse_args(a, cmd, top, argc, argv);
    if (rc >= 0)
        return rc;
    rpc_options_t o = daemon_rpc_options(&a->cfg);
    char err[PS_ERRLEN];
    if (rpc_channel_create(ch, a->master, &o, err, sizeof err)) {
        log_print(stderr, "pstrain %s: %s", cmd, err);
        return EXIT_USAGE;
    }
    return -1;
}

int cmd_status(int argc, char **argv) {
    status_args_t a;
    rpc_channel_t *ch;
    int rc = open_master(&a, "status", false, argc, argv, &ch);
    if (rc >= 0)
        return rc;
    char err[PS_ERRLEN];
    Pstrain__StatusResponse *r = NULL;
    rc = fetch(ch, &a, &r, err, sizeof err);
    if (rc != RPC_OK) {
        rc = no_cluster(&a, "status", rc, err);
    } else {
        print_status(r);
        pstrain__status_response__free_unpacked(r, NULL);
        rc = EXIT_OK;
    }
    rpc_channel_destroy(ch);
    return rc;
}

/* top's summary line: the launcher's progress line, from two snapshots
 * dt seconds apart (prev NULL on the first). */
static void print_summary(const Pstrain__StatusResponse *r, const Pstrain__StatusResponse *prev,
                          double dt) {
    totals_t now = totals(r);
    printf("global step %llu/%llu", (unsigned long long)r->global_step,
           (unsigned long long)r->target_steps);
    if (now.reporting)
        printf(", loss %.4f, accuracy %.4f", now.loss, now.accuracy);
    if (prev && dt > 0 && r->global_step > prev->global_step) {
        totals_t before = totals(prev);
        double rate = (double)(r->global_step - prev->global_step) / dt;
        double left = r->target_steps > r->global_step
                          ? (double)(r->target_steps - r->global_step) / rate
                          : 0.0;
        long l = (long)(left + 0.5);
        printf(", %.0f images/s, ETA %ldm%02lds",
               now.examples > before.examples ? (double)(now.examples - before.examples) / dt : 0.0,
               l / 60, l % 60);
    }
    printf(", roles alive %zu/%zu%s\n", now.alive + 1, r->n_members + 1,
           r->done ? " (training is over)" : "");
}

/* One refresh: in place on a terminal (cursor home, clear), else appended. */
static void render(const Pstrain__StatusResponse *r, const Pstrain__StatusResponse *prev, double dt,
                   const status_args_t *a) {
    if (isatty(STDOUT_FILENO))
        printf("\033[H\033[2J");
    printf("pstrain top: the master at %s, every %gs\n", a->master, a->interval);
    print_summary(r, prev, dt);
    if (r->final_accuracy >= 0)
        printf("final test loss %.4f accuracy %.4f\n", r->final_loss, r->final_accuracy);
    print_members(r);
    printf("\n");
    fflush(stdout);
}

int cmd_top(int argc, char **argv) {
    status_args_t a;
    rpc_channel_t *ch;
    int rc = open_master(&a, "top", true, argc, argv, &ch);
    if (rc >= 0)
        return rc;
    char err[PS_ERRLEN];
    Pstrain__StatusResponse *prev = NULL;
    double prev_time = 0.0;
    rc = EXIT_OK;
    for (long n = 0; a.count == 0 || n < a.count; n++) {
        if (n > 0)
            ps_sleep(a.interval);
        Pstrain__StatusResponse *r = NULL;
        int code = fetch(ch, &a, &r, err, sizeof err);
        if (code != RPC_OK) {
            /* After a first answer, a master gone is the end of the run. */
            rc = prev ? EXIT_OK : no_cluster(&a, "top", code, err);
            if (prev)
                printf("pstrain top: the master at %s stopped answering\n", a.master);
            break;
        }
        double now = ps_now();
        render(r, prev, now - prev_time, &a);
        if (prev)
            pstrain__status_response__free_unpacked(prev, NULL);
        prev = r;
        prev_time = now;
        if (r->done)
            break;
    }
    if (prev)
        pstrain__status_response__free_unpacked(prev, NULL);
    rpc_channel_destroy(ch);
    return rc;
}

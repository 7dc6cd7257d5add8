/* The tensor stream's server under pressure: late calls, the connection
 * limit, idle and half-open connections, the handshake timeout. Real
 * sockets in this process against a server on free loopback ports; every
 * wait is bounded by a socket timeout, never a sleep. */
#include "test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/rpc/rpc.h"

#define ECHO "/pstrain.Test/Echo"
#define WAIT "/pstrain.Test/Wait"
#define WAIT_S 10.0

typedef struct {
    pthread_mutex_t mu;
    rpc_call_t *waiting[64];
    int n_waiting;
    int cancels;
} svc_t;

static void on_echo(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    rpc_call_reply(call, RPC_OK, NULL, req, len);
}

/* Keeps the call until it is cancelled. */
static void on_wait(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    svc_t *sv = ctx;
    pthread_mutex_lock(&sv->mu);
    sv->waiting[sv->n_waiting++] = call;
    pthread_mutex_unlock(&sv->mu);
}

static void on_cancel(void *ctx, rpc_call_t *call) {
    svc_t *sv = ctx;
    pthread_mutex_lock(&sv->mu);
    for (int i = 0; i < sv->n_waiting; i++)
        if (sv->waiting[i] == call)
            sv->waiting[i--] = sv->waiting[--sv->n_waiting];
    sv->cancels++;
    pthread_mutex_unlock(&sv->mu);
    rpc_call_reply(call, RPC_CANCELLED, "gone", NULL, 0);
}

static const rpc_method_t methods[] = {{ECHO, on_echo}, {WAIT, on_wait}};

static rpc_server_t *serve(svc_t *sv, const rpc_options_t *opt) {
    memset(sv, 0, sizeof *sv);
    pthread_mutex_init(&sv->mu, NULL);
    rpc_server_config_t c;
    memset(&c, 0, sizeof c);
    c.addr = "127.0.0.1:0";
    c.methods = methods;
    c.n_methods = PS_ARRAY_LEN(methods);
    c.ctx = sv;
    c.on_cancel = on_cancel;
    c.opt = *opt;
    rpc_server_t *srv = NULL;
    char err[PS_ERRLEN];
    if (rpc_server_start(&srv, &c, err, sizeof err) < 0)
        test_fail(__FILE__, __LINE__, "rpc_server_start: %s", err);
    return srv;
}

static rpc_channel_t *channel(rpc_server_t *srv, const rpc_options_t *opt) {
    char target[64], err[PS_ERRLEN];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv));
    rpc_channel_t *ch = NULL;
    if (rpc_channel_create(&ch, target, opt, err, sizeof err) < 0)
        test_fail(__FILE__, __LINE__, "rpc_channel_create: %s", err);
    return ch;
}

/* The server's Unix socket name, asked over gRPC as a channel does. */
static void unix_name(rpc_server_t *srv, char *name, size_t len) {
    rpc_options_t plain = {0};
    rpc_channel_t *ch = channel(srv, &plain);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN];
    name[0] = '\0';
    if (rpc_call(ch, "/pstrain.Rpc/StreamPort", "", 0, WAIT_S, &r, err, sizeof err) == RPC_OK) {
        char text[160];
        snprintf(text, sizeof text, "%.*s", (int)r.len, (const char *)r.data);
        const char *sp = strchr(text, ' ');
        snprintf(name, len, "%s", sp ? sp + 1 : "");
    }
    rpc_buf_free(&r);
    rpc_channel_destroy(ch);
}

/* Reads on fd give up after WAIT_S rather than hang. */
static int bounded(int fd) {
    struct timeval tv = {(time_t)WAIT_S, 0};
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int tcp_connect(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        fd = -1;
    }
    return bounded(fd);
}

static int unix_connect(const char *name) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    memcpy(a.sun_path + 1, name, n);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a,
                           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0) {
        close(fd);
        fd = -1;
    }
    return bounded(fd);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Sends a request frame over a TCP stream connection (deadline in s, 0: none). */
static int send_request(int fd, const char *method, const char *body, double deadline_s) {
    uint8_t h[24];
    put32(h, 0x31525350u); /* "PSR1" */
    put32(h + 4, (uint32_t)strlen(method));
    put64(h + 8, deadline_s > 0 ? (uint64_t)(deadline_s * 1e6) : 0);
    put64(h + 16, strlen(body));
    return write(fd, h, sizeof h) == (ssize_t)sizeof h &&
                   write(fd, method, strlen(method)) == (ssize_t)strlen(method) &&
                   write(fd, body, strlen(body)) == (ssize_t)strlen(body)
               ? 0
               : -1;
}

static int read_full(int fd, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (uint8_t *)buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Reads a response frame: its status (-1: none, the connection closed),
 * flags and body (into body, NUL-terminated, at most len - 1 bytes). */
static int read_response(int fd, uint32_t *flags, char *body, size_t len) {
    uint8_t h[24];
    if (read_full(fd, h, sizeof h) < 0 || memcmp(h, "PSA1", 4) != 0)
        return -1;
    uint32_t msg_len = h[8] | h[9] << 8 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 24;
    *flags = h[12];
    size_t body_len = h[16] | h[17] << 8 | (size_t)h[18] << 16;
    char sink[1024];
    if (msg_len > sizeof sink || body_len >= len || read_full(fd, sink, msg_len) < 0 ||
        read_full(fd, body, body_len) < 0)
        return -1;
    body[body_len] = '\0';
    return h[4];
}

/* One echo over a raw TCP stream connection: 0 when it came back whole. */
static int raw_echo(int fd, const char *text) {
    uint32_t flags;
    char body[64];
    if (send_request(fd, ECHO, text, WAIT_S) < 0)
        return -1;
    return read_response(fd, &flags, body, sizeof body) == RPC_OK && strcmp(body, text) == 0 ? 0
                                                                                             : -1;
}

/* A late call over the channel's stream is DEADLINE_EXCEEDED, and the next
 * call on the channel succeeds over the same transport. */
static void late_then_next(const rpc_options_t *opt, const char *transport) {
    svc_t sv;
    rpc_server_t *srv = serve(&sv, opt);
    rpc_channel_t *ch = channel(srv, opt);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch, ECHO, "one", 3, WAIT_S, &r, err, sizeof err), RPC_OK);
    CHECK(strcmp(rpc_channel_transport(ch), transport) == 0);
    for (int i = 0; i < 3; i++) {
        CHECK_INT_EQ(rpc_call(ch, WAIT, "w", 1, 0.2, &r, err, sizeof err), RPC_DEADLINE_EXCEEDED);
        CHECK_STR_CONTAINS(err, "DEADLINE_EXCEEDED");
        CHECK_INT_EQ(rpc_call(ch, ECHO, "next", 4, WAIT_S, &r, err, sizeof err), RPC_OK);
        CHECK(r.len == 4 && memcmp(r.data, "next", 4) == 0);
        CHECK(strcmp(rpc_channel_transport(ch), transport) == 0);
    }
    rpc_buf_free(&r);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    CHECK_INT_EQ(sv.cancels, 3);
    CHECK_INT_EQ(sv.n_waiting, 0);
    pthread_mutex_destroy(&sv.mu);
}

void test_stream_late_tcp(void) {
    rpc_options_t opt = {.stream = 1};
    late_then_next(&opt, "stream");
}

void test_stream_late_shm(void) {
    rpc_options_t opt = {.shm = 1};
    late_then_next(&opt, "shm");
}

/* The server answers a late call with a DEADLINE_EXCEEDED frame that keeps
 * the connection open, and serves the next request on it. */
void test_stream_late_frame(void) {
    svc_t sv;
    rpc_options_t opt = {.stream = 1};
    rpc_server_t *srv = serve(&sv, &opt);
    int fd = tcp_connect(rpc_server_stream_port(srv));
    CHECK(fd >= 0);
    CHECK(send_request(fd, WAIT, "w", 0.2) == 0);
    uint32_t flags = 99;
    char body[64];
    CHECK_INT_EQ(read_response(fd, &flags, body, sizeof body), RPC_DEADLINE_EXCEEDED);
    CHECK_INT_EQ(flags, 0);
    CHECK(raw_echo(fd, "same connection") == 0);
    close(fd);
    rpc_server_stop(srv);
    CHECK_INT_EQ(sv.cancels, 1);
    pthread_mutex_destroy(&sv.mu);
}

/* Past the limit a connection is refused RESOURCE_EXHAUSTED and closed;
 * the ones held go on being served, and a freed place is taken again. */
void test_stream_connection_limit(void) {
    svc_t sv;
    rpc_options_t opt = {.stream = 1, .stream_max_connections = 4};
    rpc_server_t *srv = serve(&sv, &opt);
    int port = rpc_server_stream_port(srv), fd[4];
    for (int i = 0; i < 4; i++) {
        fd[i] = tcp_connect(port);
        CHECK(fd[i] >= 0 && raw_echo(fd[i], "held") == 0);
    }
    int extra = tcp_connect(port);
    CHECK(extra >= 0);
    uint32_t flags = 0;
    char body[64];
    int code = read_response(extra, &flags, body, sizeof body);
    CHECK(code == RPC_RESOURCE_EXHAUSTED || code == -1);
    if (code == RPC_RESOURCE_EXHAUSTED)
        CHECK_INT_EQ(flags, 1); /* closing */
    CHECK(read(extra, body, sizeof body) <= 0);
    close(extra);
    for (int i = 0; i < 4; i++)
        CHECK(raw_echo(fd[i], "still served") == 0);
    /* A channel refused by a full server is told why. */
    rpc_channel_t *ch = channel(srv, &opt);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN] = "";
    code = rpc_call(ch, ECHO, "x", 1, WAIT_S, &r, err, sizeof err);
    /* Or UNAVAILABLE: its request may reset the connection first. */
    CHECK(code == RPC_RESOURCE_EXHAUSTED || code == RPC_UNAVAILABLE);
    if (code == RPC_RESOURCE_EXHAUSTED)
        CHECK_STR_CONTAINS(err, "rpc.stream_max_connections");
    /* Once a place is free (the server sees the close soon after), a
     * connection is served again. */
    close(fd[0]);
    int served = 0;
    for (double until = ps_now() + WAIT_S; !served && ps_now() < until;) {
        int again = tcp_connect(port);
        served = again >= 0 && raw_echo(again, "in again") == 0;
        if (again >= 0)
            close(again);
    }
    CHECK(served);
    for (int i = 1; i < 4; i++)
        close(fd[i]);
    rpc_buf_free(&r);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    pthread_mutex_destroy(&sv.mu);
}

static int thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

#define IDLE_EACH 75

/* Opens raw connections that never finish their handshake: silent ones and
 * ones that stop halfway through a header or a hello, over TCP and the
 * Unix socket; fds gets 4 * IDLE_EACH descriptors. */
static void open_idle(int port, const char *name, int *fds) {
    static const uint8_t half[10] = {'P', 'S', 'R', '1', 5, 0, 0, 0, 0, 0};
    for (int i = 0; i < IDLE_EACH; i++) {
        fds[4 * i] = tcp_connect(port);
        fds[4 * i + 1] = tcp_connect(port);
        fds[4 * i + 2] = unix_connect(name);
        fds[4 * i + 3] = unix_connect(name);
        if (fds[4 * i + 1] >= 0 && write(fds[4 * i + 1], half, sizeof half) != sizeof half)
            test_fail(__FILE__, __LINE__, "write");
        if (fds[4 * i + 3] >= 0 && write(fds[4 * i + 3], "PSM1\0\0\0\0", 8) != 8)
            test_fail(__FILE__, __LINE__, "write");
    }
}

/* Hundreds of idle and half-open connections cost no thread, and the
 * server serves real calls beside them and stops cleanly. */
void test_stream_idle_connections(void) {
    svc_t sv;
    rpc_options_t opt = {.stream = 1, .shm = 1, .stream_handshake_s = 60};
    rpc_server_t *srv = serve(&sv, &opt);
    char name[128];
    unix_name(srv, name, sizeof name);
    CHECK(name[0] != '\0');
    rpc_options_t tcp_only = {.stream = 1};
    rpc_channel_t *shm = channel(srv, &opt), *tcp = channel(srv, &tcp_only);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(shm, ECHO, "warm", 4, WAIT_S, &r, err, sizeof err), RPC_OK);
    CHECK_INT_EQ(rpc_call(tcp, ECHO, "warm", 4, WAIT_S, &r, err, sizeof err), RPC_OK);
    int before = thread_count();
    int fds[4 * IDLE_EACH];
    open_idle(rpc_server_stream_port(srv), name, fds);
    int opened = 0;
    for (int i = 0; i < 4 * IDLE_EACH; i++)
        opened += fds[i] >= 0;
    CHECK_INT_EQ(opened, 4 * IDLE_EACH);
    for (int i = 0; i < 20; i++) {
        CHECK_INT_EQ(rpc_call(shm, ECHO, "real", 4, WAIT_S, &r, err, sizeof err), RPC_OK);
        CHECK_INT_EQ(rpc_call(tcp, ECHO, "real", 4, WAIT_S, &r, err, sizeof err), RPC_OK);
    }
    CHECK(strcmp(rpc_channel_transport(shm), "shm") == 0);
    CHECK(strcmp(rpc_channel_transport(tcp), "stream") == 0);
    int after = thread_count();
    /* A thread per connection would add 300; gRPC may start one or two of
     * its own meanwhile. */
    CHECK(after <= before + 2);
    rpc_buf_free(&r);
    rpc_channel_destroy(shm);
    rpc_channel_destroy(tcp);
    rpc_server_stop(srv);
    for (int i = 0; i < 4 * IDLE_EACH; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pthread_mutex_destroy(&sv.mu);
}

/* A connection that says nothing is closed after the handshake timeout. */
void test_stream_handshake_timeout(void) {
    svc_t sv;
    rpc_options_t opt = {.stream = 1, .shm = 1, .stream_handshake_s = 0.2};
    rpc_server_t *srv = serve(&sv, &opt);
    char name[128];
    unix_name(srv, name, sizeof name);
    int fds[2] = {tcp_connect(rpc_server_stream_port(srv)), unix_connect(name)};
    for (int i = 0; i < 2; i++) {
        CHECK(fds[i] >= 0);
        char buf[8];
        /* 0: closed by the server; -1 would be our own 10 s timeout. */
        CHECK_INT_EQ(read(fds[i], buf, sizeof buf), 0);
        close(fds[i]);
    }
    /* A client that speaks in time is served. */
    rpc_channel_t *ch = channel(srv, &opt);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch, ECHO, "in time", 7, WAIT_S, &r, err, sizeof err), RPC_OK);
    rpc_buf_free(&r);
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    pthread_mutex_destroy(&sv.mu);
}

/* ---- Loop threads (rpc.stream_threads) ------------------------------------------ */

#define LANES 3
#define LANE_CONNS 24

/* Many TCP connections over several loop threads: each lane serves its
 * share (lane 0 hands each new one to the lane with the fewest), and every
 * request, all sent before any answer is read, gets its own answer back. */
void test_stream_lanes_many_connections(void) {
    svc_t sv;
    rpc_options_t opt = {.stream = 1, .stream_threads = LANES};
    rpc_server_t *srv = serve(&sv, &opt);
    int port = rpc_server_stream_port(srv), fd[LANE_CONNS];
    for (int i = 0; i < LANE_CONNS; i++) {
        fd[i] = tcp_connect(port);
        CHECK(fd[i] >= 0);
        CHECK(raw_echo(fd[i], "hello") == 0); /* opened on its lane before the next */
    }
    int conns[LANES + 1] = {0};
    CHECK_INT_EQ(rpc_server_stream_lanes(srv, conns, LANES + 1), LANES);
    for (int l = 0; l < LANES; l++)
        CHECK_INT_EQ(conns[l], LANE_CONNS / LANES);
    for (int round = 0; round < 5; round++) {
        char text[LANE_CONNS][32], body[64];
        for (int i = 0; i < LANE_CONNS; i++) {
            snprintf(text[i], sizeof text[i], "conn %d round %d", i, round);
            CHECK(send_request(fd[i], ECHO, text[i], WAIT_S) == 0);
        }
        for (int i = LANE_CONNS - 1; i >= 0; i--) {
            uint32_t flags = 0;
            CHECK_INT_EQ(read_response(fd[i], &flags, body, sizeof body), RPC_OK);
            CHECK(strcmp(body, text[i]) == 0);
        }
    }
    /* A closed connection leaves its lane's count; the next fills the gap. */
    close(fd[0]);
    int freed = 0;
    for (double until = ps_now() + WAIT_S; !freed && ps_now() < until;) {
        rpc_server_stream_lanes(srv, conns, LANES);
        freed = conns[0] + conns[1] + conns[2] == LANE_CONNS - 1;
    }
    CHECK(freed);
    fd[0] = tcp_connect(port);
    CHECK(fd[0] >= 0 && raw_echo(fd[0], "again") == 0);
    rpc_server_stream_lanes(srv, conns, LANES);
    for (int l = 0; l < LANES; l++)
        CHECK_INT_EQ(conns[l], LANE_CONNS / LANES);
    for (int i = 0; i < LANE_CONNS; i++)
        close(fd[i]);
    rpc_server_stop(srv);
    pthread_mutex_destroy(&sv.mu);
}

/* Stopping with calls in flight on every lane: each is cancelled (its
 * owner hears of it once), every client gets an answer or a close, and
 * the stop returns with nothing left waiting. */
void test_stream_lanes_stop_in_flight(void) {
    svc_t sv;
    rpc_options_t opt = {.stream = 1, .shm = 1, .stream_threads = LANES};
    rpc_server_t *srv = serve(&sv, &opt);
    int port = rpc_server_stream_port(srv), fd[LANE_CONNS];
    for (int i = 0; i < LANE_CONNS; i++) {
        fd[i] = tcp_connect(port);
        CHECK(fd[i] >= 0 && raw_echo(fd[i], "open") == 0);
        CHECK(send_request(fd[i], WAIT, "w", 0) == 0);
    }
    /* A shared-memory call (lane 0) waits too. */
    rpc_channel_t *ch = channel(srv, &opt);
    rpc_buf_t r = {0};
    char err[PS_ERRLEN] = "";
    CHECK_INT_EQ(rpc_call(ch, ECHO, "shm", 3, WAIT_S, &r, err, sizeof err), RPC_OK);
    CHECK(strcmp(rpc_channel_transport(ch), "shm") == 0);
    int waiting = 0;
    for (double until = ps_now() + WAIT_S; waiting < LANE_CONNS && ps_now() < until;) {
        pthread_mutex_lock(&sv.mu);
        waiting = sv.n_waiting;
        pthread_mutex_unlock(&sv.mu);
    }
    CHECK_INT_EQ(waiting, LANE_CONNS);
    rpc_server_stop(srv);
    CHECK_INT_EQ(sv.cancels, LANE_CONNS);
    CHECK_INT_EQ(sv.n_waiting, 0);
    for (int i = 0; i < LANE_CONNS; i++) {
        uint32_t flags = 0;
        char body[64];
        int code = read_response(fd[i], &flags, body, sizeof body);
        CHECK(code == RPC_CANCELLED || code == -1);
        close(fd[i]);
    }
    rpc_buf_free(&r);
    rpc_channel_destroy(ch);
    pthread_mutex_destroy(&sv.mu);
}

/* 0 picks half the online CPUs, 1 to RPC_STREAM_AUTO_THREADS lanes; a
 * count is kept. */
void test_stream_lanes_auto_count(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = (int)PS_MAX(1L, PS_MIN(cpus / 2, (long)RPC_STREAM_AUTO_THREADS));
    CHECK_INT_EQ(rpc_stream_threads(0), want);
    CHECK_INT_EQ(rpc_stream_threads(7), 7);
    svc_t sv;
    rpc_options_t opt = {.stream = 1};
    rpc_server_t *srv = serve(&sv, &opt);
    int conns[RPC_STREAM_AUTO_THREADS];
    CHECK_INT_EQ(rpc_server_stream_lanes(srv, conns, RPC_STREAM_AUTO_THREADS), want);
    int fd = tcp_connect(rpc_server_stream_port(srv));
    CHECK(fd >= 0 && raw_echo(fd, "auto") == 0);
    close(fd);
    rpc_server_stop(srv);
    pthread_mutex_destroy(&sv.mu);
}

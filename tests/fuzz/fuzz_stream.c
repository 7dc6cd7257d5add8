/* The tensor stream's framing, served for real (common/rpc/stream_*.c): a
 * stream server with an echo method listens on loopback once per process;
 * each input is sent on a new TCP connection, which is then half-closed,
 * and whatever the server answers is read until it closes. The server must
 * neither crash nor keep the connection: a read that waits 5 s aborts. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/rpc/rpc.h"
#include "fuzz.h"

static void on_echo(void *ctx, rpc_call_t *call, const uint8_t *req, size_t len) {
    rpc_call_reply(call, RPC_OK, NULL, req, len);
}

static void on_cancel(void *ctx, rpc_call_t *call) {
    rpc_call_reply(call, RPC_CANCELLED, "gone", NULL, 0);
}

static const rpc_method_t methods[] = {{"/pstrain.Test/Echo", on_echo}};

static int stream_port(void) {
    static int port;
    if (port)
        return port;
    fuzz_dir(); /* quiet logs */
    rpc_server_config_t c;
    memset(&c, 0, sizeof c);
    c.addr = "127.0.0.1:0";
    c.methods = methods;
    c.n_methods = 1;
    c.on_cancel = on_cancel;
    c.opt.stream = 1;
    c.opt.max_recv = c.opt.max_send = 1 << 20;
    c.opt.stream_max_wait_s = 1.0;
    rpc_server_t *srv;
    char err[PS_ERRLEN];
    if (rpc_server_start(&srv, &c, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    port = rpc_server_stream_port(srv);
    return port;
}

/* A connection to the server. Tens of thousands of connections a run can
 * use up the ephemeral ports for a moment (EADDRNOTAVAIL): that is the
 * harness's limit, not the server's, so it waits and tries again (2 s at
 * most); any other failure aborts. */
static int connect_server(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)stream_port())};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int tries = 0; tries < 200; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            break;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
        int e = errno;
        close(fd);
        if (e != EADDRNOTAVAIL)
            break;
        usleep(10000);
    }
    perror("fuzz_stream: connect");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = connect_server();
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t sent = 0;
    while (sent < size) {
        ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server closed: it refused what came so far */
        sent += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    uint8_t buf[65536];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) /* the server kept it open */
        abort();
    /* closed with a reset: no TIME_WAIT holds the client's port */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    return 0;
}

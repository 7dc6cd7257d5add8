/* The tensor stream's frames and socket helpers, shared by its server and
 * its client (stream_server.c, stream_client.c). See stream_internal.h for
 * the frame layout. */
#include "common/rpc/stream_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/base/util.h"

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void rpc__stream_req_put(uint8_t h[RPC_STREAM_HDR], size_t method_len, double deadline_s,
                         size_t body_len) {
    put_u32(h, RPC_STREAM_REQ_MAGIC);
    put_u32(h + 4, (uint32_t)method_len);
    put_u64(h + 8, deadline_s > 0 ? (uint64_t)(deadline_s * 1e6) + 1 : 0);
    put_u64(h + 16, body_len);
}

int rpc__stream_req_get(const uint8_t h[RPC_STREAM_HDR], size_t *method_len, double *deadline_s,
                        uint64_t *body_len) {
    if (get_u32(h) != RPC_STREAM_REQ_MAGIC)
        return -1;
    *method_len = get_u32(h + 4);
    uint64_t us = get_u64(h + 8);
    *deadline_s = us ? (double)us * 1e-6 : 0;
    *body_len = get_u64(h + 16);
    return 0;
}

void rpc__stream_resp_put(uint8_t h[RPC_STREAM_HDR], int code, size_t msg_len, size_t body_len,
                          uint32_t flags) {
    put_u32(h, RPC_STREAM_RESP_MAGIC);
    put_u32(h + 4, (uint32_t)code);
    put_u32(h + 8, (uint32_t)msg_len);
    put_u32(h + 12, flags);
    put_u64(h + 16, body_len);
}

int rpc__stream_resp_get(const uint8_t h[RPC_STREAM_HDR], int *code, size_t *msg_len,
                         uint64_t *body_len, uint32_t *flags) {
    if (get_u32(h) != RPC_STREAM_RESP_MAGIC)
        return -1;
    uint32_t c = get_u32(h + 4);
    *code = c <= RPC_UNAUTHENTICATED ? (int)c : RPC_UNKNOWN;
    *msg_len = get_u32(h + 8);
    *flags = get_u32(h + 12);
    *body_len = get_u64(h + 16);
    return 0;
}

int rpc__read_full(int fd, void *buf, size_t n) {
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, p + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            errno = got ? ECONNRESET : 0;
            return got ? -1 : 1;
        } else if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

int rpc__write_iov(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)PS_MIN(n, 1024)};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        rpc__iov_advance(&iov, &n, (size_t)w);
    }
    return 0;
}

void rpc__iov_advance(struct iovec **iov, int *n, size_t done) {
    while (*n > 0 && done >= (*iov)->iov_len) {
        done -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n > 0) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + done;
        (*iov)->iov_len -= done;
    }
}

int rpc__split_host(const char *target, char *host, size_t hostlen, int *port) {
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target)
        return -1;
    const char *h = target;
    size_t len = (size_t)(colon - target);
    if (h[0] == '[' && len >= 2 && h[len - 1] == ']') {
        h++;
        len -= 2;
    }
    if (len == 0 || len >= hostlen)
        return -1;
    memcpy(host, h, len);
    host[len] = '\0';
    if (port)
        *port = atoi(colon + 1);
    return 0;
}

/* Larger socket buffers than loopback's autotuning starts from: a 16 MiB
 * message then moves in fewer wake-ups of the reader. */
#define STREAM_SOCKBUF (4 << 20)

void rpc__stream_tune(int fd) {
    int one = 1, buf = STREAM_SOCKBUF;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
}

int rpc__stream_listen(const char *addr, int port, int *fd_out, int *bound, char *err,
                       size_t errlen) {
    char host[256], service[16];
    if (rpc__split_host(addr, host, sizeof host, NULL) < 0)
        return ps_errf(err, errlen, "rpc: tensor stream: address %s is not host:port", addr);
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return ps_errf(err, errlen, "rpc: tensor stream: cannot resolve %s: %s", host,
                       gai_strerror(gai));
    int fd = -1, why = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            why = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 64) < 0) {
            why = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return ps_errf(err, errlen, "rpc: tensor stream: cannot listen on %s port %d: %s", host,
                       port, strerror(why));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                      : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}

/* ---- Same host: a Unix socket and shared memory ---------------------------- */

int rpc__stream_unix_listen(char *name, size_t namelen, int *fd_out, char *err, size_t errlen) {
    /* An abstract name: no file to clean up, and only processes in this
     * network namespace (so on this host) can reach it. The process's pid
     * and its count of servers make it unique there. */
    static atomic_int servers;
    snprintf(name, namelen, "pstrain-%d-%d", (int)getpid(), atomic_fetch_add(&servers, 1));
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n + 1 > sizeof a.sun_path)
        return ps_errf(err, errlen, "rpc: tensor stream: socket name %s too long", name);
    memcpy(a.sun_path + 1, name, n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        bind(fd, (struct sockaddr *)&a,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0 ||
        listen(fd, 64) < 0) {
        int why = errno;
        if (fd >= 0)
            close(fd);
        return ps_errf(err, errlen, "rpc: tensor stream: cannot listen on @%s: %s", name,
                       strerror(why));
    }
    *fd_out = fd;
    return 0;
}

int rpc__stream_unix_connect(const char *name) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n == 0 || n + 1 > sizeof a.sun_path)
        return -1;
    memcpy(a.sun_path + 1, name, n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int rpc__send_fd(int sock, const void *buf, size_t len, int fd) {
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {(void *)buf, len};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.space,
                        .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t w;
    do
        w = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    return w == (ssize_t)len ? 0 : -1;
}

int rpc__recv_fd(int sock, void *buf, size_t len, int *fd) {
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {buf, len};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.space,
                        .msg_controllen = sizeof ctl.space};
    *fd = -1;
    ssize_t r;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    while (r < 0 && errno == EINTR);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(fd, CMSG_DATA(c), sizeof *fd);
    if (r != (ssize_t)len || *fd < 0 || (mh.msg_flags & MSG_CTRUNC)) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        return -1;
    }
    return 0;
}

void rpc__stream_hello_put(uint8_t h[RPC_STREAM_HDR], uint64_t req_cap, uint64_t resp_cap) {
    put_u32(h, RPC_STREAM_SHM_MAGIC);
    put_u32(h + 4, 0);
    put_u64(h + 8, req_cap);
    put_u64(h + 16, resp_cap);
}

int rpc__stream_hello_get(const uint8_t h[RPC_STREAM_HDR], uint64_t *req_cap, uint64_t *resp_cap) {
    if (get_u32(h) != RPC_STREAM_SHM_MAGIC)
        return -1;
    *req_cap = get_u64(h + 8);
    *resp_cap = get_u64(h + 16);
    return 0;
}

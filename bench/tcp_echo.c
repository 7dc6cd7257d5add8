#include "bench/tcp_echo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/base/util.h"

static int read_full(int fd, void *buf, size_t n) {
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (uint8_t *)buf + got, PS_MIN(n - got, (size_t)1 << 20));
        if (r <= 0 && !(r < 0 && errno == EINTR))
            return -1;
        got += r > 0 ? (size_t)r : 0;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n) {
    for (size_t put = 0; put < n;) {
        ssize_t r = write(fd, (const uint8_t *)buf + put, PS_MIN(n - put, (size_t)1 << 20));
        if (r <= 0 && !(r < 0 && errno == EINTR))
            return -1;
        put += r > 0 ? (size_t)r : 0;
    }
    return 0;
}

int tcp_echo_listen(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        perror("bench: tcp listener");
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

void tcp_echo_serve(int listener, size_t cap) {
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0)
            break;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        uint64_t n;
        while (read_full(fd, &n, sizeof n) == 0 && n <= cap && read_full(fd, buf, n) == 0 &&
               write_full(fd, buf, n) == 0) {
        }
        close(fd);
    }
    free(buf);
}

int tcp_echo_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("bench: tcp connect");
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

double tcp_echo_round(int fd, const void *buf, void *resp, size_t n) {
    uint64_t len = n;
    double t0 = ps_now();
    if (write_full(fd, &len, sizeof len) < 0 || write_full(fd, buf, n) < 0 ||
        read_full(fd, resp, n) < 0) {
        perror("bench: tcp echo");
        return -1;
    }
    return ps_now() - t0;
}

pid_t tcp_echo_fork(size_t cap, int *fd) {
    int port;
    int listener = tcp_echo_listen(&port);
    if (listener < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        tcp_echo_serve(listener, cap);
        _exit(0);
    }
    close(listener);
    *fd = pid > 0 ? tcp_echo_connect(port) : -1;
    if (pid > 0 && *fd < 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

void tcp_echo_stop(pid_t pid, int fd) {
    if (fd >= 0)
        close(fd);
    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
}

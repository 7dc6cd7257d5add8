/* A plain TCP echo over loopback, for the benchmarks to time beside their
 * RPCs call for call, so that both see the same noise of a shared machine:
 * the ceiling any transport over TCP can reach here. Length-prefixed
 * messages, 1 MiB writes, reads straight into the final buffer. */
#ifndef PSTRAIN_BENCH_TCP_ECHO_H
#define PSTRAIN_BENCH_TCP_ECHO_H

#include <stddef.h>
#include <sys/types.h>

/* A listening loopback socket; *port is its port. -1 on an error (printed). */
int tcp_echo_listen(int *port);
/* Answers each message of each connection with itself, one connection at a
 * time, until the listener is shut down; messages up to cap bytes. */
void tcp_echo_serve(int listener, size_t cap);
/* A connection to the echo on port, TCP_NODELAY; -1 on an error (printed). */
int tcp_echo_connect(int port);
/* Seconds for n bytes of buf there and back into resp; -1 on an error. */
double tcp_echo_round(int fd, const void *buf, void *resp, size_t n);

/* The echo in a process of its own: returns its pid and a connection to it
 * in *fd, or -1. Stop it with tcp_echo_stop. */
pid_t tcp_echo_fork(size_t cap, int *fd);
void tcp_echo_stop(pid_t pid, int fd);

#endif

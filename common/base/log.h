/* One logger for every role: each line carries wall time, role and index, pid
 * and level, and goes to stderr. The level is checked before formatting. */
#ifndef PSTRAIN_LOG_H
#define PSTRAIN_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

extern log_level_t log_threshold;

/* role is e.g. "worker", index -1 for none. */
void log_init(const char *role, int index);
/* The name lines carry, e.g. "ps1". */
const char *log_name(void);
/* Accepts debug|info|warn|error; returns -1 on anything else. */
int log_set_level(const char *name);
/* Formats one line; the message's control characters and bytes that are
 * not printable UTF-8 are escaped (\n, \t, \x1b, ...), so that text a peer or
 * a file supplies can neither start a forged line nor reach a terminal as
 * an escape sequence. */
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies s into out (outlen > 0, always terminated) with the escaping
 * log_write applies; a cut escape is never left half written. Returns out. */
char *log_escape(const char *s, char *out, size_t outlen);
/* One line without the log prefix (a command's error for its user),
 * escaped like log_write's, to f. */
void log_print(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A warning a peer can trigger, limited: in each interval of
 * LOG_LIMIT_INTERVAL_S seconds the first LOG_LIMIT_BURST lines are logged,
 * the rest counted, and the count is told with the next line logged.
 * Zero-initialised is ready (glibc's mutex initialiser is all zeros); any
 * thread. */
#define LOG_LIMIT_BURST 5
#define LOG_LIMIT_INTERVAL_S 10.0
typedef struct {
    pthread_mutex_t mu;
    double start; /* of the interval, monotonic seconds */
    unsigned logged;
    unsigned long long dropped;
} log_limit_t;

/* Whether a line at now (monotonic seconds) is logged; if so, *dropped is
 * how many were not since the last one that was. */
bool log_limit_pass(log_limit_t *l, double now, unsigned long long *dropped);
/* log_warn through l. */
void log_warn_limited(log_limit_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_threshold <= LOG_DEBUG)                                                            \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define log_info(...)                                                                              \
    do {                                                                                           \
        if (log_threshold <= LOG_INFO)                                                             \
            log_write(LOG_INFO, __VA_ARGS__);                                                      \
    } while (0)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif

#include "common/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

log_level_t log_threshold = LOG_INFO;

static char log_role[32] = "pstrain";

static const char *level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void log_init(const char *role, int index) {
    if (index >= 0)
        snprintf(log_role, sizeof log_role, "%s%d", role, index);
    else
        snprintf(log_role, sizeof log_role, "%s", role);
}

const char *log_name(void) {
    return log_role;
}

int log_set_level(const char *name) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            log_threshold = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

/* Length of the printable UTF-8 sequence at s (1-4), or 0 when s starts
 * with a byte to escape: a control character (C0, DEL, C1), a byte that is
 * not valid UTF-8, or an overlong or out-of-range form. */
static size_t printable_len(const unsigned char *s) {
    unsigned char c = s[0];
    if (c >= 0x20 && c < 0x7f)
        return 1;
    size_t n = c >= 0xc2 && c <= 0xdf   ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
        return 0;
    if (c == 0xc2 && s[1] < 0xa0) /* U+0080-U+009F: C1 controls */
        return 0;
    return n;
}

char *log_escape(const char *s, char *out, size_t outlen) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    while (*p) {
        char esc[5];
        size_t n = printable_len(p), m;
        if (n) {
            m = n;
        } else if (*p == '\n' || *p == '\t' || *p == '\r') {
            esc[0] = '\\';
            esc[1] = *p == '\n' ? 'n' : *p == '\t' ? 't' : 'r';
            m = 2;
        } else {
            esc[0] = '\\';
            esc[1] = 'x';
            esc[2] = hex[*p >> 4];
            esc[3] = hex[*p & 15];
            m = 4;
        }
        if (o + m >= outlen)
            break;
        memcpy(out + o, n ? (const char *)p : esc, m);
        o += m;
        p += n ? n : 1;
    }
    out[o] = '\0';
    return out;
}

void log_write(log_level_t level, const char *fmt, ...) {
    char line[2048], msg[1536];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02d %02d:%02d:%02d.%03d %s[%d] %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), log_role, (int)getpid(), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof line - 2)
        log_escape(msg, line + n, sizeof line - 1 - (size_t)n);
    /* One write per line, so that lines of concurrent threads never interleave. */
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void log_print(FILE *f, const char *fmt, ...) {
    char msg[1536], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_escape(msg, line, sizeof line);
    fprintf(f, "%s\n", line);
}

bool log_limit_pass(log_limit_t *l, double now, unsigned long long *dropped) {
    pthread_mutex_lock(&l->mu);
    if (l->logged == 0 || now - l->start >= LOG_LIMIT_INTERVAL_S) {
        l->start = now;
        l->logged = 0;
    }
    bool pass = l->logged < LOG_LIMIT_BURST;
    *dropped = 0;
    if (pass) {
        l->logged++;
        *dropped = l->dropped;
        l->dropped = 0;
    } else {
        l->dropped++;
    }
    pthread_mutex_unlock(&l->mu);
    return pass;
}

void log_warn_limited(log_limit_t *l, const char *fmt, ...) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long dropped;
    if (log_threshold > LOG_WARN ||
        !log_limit_pass(l, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec, &dropped))
        return;
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (dropped)
        log_write(LOG_WARN, "%s (and %llu more like it not logged since the last)", msg, dropped);
    else
        log_write(LOG_WARN, "%s", msg);
}

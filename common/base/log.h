/* One logger for every role: each line carries wall time, role and index, pid
 * and level, and goes to stderr. The level is checked before formatting. */
#ifndef PSTRAIN_LOG_H
#define PSTRAIN_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

extern log_level_t log_threshold;

/* role is e.g. "worker", index -1 for none. */
void log_init(const char *role, int index);
/* The name lines carry, e.g. "ps1". */
const char *log_name(void);
/* Accepts debug|info|warn|error; returns -1 on anything else. */
int log_set_level(const char *name);
void log_write(log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

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

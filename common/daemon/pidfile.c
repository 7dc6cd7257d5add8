#include "common/daemon/pidfile.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"

/* The pid in a pid file, or 0 when there is none or it is not a number. */
static pid_t read_pid(const char *path) {
    char *text = NULL;
    if (ps_read_file(path, &text, NULL, NULL, 0))
        return 0;
    int64_t pid = 0;
    text[strcspn(text, "\n")] = '\0';
    if (ps_parse_i64(text, &pid) || pid <= 0 || pid > INT_MAX)
        pid = 0;
    free(text);
    return (pid_t)pid;
}

/* The command name of a process (/proc/PID/comm), "" when it is gone. */
static void comm_of(pid_t pid, char *buf, size_t len) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fgets(buf, (int)len, f))
        buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
}

int pidfile_write(const char *path, char *err, size_t errlen) {
    pid_t old = read_pid(path);
    if (old > 0 && old != getpid() && (kill(old, 0) == 0 || errno == EPERM)) {
        char theirs[64], ours[64];
        comm_of(old, theirs, sizeof theirs);
        comm_of(getpid(), ours, sizeof ours);
        if (theirs[0] && strcmp(theirs, ours) == 0)
            return ps_errf(err, errlen, "pid file %s: process %d (%s) is still running", path,
                           (int)old, theirs);
        /* The pid was reused by another program: ours is gone. */
        log_info("pid file %s named process %d, now %s, not ours; replacing it", path, (int)old,
                 theirs[0] ? theirs : "another program");
    } else if (old > 0 && old != getpid()) {
        log_info("pid file %s named process %d, which is gone; replacing it", path, (int)old);
    }
    char text[32];
    int n = snprintf(text, sizeof text, "%d\n", (int)getpid());
    return ps_write_file_atomic(path, text, (size_t)n, err, errlen);
}

void pidfile_remove(const char *path) {
    if (path && path[0] && read_pid(path) == getpid())
        unlink(path);
}

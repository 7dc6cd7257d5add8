#include "common/base/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n, const char *file, int line) {
    fprintf(stderr, "fatal: out of memory allocating %zu bytes at %s:%d\n", n, file, line);
    abort();
}

void *ps_xmalloc(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n, file, line);
    return p;
}

void *ps_xcalloc(size_t count, size_t size, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        oom(count * size, file, line);
    return p;
}

void *ps_xrealloc(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n, file, line);
    return q;
}

char *ps_xstrdup(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = ps_xmalloc(n, file, line);
    memcpy(p, s, n);
    return p;
}

void *ps_xalloc_aligned(size_t n, const char *file, int line) {
    void *p = NULL;
    size_t rounded = (n + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0)
        oom(n, file, line);
    return p;
}

int ps_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

double ps_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double ps_wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void ps_sleep(double secs) {
    struct timespec ts = {.tv_sec = (time_t)secs,
                          .tv_nsec = (long)((secs - (double)(time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ps_parse_i64(const char *s, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *out = (int64_t)v;
    return 0;
}

int ps_parse_f64(const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int ps_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap)
            buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return ps_errf(err, errlen, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

int ps_mkdirs(const char *path, char *err, size_t errlen) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return ps_errf(err, errlen, "path too long: %s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return ps_errf(err, errlen, "mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return ps_errf(err, errlen, "mkdir %s: %s", tmp, strerror(errno));
    return 0;
}

int ps_atomic_open(ps_atomic_t *a, const char *path, char *err, size_t errlen) {
    if (snprintf(a->path, sizeof a->path, "%s", path) >= (int)sizeof a->path ||
        snprintf(a->tmp, sizeof a->tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof a->tmp)
        return ps_errf(err, errlen, "path too long: %s", path);
    a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (a->fd < 0)
        return ps_errf(err, errlen, "open %s: %s", a->tmp, strerror(errno));
    return 0;
}

int ps_atomic_write(ps_atomic_t *a, const void *data, size_t len, char *err, size_t errlen) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(a->fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            ps_atomic_abort(a);
            return ps_errf(err, errlen, "write %s: %s", a->tmp, strerror(e));
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

void ps_atomic_abort(ps_atomic_t *a) {
    if (a->fd >= 0) {
        close(a->fd);
        unlink(a->tmp);
    }
    a->fd = -1;
}

int ps_fsync_dir_of(const char *path, char *err, size_t errlen) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return ps_errf(err, errlen, "open %s: %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) /* some file systems cannot fsync a directory */
        return ps_errf(err, errlen, "fsync %s: %s", dir, strerror(e));
    return 0;
}

int ps_atomic_commit(ps_atomic_t *a, char *err, size_t errlen) {
    if (fsync(a->fd) != 0) {
        int e = errno;
        ps_atomic_abort(a);
        return ps_errf(err, errlen, "fsync %s: %s", a->tmp, strerror(e));
    }
    int rc = close(a->fd);
    a->fd = -1;
    if (rc != 0) {
        int e = errno;
        unlink(a->tmp);
        return ps_errf(err, errlen, "close %s: %s", a->tmp, strerror(e));
    }
    if (rename(a->tmp, a->path) != 0) {
        int e = errno;
        unlink(a->tmp);
        return ps_errf(err, errlen, "rename %s -> %s: %s", a->tmp, a->path, strerror(e));
    }
    return ps_fsync_dir_of(a->path, err, errlen);
}

int ps_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    ps_atomic_t a;
    if (ps_atomic_open(&a, path, err, errlen) || ps_atomic_write(&a, data, len, err, errlen))
        return -1;
    return ps_atomic_commit(&a, err, errlen);
}

int ps_write_json_atomic(const char *path, struct json_object *o, char *err, size_t errlen) {
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
    size_t n = strlen(text);
    char *data = xmalloc(n + 1);
    memcpy(data, text, n);
    data[n] = '\n';
    int rc = ps_write_file_atomic(path, data, n + 1, err, errlen);
    free(data);
    json_object_put(o);
    return rc;
}

int ps_path_join(char *out, size_t len, const char *dir, const char *name, char *err,
                 size_t errlen) {
    int n = snprintf(out, len, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= len)
        return ps_errf(err, errlen, "path too long: %s/%s", dir, name);
    return 0;
}

void ps_remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int ps_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Small helpers every module uses: checked allocation, error messages into a
 * caller's buffer, clocks. */
#ifndef PSTRAIN_UTIL_H
#define PSTRAIN_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Size of the error buffers that library functions fill. */
#define PS_ERRLEN 512

#define PS_VERSION "0.1.0"

/* Allocation failure aborts with the size and the caller's file:line; sizes that
 * come from a peer or a file must be validated before they reach these. */
void *ps_xmalloc(size_t n, const char *file, int line);
void *ps_xcalloc(size_t count, size_t size, const char *file, int line);
void *ps_xrealloc(void *p, size_t n, const char *file, int line);
char *ps_xstrdup(const char *s, const char *file, int line);
/* 64-byte aligned, for buffers the math kernels touch; free with free(). */
void *ps_xalloc_aligned(size_t n, const char *file, int line);

#define xmalloc(n) ps_xmalloc((n), __FILE__, __LINE__)
#define xcalloc(c, s) ps_xcalloc((c), (s), __FILE__, __LINE__)
#define xrealloc(p, n) ps_xrealloc((p), (n), __FILE__, __LINE__)
#define xstrdup(s) ps_xstrdup((s), __FILE__, __LINE__)
#define xalloc_aligned(n) ps_xalloc_aligned((n), __FILE__, __LINE__)

/* Formats into err (when err is not NULL) and returns -1, so that library code
 * can write `return ps_errf(err, errlen, "...", ...);`. */
int ps_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Seconds on the monotonic clock. */
double ps_now(void);
/* Seconds since the epoch (wall clock). */
double ps_wall_now(void);

/* Sleeps this long, through interruptions by signals. */
void ps_sleep(double secs);

/* Parses a whole decimal integer or float; returns -1 on trailing junk, overflow
 * or an empty string. */
int ps_parse_i64(const char *s, int64_t *out);
int ps_parse_f64(const char *s, double *out);

/* Reads a whole file into a NUL-terminated buffer the caller frees. */
int ps_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen);
/* mkdir -p. */
int ps_mkdirs(const char *path, char *err, size_t errlen);
/* Writes data to path through a temp file, fsync and rename, so readers never
 * see a partial file. */
int ps_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);
/* Writes o to path as pretty JSON and a newline, as ps_write_file_atomic
 * does, and releases o (json_object_put) whatever happens. */
struct json_object;
int ps_write_json_atomic(const char *path, struct json_object *o, char *err, size_t errlen);

/* The same in pieces: open a temp file beside path, write, then commit
 * (fsync, rename over path, fsync the directory) or abort (unlink). A failed
 * write or commit has already aborted. */
typedef struct {
    int fd;
    char path[4096];
    char tmp[4096 + 32];
} ps_atomic_t;
int ps_atomic_open(ps_atomic_t *a, const char *path, char *err, size_t errlen);
int ps_atomic_write(ps_atomic_t *a, const void *data, size_t len, char *err, size_t errlen);
int ps_atomic_commit(ps_atomic_t *a, char *err, size_t errlen);
void ps_atomic_abort(ps_atomic_t *a);
/* fsync of the directory that holds path (a rename is durable after it). */
int ps_fsync_dir_of(const char *path, char *err, size_t errlen);

/* out = dir + "/" + name; -1 with a message when it does not fit. */
int ps_path_join(char *out, size_t len, const char *dir, const char *name, char *err,
                 size_t errlen);
/* Removes a directory of plain files (not recursive); best effort. */
void ps_remove_flat_dir(const char *dir);

/* Number of CPUs this process may run on. */
int ps_cpu_count(void);

#define PS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define PS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif

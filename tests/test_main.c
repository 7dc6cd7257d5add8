/* The one test runner: `pstrain_tests NAME` runs a test, `--list` lists them. */
#include "test.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/base/log.h"

int test_failures;
static char tmpdir[256];
static char skip_reason[512];

/* CTest's SKIP_RETURN_CODE for every test (CMakeLists.txt). */
#define EXIT_SKIPPED 77

void test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(skip_reason, sizeof skip_reason, fmt, ap);
    va_end(ap);
}

void test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    test_failures++;
}

size_t test_compare(const char *what, const float *got, const float *want, size_t n, double tol) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double a = got[i], b = want[i];
        double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
        if (fabs(a - b) <= tol * (m > 1.0 ? m : 1.0))
            continue;
        if (bad < 8)
            fprintf(stderr, "  %s[%zu]: got %.9g want %.9g\n", what, i, a, b);
        bad++;
    }
    if (bad)
        fprintf(stderr, "  %s: %zu of %zu elements differ (tol %g)\n", what, bad, n, tol);
    return bad;
}

const char *test_tmpdir(void) {
    if (!tmpdir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/pstrain-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmpdir;
}

const char *test_path(const char *name) {
    static char bufs[32][512];
    static int next;
    char *p = bufs[next++ % 32];
    snprintf(p, 512, "%s/%s", test_tmpdir(), name);
    return p;
}

void test_write_bytes(const char *path, const void *p, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

void test_limit_file_size(size_t bytes) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = bytes, .rlim_max = RLIM_INFINITY};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
        perror("setrlimit");
        exit(2);
    }
}

static void remove_tmpdir(void) {
    if (!tmpdir[0])
        return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", tmpdir);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} test_entry_t;

static const test_entry_t tests[] = {
#define TEST(name) {#name, test_##name},
#include "tests.def"
#undef TEST
    {NULL, NULL},
};

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; tests[i].name; i++)
            printf("%s\n", tests[i].name);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s TEST_NAME | --list\n", argv[0]);
        return 2;
    }
    log_init("test", -1);
    for (size_t i = 0; tests[i].name; i++) {
        if (strcmp(tests[i].name, argv[1]) != 0)
            continue;
        tests[i].fn();
        remove_tmpdir();
        if (test_failures) {
            fprintf(stderr, "%s: FAILED\n", argv[1]);
            return 1;
        }
        if (skip_reason[0]) {
            printf("%s: skipped: %s\n", argv[1], skip_reason);
            return EXIT_SKIPPED;
        }
        printf("%s: ok\n", argv[1]);
        return 0;
    }
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
}

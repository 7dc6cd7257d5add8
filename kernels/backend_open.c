/* backend_open: the CPU, or the CUDA plugin loaded with dlopen. The binaries
 * link no CUDA library: only libpstrain_cuda.so does, so a machine without
 * CUDA runs them as long as nobody asks for a GPU. Also backend_xalloc. */
#include "backend.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLUGIN_NAME "libpstrain_cuda.so"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* The plugin's path: $PSTRAIN_CUDA_PLUGIN, else beside the executable when
 * it is there, else the bare name for the dynamic loader's search. */
static void plugin_path(char *path, size_t len) {
    const char *env = getenv("PSTRAIN_CUDA_PLUGIN");
    if (env && env[0]) {
        snprintf(path, len, "%s", env);
        return;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            slash[1] = '\0';
            snprintf(path, len, "%s%s", exe, PLUGIN_NAME);
            if (access(path, F_OK) == 0)
                return;
        }
    }
    snprintf(path, len, "%s", PLUGIN_NAME);
}

/* The plugin is loaded once per process and never unloaded (CUDA's
 * libraries do not take well to it); its answer is kept. */
static struct {
    pthread_once_t once;
    const backend_t *be;
    char about[256];
    char why[PSTRAIN_BACKEND_WHY];
} plugin = {.once = PTHREAD_ONCE_INIT};

static void load_plugin(void) {
    char path[4200];
    plugin_path(path, sizeof path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(plugin.why, sizeof plugin.why, "cannot load the CUDA plugin: %s",
                 e ? e : "dlopen failed");
        return;
    }
    backend_plugin_fn entry;
    /* POSIX's way to turn dlsym's object pointer into a function pointer. */
    *(void **)&entry = dlsym(h, BACKEND_PLUGIN_ENTRY);
    if (!entry) {
        snprintf(plugin.why, sizeof plugin.why, "%.300s has no %s: not a pstrain plugin", path,
                 BACKEND_PLUGIN_ENTRY);
        return;
    }
    const backend_t *be = NULL;
    int rc = entry(BACKEND_ABI, sizeof(backend_t), &be, plugin.about, sizeof plugin.about);
    if (rc != BACKEND_PLUGIN_OK || !be) {
        snprintf(plugin.why, sizeof plugin.why, "%s", plugin.about);
        plugin.about[0] = '\0';
        return;
    }
    plugin.be = be;
}

void *backend_xalloc(const backend_t *be, size_t bytes, const char *file, int line) {
    void *p = be->alloc(bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "fatal: %s:%d: backend %s could not allocate %zu bytes\n", file, line,
                be->name, bytes);
        abort();
    }
    return p;
}

static void choose_cpu(backend_choice_t *out) {
    out->be = cpu_backend();
    out->gpu = false;
    snprintf(out->about, sizeof out->about, "CPU, BLAS core %s", cpu_backend_blas_core());
}

int backend_open(const char *device, backend_choice_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    bool gpu = !strcmp(device, "gpu"), automatic = !strcmp(device, "auto");
    if (!gpu && !automatic) {
        if (strcmp(device, "cpu") != 0)
            return fail(err, errlen, "device: \"%s\" is not one of cpu|gpu|auto", device);
        choose_cpu(out);
        return 0;
    }
    pthread_once(&plugin.once, load_plugin);
    if (plugin.be) {
        out->be = plugin.be;
        out->gpu = true;
        snprintf(out->about, sizeof out->about, "%s", plugin.about);
        return 0;
    }
    if (gpu)
        return fail(err, errlen, "device=gpu: %s", plugin.why);
    choose_cpu(out);
    snprintf(out->why_cpu, sizeof out->why_cpu, "%s", plugin.why);
    return 0;
}

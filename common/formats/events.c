#include "common/formats/events.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/log.h"
#include "tensorboard.pb-c.h"
#include "common/formats/tfrecord.h"
#include "common/base/util.h"

#define EVENTS_FILE_VERSION "brain.Event:2"

struct events_writer {
    FILE *f;
    char *path;
    /* The first write error: a file that lost part of a record is not written
     * to again, and every later call (close too) reports that error. */
    char failed[PS_ERRLEN];
};

/* Numbers the files this process opens, so that two writers in the same
 * second, directory and process still get different names (torch's and
 * tensorboardX's writers add pid and counter the same way). */
static atomic_uint events_seq;

static void host_name(char *buf, size_t len) {
    if (gethostname(buf, len) != 0 || !buf[0])
        snprintf(buf, len, "localhost");
    buf[len - 1] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '/')
            *p = '_';
}

/* Creates the file with O_EXCL: a name some other writer took is skipped. */
static FILE *create_file(const char *dir, char *path, size_t pathlen, char *err, size_t errlen) {
    char host[256];
    host_name(host, sizeof host);
    for (int tries = 0; tries < 1000; tries++) {
        unsigned seq = atomic_fetch_add(&events_seq, 1);
        if (snprintf(path, pathlen, "%s/events.out.tfevents.%010lld.%s.%d.%u", dir,
                     (long long)time(NULL), host, (int)getpid(), seq) >= (int)pathlen) {
            ps_errf(err, errlen, "%s: event file path too long", dir);
            return NULL;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0) {
            ps_errf(err, errlen, "create %s: %s", path, strerror(errno));
            return NULL;
        }
        FILE *f = fdopen(fd, "wb");
        if (!f) {
            ps_errf(err, errlen, "open %s: %s", path, strerror(errno));
            close(fd);
        }
        return f;
    }
    ps_errf(err, errlen, "%s: no free event file name", dir);
    return NULL;
}

static int fail(events_writer_t *w, char *err, size_t errlen) {
    return ps_errf(err, errlen, "%s", w->failed);
}

static int write_event(events_writer_t *w, const Tensorflow__Event *ev, char *err, size_t errlen) {
    if (w->failed[0])
        return fail(w, err, errlen);
    size_t n = tensorflow__event__get_packed_size(ev);
    uint8_t *buf = xmalloc(n);
    tensorflow__event__pack(ev, buf);
    int rc = tfrecord_write(w->f, w->path, buf, n, w->failed, sizeof w->failed);
    free(buf);
    return rc ? fail(w, err, errlen) : 0;
}

events_writer_t *events_open(const char *dir, char *err, size_t errlen) {
    char path[PATH_MAX];
    if (ps_mkdirs(dir, err, errlen) != 0)
        return NULL;
    FILE *f = create_file(dir, path, sizeof path, err, errlen);
    if (!f)
        return NULL;
    events_writer_t *w = xcalloc(1, sizeof *w);
    w->f = f;
    w->path = xstrdup(path);
    Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
    ev.wall_time = ps_wall_now();
    ev.what_case = TENSORFLOW__EVENT__WHAT_FILE_VERSION;
    ev.file_version = EVENTS_FILE_VERSION;
    /* Flushed at once: TensorBoard skips a file without its version record. */
    if (write_event(w, &ev, err, errlen) != 0 || events_flush(w, err, errlen) != 0) {
        unlink(path);
        events_close(w, NULL, 0);
        return NULL;
    }
    return w;
}

const char *events_path(const events_writer_t *w) {
    return w->path;
}

int events_scalars(events_writer_t *w, uint64_t step, double wall_time, size_t n,
                   const char *const *tags, const double *values, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (!tags[i] || !tags[i][0])
            return ps_errf(err, errlen, "%s: scalar %zu has no tag", w->path, i);
    Tensorflow__Summary__Value *vals = xcalloc(n, sizeof *vals);
    Tensorflow__Summary__Value **ptrs = xcalloc(n, sizeof *ptrs);
    for (size_t i = 0; i < n; i++) {
        tensorflow__summary__value__init(&vals[i]);
        vals[i].tag = (char *)tags[i];
        vals[i].value_case = TENSORFLOW__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        vals[i].simple_value = (float)values[i];
        ptrs[i] = &vals[i];
    }
    Tensorflow__Summary summary = TENSORFLOW__SUMMARY__INIT;
    summary.n_value = n;
    summary.value = ptrs;
    Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
    ev.wall_time = wall_time;
    ev.step = (int64_t)step;
    ev.what_case = TENSORFLOW__EVENT__WHAT_SUMMARY;
    ev.summary = &summary;
    int rc = write_event(w, &ev, err, errlen);
    free(ptrs);
    free(vals);
    return rc;
}

int events_flush(events_writer_t *w, char *err, size_t errlen) {
    if (!w->failed[0] && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
        ps_errf(w->failed, sizeof w->failed, "write %s: %s", w->path, strerror(errno));
    return w->failed[0] ? fail(w, err, errlen) : 0;
}

int events_close(events_writer_t *w, char *err, size_t errlen) {
    if (!w)
        return 0;
    int rc = events_flush(w, err, errlen);
    /* fclose would retry what a failed flush left in the buffer. */
    if (w->failed[0])
        __fpurge(w->f);
    if (fclose(w->f) != 0 && rc == 0)
        rc = ps_errf(err, errlen, "close %s: %s", w->path, strerror(errno));
    free(w->path);
    free(w);
    return rc;
}

void events_sink_init(events_sink_t *s, const char *dir, const char *what) {
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    s->what = what;
}

void events_sink_write(events_sink_t *s, uint64_t step, size_t n, const char *const *tags,
                       const double *values) {
    char err[PS_ERRLEN];
    if (s->broken)
        return;
    if (!s->w && !(s->w = events_open(s->dir, err, sizeof err))) {
        log_warn("no TensorBoard %s: %s", s->what, err);
        s->broken = true;
        return;
    }
    if (events_scalars(s->w, step, ps_wall_now(), n, tags, values, err, sizeof err) ||
        events_flush(s->w, err, sizeof err)) {
        log_warn("TensorBoard %s: %s; writing no more", s->what, err);
        s->broken = true;
    }
}

void events_sink_close(events_sink_t *s) {
    if (s->w)
        events_close(s->w, NULL, 0);
    s->w = NULL;
}

void events_sink_train(events_sink_t *s, uint64_t step, double loss, double accuracy,
                       double learning_rate, double steps_per_sec, double examples_per_sec) {
    const char *tags[] = {"loss", "accuracy", "learning_rate", "global_step/sec", "examples/sec"};
    double values[] = {loss, accuracy, learning_rate, steps_per_sec, examples_per_sec};
    events_sink_write(s, step, PS_ARRAY_LEN(tags), tags, values);
}

void events_sink_eval(events_sink_t *s, uint64_t step, double loss, double accuracy) {
    const char *tags[] = {"loss", "accuracy"};
    double values[] = {loss, accuracy};
    events_sink_write(s, step, PS_ARRAY_LEN(tags), tags, values);
}

/* TensorBoard event files: DIR/events.out.tfevents.<secs>.<host>.<pid>.<n>,
 * TFRecord framing of tensorflow.Event messages (proto/tensorboard.proto).
 * The first record names the format ("brain.Event:2"); each later one holds a
 * step's scalars, which TensorBoard's scalars dashboard plots. A writer is used
 * from one thread at a time. */
#ifndef PSTRAIN_EVENTS_H
#define PSTRAIN_EVENTS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct events_writer events_writer_t;

/* Creates dir (with parents) and a new event file in it, never reusing a name:
 * two writers opened in the same second get different files. */
events_writer_t *events_open(const char *dir, char *err, size_t errlen);
/* The file's path, for logs. */
const char *events_path(const events_writer_t *w);
/* Appends one Event at (step, wall_time in seconds since the epoch) whose
 * Summary holds n scalars tags[i] = values[i] (stored as float32, as
 * TensorFlow's simple_value is). */
int events_scalars(events_writer_t *w, uint64_t step, double wall_time, size_t n,
                   const char *const *tags, const double *values, char *err, size_t errlen);
/* Pushes what is buffered to the disk (fflush + fsync). */
int events_flush(events_writer_t *w, char *err, size_t errlen);
/* Flushes, closes and frees w (also after an error); err may be NULL. */
int events_close(events_writer_t *w, char *err, size_t errlen);

/* A sink for a run's scalars: it opens its event file in dir at the first
 * write. Summaries must never stop training, so after an error it logs one
 * WARN line naming what it is for and writes nothing more. */
typedef struct {
    events_writer_t *w;
    char dir[PATH_MAX];
    const char *what; /* e.g. "training scalars", for the warning */
    bool broken;
} events_sink_t;

void events_sink_init(events_sink_t *s, const char *dir, const char *what);
/* Writes n scalars at step (now as wall time) and flushes. */
void events_sink_write(events_sink_t *s, uint64_t step, size_t n, const char *const *tags,
                       const double *values);
void events_sink_close(events_sink_t *s);
/* The training scalars of a run, as the master writes them for a cluster and
 * a standalone worker for itself: loss, accuracy, learning_rate,
 * global_step/sec, examples/sec. */
void events_sink_train(events_sink_t *s, uint64_t step, double loss, double accuracy,
                       double learning_rate, double steps_per_sec, double examples_per_sec);
/* An evaluation's scalars (model_dir/eval/): loss and accuracy. */
void events_sink_eval(events_sink_t *s, uint64_t step, double loss, double accuracy);

#endif

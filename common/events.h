/* TensorBoard event files: DIR/events.out.tfevents.<secs>.<host>.<pid>.<n>,
 * TFRecord framing of tensorflow.Event messages (proto/tensorboard.proto).
 * The first record names the format ("brain.Event:2"); each later one holds a
 * step's scalars, which TensorBoard's scalars dashboard plots. A writer is used
 * from one thread at a time. */
#ifndef PSTRAIN_EVENTS_H
#define PSTRAIN_EVENTS_H

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

#endif

/* A worker's step bookkeeping as plain functions, apart from the training
 * loops that call them (cluster.c, local.c), so that the tests can check
 * every decision: where the data resumes, when the target is reached, which
 * loop runs, running means, when to log, evaluate and stop, and the
 * progress bar's arithmetic. */
#ifndef PSTRAIN_WORKER_PROGRESS_H
#define PSTRAIN_WORKER_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The batches this worker took for global_step steps: each async step is
 * one worker's batch, each sync step one from each of `replicas` workers,
 * spread over nworkers (0 counts as 1). */
uint64_t progress_resume_batches(uint64_t global_step, size_t replicas, size_t nworkers);
/* True once the global step has reached the target. */
bool progress_target_reached(uint64_t global_step, uint64_t target);

/* How a cluster worker overlaps moving the model with computing. */
typedef enum {
    PROGRESS_SERIAL,    /* pull, compute, push, one after the other */
    PROGRESS_PIPELINED, /* push and pull for the next step while this one computes */
    PROGRESS_OVERLAPPED /* the head moves while the layers below compute */
} progress_loop_t;

/* Sync mode is always serial; pipelining wins over overlap, which needs a
 * head layer (head > 0). */
progress_loop_t progress_loop(bool sync, bool pipeline, bool overlap, size_t head);

/* Running means of loss and accuracy over n examples. */
typedef struct {
    double loss_sum, correct;
    size_t n;
} progress_means_t;

/* Adds a batch of n examples whose mean loss and accuracy are given. */
void progress_add(progress_means_t *m, double loss, double accuracy, size_t n);
/* The means so far; 0 before any example. */
double progress_loss(const progress_means_t *m);
double progress_accuracy(const progress_means_t *m);

/* True when a log line is due: every_secs or more since the last one. */
bool progress_log_due(double now, double last_log, double every_secs);
/* Examples per second since the last log line; 0 when no time passed. */
double progress_rate(size_t examples, double secs);

/* Standalone: the steps to train, max_steps when positive, else epochs
 * whole epochs of steps_per_epoch. */
uint64_t progress_total_steps(int64_t max_steps, int64_t epochs, size_t steps_per_epoch);
/* The epochs that total steps touch (the last one may be partial). */
uint64_t progress_epochs(uint64_t total, size_t steps_per_epoch);
/* True when the step just done (global `step`, 0-based, step_in_epoch of
 * its epoch) ends an epoch, or the run. */
bool progress_epoch_end(uint64_t step_in_epoch, size_t steps_per_epoch, uint64_t step,
                        uint64_t total);
/* True when an evaluation is due after the step just done: at an epoch's
 * end when every_epoch, and after the last step. */
bool progress_eval_due(bool epoch_end, bool every_epoch, uint64_t step, uint64_t total);

/* Seconds left for steps - step more steps at the rate of elapsed seconds
 * for the first `step`; 0 before the first. */
double progress_eta(double elapsed, size_t step, size_t steps);
/* "1:02:03", "2:05" or "42s", rounded to the second. */
void progress_format_eta(char *buf, size_t len, double secs);
/* Keras's bar, 30 wide: "=========>...................." (bar: 31 bytes). */
void progress_bar(char *bar, size_t step, size_t steps);

#endif

#include "worker/progress.h"

#include <stdio.h>

uint64_t progress_resume_batches(uint64_t global_step, size_t replicas, size_t nworkers) {
    return global_step * replicas / (nworkers ? nworkers : 1);
}

bool progress_target_reached(uint64_t global_step, uint64_t target) {
    return global_step >= target;
}

progress_loop_t progress_loop(bool sync, bool pipeline, bool overlap, size_t head) {
    if (sync)
        return PROGRESS_SERIAL;
    if (pipeline)
        return PROGRESS_PIPELINED;
    return overlap && head > 0 ? PROGRESS_OVERLAPPED : PROGRESS_SERIAL;
}

void progress_add(progress_means_t *m, double loss, double accuracy, size_t n) {
    m->loss_sum += loss * (double)n;
    m->correct += accuracy * (double)n;
    m->n += n;
}

double progress_loss(const progress_means_t *m) {
    return m->n ? m->loss_sum / (double)m->n : 0.0;
}

double progress_accuracy(const progress_means_t *m) {
    return m->n ? m->correct / (double)m->n : 0.0;
}

bool progress_log_due(double now, double last_log, double every_secs) {
    return now - last_log >= every_secs;
}

double progress_rate(size_t examples, double secs) {
    return secs > 0 ? (double)examples / secs : 0.0;
}

uint64_t progress_total_steps(int64_t max_steps, int64_t epochs, size_t steps_per_epoch) {
    if (max_steps > 0)
        return (uint64_t)max_steps;
    return epochs > 0 ? (uint64_t)epochs * steps_per_epoch : 0;
}

uint64_t progress_epochs(uint64_t total, size_t steps_per_epoch) {
    return steps_per_epoch ? (total + steps_per_epoch - 1) / steps_per_epoch : 0;
}

bool progress_epoch_end(uint64_t step_in_epoch, size_t steps_per_epoch, uint64_t step,
                        uint64_t total) {
    return step_in_epoch + 1 == steps_per_epoch || step + 1 == total;
}

bool progress_eval_due(bool epoch_end, bool every_epoch, uint64_t step, uint64_t total) {
    return epoch_end && (every_epoch || step + 1 == total);
}

double progress_eta(double elapsed, size_t step, size_t steps) {
    if (step == 0 || step >= steps)
        return 0.0;
    return elapsed / (double)step * (double)(steps - step);
}

void progress_format_eta(char *buf, size_t len, double secs) {
    long s = (long)(secs + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else if (s >= 60)
        snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
    else
        snprintf(buf, len, "%lds", s);
}

void progress_bar(char *bar, size_t step, size_t steps) {
    size_t done = steps ? step * 30 / steps : 30;
    for (size_t i = 0; i < 30; i++)
        bar[i] = i < done ? '=' : i == done ? '>' : '.';
    bar[30] = '\0';
}

/* The worker's library: the step bookkeeping of both training loops
 * (worker/progress.c), the exit codes a cluster worker ends with, and
 * --print-config (worker/cli.c), and the synthetic step (worker/synthetic.c). */
#include "test.h"

#include "common/base/exitcode.h"
#include "worker/cli.h"
#include "worker/cluster.h"
#include "common/base/util.h"
#include "worker/progress.h"
#include "worker/synthetic.h"

/* Stopped is a clean exit; a refusal is permanent; an unreachable PS may
 * pass on a restart (exitcode.h's rule: 1-127 permanent, 128-255 not). */
void test_worker_exit_codes(void) {
    CHECK_INT_EQ(cluster_exit_code(PSCLIENT_OK), EXIT_OK);
    CHECK_INT_EQ(cluster_exit_code(PSCLIENT_STOPPED), EXIT_OK);
    CHECK_INT_EQ(cluster_exit_code(PSCLIENT_INVALID), EXIT_USAGE);
    CHECK_INT_EQ(cluster_exit_code(PSCLIENT_UNREACHABLE), EXIT_UNAVAILABLE);
    CHECK(cluster_exit_code(PSCLIENT_INVALID) < 128);
    CHECK(cluster_exit_code(PSCLIENT_UNREACHABLE) >= 128);
}

void test_worker_resume_and_target(void) {
    /* Async, 4 workers: 100 global steps are 100 batches over 4 workers. */
    CHECK_INT_EQ(progress_resume_batches(100, 1, 4), 25);
    /* Sync, 4 replicas of 4 workers: every step took one batch of each. */
    CHECK_INT_EQ(progress_resume_batches(100, 4, 4), 100);
    /* Rounds down, and no worker count is taken as one. */
    CHECK_INT_EQ(progress_resume_batches(7, 1, 2), 3);
    CHECK_INT_EQ(progress_resume_batches(7, 1, 0), 7);
    CHECK_INT_EQ(progress_resume_batches(0, 3, 2), 0);
    CHECK(!progress_target_reached(99, 100));
    CHECK(progress_target_reached(100, 100));
    CHECK(progress_target_reached(101, 100));
}

void test_worker_loop_choice(void) {
    CHECK_INT_EQ(progress_loop(true, true, true, 3), PROGRESS_SERIAL);
    CHECK_INT_EQ(progress_loop(false, true, true, 3), PROGRESS_PIPELINED);
    CHECK_INT_EQ(progress_loop(false, false, true, 3), PROGRESS_OVERLAPPED);
    CHECK_INT_EQ(progress_loop(false, false, true, 0), PROGRESS_SERIAL);
    CHECK_INT_EQ(progress_loop(false, false, false, 3), PROGRESS_SERIAL);
}

void test_worker_means_and_rates(void) {
    progress_means_t m = {0};
    CHECK_NEAR(progress_loss(&m), 0.0, 0);
    CHECK_NEAR(progress_accuracy(&m), 0.0, 0);
    progress_add(&m, 2.0, 0.5, 10);
    progress_add(&m, 1.0, 1.0, 30);
    CHECK_INT_EQ(m.n, 40);
    CHECK_NEAR(progress_loss(&m), (2.0 * 10 + 1.0 * 30) / 40, 1e-12);
    CHECK_NEAR(progress_accuracy(&m), (0.5 * 10 + 30) / 40, 1e-12);
    CHECK(progress_log_due(10.0, 5.0, 5.0));
    CHECK(!progress_log_due(9.9, 5.0, 5.0));
    CHECK_NEAR(progress_rate(300, 2.0), 150.0, 1e-12);
    CHECK_NEAR(progress_rate(300, 0.0), 0.0, 0);
}

void test_worker_standalone_steps(void) {
    CHECK_INT_EQ(progress_total_steps(500, 3, 100), 500);
    CHECK_INT_EQ(progress_total_steps(0, 3, 100), 300);
    CHECK_INT_EQ(progress_epochs(300, 100), 3);
    CHECK_INT_EQ(progress_epochs(301, 100), 4);
    CHECK_INT_EQ(progress_epochs(50, 100), 1);
    /* Step 99 (0-based) ends epoch 0; step 249 of 250 ends the run mid-epoch. */
    CHECK(progress_epoch_end(99, 100, 99, 300));
    CHECK(!progress_epoch_end(98, 100, 98, 300));
    CHECK(progress_epoch_end(49, 100, 249, 250));
    /* Evaluation: every epoch's end when asked, and always after the last step. */
    CHECK(progress_eval_due(true, true, 99, 300));
    CHECK(!progress_eval_due(true, false, 99, 300));
    CHECK(progress_eval_due(true, false, 299, 300));
    CHECK(!progress_eval_due(false, true, 50, 300));
}

void test_worker_progress_bar_and_eta(void) {
    char bar[31], eta[32];
    progress_bar(bar, 300, 938);
    CHECK(strcmp(bar, "=========>....................") == 0);
    progress_bar(bar, 938, 938);
    CHECK(strcmp(bar, "==============================") == 0);
    progress_bar(bar, 0, 10);
    CHECK(strcmp(bar, ">.............................") == 0);
    CHECK_NEAR(progress_eta(30.0, 300, 900), 60.0, 1e-12);
    CHECK_NEAR(progress_eta(30.0, 0, 900), 0.0, 0);
    CHECK_NEAR(progress_eta(30.0, 900, 900), 0.0, 0);
    progress_format_eta(eta, sizeof eta, 42.4);
    CHECK(strcmp(eta, "42s") == 0);
    progress_format_eta(eta, sizeof eta, 125.0);
    CHECK(strcmp(eta, "2:05") == 0);
    progress_format_eta(eta, sizeof eta, 3723.0);
    CHECK(strcmp(eta, "1:02:03") == 0);
}

/* --print-config: absent, the worker goes on (-1); a known key is printed
 * (EXIT_OK); an unknown key or a bad --set is a usage error. */
void test_worker_print_config(void) {
    char *none[] = {"pstrain-worker", "--set", "train.epochs=3", NULL};
    CHECK_INT_EQ(worker_print_config(3, none), -1);
    char *known[] = {"pstrain-worker", "--set",        "train.epochs=3",
                     "--print-config", "train.epochs", NULL};
    CHECK_INT_EQ(worker_print_config(5, known), EXIT_OK);
    char *unknown[] = {"pstrain-worker", "--print-config", "train.no_such_key", NULL};
    CHECK_INT_EQ(worker_print_config(3, unknown), EXIT_USAGE);
    char *bad[] = {"pstrain-worker", "--set",        "train.epochs=lots",
                   "--print-config", "train.epochs", NULL};
    CHECK_INT_EQ(worker_print_config(5, bad), EXIT_USAGE);
}

/* A synthetic step pushes decay * w for every element (so the PS's weights
 * shrink and stay finite) and takes at least the step's time. */
void test_worker_synthetic_step(void) {
    float w[5] = {1.0f, -2.0f, 0.0f, 3e38f, -1e-30f}, g[5];
    synthetic_gradient(g, w, 5);
    for (size_t i = 0; i < 5; i++) {
        CHECK_NEAR(g[i], SYNTHETIC_DECAY * w[i], 1e-7);
        CHECK(isfinite(g[i]));
        CHECK(fabsf(w[i] - 0.01f * g[i]) <= fabsf(w[i]));
    }
    double start = ps_now();
    synthetic_wait(start, 30.0);
    double took = ps_now() - start;
    CHECK(took >= 0.030);
}

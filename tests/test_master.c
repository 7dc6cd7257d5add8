/* The master's logic as plain functions, without processes or RPC: liveness
 * from beats, what recovery decides from the PS's lineages, when a
 * checkpoint is due. Times are passed in, never slept. */
#include <pthread.h>
#include <string.h>

#include "common/base/util.h"
#include "common/daemon/cluster.h"
#include "common/daemon/config.h"
#include "common/train/checkpoint.h"
#include "master/checkpointer.h"
#include "master/master.h"
#include "master/recovery.h"
#include "test.h"

/* One PS and two workers; dead after 2 s without a beat. */
static int make_master(master_t *m, cluster_t *c) {
    char err[256];
    const char *spec = "{\"cluster\": {\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:2\"],"
                       " \"worker\": [\"127.0.0.1:3\", \"127.0.0.1:4\"]},"
                       " \"task\": {\"type\": \"master\", \"index\": 0}}";
    if (cluster_parse(c, spec, err, sizeof err)) {
        test_fail(__FILE__, __LINE__, "cluster_parse: %s", err);
        return -1;
    }
    master_init(m, c, 2.0, 100);
    return 0;
}

static void drop_master(master_t *m, cluster_t *c) {
    master_free(m);
    cluster_free(c);
}

static int beat(master_t *m, int worker, uint64_t incarnation, uint64_t step, double now) {
    master_beat_t b = {.incarnation = incarnation, .step = step, .examples = step * 10};
    master_answer_t a;
    return master_heartbeat(m, CLUSTER_WORKER, worker, &b, now, &a);
}

void test_master_liveness_dead_after_timeout(void) {
    master_t m;
    cluster_t c;
    if (make_master(&m, &c))
        return;
    double t0 = m.started;
    master_answer_t a;
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 0, 7, 1234, t0 + 1.0, &a), RPC_OK);
    CHECK_INT_EQ(beat(&m, 0, 7, 1, t0 + 2.0), RPC_OK);
    /* 1.9 s after the last beat: still alive; 2.1 s: dead, and only it. */
    CHECK_INT_EQ(master_check_liveness(&m, t0 + 3.9), 0);
    CHECK_INT_EQ(master_member_state(&m, CLUSTER_WORKER, 0), MEMBER_ALIVE);
    CHECK_INT_EQ(master_check_liveness(&m, t0 + 4.1), 1);
    CHECK_INT_EQ(master_member_state(&m, CLUSTER_WORKER, 0), MEMBER_DEAD);
    /* Never registered: unknown, not dead; a dead member is not counted twice. */
    CHECK_INT_EQ(master_member_state(&m, CLUSTER_WORKER, 1), MEMBER_UNKNOWN);
    CHECK_INT_EQ(master_check_liveness(&m, t0 + 9.0), 0);
    CHECK_INT_EQ(master_live_workers(&m, t0 + 9.0), 0);
    drop_master(&m, &c);
}

void test_master_reregister_after_dead(void) {
    master_t m;
    cluster_t c;
    if (make_master(&m, &c))
        return;
    double t0 = m.started;
    master_answer_t a;
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 1, 7, 1234, t0, &a), RPC_OK);
    CHECK_INT_EQ(master_check_liveness(&m, t0 + 5.0), 1);
    CHECK_INT_EQ(master_member_state(&m, CLUSTER_WORKER, 1), MEMBER_DEAD);
    /* The worker restarted: a new incarnation registers and is alive again;
     * beats of the old one are refused, the new one's accepted. */
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 1, 8, 1300, t0 + 6.0, &a), RPC_OK);
    CHECK_INT_EQ(master_member_state(&m, CLUSTER_WORKER, 1), MEMBER_ALIVE);
    CHECK_INT_EQ(a.live_workers, 1);
    CHECK_INT_EQ(beat(&m, 1, 7, 3, t0 + 6.5), RPC_NOT_FOUND);
    CHECK_INT_EQ(beat(&m, 1, 8, 3, t0 + 6.5), RPC_OK);
    /* A dead member whose beats come back (a network pause) is alive again. */
    CHECK_INT_EQ(master_check_liveness(&m, t0 + 9.0), 1);
    CHECK_INT_EQ(beat(&m, 1, 8, 4, t0 + 9.5), RPC_OK);
    CHECK_INT_EQ(master_member_state(&m, CLUSTER_WORKER, 1), MEMBER_ALIVE);
    drop_master(&m, &c);
}

void test_master_rejects_unknown_roles(void) {
    master_t m;
    cluster_t c;
    if (make_master(&m, &c))
        return;
    master_answer_t a;
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 2, 1, 1, m.started, &a), RPC_INVALID_ARGUMENT);
    CHECK_INT_EQ(master_register(&m, CLUSTER_NROLES, 0, 1, 1, m.started, &a), RPC_INVALID_ARGUMENT);
    /* A beat before Register (the master restarted): register first. */
    CHECK_INT_EQ(beat(&m, 0, 1, 1, m.started), RPC_NOT_FOUND);
    CHECK_INT_EQ(master_register(&m, CLUSTER_PS, 0, 5, 99, m.started, &a), RPC_OK);
    CHECK_INT_EQ(master_member_state(&m, CLUSTER_PS, 0), MEMBER_ALIVE);
    drop_master(&m, &c);
}

void test_master_live_workers_while_starting(void) {
    master_t m;
    cluster_t c;
    if (make_master(&m, &c))
        return;
    double t0 = m.started;
    /* Workers not heard from count while they may still be starting. */
    CHECK_INT_EQ(master_live_workers(&m, t0 + 0.5), 2);
    CHECK_INT_EQ(master_live_workers(&m, t0 + 2.5), 0);
    master_answer_t a;
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 0, 1, 1, t0 + 2.5, &a), RPC_OK);
    CHECK_INT_EQ(a.live_workers, 1);
    CHECK_INT_EQ(master_live_workers(&m, t0 + 2.6), 1);
    CHECK_INT_EQ(master_workers_beating(&m, 1.0, t0 + 3.0), 1);
    CHECK_INT_EQ(master_workers_beating(&m, 1.0, t0 + 3.6), 0);
    drop_master(&m, &c);
}

void test_master_target_and_done(void) {
    master_t m;
    cluster_t c;
    if (make_master(&m, &c))
        return;
    master_set_target(&m, 10);
    CHECK_INT_EQ(master_target(&m), 10);
    CHECK(!master_advance(&m, 9));
    CHECK(master_advance(&m, 10));
    CHECK(!master_done(&m));
    master_set_done(&m, 10);
    master_set_final(&m, 0.25, 0.9);
    master_answer_t a;
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 0, 1, 1, m.started, &a), RPC_OK);
    CHECK(a.done);
    CHECK_INT_EQ(a.global_step, 10);
    member_t members[3];
    master_summary_t sum;
    CHECK_INT_EQ(m.nmembers, 3);
    master_snapshot(&m, members, &sum);
    CHECK(sum.done && sum.have_final);
    CHECK_INT_EQ(sum.target, 10);
    CHECK_NEAR(sum.final_accuracy, 0.9, 1e-12);
    CHECK_INT_EQ(members[0].role, CLUSTER_PS);
    CHECK_INT_EQ(members[1].state, MEMBER_ALIVE);
    drop_master(&m, &c);
}

void test_master_train_metrics_mean(void) {
    master_t m;
    cluster_t c;
    if (make_master(&m, &c))
        return;
    double loss, acc;
    CHECK(!master_train_metrics(&m, &loss, &acc));
    master_answer_t a;
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 0, 1, 1, m.started, &a), RPC_OK);
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 1, 1, 2, m.started, &a), RPC_OK);
    master_beat_t b0 = {.incarnation = 1, .step = 5, .examples = 50, .loss = 1.0, .accuracy = 0.5};
    master_beat_t b1 = {.incarnation = 1, .step = 5, .examples = 50, .loss = 3.0, .accuracy = 0.7};
    CHECK_INT_EQ(master_heartbeat(&m, CLUSTER_WORKER, 0, &b0, m.started, &a), RPC_OK);
    CHECK(master_train_metrics(&m, &loss, &acc));
    CHECK_NEAR(loss, 1.0, 1e-12);
    CHECK_INT_EQ(master_heartbeat(&m, CLUSTER_WORKER, 1, &b1, m.started, &a), RPC_OK);
    CHECK(master_train_metrics(&m, &loss, &acc));
    CHECK_NEAR(loss, 2.0, 1e-12);
    CHECK_NEAR(acc, 0.6, 1e-12);
    drop_master(&m, &c);
}

/* The RPC handlers' thread beats while the loop advances and checks
 * liveness and the evaluator reads metrics: under TSan, a field touched
 * outside master_t's lock fails this test. */
typedef struct {
    master_t *m;
    int worker;
} beater_t;

#define BEATS 2000

static void *beat_loop(void *arg) {
    beater_t *b = arg;
    for (uint64_t s = 1; s <= BEATS; s++)
        beat(b->m, b->worker, 1, s, b->m->started + 0.001 * (double)s);
    return NULL;
}

void test_master_concurrent_beats(void) {
    master_t m;
    cluster_t c;
    if (make_master(&m, &c))
        return;
    master_answer_t a;
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 0, 1, 1, m.started, &a), RPC_OK);
    CHECK_INT_EQ(master_register(&m, CLUSTER_WORKER, 1, 1, 2, m.started, &a), RPC_OK);
    master_set_target(&m, 1000000);
    beater_t b[2] = {{&m, 0}, {&m, 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        CHECK_INT_EQ(pthread_create(&t[i], NULL, beat_loop, &b[i]), 0);
    double loss, acc;
    for (uint64_t s = 0; s < BEATS; s++) {
        master_advance(&m, s);
        master_check_liveness(&m, m.started + 1.0);
        master_train_metrics(&m, &loss, &acc);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    member_t members[3];
    master_summary_t sum;
    master_snapshot(&m, members, &sum);
    CHECK_INT_EQ(members[1].step, BEATS);
    CHECK_INT_EQ(members[2].step, BEATS);
    CHECK_INT_EQ(members[2].examples, BEATS * 10);
    CHECK_INT_EQ(sum.global_step, BEATS - 1);
    drop_master(&m, &c);
}

static psclient_stats_t ps_at(uint64_t lineage, uint64_t origin) {
    return (psclient_stats_t){.step = 40, .lineage = lineage, .origin_step = origin};
}

void test_master_recovery_decide(void) {
    long odd;
    psclient_stats_t same[3] = {ps_at(5, 0), ps_at(5, 0), ps_at(5, 0)};
    CHECK_INT_EQ(recovery_decide(same, 3, true, &odd), RECOVERY_NONE);
    CHECK_INT_EQ(odd, -1);
    CHECK_INT_EQ(recovery_decide(same, 3, false, &odd), RECOVERY_NONE);
    /* A PS restarted (restored itself under a new lineage): roll back. */
    psclient_stats_t restarted[3] = {ps_at(5, 0), ps_at(5, 0), ps_at(9, 200)};
    CHECK_INT_EQ(recovery_decide(restarted, 3, true, &odd), RECOVERY_ROLLBACK);
    CHECK_INT_EQ(odd, 2);
    /* First sight: each PS started on its own from the same checkpoint,
     * so one model under several lineages: adopt, no rollback. */
    psclient_stats_t fresh[3] = {ps_at(1, 200), ps_at(2, 200), ps_at(3, 200)};
    CHECK_INT_EQ(recovery_decide(fresh, 3, false, &odd), RECOVERY_ADOPT);
    CHECK_INT_EQ(odd, 1);
    /* The same lineages after adoption mean a restart in between. */
    CHECK_INT_EQ(recovery_decide(fresh, 3, true, &odd), RECOVERY_ROLLBACK);
    /* First sight, different starting points: two models, roll back. */
    psclient_stats_t mixed[2] = {ps_at(1, 200), ps_at(2, 0)};
    CHECK_INT_EQ(recovery_decide(mixed, 2, false, &odd), RECOVERY_ROLLBACK);
    CHECK_INT_EQ(odd, 1);
    CHECK_INT_EQ(recovery_decide(mixed, 1, true, &odd), RECOVERY_NONE);
}

void test_master_recovery_stall(void) {
    config_t cfg;
    config_defaults(&cfg);
    cfg.cluster.stall_secs = 5.0;
    recovery_t rv = {.cfg = &cfg};
    recovery_note_step(&rv, 3, 10.0);
    CHECK(!recovery_stalled(&rv, 14.9));
    CHECK(recovery_stalled(&rv, 15.0));
    /* The same step, or an unreachable ps 0 (-1), is no progress. */
    recovery_note_step(&rv, 3, 16.0);
    recovery_note_step(&rv, -1, 16.0);
    CHECK(recovery_stalled(&rv, 16.0));
    recovery_note_step(&rv, 4, 16.0);
    CHECK(!recovery_stalled(&rv, 20.9));
    CHECK_INT_EQ(rv.last_step, 4);
    cfg.cluster.stall_secs = 0;
    CHECK(!recovery_stalled(&rv, 1000.0));
}

void test_master_checkpoint_due(void) {
    config_t cfg;
    config_defaults(&cfg);
    cfg.checkpoint.every_steps = 100;
    cfg.checkpoint.every_secs = 0;
    checkpointer_t c = {.cfg = &cfg, .last_step = 200, .last_time = 0.0};
    CHECK(!checkpointer_due(&c, 299, 1e6));
    CHECK(checkpointer_due(&c, 300, 0.0));
    /* After a failure, not before retry_after, however many steps. */
    c.retry_after = 50.0;
    CHECK(!checkpointer_due(&c, 900, 49.0));
    CHECK(checkpointer_due(&c, 900, 50.0));
    /* By time only. */
    cfg.checkpoint.every_steps = 0;
    cfg.checkpoint.every_secs = 10.0;
    c = (checkpointer_t){.cfg = &cfg, .last_step = 200, .last_time = 100.0};
    CHECK(!checkpointer_due(&c, 201, 109.9));
    CHECK(checkpointer_due(&c, 201, 110.0));
    /* Never the step of the last checkpoint again. */
    CHECK(!checkpointer_due(&c, 200, 1e6));
}

void test_master_checkpoint_resumes_manifest(void) {
    config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.checkpoint.model_dir, sizeof cfg.checkpoint.model_dir, "%s",
             test_path("model_dir"));
    char err[256];
    checkpointer_t c;
    CHECK_INT_EQ(checkpointer_init(&c, NULL, &cfg, NULL, err, sizeof err), 0);
    CHECK_INT_EQ(c.last_step, 0);
    CHECK(!checkpointer_training_over(&c, 0));
    CHECK_INT_EQ(ps_mkdirs(cfg.checkpoint.model_dir, err, sizeof err), 0);
    CHECK_INT_EQ(
        ckpt_manifest_commit(cfg.checkpoint.model_dir, 300, 3, false, NULL, err, sizeof err), 0);
    CHECK_INT_EQ(checkpointer_init(&c, NULL, &cfg, NULL, err, sizeof err), 0);
    CHECK_INT_EQ(c.last_step, 300);
    CHECK(!checkpointer_training_over(&c, 300));
    /* The final checkpoint: a restarted master has nothing left to train,
     * unless the target grew (more epochs asked). */
    CHECK_INT_EQ(
        ckpt_manifest_commit(cfg.checkpoint.model_dir, 400, 3, true, NULL, err, sizeof err), 0);
    CHECK_INT_EQ(checkpointer_init(&c, NULL, &cfg, NULL, err, sizeof err), 0);
    CHECK(checkpointer_training_over(&c, 400));
    CHECK(!checkpointer_training_over(&c, 401));
}

/* pstrain-ps: a parameter server. Holds its partitions of every variable and
 * their optimizer slots, and serves Pull, Push, Save, Restore, Stats and
 * Shutdown; starts from model_dir's latest checkpoint when there is one. Exits 0
 * when the master says training is over. */
#include "common/base/exitcode.h"
#include "common/base/log.h"
#include "common/base/util.h"
#include "common/daemon/daemon.h"
#include "common/train/model_file.h"
#include "ps/run.h"

static void describe(FILE *out) {
    fprintf(out, "A pstrain parameter server: holds its share of the model's variables\n"
                 "(placement splits large ones by rows over every PS) with their optimizer\n"
                 "slots, applies each push with the optimizer (train.mode async) or the mean\n"
                 "of train.replicas_to_aggregate pushes per step (sync), and serves pulls\n"
                 "(in ssp mode holding those of a worker over train.staleness steps ahead).\n"
                 "With SGD momentum and 2 workers or more, an async or ssp PS keeps a\n"
                 "momentum per worker and workers pull the weights their next updates\n"
                 "lead to (train.async_momentum, DANA); otherwise a push computed s\n"
                 "updates ago moves the weights by learning_rate / s (train.staleness_lr;\n"
                 "momentum: the momentum less what asynchrony adds); a sync step can take\n"
                 "the rate times the pushes it averages (train.lr_scaling=linear,\n"
                 "train.warmup_steps). Sparse pushes\n"
                 "(rpc.push_topk) update as the dense gradient with zeros elsewhere.\n"
                 "TF_CONFIG's task must be a ps.\n");
}

int main(int argc, char **argv) {
    rpc_tune_malloc();
    daemon_t d;
    int rc = daemon_parse(&d, "pstrain-ps", CLUSTER_PS, true, argc, argv, describe);
    if (rc >= 0)
        return rc;
    if ((rc = daemon_start(&d)) != 0) {
        daemon_finish(&d);
        return rc;
    }
    model_t m;
    char err[PS_ERRLEN];
    if (model_file_load(&m, d.cfg.model, err, sizeof err)) {
        log_error("%s", err);
        daemon_finish(&d);
        return EXIT_USAGE;
    }
    rc = ps_run(&d, &m);
    model_free(&m);
    daemon_finish(&d);
    return rc;
}

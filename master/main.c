/* pstrain-master: knows every role of the cluster and the global step; when
 * the configured steps are done it evaluates the final model on the test
 * set, writes <model_dir>/eval_results.json, tells the workers and the PS to
 * finish, and exits 0. */
#include "common/base/exitcode.h"
#include "common/daemon/daemon.h"
#include "kernels/backend.h"
#include "master/follow.h"
#include "master/run.h"

static void describe(FILE *out) {
    fprintf(out,
            "The pstrain master: serves Register, Heartbeat and Status and follows the\n"
            "global step (ps 0's update count). Every checkpoint.every_steps steps or\n"
            "checkpoint.every_secs seconds every PS writes its part of\n"
            "<checkpoint.model_dir>/ckpt-<step>/; the master evaluates each checkpoint on the\n"
            "test set (eval_results.json, export/best/). When train.epochs or\n"
            "train.max_steps are done it takes a final checkpoint, tells every PS and\n"
            "worker to finish, evaluates it and exports it to export/<step>/.\n"
            "TF_CONFIG's task must be the master (or chief).\n\n"
            "  --evaluate-only    run as TF_CONFIG's evaluator task: evaluate each new\n"
            "                     checkpoint of model_dir, without connecting to the\n"
            "                     cluster; exit after the final one\n");
}

int main(int argc, char **argv) {
    rpc_tune_malloc();
    daemon_t d;
    int rc = daemon_parse(&d, "pstrain-master", CLUSTER_MASTER, true, argc, argv, describe);
    if (rc >= 0)
        return rc;
    if ((rc = daemon_start(&d)) != 0) {
        daemon_finish(&d);
        return rc;
    }
    cpu_backend_init();
    rc = d.evaluate_only ? follow_main(&d) : master_run(&d);
    daemon_finish(&d);
    return rc;
}

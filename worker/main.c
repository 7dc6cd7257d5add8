/* pstrain-worker: computes gradients. With TF_CONFIG it is one worker of a
 * cluster; without, it trains alone with the parameter store linked in
 * (TensorFlow's local Estimator path). */

#include "common/daemon/daemon.h"
#include "kernels/backend.h"
#include "worker/cli.h"
#include "worker/cluster.h"
#include "worker/local.h"

static void describe(FILE *out) {
    fprintf(out, "Computes gradients for pstrain. With TF_CONFIG (task type worker) it pulls the\n"
                 "model from every PS, computes the gradient of a batch of its shard of the\n"
                 "training data and pushes it back. With no TF_CONFIG it trains alone in this\n"
                 "process and evaluates on the test set after each epoch, writing\n"
                 "<checkpoint.model_dir>/eval_results.json.\n"
                 "SIGINT or SIGTERM stops it after the current step.\n"
                 "  --print-config KEY prints the value KEY has after --config and --set.\n");
}

int main(int argc, char **argv) {
    int rc = worker_print_config(argc, argv);
    if (rc >= 0)
        return rc;
    rpc_tune_malloc();
    daemon_t d;
    rc = daemon_parse(&d, "pstrain-worker", CLUSTER_WORKER, false, argc, argv, describe);
    if (rc >= 0)
        return rc;
    cpu_backend_init();
    const backend_t *be = NULL;
    if ((rc = daemon_start(&d)) != 0 || (rc = worker_open_device(&d.cfg, &be)) != 0) {
        daemon_finish(&d);
        return rc;
    }
    rc = d.have_cluster ? cluster_train(&d, be) : local_train(&d.cfg, be, &daemon_stop_signal);
    daemon_finish(&d);
    return rc;
}

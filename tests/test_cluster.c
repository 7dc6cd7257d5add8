/* TF_CONFIG: the format TensorFlow documents, what Kubeflow's TFJob injects,
 * the sparse form, and one message per mistake. */
#include "test.h"

#include <stdlib.h>

#include "common/daemon/cluster.h"
#include "common/base/util.h"

#define TF_EXAMPLE                                                                                 \
    "{\"cluster\": {\"master\": [\"h0:2222\"], \"ps\": [\"h1:2222\",\"h2:2222\"], "                \
    "\"worker\": [\"h3:2222\",\"h4:2222\"]}, \"task\": {\"type\": \"worker\", \"index\": 1}, "     \
    "\"environment\": \"cloud\"}"

/* Parses text that must fail and checks that the one-line message contains want. */
static int expect_error(const char *json, const char *want) {
    cluster_t c;
    char err[PS_ERRLEN] = "";
    if (cluster_parse(&c, json, err, sizeof err) == 0) {
        test_fail(__FILE__, __LINE__, "parsed, wanted the error \"%s\":\n  %s", want, json);
        cluster_free(&c);
        return -1;
    }
    if (!strstr(err, want) || strchr(err, '\n') || strncmp(err, "TF_CONFIG", 9) != 0) {
        test_fail(__FILE__, __LINE__, "error \"%s\" does not contain \"%s\"\n  for %s", err, want,
                  json);
        return -1;
    }
    return 0;
}

/* A TF_CONFIG with the given cluster body and task. */
static char *spec(const char *cluster, const char *type, int index) {
    char *s = NULL;
    if (asprintf(&s, "{\"cluster\": {%s}, \"task\": {\"type\": \"%s\", \"index\": %d}}", cluster,
                 type, index) < 0)
        abort();
    return s;
}

static int error_for(const char *cluster, const char *type, int index, const char *want) {
    char *s = spec(cluster, type, index);
    int rc = expect_error(s, want);
    free(s);
    return rc;
}

#define BASE "\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]"

void test_cluster_tf_format(void) {
    cluster_t c;
    char err[PS_ERRLEN];
    CHECK(cluster_parse(&c, TF_EXAMPLE, err, sizeof err) == 0);
    CHECK(!c.chief_spelling);
    CHECK_INT_EQ(c.jobs[CLUSTER_MASTER].n, 1);
    CHECK(strcmp(c.jobs[CLUSTER_MASTER].addr[0].text, "h0:2222") == 0);
    CHECK_INT_EQ(c.jobs[CLUSTER_PS].n, 2);
    CHECK_INT_EQ(c.jobs[CLUSTER_PS].span, 2);
    CHECK(strcmp(c.jobs[CLUSTER_PS].addr[1].host, "h2") == 0);
    CHECK_INT_EQ(c.jobs[CLUSTER_WORKER].n, 2);
    CHECK(!c.jobs[CLUSTER_WORKER].sparse);
    CHECK(!c.jobs[CLUSTER_EVALUATOR].present);
    CHECK_INT_EQ(c.jobs[CLUSTER_EVALUATOR].n, 0);
    CHECK_INT_EQ(c.task_role, CLUSTER_WORKER);
    CHECK_INT_EQ(c.task_index, 1);
    CHECK(c.task_listed);
    CHECK(strcmp(cluster_task_type(&c), "worker") == 0);
    const cluster_addr_t *self = cluster_self(&c);
    CHECK(self != NULL);
    CHECK(strcmp(self->host, "h4") == 0);
    CHECK_INT_EQ(self->port, 2222);
    CHECK(strcmp(self->text, "h4:2222") == 0);
    CHECK(c.environment && strcmp(c.environment, "cloud") == 0);
    CHECK(c.rpc_layer == NULL);
    CHECK(c.model_dir == NULL);
    CHECK(cluster_expect_role(&c, CLUSTER_WORKER, "pstrain-worker", err, sizeof err) == 0);
    cluster_free(&c);
    /* cluster_free leaves a struct that can be freed again. */
    cluster_free(&c);
}

void test_cluster_chief_synonym(void) {
    cluster_t c;
    char err[PS_ERRLEN];
    char *s =
        spec("\"chief\": [\"c0:2222\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]", "chief", 0);
    int rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK(c.chief_spelling);
    CHECK(c.task_chief_spelling);
    CHECK_INT_EQ(c.task_role, CLUSTER_MASTER);
    CHECK(strcmp(cluster_task_type(&c), "chief") == 0);
    CHECK(strcmp(cluster_role_name(c.task_role), "master") == 0);
    CHECK(strcmp(cluster_self(&c)->text, "c0:2222") == 0);
    CHECK(cluster_expect_role(&c, CLUSTER_MASTER, "pstrain-master", err, sizeof err) == 0);
    cluster_free(&c);
    /* Either spelling of the task names the one master, whichever the cluster uses. */
    s = spec("\"chief\": [\"c0:2222\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]", "master", 0);
    rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK(c.chief_spelling && !c.task_chief_spelling);
    cluster_free(&c);
    s = spec(BASE, "chief", 0);
    rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK(!c.chief_spelling && c.task_chief_spelling);
    CHECK(strcmp(cluster_self(&c)->text, "m:1") == 0);
    cluster_free(&c);
    /* Messages quote the spelling the cluster used. */
    CHECK(error_for("\"chief\": [\"c:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]", "chief", 1,
                    "task.index 1 is out of range: cluster.chief has 1 entry") == 0);
}

void test_cluster_evaluator(void) {
    cluster_t c;
    char err[PS_ERRLEN];
    /* Listed in the cluster: the evaluator's address is its own. */
    char *s = spec(BASE ", \"evaluator\": [\"e:2222\"]", "evaluator", 0);
    int rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK_INT_EQ(c.task_role, CLUSTER_EVALUATOR);
    CHECK(c.task_listed);
    CHECK_INT_EQ(c.jobs[CLUSTER_EVALUATOR].n, 1);
    CHECK(strcmp(cluster_self(&c)->text, "e:2222") == 0);
    CHECK(cluster_expect_role(&c, CLUSTER_EVALUATOR, "pstrain-master", err, sizeof err) == 0);
    cluster_free(&c);
    /* Outside the training cluster, as TensorFlow's RunConfig and TFJob have it. */
    s = spec(BASE, "evaluator", 0);
    rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK_INT_EQ(c.task_role, CLUSTER_EVALUATOR);
    CHECK(!c.task_listed);
    CHECK(cluster_self(&c) == NULL);
    cluster_free(&c);
    /* An empty evaluator list is no evaluator. */
    s = spec(BASE ", \"evaluator\": []", "worker", 0);
    rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK_INT_EQ(c.jobs[CLUSTER_EVALUATOR].n, 0);
    cluster_free(&c);
    s = spec(BASE ", \"evaluator\": []", "evaluator", 0);
    rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK(!c.task_listed);
    cluster_free(&c);
    CHECK(error_for(BASE ", \"evaluator\": [\"e:1\", \"e:2\"]", "evaluator", 0,
                    "cluster.evaluator must list at most one address, got 2") == 0);
    CHECK(error_for(BASE ", \"evaluator\": [\"e:1\"]", "evaluator", 1,
                    "task.index 1 is out of range: cluster.evaluator has 1 entry") == 0);
    CHECK(error_for(BASE, "evaluator", -1, "task.index -1 must be 0 or more") == 0);
    CHECK(error_for(BASE ", \"evaluator\": {\"1\": \"e:1\"}", "evaluator", 1,
                    "cluster.evaluator must have its one task at index 0") == 0);
}

/* What Kubeflow's TFJob controller sets in each pod of a job named mnist with
 * Master, PS and Worker replicas: headless-service names, port 2222, and
 * "environment": "cloud". */
void test_cluster_tfjob_format(void) {
    static const char *const cluster =
        "{\"cluster\":{\"master\":[\"mnist-master-0.default.svc:2222\"],"
        "\"ps\":[\"mnist-ps-0.default.svc:2222\",\"mnist-ps-1.default.svc:2222\"],"
        "\"worker\":[\"mnist-worker-0.default.svc:2222\",\"mnist-worker-1.default.svc:2222\","
        "\"mnist-worker-2.default.svc:2222\"]},"
        "\"task\":{\"type\":\"%s\",\"index\":%d},\"environment\":\"cloud\"}";
    static const struct {
        const char *type;
        int count;
        cluster_role_t role;
        const char *program;
    } pods[] = {{"master", 1, CLUSTER_MASTER, "pstrain-master"},
                {"ps", 2, CLUSTER_PS, "pstrain-ps"},
                {"worker", 3, CLUSTER_WORKER, "pstrain-worker"}};
    for (size_t p = 0; p < PS_ARRAY_LEN(pods); p++) {
        for (int i = 0; i < pods[p].count; i++) {
            char json[1024], want[128], err[PS_ERRLEN];
            snprintf(json, sizeof json, cluster, pods[p].type, i);
            snprintf(want, sizeof want, "mnist-%s-%d.default.svc:2222", pods[p].type, i);
            cluster_t c;
            CHECK(cluster_parse(&c, json, err, sizeof err) == 0);
            CHECK_INT_EQ(c.task_role, pods[p].role);
            CHECK_INT_EQ(c.task_index, i);
            CHECK(strcmp(cluster_self(&c)->text, want) == 0);
            CHECK_INT_EQ(cluster_self(&c)->port, 2222);
            CHECK(strcmp(c.environment, "cloud") == 0);
            CHECK(cluster_expect_role(&c, pods[p].role, pods[p].program, err, sizeof err) == 0);
            cluster_free(&c);
        }
    }
    /* The newer controller: Chief, PS, Worker and an Evaluator replica, which
     * it leaves out of "cluster" (the evaluator is not part of training). */
    static const char *const evaluator_pod =
        "{\"cluster\":{\"chief\":[\"dist-chief-0.kubeflow.svc:2222\"],"
        "\"ps\":[\"dist-ps-0.kubeflow.svc:2222\"],"
        "\"worker\":[\"dist-worker-0.kubeflow.svc:2222\",\"dist-worker-1.kubeflow.svc:2222\"]},"
        "\"task\":{\"type\":\"evaluator\",\"index\":0},\"environment\":\"cloud\"}";
    cluster_t c;
    char err[PS_ERRLEN];
    CHECK(cluster_parse(&c, evaluator_pod, err, sizeof err) == 0);
    CHECK(c.chief_spelling);
    CHECK_INT_EQ(c.task_role, CLUSTER_EVALUATOR);
    CHECK(!c.task_listed);
    CHECK(cluster_expect_role(&c, CLUSTER_EVALUATOR, "pstrain-master", err, sizeof err) == 0);
    cluster_free(&c);
}

/* TFJob's sparse form: an object of index -> address, with holes allowed for workers. */
void test_cluster_sparse_form(void) {
    cluster_t c;
    char err[PS_ERRLEN];
    static const char *const json =
        "{\"cluster\": {\"master\": [\"m:2222\"], \"ps\": [\"p0:2222\", \"p1:2222\"],"
        " \"worker\": {\"3\": \"w3:2222\", \"0\": \"w0:2222\"}},"
        " \"task\": {\"type\": \"worker\", \"index\": 3}}";
    CHECK(cluster_parse(&c, json, err, sizeof err) == 0);
    const cluster_job_t *w = &c.jobs[CLUSTER_WORKER];
    CHECK(w->sparse);
    CHECK_INT_EQ(w->n, 2);
    CHECK_INT_EQ(w->span, 4);
    CHECK_INT_EQ(w->addr[0].index, 0);
    CHECK_INT_EQ(w->addr[1].index, 3);
    CHECK(cluster_find(&c, CLUSTER_WORKER, 1) == NULL);
    CHECK(strcmp(cluster_find(&c, CLUSTER_WORKER, 0)->host, "w0") == 0);
    CHECK(strcmp(cluster_self(&c)->text, "w3:2222") == 0);
    CHECK(cluster_find(&c, CLUSTER_WORKER, 4) == NULL);
    cluster_free(&c);
    /* A sparse PS list is fine when it names every PS. */
    char *s;
    s = spec("\"master\": {\"0\": \"m:1\"}, \"ps\": {\"1\": \"p1:1\", \"0\": \"p0:1\"}, "
             "\"worker\": {\"0\": \"w:1\"}",
             "ps", 1);
    int rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    CHECK(rc == 0);
    CHECK_INT_EQ(c.jobs[CLUSTER_PS].n, 2);
    CHECK(strcmp(cluster_self(&c)->text, "p1:1") == 0);
    cluster_free(&c);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"3\": \"w:1\"}",
                    "worker", 1, "task.index 1 is not a key of cluster.worker") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": {\"0\": \"p:1\", \"2\": \"p:2\"}, "
                    "\"worker\": [\"w:1\"]",
                    "worker", 0, "cluster.ps has no task 1: every parameter server") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"03\": \"w:1\"}",
                    "worker", 3, "cluster.worker key \"03\" is not a task index") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"one\": \"w:1\"}",
                    "worker", 1, "cluster.worker key \"one\" is not a task index") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"100000\": "
                    "\"w:1\"}",
                    "worker", 0,
                    "cluster.worker key \"100000\" is not a task index (want \"0\" to "
                    "\"99999\")") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"-1\": \"w:1\"}",
                    "worker", 0, "cluster.worker key \"-1\" is not a task index") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"2\": \"w\"}",
                    "worker", 2, "cluster.worker[\"2\"] \"w\" is not host:port") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"2\": 5}", "worker", 2,
                    "cluster.worker[\"2\"] must be a \"host:port\" string, got int") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {\"0\": \"w:1\", "
                    "\"5\": \"m:1\"}",
                    "worker", 0,
                    "cluster.worker[\"5\"] \"m:1\" duplicates cluster.master[0]") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": {}", "worker", 0,
                    "cluster.worker must list at least one address") == 0);
}

/* The keys TensorFlow and TFJob add beside "cluster" and "task". */
void test_cluster_rpc_layer(void) {
    cluster_t c;
    char err[PS_ERRLEN];
    static const char *const json =
        "{\"cluster\": {\"chief\": [\"c:2222\"], \"ps\": [\"p:2222\"], \"worker\": [\"w:2222\"]},"
        " \"task\": {\"type\": \"worker\", \"index\": 0, \"trial\": \"1\"},"
        " \"rpc_layer\": \"grpc+tls\", \"environment\": \"google\", \"model_dir\": \"/ckpt/run1\","
        " \"session_master\": \"grpc://c:2222\", \"service\": {\"k\": 1}, \"job\": {\"x\": [1]}}";
    CHECK(cluster_parse(&c, json, err, sizeof err) == 0);
    CHECK(strcmp(c.rpc_layer, "grpc+tls") == 0);
    CHECK(strcmp(c.environment, "google") == 0);
    CHECK(strcmp(c.model_dir, "/ckpt/run1") == 0);
    cluster_free(&c);
    CHECK(cluster_parse(&c,
                        "{\"cluster\": {" BASE "}, \"task\": {\"type\": \"ps\", \"index\": 0},"
                        " \"rpc_layer\": \"grpc\"}",
                        err, sizeof err) == 0);
    CHECK(strcmp(c.rpc_layer, "grpc") == 0);
    CHECK(c.environment == NULL);
    cluster_free(&c);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"type\": \"ps\", \"index\": 0},"
                       " \"rpc_layer\": 3}",
                       "TF_CONFIG: \"rpc_layer\" must be a string, got int") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"type\": \"ps\", \"index\": 0},"
                       " \"environment\": [\"cloud\"]}",
                       "TF_CONFIG: \"environment\" must be a string, got array") == 0);
}

static int parses_addr(const char *addr, const char *host, int port) {
    char cl[512];
    snprintf(cl, sizeof cl, "\"master\": [\"%s\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]", addr);
    char *s = spec(cl, "master", 0);
    cluster_t c;
    char err[PS_ERRLEN];
    int rc = cluster_parse(&c, s, err, sizeof err);
    free(s);
    if (rc) {
        test_fail(__FILE__, __LINE__, "%s: %s", addr, err);
        return -1;
    }
    const cluster_addr_t *a = cluster_self(&c);
    if (strcmp(a->host, host) != 0 || a->port != port || strcmp(a->text, addr) != 0) {
        test_fail(__FILE__, __LINE__, "%s: host \"%s\" port %d text \"%s\"", addr, a->host, a->port,
                  a->text);
        rc = -1;
    }
    cluster_free(&c);
    return rc;
}

static int bad_addr(const char *addr, const char *why) {
    char cl[512], want[512];
    snprintf(cl, sizeof cl,
             "\"master\": [\"m:1\"], \"ps\": [\"p:1\", \"%s\"], \"worker\": [\"w:1\"]", addr);
    snprintf(want, sizeof want, "TF_CONFIG: cluster.ps[1] \"%s\" is not host:port (%s", addr, why);
    return error_for(cl, "ps", 0, want);
}

void test_cluster_addresses(void) {
    CHECK(parses_addr("h0:2222", "h0", 2222) == 0);
    CHECK(parses_addr("10.0.0.7:1", "10.0.0.7", 1) == 0);
    CHECK(parses_addr("[::1]:2222", "::1", 2222) == 0);
    CHECK(parses_addr("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535) == 0);
    CHECK(parses_addr("mnist-ps-0.default.svc.cluster.local:2222",
                      "mnist-ps-0.default.svc.cluster.local", 2222) == 0);
    CHECK(parses_addr("my_host:8080", "my_host", 8080) == 0);
    CHECK(bad_addr("h1", "no \":port\"") == 0);
    CHECK(bad_addr(":2222", "empty host") == 0);
    CHECK(bad_addr("h1:", "empty port") == 0);
    CHECK(bad_addr("h1:0", "port must be a number in 1..65535") == 0);
    CHECK(bad_addr("h1:65536", "port must be a number in 1..65535") == 0);
    CHECK(bad_addr("h1:022222", "port must be a number in 1..65535") == 0);
    CHECK(bad_addr("h1:-1", "port must be a number in 1..65535") == 0);
    CHECK(bad_addr("h1:22a", "port must be a number in 1..65535") == 0);
    CHECK(bad_addr("h1:2222 ", "port must be a number in 1..65535") == 0);
    CHECK(bad_addr("::1:2222", "an IPv6 address needs brackets") == 0);
    CHECK(bad_addr("[::1]2222", "no \":port\" after the ']'") == 0);
    CHECK(bad_addr("[::1:2222", "no closing ']'") == 0);
    CHECK(bad_addr("[]:2222", "empty host") == 0);
    CHECK(bad_addr("[h1]:2222", "brackets hold an IPv6 address") == 0);
    CHECK(bad_addr("h 1:2222", "bad character in the host") == 0);
    CHECK(bad_addr("grpc://h1:2222", "a URL; give host:port without a scheme") == 0);
    char longhost[300], addr[320];
    memset(longhost, 'a', 256);
    longhost[256] = '\0';
    snprintf(addr, sizeof addr, "%s:1", longhost);
    CHECK(bad_addr(addr, "host longer than 255 characters") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\", 7], \"worker\": [\"w:1\"]", "ps", 0,
                    "TF_CONFIG: cluster.ps[1] must be a \"host:port\" string, got int") == 0);
}

/* Every mistake of the issue, each with its message. */
void test_cluster_errors(void) {
    /* 17 bytes, cut off inside the cluster. */
    CHECK(expect_error("{\"cluster\": {\"ps\"",
                       "TF_CONFIG: not JSON: unexpected end of data at offset 17") == 0);
    CHECK(expect_error("{\"cluster\": {,}}", "TF_CONFIG: not JSON: ") == 0);
    CHECK(expect_error("{\"cluster\": {}} trailing", "TF_CONFIG: not JSON: ") == 0);
    CHECK(expect_error("{\"task\": {\"type\": \"ps\",}}", "TF_CONFIG: not JSON: ") == 0);
    CHECK(expect_error("", "TF_CONFIG: empty") == 0);
    CHECK(expect_error("  \n", "TF_CONFIG: empty") == 0);
    CHECK(expect_error("[1, 2]", "TF_CONFIG: must be a JSON object with \"cluster\" and \"task\", "
                                 "got array") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}}", "TF_CONFIG: missing \"task\"") == 0);
    CHECK(expect_error("{\"task\": {\"type\": \"ps\", \"index\": 0}}",
                       "TF_CONFIG: missing \"cluster\"") == 0);
    CHECK(expect_error("{\"cluster\": [\"h:1\"], \"task\": {\"type\": \"ps\", \"index\": 0}}",
                       "TF_CONFIG: \"cluster\" must be an object mapping roles to addresses") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": \"ps\"}",
                       "TF_CONFIG: \"task\" must be an object like") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"index\": 0}}",
                       "TF_CONFIG: missing \"task.type\"") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"type\": 1, \"index\": 0}}",
                       "TF_CONFIG: task.type must be a string, got int") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"type\": \"ps\"}}",
                       "TF_CONFIG: missing \"task.index\"") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"type\": \"ps\", \"index\": 0.5}}",
                       "TF_CONFIG: task.index must be an integer, got double") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"type\": \"ps\", \"index\": \"x\"}}",
                       "TF_CONFIG: task.index \"x\" is not an integer") == 0);
    CHECK(expect_error("{\"cluster\": {" BASE "}, \"task\": {\"type\": \"ps\", "
                       "\"index\": 99999999999}}",
                       "TF_CONFIG: task.index 99999999999 is out of range") == 0);
    CHECK(error_for(BASE, "boss", 0,
                    "TF_CONFIG: task.type \"boss\" is not one of master, chief, ps, worker, "
                    "evaluator") == 0);
    CHECK(error_for(BASE, "Worker", 0, "task.type \"Worker\" is not one of") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": [\"h3:1\", \"h4:1\"]",
                    "worker", 3,
                    "TF_CONFIG: task.index 3 is out of range: cluster.worker has 2 "
                    "entries") == 0);
    CHECK(error_for(BASE, "ps", -1,
                    "TF_CONFIG: task.index -1 is out of range: cluster.ps has 1 "
                    "entry") == 0);
    CHECK(error_for(BASE, "master", 1,
                    "TF_CONFIG: task.index 1 is out of range: cluster.master "
                    "has 1 entry") == 0);
    CHECK(error_for("\"chief\": [\"c:1\", \"c:2\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]",
                    "chief", 0,
                    "TF_CONFIG: cluster.chief must list exactly one address, got 2") == 0);
    CHECK(error_for("\"master\": [], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]", "ps", 0,
                    "TF_CONFIG: cluster.master must list exactly one address, got 0") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"chief\": [\"c:1\"], \"ps\": [\"p:1\"], "
                    "\"worker\": [\"w:1\"]",
                    "ps", 0,
                    "TF_CONFIG: cluster has both \"master\" and \"chief\"; give one") == 0);
    CHECK(error_for("\"chief\": [\"c:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"], "
                    "\"master\": [\"m:1\"]",
                    "ps", 0,
                    "TF_CONFIG: cluster has both \"master\" and \"chief\"; give one") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"h0:2222\", \"h1\"], \"worker\": [\"w:1\"]",
                    "ps", 0, "TF_CONFIG: cluster.ps[1] \"h1\" is not host:port") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"h3:2222\", \"h1:2222\"], "
                    "\"worker\": [\"h4:2222\", \"h3:2222\"]",
                    "worker", 0,
                    "TF_CONFIG: cluster.worker[1] \"h3:2222\" duplicates cluster.ps[0]") == 0);
    /* Host names are case-insensitive. */
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\", \"P:1\"], \"worker\": [\"w:1\"]",
                    "ps", 0, "TF_CONFIG: cluster.ps[1] \"P:1\" duplicates cluster.ps[0]") == 0);
    CHECK(error_for(BASE ", \"evaluator\": [\"w:1\"]", "ps", 0,
                    "TF_CONFIG: cluster.evaluator[0] \"w:1\" duplicates cluster.worker[0]") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"worker\": [\"w:1\"]", "worker", 0,
                    "TF_CONFIG: cluster has no \"ps\"") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [\"p:1\"]", "ps", 0,
                    "TF_CONFIG: cluster has no \"worker\"") == 0);
    CHECK(error_for("\"ps\": [\"p:1\"], \"worker\": [\"w:1\"]", "ps", 0,
                    "TF_CONFIG: cluster has no \"master\" (or \"chief\")") == 0);
    CHECK(error_for(BASE ", \"boss\": [\"b:1\"]", "ps", 0,
                    "TF_CONFIG: cluster has unknown role \"boss\"") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": [], \"worker\": [\"w:1\"]", "worker", 0,
                    "TF_CONFIG: cluster.ps must list at least one address") == 0);
    CHECK(error_for("\"master\": [\"m:1\"], \"ps\": \"p:1\", \"worker\": [\"w:1\"]", "worker", 0,
                    "TF_CONFIG: cluster.ps must be a list of \"host:port\" strings or an object") ==
          0);
    /* A task index given as a decimal string, as TensorFlow's int() accepts it. */
    cluster_t c;
    char err[PS_ERRLEN];
    CHECK(cluster_parse(&c,
                        "{\"cluster\": {" BASE "}, \"task\": {\"type\": \"worker\", \"index\": "
                        "\"0\"}}",
                        err, sizeof err) == 0);
    CHECK_INT_EQ(c.task_index, 0);
    cluster_free(&c);
}

/* Each daemon refuses a task of another role: every (task type, program) pair. */
void test_cluster_expect_role(void) {
    static const struct {
        const char *type;
        const char *cluster;
        cluster_role_t accepts;
    } tasks[] = {
        {"master", BASE, CLUSTER_MASTER},
        {"chief", "\"chief\": [\"c:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]", CLUSTER_MASTER},
        {"ps", BASE, CLUSTER_PS},
        {"worker", BASE, CLUSTER_WORKER},
        {"evaluator", BASE ", \"evaluator\": [\"e:1\"]", CLUSTER_EVALUATOR},
        {"evaluator", BASE, CLUSTER_EVALUATOR},
    };
    static const char *const programs[CLUSTER_NROLES] = {
        "pstrain-master", "pstrain-ps", "pstrain-worker", "pstrain-master --evaluate-only"};
    for (size_t t = 0; t < PS_ARRAY_LEN(tasks); t++) {
        cluster_t c;
        char err[PS_ERRLEN];
        char *s = spec(tasks[t].cluster, tasks[t].type, 0);
        int rc = cluster_parse(&c, s, err, sizeof err);
        free(s);
        CHECK(rc == 0);
        for (int r = 0; r < CLUSTER_NROLES; r++) {
            err[0] = '\0';
            rc = cluster_expect_role(&c, (cluster_role_t)r, programs[r], err, sizeof err);
            if ((cluster_role_t)r == tasks[t].accepts) {
                CHECK_INT_EQ(rc, 0);
                continue;
            }
            CHECK_INT_EQ(rc, -1);
            char want[256];
            snprintf(want, sizeof want, "TF_CONFIG: task.type \"%s\" does not match %s, which runs",
                     tasks[t].type, programs[r]);
            CHECK_STR_CONTAINS(err, want);
            CHECK(strchr(err, '\n') == NULL);
            if (tasks[t].accepts == CLUSTER_EVALUATOR)
                CHECK_STR_CONTAINS(err, "run by pstrain-master --evaluate-only");
            if (r == CLUSTER_MASTER)
                CHECK_STR_CONTAINS(err, "runs master (or chief) tasks");
        }
        cluster_free(&c);
    }
    cluster_t c;
    char err[PS_ERRLEN];
    char *s = spec(BASE, "ps", 0);
    CHECK(cluster_parse(&c, s, err, sizeof err) == 0);
    free(s);
    CHECK(cluster_expect_role(&c, CLUSTER_WORKER, NULL, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, "does not match this program, which runs worker tasks");
    cluster_free(&c);
}

void test_cluster_load(void) {
    cluster_t c;
    char err[PS_ERRLEN];
    unsetenv("TF_CONFIG");
    CHECK(cluster_load(&c, NULL, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, "TF_CONFIG is not set");
    CHECK_STR_CONTAINS(err, "--tf-config FILE");
    setenv("TF_CONFIG", "", 1);
    CHECK(cluster_load(&c, NULL, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, "TF_CONFIG is empty");
    setenv("TF_CONFIG", TF_EXAMPLE, 1);
    CHECK(cluster_load(&c, NULL, err, sizeof err) == 0);
    CHECK_INT_EQ(c.task_index, 1);
    cluster_free(&c);
    setenv("TF_CONFIG", "{\"cluster\": {" BASE "}}", 1);
    CHECK(cluster_load(&c, NULL, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, "TF_CONFIG: missing \"task\"");

    /* A file wins over the environment. */
    char path[512];
    snprintf(path, sizeof path, "%s/tf_config.json", test_tmpdir());
    CHECK(ps_write_file_atomic(path, TF_EXAMPLE, strlen(TF_EXAMPLE), err, sizeof err) == 0);
    CHECK(cluster_load(&c, path, err, sizeof err) == 0);
    CHECK(strcmp(cluster_self(&c)->text, "h4:2222") == 0);
    cluster_free(&c);
    static const char bad[] = "{\"cluster\": {" BASE "}, \"task\": {\"type\": \"boss\", "
                              "\"index\": 0}}";
    CHECK(ps_write_file_atomic(path, bad, strlen(bad), err, sizeof err) == 0);
    CHECK(cluster_load(&c, path, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, ": TF_CONFIG: task.type \"boss\" is not one of");
    snprintf(path, sizeof path, "%s/missing.json", test_tmpdir());
    CHECK(cluster_load(&c, path, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, "TF_CONFIG: cannot read");
    CHECK_STR_CONTAINS(err, "missing.json");
}

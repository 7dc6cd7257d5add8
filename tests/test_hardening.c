/* Hostile input (issue 17): what a peer or a file says is escaped before
 * it is logged, the warnings a peer can trigger are limited, and the small
 * parser faults found from outside stay fixed. The injections go over real
 * gRPC to the PS's own service in this process; its log is this process's
 * stderr, captured. */
#include "test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"
#include "common/daemon/cluster.h"
#include "common/model/model.h"
#include "common/rpc/rpc.h"
#include "test_helpers.h"

#define FORGED "x\n2026-01-01 00:00:00.000 ps0[1] ERROR forged line\x1b[2J"

static int capture_start(const char *path) {
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    dup2(fd, STDERR_FILENO);
    close(fd);
    return saved;
}

/* What was written to stderr since capture_start (caller frees). */
static char *capture_end(int saved, const char *path) {
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *text = xcalloc(1, 65536);
    FILE *f = fopen(path, "rb");
    if (f) {
        text[fread(text, 1, 65535, f)] = '\0';
        fclose(f);
    }
    fputs(text, stderr);
    return text;
}

/* No line starts with the forged prefix's time, no ESC byte got through,
 * and the escaped form is there. */
static void check_not_forged(const char *text) {
    CHECK(strstr(text, "\n2026-01-01") == NULL && strncmp(text, "2026-01-01", 10) != 0);
    CHECK(strchr(text, 0x1b) == NULL);
    CHECK_STR_CONTAINS(text, "x\\n2026-01-01 00:00:00.000 ps0[1] ERROR forged line\\x1b[2J");
}

void test_log_escape_controls(void) {
    char out[128];
    CHECK(strcmp(log_escape("a\nb\tc\r\x1b[2J\x7f", out, sizeof out),
                 "a\\nb\\tc\\r\\x1b[2J\\x7f") == 0);
    /* Printable UTF-8 stays; a C1 control (U+009B, CSI), a stray
     * continuation byte, an overlong form and a cut sequence do not. */
    CHECK(strcmp(log_escape("caf\xc3\xa9 \xe2\x82\xac", out, sizeof out),
                 "caf\xc3\xa9 \xe2\x82\xac") == 0);
    CHECK(strcmp(log_escape("\xc2\x9b"
                            "1m",
                            out, sizeof out),
                 "\\xc2\\x9b1m") == 0);
    CHECK(strcmp(log_escape("\x80\xc0\xaf\xe2\x82", out, sizeof out),
                 "\\x80\\xc0\\xaf\\xe2\\x82") == 0);
    /* Cut to the buffer, never in the middle of an escape. */
    CHECK(strcmp(log_escape("ab\x1b", out, 6), "ab") == 0);
    CHECK(strcmp(log_escape("abc", out, 1), "") == 0);
}

void test_log_limit_counts(void) {
    log_limit_t l;
    memset(&l, 0, sizeof l);
    unsigned long long dropped = 99;
    for (int i = 0; i < LOG_LIMIT_BURST; i++) {
        CHECK(log_limit_pass(&l, 100.0 + i * 0.1, &dropped));
        CHECK_INT_EQ(dropped, 0);
    }
    for (int i = 0; i < 1000; i++)
        CHECK(!log_limit_pass(&l, 101.0 + i * 0.001, &dropped));
    /* The next interval lets lines through again, the first with the count. */
    CHECK(log_limit_pass(&l, 100.0 + LOG_LIMIT_INTERVAL_S + 0.1, &dropped));
    CHECK_INT_EQ(dropped, 1000);
    CHECK(log_limit_pass(&l, 100.0 + LOG_LIMIT_INTERVAL_S + 0.2, &dropped));
    CHECK_INT_EQ(dropped, 0);
    /* Through the logger: a flood of 200 warnings is at most a burst of lines. */
    const char *log = test_path("stderr.log");
    log_limit_t flood;
    memset(&flood, 0, sizeof flood);
    int saved = capture_start(log);
    for (int i = 0; i < 200; i++)
        log_warn_limited(&flood, "bad client %d", i);
    char *text = capture_end(saved, log);
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "bad client")); p++)
        lines++;
    CHECK_INT_EQ(lines, LOG_LIMIT_BURST);
    free(text);
}

/* Sends the request to the PS: it must be refused INVALID_ARGUMENT, and what
 * the PS logged meanwhile must hold no forged line. */
static void refused_unforged(test_ps_t *e, const char *method, const uint8_t *buf, size_t len) {
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN];
    const char *log = test_path("stderr.log");
    int saved = capture_start(log);
    int code = rpc_call(e->ch, method, buf, len, 10.0, &resp, err, sizeof err);
    char *text = capture_end(saved, log);
    CHECK_INT_EQ(code, RPC_INVALID_ARGUMENT);
    check_not_forged(text);
    free(text);
    rpc_buf_free(&resp);
}

/* Issue 17, item 6: a push naming a tensor with a newline and an escape
 * sequence forged a log line of the PS; now it is one escaped line. */
void test_hardening_push_name_injection(void) {
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    float g = 0.5f;
    Pstrain__Tensor t = PSTRAIN__TENSOR__INIT;
    t.name = FORGED;
    t.rows = 1;
    t.data.data = (uint8_t *)&g;
    t.data.len = sizeof g;
    Pstrain__Tensor *tp = &t;
    Pstrain__Caller c = PSTRAIN__CALLER__INIT;
    c.role = "worker";
    Pstrain__PushRequest r = PSTRAIN__PUSH_REQUEST__INIT;
    r.caller = &c;
    r.n_grads = 1;
    r.grads = &tp;
    uint8_t buf[256];
    size_t len = pstrain__push_request__pack(&r, buf);
    refused_unforged(&e, "/pstrain.ParameterServer/Push", buf, len);
    test_ps_stop(&e);
}

void test_hardening_pull_name_injection(void) {
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    char *names[1] = {FORGED};
    Pstrain__PullRequest r = PSTRAIN__PULL_REQUEST__INIT;
    r.n_names = 1;
    r.names = names;
    uint8_t buf[256];
    size_t len = pstrain__pull_request__pack(&r, buf);
    refused_unforged(&e, "/pstrain.ParameterServer/Pull", buf, len);
    test_ps_stop(&e);
}

/* Parses a TF_CONFIG that must fail with an error containing want. */
static void tf_config_error(const char *json, const char *want) {
    cluster_t c;
    char err[PS_ERRLEN] = "";
    int rc = cluster_parse(&c, json, err, sizeof err);
    if (rc == 0)
        cluster_free(&c);
    CHECK_INT_EQ(rc, -1);
    CHECK_STR_CONTAINS(err, want);
}

#define TASK "\"task\": {\"type\": \"ps\", \"index\": 0}"

/* Issue 17, item 9: "not JSON: success at offset 4". */
void test_hardening_tf_config_null(void) {
    tf_config_error("null", "must be a JSON object with \"cluster\" and \"task\", got null");
    tf_config_error("  null ", "got null");
}

/* Issue 17, item 9: "127.0.0.1:31002\u0000junk" was taken as 127.0.0.1:31002. */
void test_hardening_tf_config_nul_address(void) {
    tf_config_error(
        "{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"127.0.0.1:31002\\u0000junk\"], "
        "\"worker\": [\"w:1\"]}, " TASK "}",
        "cluster.ps[0] \"127.0.0.1:31002\" holds a NUL character");
    tf_config_error(
        "{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]}, "
        "\"model_dir\": \"/tmp/a\\u0000b\", " TASK "}",
        "\"model_dir\" holds a NUL character");
}

/* Issue 17, item 9: a second "ps" key replaced the first. */
void test_hardening_tf_config_duplicate_key(void) {
    tf_config_error(
        "{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"], "
        "\"ps\": [\"evil:1\"]}, " TASK "}",
        "key \"ps\" appears twice in one object");
    tf_config_error(
        "{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"p:1\"], \"worker\": [\"w:1\"]}, "
        "\"task\": {\"type\": \"ps\", \"index\": 0, \"index\": 1}}",
        "key \"index\" appears twice");
    /* The same key in two objects, and keys in arrays of objects, are fine. */
    cluster_t c;
    char err[PS_ERRLEN] = "";
    const char *ok = "{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"p:1\", \"p:2\"], "
                     "\"worker\": [\"w:1\"]}, \"environment\": \"cloud\", "
                     "\"task\": {\"type\": \"ps\", \"index\": 1}, \"x\": [{\"a\": 1}, {\"a\": 2}]}";
    CHECK_INT_EQ(cluster_parse(&c, ok, err, sizeof err), 0);
    CHECK_INT_EQ(c.jobs[CLUSTER_PS].n, 2);
    cluster_free(&c);
}

/* Issue 17, item 9: units=100000000 was "must be a positive integer". */
void test_hardening_model_units_too_large(void) {
    model_t m;
    char err[PS_ERRLEN] = "";
    const char *spec = "{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"}, "
                       "{\"type\": \"dense\", \"units\": 100000000}]}";
    CHECK_INT_EQ(model_parse(&m, spec, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "\"units\" must be at most 16777216");
    const char *zero = "{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"}, "
                       "{\"type\": \"dense\", \"units\": 0}]}";
    CHECK_INT_EQ(model_parse(&m, zero, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "\"units\" must be a positive integer");
}

/* The PS of test_ps_start served again with the daemon's tick, and a cap
 * of 0.3 s on waiting pulls; a channel over the given transport. */
static int serve_capped(test_ps_t *e, const rpc_options_t *opt) {
    char err[PS_ERRLEN];
    rpc_channel_destroy(e->ch);
    rpc_server_stop(e->server);
    e->ch = NULL;
    e->svc.max_wait_s = 0.3;
    rpc_server_config_t sc = {.addr = "127.0.0.1:0",
                              .methods = ps_service_methods,
                              .n_methods = ps_service_nmethods,
                              .msg_methods = ps_service_msg_methods,
                              .n_msg_methods = ps_service_n_msg_methods,
                              .ctx = &e->svc,
                              .on_cancel = ps_service_on_cancel,
                              .on_tick = ps_service_on_tick,
                              .tick_s = 0.05,
                              .opt = *opt};
    if (rpc_server_start(&e->server, &sc, err, sizeof err) < 0)
        return -1;
    snprintf(e->addr, sizeof e->addr, "127.0.0.1:%d", rpc_server_port(e->server));
    return rpc_channel_create(&e->ch, e->addr, opt, err, sizeof err);
}

/* Issue 17, item 9: an async pull for a step far ahead, sent without a
 * deadline, waited for ever; now the PS's cap answers it. */
static void pull_without_deadline(const rpc_options_t *opt, const char *transport) {
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    CHECK_INT_EQ(serve_capped(&e, opt), 0);
    Pstrain__PullRequest r = PSTRAIN__PULL_REQUEST__INIT;
    r.min_step = UINT64_MAX - 1;
    uint8_t buf[64];
    size_t len = pstrain__pull_request__pack(&r, buf);
    rpc_buf_t resp = {0};
    char err[PS_ERRLEN] = "";
    double t0 = ps_now();
    int code = rpc_call(e.ch, "/pstrain.ParameterServer/Pull", buf, len, 0, &resp, err, sizeof err);
    CHECK_INT_EQ(code, RPC_DEADLINE_EXCEEDED);
    CHECK_STR_CONTAINS(err, "not reached within");
    CHECK(ps_now() - t0 < 10.0);
    CHECK(strcmp(rpc_channel_transport(e.ch), transport) == 0);
    /* The PS goes on serving. */
    Pstrain__PullRequest now = PSTRAIN__PULL_REQUEST__INIT;
    len = pstrain__pull_request__pack(&now, buf);
    CHECK_INT_EQ(
        rpc_call(e.ch, "/pstrain.ParameterServer/Pull", buf, len, 10.0, &resp, err, sizeof err),
        RPC_OK);
    rpc_buf_free(&resp);
    test_ps_stop(&e);
}

void test_hardening_pull_no_deadline_grpc(void) {
    rpc_options_t opt = {0};
    pull_without_deadline(&opt, "grpc");
}

void test_hardening_pull_no_deadline_stream(void) {
    rpc_options_t opt = {.stream = 1};
    pull_without_deadline(&opt, "stream");
}

#include "common/daemon/cluster.h"

#include <ctype.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base/util.h"

/* Room for a label such as cluster.evaluator["99999"]. */
#define LABEL_LEN 64

static const char *const role_names[CLUSTER_NROLES] = {"master", "ps", "worker", "evaluator"};

const char *cluster_role_name(cluster_role_t role) {
    return role >= 0 && role < CLUSTER_NROLES ? role_names[role] : "unknown";
}

const char *cluster_task_type(const cluster_t *c) {
    return c->task_chief_spelling ? "chief" : cluster_role_name(c->task_role);
}

/* The role's key as the cluster spelled it, so messages quote the user's text. */
static const char *job_key(const cluster_t *c, cluster_role_t role) {
    return role == CLUSTER_MASTER && c->chief_spelling ? "chief" : cluster_role_name(role);
}

static void entry_label(char *buf, const char *key, bool sparse, int index) {
    if (sparse)
        snprintf(buf, LABEL_LEN, "cluster.%s[\"%d\"]", key, index);
    else
        snprintf(buf, LABEL_LEN, "cluster.%s[%d]", key, index);
}

static const char *plural(size_t n, const char *one, const char *many) {
    return n == 1 ? one : many;
}

/* ---- host:port ---- */

static bool host_char_ok(char ch, bool ipv6) {
    if (isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_')
        return true;
    return ipv6 && (ch == ':' || ch == '%');
}

/* Checks the host part; on failure *why says what is wrong. */
static int check_host(const char *host, size_t len, bool ipv6, const char **why) {
    if (len == 0) {
        *why = "empty host";
        return -1;
    }
    if (len >= CLUSTER_HOST_LEN) {
        *why = "host longer than 255 characters";
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!host_char_ok(host[i], ipv6)) {
            *why = ipv6 ? "bad character in the IPv6 address" : "bad character in the host";
            return -1;
        }
    }
    if (ipv6 && !memchr(host, ':', len)) {
        *why = "brackets hold an IPv6 address, and this has no ':'";
        return -1;
    }
    return 0;
}

/* A port is 1 to 5 decimal digits with a value in 1..65535; no sign, no spaces. */
static int check_port(const char *s, int *port, const char **why) {
    size_t n = strlen(s);
    if (n == 0) {
        *why = "empty port";
        return -1;
    }
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]) || i >= 5) {
            *why = "port must be a number in 1..65535";
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535) {
        *why = "port must be a number in 1..65535";
        return -1;
    }
    *port = (int)v;
    return 0;
}

/* Splits "host:port" or "[ipv6]:port" into a; on failure *why says what is wrong. */
static int parse_addr(const char *s, cluster_addr_t *a, const char **why) {
    const char *host = s, *colon;
    size_t hlen;
    bool ipv6 = s[0] == '[';
    if (strstr(s, "://")) {
        *why = "a URL; give host:port without a scheme";
        return -1;
    }
    if (ipv6) {
        const char *close = strchr(s, ']');
        if (!close) {
            *why = "no closing ']'";
            return -1;
        }
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
        if (*colon != ':') {
            *why = "no \":port\" after the ']'";
            return -1;
        }
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            *why = "no \":port\"";
            return -1;
        }
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen)) {
            *why = "an IPv6 address needs brackets, as [::1]:2222";
            return -1;
        }
    }
    if (check_host(host, hlen, ipv6, why) || check_port(colon + 1, &a->port, why))
        return -1;
    memcpy(a->host, host, hlen);
    a->host[hlen] = '\0';
    /* Both parts were bounded above, so the whole text fits. */
    snprintf(a->text, sizeof a->text, "%s", s);
    return 0;
}

/* ---- the roles ---- */

/* A sparse-form key is a task index in canonical decimal ("3", not "03" or
 * "+3"), so that two keys can never name the same task. */
static int parse_index_key(const char *s, int *out) {
    size_t n = strlen(s);
    if (n == 0 || n > 6 || (n > 1 && s[0] == '0'))
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v >= CLUSTER_MAX_TASKS)
        return -1;
    *out = (int)v;
    return 0;
}

static int add_entry(cluster_job_t *job, const char *key, int index, json_object *val, char *err,
                     size_t errlen) {
    char label[LABEL_LEN];
    entry_label(label, key, job->sparse, index);
    if (!json_object_is_type(val, json_type_string))
        return ps_errf(err, errlen, "TF_CONFIG: %s must be a \"host:port\" string, got %s", label,
                       json_type_to_name(json_object_get_type(val)));
    const char *text = json_object_get_string(val);
    if (strlen(text) != (size_t)json_object_get_string_len(val))
        return ps_errf(err, errlen, "TF_CONFIG: %s \"%s\" holds a NUL character (\\u0000)", label,
                       text);
    cluster_addr_t *a = &job->addr[job->n];
    const char *why = NULL;
    if (parse_addr(text, a, &why))
        return ps_errf(err, errlen, "TF_CONFIG: %s \"%s\" is not host:port (%s)", label, text, why);
    a->index = index;
    job->n++;
    return 0;
}

static int parse_dense(cluster_job_t *job, const char *key, json_object *arr, char *err,
                       size_t errlen) {
    size_t n = json_object_array_length(arr);
    if (n > CLUSTER_MAX_TASKS)
        return ps_errf(err, errlen, "TF_CONFIG: cluster.%s lists %zu addresses, more than %d", key,
                       n, CLUSTER_MAX_TASKS);
    job->addr = xcalloc(n, sizeof *job->addr);
    for (size_t i = 0; i < n; i++)
        if (add_entry(job, key, (int)i, json_object_array_get_idx(arr, i), err, errlen))
            return -1;
    job->span = n;
    return 0;
}

static int cmp_index(const void *a, const void *b) {
    int x = ((const cluster_addr_t *)a)->index, y = ((const cluster_addr_t *)b)->index;
    return (x > y) - (x < y);
}

static int parse_sparse(cluster_job_t *job, const char *key, json_object *obj, char *err,
                        size_t errlen) {
    job->sparse = true;
    job->addr = xcalloc((size_t)json_object_object_length(obj), sizeof *job->addr);
    json_object_object_foreach(obj, k, val) {
        int index;
        if (parse_index_key(k, &index))
            return ps_errf(err, errlen,
                           "TF_CONFIG: cluster.%s key \"%s\" is not a task index (want \"0\" to "
                           "\"%d\")",
                           key, k, CLUSTER_MAX_TASKS - 1);
        if (add_entry(job, key, index, val, err, errlen))
            return -1;
    }
    /* JSON objects have no order; sorting makes the spec the same for every reader. */
    qsort(job->addr, job->n, sizeof *job->addr, cmp_index);
    job->span = job->n ? (size_t)job->addr[job->n - 1].index + 1 : 0;
    return 0;
}

/* Master and evaluator are single tasks with index 0; every PS must be
 * listed, since every worker pulls from all of them; workers need at least one. */
static int check_job(const cluster_t *c, cluster_role_t role, char *err, size_t errlen) {
    const cluster_job_t *job = &c->jobs[role];
    const char *key = job_key(c, role);
    if (role == CLUSTER_MASTER && job->n != 1)
        return ps_errf(err, errlen, "TF_CONFIG: cluster.%s must list exactly one address, got %zu",
                       key, job->n);
    if (role == CLUSTER_EVALUATOR && job->n > 1)
        return ps_errf(err, errlen, "TF_CONFIG: cluster.%s must list at most one address, got %zu",
                       key, job->n);
    if ((role == CLUSTER_MASTER || role == CLUSTER_EVALUATOR) && job->n == 1 &&
        job->addr[0].index != 0)
        return ps_errf(err, errlen,
                       "TF_CONFIG: cluster.%s must have its one task at index 0, "
                       "got \"%d\"",
                       key, job->addr[0].index);
    if ((role == CLUSTER_PS || role == CLUSTER_WORKER) && job->n == 0)
        return ps_errf(err, errlen, "TF_CONFIG: cluster.%s must list at least one address", key);
    if (role == CLUSTER_PS && job->span != job->n) {
        for (size_t i = 0; i < job->n; i++)
            if (job->addr[i].index != (int)i)
                return ps_errf(err, errlen,
                               "TF_CONFIG: cluster.%s has no task %zu: every parameter server "
                               "from 0 to %zu must be listed",
                               key, i, job->span - 1);
    }
    return 0;
}

static int parse_job(cluster_t *c, cluster_role_t role, json_object *val, char *err,
                     size_t errlen) {
    cluster_job_t *job = &c->jobs[role];
    const char *key = job_key(c, role);
    job->present = true;
    int rc;
    if (json_object_is_type(val, json_type_array))
        rc = parse_dense(job, key, val, err, errlen);
    else if (json_object_is_type(val, json_type_object))
        rc = parse_sparse(job, key, val, err, errlen);
    else
        rc = ps_errf(err, errlen,
                     "TF_CONFIG: cluster.%s must be a list of \"host:port\" strings or an object "
                     "mapping task indexes to them, got %s",
                     key, json_type_to_name(json_object_get_type(val)));
    return rc ? rc : check_job(c, role, err, errlen);
}

static int role_of_key(const char *key, cluster_role_t *role) {
    if (strcmp(key, "chief") == 0) {
        *role = CLUSTER_MASTER;
        return 0;
    }
    for (int r = 0; r < CLUSTER_NROLES; r++) {
        if (strcmp(key, role_names[r]) == 0) {
            *role = (cluster_role_t)r;
            return 0;
        }
    }
    return -1;
}

/* Finds each role's key first (so that "master" with "chief" is reported as
 * such, whatever the order), then parses the roles in a fixed order. */
static int parse_cluster(cluster_t *c, json_object *obj, char *err, size_t errlen) {
    json_object *vals[CLUSTER_NROLES] = {NULL};
    json_object_object_foreach(obj, key, val) {
        cluster_role_t role;
        if (role_of_key(key, &role))
            return ps_errf(err, errlen,
                           "TF_CONFIG: cluster has unknown role \"%s\" (want master or chief, ps, "
                           "worker, evaluator)",
                           key);
        if (role == CLUSTER_MASTER && vals[role])
            return ps_errf(err, errlen,
                           "TF_CONFIG: cluster has both \"master\" and \"chief\"; "
                           "give one");
        if (role == CLUSTER_MASTER)
            c->chief_spelling = strcmp(key, "chief") == 0;
        vals[role] = val;
    }
    if (!vals[CLUSTER_MASTER])
        return ps_errf(err, errlen, "TF_CONFIG: cluster has no \"master\" (or \"chief\")");
    if (!vals[CLUSTER_PS])
        return ps_errf(err, errlen, "TF_CONFIG: cluster has no \"ps\"");
    if (!vals[CLUSTER_WORKER])
        return ps_errf(err, errlen, "TF_CONFIG: cluster has no \"worker\"");
    for (int r = 0; r < CLUSTER_NROLES; r++)
        if (vals[r] && parse_job(c, (cluster_role_t)r, vals[r], err, errlen))
            return -1;
    return 0;
}

/* Two tasks on one address could never both listen; report the later one
 * against the first, walking the roles in order master, ps, worker, evaluator. */
static int check_duplicates(const cluster_t *c, char *err, size_t errlen) {
    for (int r = 0; r < CLUSTER_NROLES; r++) {
        const cluster_job_t *job = &c->jobs[r];
        for (size_t i = 0; i < job->n; i++) {
            const cluster_addr_t *a = &job->addr[i];
            for (int q = 0; q <= r; q++) {
                const cluster_job_t *other = &c->jobs[q];
                size_t end = q == r ? i : other->n;
                for (size_t j = 0; j < end; j++) {
                    const cluster_addr_t *b = &other->addr[j];
                    if (a->port != b->port || strcasecmp(a->host, b->host) != 0)
                        continue;
                    char la[LABEL_LEN], lb[LABEL_LEN];
                    entry_label(la, job_key(c, (cluster_role_t)r), job->sparse, a->index);
                    entry_label(lb, job_key(c, (cluster_role_t)q), other->sparse, b->index);
                    return ps_errf(err, errlen, "TF_CONFIG: %s \"%s\" duplicates %s", la, a->text,
                                   lb);
                }
            }
        }
    }
    return 0;
}

/* ---- the task ---- */

static int task_role_of(cluster_t *c, const char *type, char *err, size_t errlen) {
    if (role_of_key(type, &c->task_role))
        return ps_errf(err, errlen,
                       "TF_CONFIG: task.type \"%s\" is not one of master, chief, ps, worker, "
                       "evaluator",
                       type);
    c->task_chief_spelling = strcmp(type, "chief") == 0;
    return 0;
}

/* TensorFlow writes an integer; its RunConfig also takes a string through
 * int(), so a decimal string is accepted too. */
static int task_index_of(cluster_t *c, json_object *idx, char *err, size_t errlen) {
    if (json_object_is_type(idx, json_type_int)) {
        int64_t v = json_object_get_int64(idx);
        if (v < INT_MIN || v > INT_MAX)
            return ps_errf(err, errlen, "TF_CONFIG: task.index %lld is out of range", (long long)v);
        c->task_index = (int)v;
        return 0;
    }
    if (json_object_is_type(idx, json_type_string)) {
        int64_t v;
        const char *s = json_object_get_string(idx);
        if (ps_parse_i64(s, &v) == 0 && v >= INT_MIN && v <= INT_MAX) {
            c->task_index = (int)v;
            return 0;
        }
        return ps_errf(err, errlen, "TF_CONFIG: task.index \"%s\" is not an integer", s);
    }
    return ps_errf(err, errlen, "TF_CONFIG: task.index must be an integer, got %s",
                   json_type_to_name(json_object_get_type(idx)));
}

static int parse_task(cluster_t *c, json_object *task, char *err, size_t errlen) {
    json_object *type, *idx;
    if (!json_object_is_type(task, json_type_object))
        return ps_errf(err, errlen,
                       "TF_CONFIG: \"task\" must be an object like {\"type\": \"worker\", "
                       "\"index\": 0}, got %s",
                       json_type_to_name(json_object_get_type(task)));
    if (!json_object_object_get_ex(task, "type", &type))
        return ps_errf(err, errlen, "TF_CONFIG: missing \"task.type\"");
    if (!json_object_is_type(type, json_type_string))
        return ps_errf(err, errlen, "TF_CONFIG: task.type must be a string, got %s",
                       json_type_to_name(json_object_get_type(type)));
    if (task_role_of(c, json_object_get_string(type), err, errlen))
        return -1;
    if (!json_object_object_get_ex(task, "index", &idx))
        return ps_errf(err, errlen, "TF_CONFIG: missing \"task.index\"");
    return task_index_of(c, idx, err, errlen);
}

/* The task must name a listed task of its role, except an evaluator outside
 * the training cluster (TensorFlow's rule, and what TFJob writes), which
 * needs only a non-negative index. */
static int check_task(cluster_t *c, char *err, size_t errlen) {
    const cluster_job_t *job = &c->jobs[c->task_role];
    const char *key = job_key(c, c->task_role);
    int i = c->task_index;
    if (c->task_role == CLUSTER_EVALUATOR && job->n == 0) {
        if (i < 0)
            return ps_errf(err, errlen, "TF_CONFIG: task.index %d must be 0 or more", i);
        return 0;
    }
    if (cluster_find(c, c->task_role, i)) {
        c->task_listed = true;
        return 0;
    }
    if (job->sparse)
        return ps_errf(err, errlen, "TF_CONFIG: task.index %d is not a key of cluster.%s", i, key);
    return ps_errf(err, errlen, "TF_CONFIG: task.index %d is out of range: cluster.%s has %zu %s",
                   i, key, job->n, plural(job->n, "entry", "entries"));
}

/* ---- the whole spec ---- */

/* A key an object of text (valid JSON, at most DUP_DEPTH deep) holds twice,
 * copied into key as written (cut to keylen): 1; 0 when none. Keys are
 * compared as spelled, escapes and all. */
#define DUP_DEPTH 64
static int duplicate_key(const char *text, char *key, size_t keylen) {
    struct {
        bool obj, want_key;
        size_t first; /* its keys in keys[first, nkeys) */
    } stack[DUP_DEPTH];
    struct {
        const char *at;
        size_t len;
    } *keys = NULL;
    size_t nkeys = 0, cap = 0;
    int depth = 0, found = 0;
    for (const char *p = text; *p && !found; p++) {
        if (*p == '"') {
            const char *s = ++p;
            while (*p && *p != '"')
                p += p[0] == '\\' && p[1] ? 2 : 1;
            size_t n = (size_t)(p - s);
            if (!*p)
                break;
            if (depth == 0 || !stack[depth - 1].obj || !stack[depth - 1].want_key)
                continue;
            stack[depth - 1].want_key = false;
            for (size_t k = stack[depth - 1].first; k < nkeys && !found; k++)
                found = keys[k].len == n && memcmp(keys[k].at, s, n) == 0;
            if (found)
                snprintf(key, keylen, "%.*s", (int)n, s);
            if (nkeys == cap) {
                cap = cap ? 2 * cap : 16;
                keys = xrealloc(keys, cap * sizeof *keys);
            }
            keys[nkeys].at = s;
            keys[nkeys++].len = n;
        } else if ((*p == '{' || *p == '[') && depth < DUP_DEPTH) {
            stack[depth].obj = *p == '{';
            stack[depth].want_key = true;
            stack[depth++].first = nkeys;
        } else if ((*p == '}' || *p == ']') && depth > 0) {
            nkeys = stack[--depth].first;
        } else if (*p == ',' && depth > 0) {
            stack[depth - 1].want_key = true;
        }
    }
    free(keys);
    return found;
}

/* Strict JSON (as Python's json module writes it), and the byte offset of the
 * first error, which is what finds a typo in a long TF_CONFIG. */
static json_object *parse_json(const char *text, char *err, size_t errlen) {
    size_t len = strlen(text);
    if (strspn(text, " \t\r\n") == len) {
        ps_errf(err, errlen, "TF_CONFIG: empty (want a JSON object with \"cluster\" and \"task\")");
        return NULL;
    }
    if (len >= INT_MAX) {
        ps_errf(err, errlen, "TF_CONFIG: not JSON: %zu bytes is too long", len);
        return NULL;
    }
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    /* Including the NUL tells the tokener the text ends there, so a cut-off
     * text reads "unexpected end of data" rather than "continue". */
    json_object *root = json_tokener_parse_ex(tok, text, (int)len + 1);
    char key[64];
    if (!root && json_tokener_get_error(tok) == json_tokener_success) /* the text "null" */
        ps_errf(err, errlen,
                "TF_CONFIG: must be a JSON object with \"cluster\" and \"task\", got null");
    else if (!root)
        ps_errf(err, errlen, "TF_CONFIG: not JSON: %s at offset %zu",
                json_tokener_error_desc(json_tokener_get_error(tok)),
                json_tokener_get_parse_end(tok));
    json_tokener_free(tok);
    if (root && duplicate_key(text, key, sizeof key)) {
        /* json-c keeps the last of a key given twice; a spec that says two
         * things is refused instead of half read. */
        ps_errf(err, errlen, "TF_CONFIG: key \"%s\" appears twice in one object", key);
        json_object_put(root);
        root = NULL;
    }
    return root;
}

static int get_string(json_object *val, const char *key, char **out, char *err, size_t errlen) {
    if (!json_object_is_type(val, json_type_string))
        return ps_errf(err, errlen, "TF_CONFIG: \"%s\" must be a string, got %s", key,
                       json_type_to_name(json_object_get_type(val)));
    if (strlen(json_object_get_string(val)) != (size_t)json_object_get_string_len(val))
        return ps_errf(err, errlen, "TF_CONFIG: \"%s\" holds a NUL character (\\u0000)", key);
    *out = xstrdup(json_object_get_string(val));
    return 0;
}

/* The top-level keys this program uses; the rest (session_master, service,
 * job, ...) belong to other tools and are ignored. */
static int parse_top(cluster_t *c, json_object *root, char *err, size_t errlen) {
    json_object *cl = NULL, *task = NULL;
    json_object_object_foreach(root, key, val) {
        int rc = 0;
        if (strcmp(key, "cluster") == 0)
            cl = val;
        else if (strcmp(key, "task") == 0)
            task = val;
        else if (strcmp(key, "environment") == 0)
            rc = get_string(val, key, &c->environment, err, errlen);
        else if (strcmp(key, "rpc_layer") == 0)
            rc = get_string(val, key, &c->rpc_layer, err, errlen);
        else if (strcmp(key, "model_dir") == 0)
            rc = get_string(val, key, &c->model_dir, err, errlen);
        if (rc)
            return -1;
    }
    if (!cl)
        return ps_errf(err, errlen, "TF_CONFIG: missing \"cluster\"");
    if (!json_object_is_type(cl, json_type_object))
        return ps_errf(err, errlen,
                       "TF_CONFIG: \"cluster\" must be an object mapping roles to addresses, "
                       "got %s",
                       json_type_to_name(json_object_get_type(cl)));
    if (parse_cluster(c, cl, err, errlen) || check_duplicates(c, err, errlen))
        return -1;
    if (!task)
        return ps_errf(err, errlen, "TF_CONFIG: missing \"task\"");
    if (parse_task(c, task, err, errlen))
        return -1;
    return check_task(c, err, errlen);
}

int cluster_parse(cluster_t *c, const char *json, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    json_object *root = parse_json(json, err, errlen);
    if (!root)
        return -1;
    int rc;
    if (!json_object_is_type(root, json_type_object))
        rc = ps_errf(err, errlen,
                     "TF_CONFIG: must be a JSON object with \"cluster\" and \"task\", got %s",
                     json_type_to_name(json_object_get_type(root)));
    else
        rc = parse_top(c, root, err, errlen);
    json_object_put(root);
    if (rc)
        cluster_free(c);
    return rc;
}

int cluster_load(cluster_t *c, const char *path, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    if (!path) {
        const char *env = getenv("TF_CONFIG");
        if (!env)
            return ps_errf(err, errlen,
                           "TF_CONFIG is not set: set it to the cluster spec (JSON) "
                           "or pass --tf-config FILE");
        if (strspn(env, " \t\r\n") == strlen(env))
            return ps_errf(err, errlen,
                           "TF_CONFIG is empty: set it to the cluster spec (JSON) "
                           "or pass --tf-config FILE");
        return cluster_parse(c, env, err, errlen);
    }
    char *text = NULL, inner[PS_ERRLEN];
    if (ps_read_file(path, &text, NULL, inner, sizeof inner))
        return ps_errf(err, errlen, "TF_CONFIG: cannot read %s", inner);
    int rc = cluster_parse(c, text, inner, sizeof inner);
    free(text);
    if (rc)
        return ps_errf(err, errlen, "%s: %s", path, inner);
    return 0;
}

void cluster_free(cluster_t *c) {
    for (int r = 0; r < CLUSTER_NROLES; r++)
        free(c->jobs[r].addr);
    free(c->environment);
    free(c->rpc_layer);
    free(c->model_dir);
    memset(c, 0, sizeof *c);
}

int cluster_expect_role(const cluster_t *c, cluster_role_t role, const char *program, char *err,
                        size_t errlen) {
    if (c->task_role == role)
        return 0;
    const char *hint = c->task_role == CLUSTER_EVALUATOR
                           ? " (an evaluator task is run by pstrain-master --evaluate-only)"
                           : "";
    return ps_errf(err, errlen,
                   "TF_CONFIG: task.type \"%s\" does not match %s, which runs %s tasks%s",
                   cluster_task_type(c), program ? program : "this program",
                   role == CLUSTER_MASTER ? "master (or chief)" : cluster_role_name(role), hint);
}

const cluster_addr_t *cluster_find(const cluster_t *c, cluster_role_t role, int index) {
    if (role < 0 || role >= CLUSTER_NROLES)
        return NULL;
    const cluster_job_t *job = &c->jobs[role];
    size_t lo = 0, hi = job->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (job->addr[mid].index < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < job->n && job->addr[lo].index == index ? &job->addr[lo] : NULL;
}

const cluster_addr_t *cluster_self(const cluster_t *c) {
    return c->task_listed ? cluster_find(c, c->task_role, c->task_index) : NULL;
}

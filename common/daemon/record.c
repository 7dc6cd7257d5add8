#include "common/daemon/record.h"

#include <json-c/json.h>
#include <limits.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/rpc/rpc.h"
#include "kernels/backend.h"

/* A key that may hold a credential: left out of the record. */
static bool secret_key(const char *key) {
    static const char *const words[] = {"secret",     "password", "passwd", "token",
                                        "credential", "private",  "key"};
    for (size_t i = 0; i < PS_ARRAY_LEN(words); i++)
        if (strcasestr(key, words[i]))
            return true;
    return false;
}

/* Removes every secret-looking key of o, at any depth. */
static void strip_secrets(json_object *o) {
    if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(o); i++)
            strip_secrets(json_object_array_get_idx(o, i));
        return;
    }
    if (!json_object_is_type(o, json_type_object))
        return;
    char *drop[64]; /* copies: deleting a key frees the table's own */
    size_t ndrop = 0;
    json_object_object_foreach(o, key, val) {
        if (secret_key(key) && ndrop < PS_ARRAY_LEN(drop))
            drop[ndrop++] = xstrdup(key);
        else
            strip_secrets(val);
    }
    for (size_t i = 0; i < ndrop; i++) {
        json_object_object_del(o, drop[i]);
        free(drop[i]);
    }
}

/* TF_CONFIG as the daemon read it (file or environment), without secrets;
 * NULL when there is none. */
static json_object *tf_config(const char *tf_config_file) {
    json_object *o = NULL;
    if (tf_config_file) {
        o = json_object_from_file(tf_config_file);
    } else {
        const char *env = getenv("TF_CONFIG");
        if (env && env[0])
            o = json_tokener_parse(env);
    }
    if (o)
        strip_secrets(o);
    return o;
}

static json_object *versions(void) {
    json_object *v = json_object_new_object();
    json_object_object_add(v, "pstrain", json_object_new_string(PS_VERSION));
    json_object_object_add(v, "json-c", json_object_new_string(json_c_version()));
    json_object_object_add(v, "protobuf-c", json_object_new_string(protobuf_c_version()));
    json_object_object_add(v, "grpc", json_object_new_string(rpc_grpc_version()));
    json_object_object_add(v, "libuv", json_object_new_string(rpc_libuv_version()));
    json_object_object_add(v, "openblas", json_object_new_string(cpu_backend_blas_config()));
    json_object_object_add(v, "compiler", json_object_new_string(__VERSION__));
    return v;
}

int daemon_record_config(const daemon_t *d, char *err, size_t errlen) {
    return daemon_record_run(&d->cfg, d->program, d->tf_config_file, err, errlen);
}

int daemon_record_run(const config_t *c, const char *program, const char *tf_config_file, char *err,
                      size_t errlen) {
    const char *md = c->checkpoint.model_dir;
    if (ps_mkdirs(md, err, errlen))
        return -1;
    char *cfg_text = config_to_json(c), host[256] = "";
    json_object *o = json_object_new_object(), *cfg = json_tokener_parse(cfg_text);
    free(cfg_text);
    gethostname(host, sizeof host - 1);
    json_object_object_add(o, "written_by", json_object_new_string(program));
    json_object_object_add(o, "host", json_object_new_string(host));
    json_object_object_add(o, "time", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(o, "config", cfg);
    json_object_object_add(o, "tf_config", tf_config(tf_config_file));
    json_object_object_add(o, "versions", versions());
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", md);
    return ps_write_json_atomic(path, o, err, errlen);
}

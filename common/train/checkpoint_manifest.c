/* The manifest, model_dir/checkpoint: which checkpoints are kept, the latest,
 * whether it is final, and the length and CRC32C of every file of each kept
 * checkpoint ("files": {"ckpt-1200": {"ps-0-of-2.safetensors": {"bytes": N,
 * "crc32c": "1a2b3c4d"}}}). Rewritten atomically; a commit then deletes the
 * ckpt-<digits> directories it does not name. */
#include "common/train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/util.h"

static void manifest_path(char *out, size_t len, const char *model_dir) {
    snprintf(out, len, "%s/checkpoint", model_dir);
}

static void step_name(char *out, size_t len, uint64_t step) {
    snprintf(out, len, "ckpt-%" PRIu64, step);
}

/* A kept step: a JSON integer in [0, CKPT_MAX_STEP]. */
static bool json_step(json_object *x, uint64_t *step) {
    if (!json_object_is_type(x, json_type_int) || json_object_get_int64(x) < 0 ||
        (uint64_t)json_object_get_int64(x) > CKPT_MAX_STEP)
        return false;
    *step = (uint64_t)json_object_get_int64(x);
    return true;
}

static int manifest_parse(json_object *o, ckpt_manifest_t *m, const char *path, char *err,
                          size_t errlen) {
    json_object *latest, *kept, *final;
    if (!json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, "latest_step", &latest) ||
        !json_object_object_get_ex(o, "kept_steps", &kept) ||
        !json_object_is_type(kept, json_type_array))
        return ps_errf(err, errlen, "%s: want an object with latest_step and kept_steps", path);
    if (!json_step(latest, &m->latest))
        return ps_errf(err, errlen, "%s: latest_step is not a step in [0, %" PRIu64 "]", path,
                       CKPT_MAX_STEP);
    m->nkept = json_object_array_length(kept);
    if (m->nkept > CKPT_MAX_KEPT)
        return ps_errf(err, errlen, "%s: %zu kept checkpoints (at most %d)", path, m->nkept,
                       CKPT_MAX_KEPT);
    for (size_t i = 0; i < m->nkept; i++) {
        if (!json_step(json_object_array_get_idx(kept, i), &m->kept[i]))
            return ps_errf(err, errlen, "%s: kept_steps[%zu] is not a step", path, i);
    }
    if (m->nkept == 0 || m->kept[m->nkept - 1] != m->latest)
        return ps_errf(err, errlen, "%s: latest_step is not the last of kept_steps", path);
    m->final = json_object_object_get_ex(o, "final", &final) && json_object_get_boolean(final);
    return 0;
}

/* The manifest as JSON: 0 and *o (caller puts it); 1 when there is none. */
static int manifest_load(const char *model_dir, json_object **o, char *err, size_t errlen) {
    char path[PATH_MAX];
    manifest_path(path, sizeof path, model_dir);
    *o = NULL;
    if (access(path, F_OK) != 0 && (errno == ENOENT || errno == ENOTDIR))
        return 1;
    char *text;
    size_t len;
    if (ps_read_file(path, &text, &len, err, errlen))
        return -1;
    json_tokener *tok = json_tokener_new();
    *o = json_tokener_parse_ex(tok, text, (int)len);
    json_tokener_free(tok);
    free(text);
    if (!*o)
        return ps_errf(err, errlen, "%s: not JSON (a broken manifest)", path);
    return 0;
}

int ckpt_manifest_read(const char *model_dir, ckpt_manifest_t *m, char *err, size_t errlen) {
    char path[PATH_MAX];
    manifest_path(path, sizeof path, model_dir);
    memset(m, 0, sizeof *m);
    json_object *o;
    int rc = manifest_load(model_dir, &o, err, errlen);
    if (rc == 0)
        rc = manifest_parse(o, m, path, err, errlen);
    json_object_put(o);
    return rc;
}

void ckpt_sums_free(ckpt_sums_t *s) {
    free(s->f);
    memset(s, 0, sizeof *s);
}

void ckpt_sums_add(ckpt_sums_t *s, const char *name, uint64_t bytes, uint32_t crc) {
    s->f = xrealloc(s->f, (s->n + 1) * sizeof *s->f);
    ckpt_file_sum_t *x = &s->f[s->n++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->bytes = bytes;
    x->crc32c = crc;
}

static json_object *sums_json(const ckpt_sums_t *s) {
    json_object *o = json_object_new_object();
    char hex[16];
    for (size_t i = 0; i < s->n; i++) {
        json_object *f = json_object_new_object();
        snprintf(hex, sizeof hex, "%08x", (unsigned)s->f[i].crc32c);
        json_object_object_add(f, "bytes", json_object_new_int64((int64_t)s->f[i].bytes));
        json_object_object_add(f, "crc32c", json_object_new_string(hex));
        json_object_object_add(o, s->f[i].name, f);
    }
    return o;
}

static int sums_parse(json_object *o, ckpt_sums_t *s, const char *what, char *err, size_t errlen) {
    if (!json_object_is_type(o, json_type_object))
        return ps_errf(err, errlen, "%s is not an object", what);
    json_object_object_foreach(o, name, f) {
        json_object *bytes, *crc;
        char *end = NULL;
        const char *hex = "";
        if (json_object_object_get_ex(f, "crc32c", &crc) &&
            json_object_is_type(crc, json_type_string))
            hex = json_object_get_string(crc);
        unsigned long x = strtoul(hex, &end, 16);
        if (!json_object_object_get_ex(f, "bytes", &bytes) ||
            !json_object_is_type(bytes, json_type_int) || json_object_get_int64(bytes) < 0 ||
            strlen(hex) != 8 || *end || strlen(name) >= sizeof s->f[0].name)
            return ps_errf(err, errlen, "%s: \"%s\" wants bytes and an 8-digit crc32c", what, name);
        ckpt_sums_add(s, name, (uint64_t)json_object_get_int64(bytes), (uint32_t)x);
    }
    return 0;
}

int ckpt_manifest_sums(const char *model_dir, uint64_t step, ckpt_sums_t *s, char *err,
                       size_t errlen) {
    memset(s, 0, sizeof *s);
    json_object *o, *files, *entry;
    int rc = manifest_load(model_dir, &o, err, errlen);
    if (rc != 0)
        return rc;
    char name[64], what[PATH_MAX + 96];
    step_name(name, sizeof name, step);
    snprintf(what, sizeof what, "%s/checkpoint: files.%s", model_dir, name);
    rc = 1;
    if (json_object_object_get_ex(o, "files", &files) &&
        json_object_object_get_ex(files, name, &entry))
        rc = sums_parse(entry, s, what, err, errlen) ? -1 : 0;
    if (rc)
        ckpt_sums_free(s);
    json_object_put(o);
    return rc;
}

/* The "files" of the kept checkpoints: those the old manifest recorded, and
 * `sums` for `step` when given. */
static json_object *files_json(json_object *old, const ckpt_manifest_t *m, uint64_t step,
                               const ckpt_sums_t *sums) {
    json_object *files = json_object_new_object(), *prev = NULL, *x;
    if (old)
        json_object_object_get_ex(old, "files", &prev);
    char name[64];
    for (size_t i = 0; i < m->nkept; i++) {
        step_name(name, sizeof name, m->kept[i]);
        if (sums && m->kept[i] == step)
            json_object_object_add(files, name, sums_json(sums));
        else if (prev && json_object_object_get_ex(prev, name, &x))
            json_object_object_add(files, name, json_object_get(x));
    }
    return files;
}

static int manifest_write(const char *model_dir, const ckpt_manifest_t *m, json_object *files,
                          char *err, size_t errlen) {
    json_object *o = json_object_new_object(), *kept = json_object_new_array(),
                *steps = json_object_new_array();
    char name[64];
    step_name(name, sizeof name, m->latest);
    json_object_object_add(o, "latest", json_object_new_string(name));
    json_object_object_add(o, "latest_step", json_object_new_int64((int64_t)m->latest));
    for (size_t i = 0; i < m->nkept; i++) {
        step_name(name, sizeof name, m->kept[i]);
        json_object_array_add(kept, json_object_new_string(name));
        json_object_array_add(steps, json_object_new_int64((int64_t)m->kept[i]));
    }
    json_object_object_add(o, "kept", kept);
    json_object_object_add(o, "kept_steps", steps);
    json_object_object_add(o, "final", json_object_new_boolean(m->final));
    json_object_object_add(o, "written", json_object_new_double(ps_wall_now()));
    json_object_object_add(o, "files", files);
    char path[PATH_MAX];
    manifest_path(path, sizeof path, model_dir);
    return ps_write_json_atomic(path, o, err, errlen);
}

static bool is_kept(const ckpt_manifest_t *m, uint64_t step) {
    for (size_t i = 0; i < m->nkept; i++)
        if (m->kept[i] == step)
            return true;
    return false;
}

/* Whether a directory entry is a checkpoint the manifest can name and keeps.
 * Names of the form ckpt-<digits> that no manifest can name (out of range,
 * leading zeros) are not kept either, so they are pruned too; other names
 * (ckpt-best) are not pstrain's and are left alone. */
static bool prunable(const ckpt_manifest_t *m, const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0 || !name[5] ||
        strspn(name + 5, "0123456789") != strlen(name + 5))
        return false;
    int64_t step;
    char canonical[64];
    if (ps_parse_i64(name + 5, &step) || step < 0 || (uint64_t)step > CKPT_MAX_STEP)
        return true;
    step_name(canonical, sizeof canonical, (uint64_t)step);
    return strcmp(canonical, name) != 0 || !is_kept(m, (uint64_t)step);
}

/* Deletes every ckpt-<digits> directory the manifest does not keep. */
static void prune(const char *model_dir, const ckpt_manifest_t *m) {
    DIR *d = opendir(model_dir);
    if (!d)
        return;
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d)) != NULL) {
        if (prunable(m, e->d_name) &&
            snprintf(path, sizeof path, "%s/%s", model_dir, e->d_name) < (int)sizeof path)
            ps_remove_flat_dir(path);
    }
    closedir(d);
}

/* The manifest and its JSON for a rewrite: a missing one is empty. */
static int manifest_for_update(const char *model_dir, ckpt_manifest_t *m, json_object **o,
                               char *err, size_t errlen) {
    char path[PATH_MAX];
    manifest_path(path, sizeof path, model_dir);
    memset(m, 0, sizeof *m);
    int rc = manifest_load(model_dir, o, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 0 && manifest_parse(*o, m, path, err, errlen)) {
        json_object_put(*o);
        return -1;
    }
    return 0;
}

int ckpt_manifest_commit(const char *model_dir, uint64_t step, size_t keep, bool final,
                         const ckpt_sums_t *sums, char *err, size_t errlen) {
    if (step > CKPT_MAX_STEP)
        return ps_errf(err, errlen, "checkpoint step %" PRIu64 " is over the limit %" PRIu64, step,
                       CKPT_MAX_STEP);
    ckpt_manifest_t m;
    json_object *old;
    if (manifest_for_update(model_dir, &m, &old, err, errlen))
        return -1;
    /* A step at or before the latest (a rollback, or the same step again)
     * drops the newer ones: the manifest stays ordered by step. */
    while (m.nkept > 0 && m.kept[m.nkept - 1] >= step)
        m.nkept--;
    keep = PS_MAX(keep, (size_t)1);
    keep = PS_MIN(keep, (size_t)CKPT_MAX_KEPT);
    if (m.nkept + 1 > keep) {
        size_t drop = m.nkept + 1 - keep;
        memmove(m.kept, m.kept + drop, (m.nkept - drop) * sizeof m.kept[0]);
        m.nkept -= drop;
    }
    m.kept[m.nkept++] = step;
    m.latest = step;
    m.final = final;
    int rc = manifest_write(model_dir, &m, files_json(old, &m, step, sums), err, errlen);
    json_object_put(old);
    if (rc == 0)
        prune(model_dir, &m);
    return rc;
}

int ckpt_manifest_drop(const char *model_dir, uint64_t step, char *err, size_t errlen) {
    ckpt_manifest_t m;
    json_object *old;
    if (manifest_for_update(model_dir, &m, &old, err, errlen))
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < m.nkept; i++)
        if (m.kept[i] != step)
            m.kept[n++] = m.kept[i];
    int rc = 0;
    if (n == 0)
        rc = ps_errf(err, errlen, "%s/checkpoint: ckpt-%" PRIu64 " is the only checkpoint kept",
                     model_dir, step);
    else if (n < m.nkept) {
        /* A final checkpoint that is dropped leaves training unfinished. */
        m.final = m.final && m.latest != step;
        m.nkept = n;
        m.latest = m.kept[n - 1];
        rc = manifest_write(model_dir, &m, files_json(old, &m, UINT64_MAX, NULL), err, errlen);
    }
    json_object_put(old);
    return rc;
}

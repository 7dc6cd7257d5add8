#include "common/train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/formats/keras_file.h"
#include "common/formats/safetensors.h"
#include "common/base/failpoint.h"
#include "common/train/keras_weights.h"
#include "common/base/util.h"

/* Paths are built in PATH_MAX buffers from a configured model_dir that is
 * far shorter (a config string is at most CONFIG_STR bytes), so they fit. */
void ckpt_dir(char *out, size_t len, const char *model_dir, uint64_t step) {
    if (snprintf(out, len, "%s/ckpt-%" PRIu64, model_dir, step) >= (int)len)
        out[0] = '\0';
}

void ckpt_shard_path(char *out, size_t len, const char *dir, int index, int nps) {
    if (snprintf(out, len, "%s/ps-%d-of-%d.safetensors", dir, index, nps) >= (int)len)
        out[0] = '\0';
}

int ckpt_write_model(const char *dir, const model_t *m, char *err, size_t errlen) {
    char path[PATH_MAX];
    if (ps_path_join(path, sizeof path, dir, "model.json", err, errlen))
        return -1;
    size_t n = strlen(m->json);
    char *text = xmalloc(n + 2);
    memcpy(text, m->json, n);
    text[n] = '\n';
    int rc = ps_write_file_atomic(path, text, n + 1, err, errlen);
    free(text);
    return rc;
}

int ckpt_take_local(const store_t *s, const char *model_dir, uint64_t step, size_t keep, bool final,
                    char *err, size_t errlen) {
    char dir[PATH_MAX], path[PATH_MAX];
    ckpt_manifest_t m;
    if (ckpt_manifest_read(model_dir, &m, err, errlen) == 0 && m.latest == step)
        /* Already safe (a resumed run with nothing left to do). */
        return ckpt_manifest_commit(model_dir, step, keep, final, NULL, err, errlen);
    ckpt_dir(dir, sizeof dir, model_dir, step);
    ckpt_shard_path(path, sizeof path, dir, 0, 1);
    ps_remove_flat_dir(dir);
    if (ps_mkdirs(dir, err, errlen) || ckpt_save_store(s, path, step, err, errlen) ||
        ckpt_write_model(dir, s->model, err, errlen))
        return -1;
    /* Read back before the manifest names it: what is committed verified. */
    ckpt_sums_t sums = {0};
    int rc = ckpt_verify(dir, NULL, &sums, NULL, err, errlen) ? -1 : 0;
    if (rc == 0)
        rc = ckpt_manifest_commit(model_dir, step, keep, final, &sums, err, errlen);
    ckpt_sums_free(&sums);
    return rc;
}

bool ckpt_due(int64_t every_steps, double every_secs, uint64_t step, uint64_t last_step,
              double last_time, double now) {
    if (step <= last_step)
        return false;
    if (every_steps > 0 && step - last_step >= (uint64_t)every_steps)
        return true;
    return every_secs > 0 && now - last_time >= every_secs;
}

/* ---- saving a store ---- */

static void tensor_name(char *out, size_t len, const store_t *s, const store_part_t *p,
                        const char *slot) {
    const var_t *v = &s->model->vars[p->var];
    int n = snprintf(out, len, "%s%s%s", v->name, slot ? "/" : "", slot ? slot : "");
    if (p->row_begin != 0 || p->rows != v->shape[0])
        snprintf(out + n, len - (size_t)n, "@%zu", p->row_begin);
}

int ckpt_save_store(const store_t *s, const char *path, uint64_t step, char *err, size_t errlen) {
    if (failpoint_error("checkpoint_write")) /* a test's full disk */
        return ps_errf(err, errlen, "%s: No space left on device (failpoint checkpoint_write)",
                       path);
    size_t nslots = optim_nslots(&s->opt), n = s->nparts * (1 + nslots);
    st_tensor_t *t = xcalloc(n ? n : 1, sizeof *t);
    char(*names)[256] = xcalloc(n ? n : 1, sizeof *names);
    size_t k = 0;
    for (size_t slab = 0; slab <= nslots; slab++) {
        for (size_t i = 0; i < s->nparts; i++) {
            const store_part_t *p = &s->parts[i];
            const var_t *v = &s->model->vars[p->var];
            if (slab && v->moving)
                continue; /* no optimizer moves a moving statistic: no slots */
            tensor_name(names[k], sizeof names[k], s, p,
                        slab ? optim_slot_name(&s->opt, slab - 1) : NULL);
            t[k].name = names[k];
            t[k].ndim = v->ndim;
            memcpy(t[k].shape, v->shape, v->ndim * sizeof v->shape[0]);
            t[k].shape[0] = p->rows;
            t[k].data = (slab ? s->slots[slab - 1] : s->w) + p->offset;
            k++;
        }
    }
    char step_s[32], iter_s[32], slots_s[64] = "";
    snprintf(step_s, sizeof step_s, "%" PRIu64, step);
    snprintf(iter_s, sizeof iter_s, "%" PRIu64, s->iterations);
    for (size_t i = 0; i < nslots; i++)
        snprintf(slots_s + strlen(slots_s), sizeof slots_s - strlen(slots_s), "%s%s", i ? "," : "",
                 optim_slot_name(&s->opt, i));
    st_meta_t meta[] = {{"format", "pstrain"},
                        {"step", step_s},
                        {"iterations", iter_s},
                        {"optimizer", optim_kind_name(s->opt.kind)},
                        {"slots", slots_s}};
    int rc = st_write(path, t, k, meta, PS_ARRAY_LEN(meta), err, errlen);
    free(names);
    free(t);
    return rc;
}

/* ---- restoring a store ---- */

typedef struct {
    int var;
    size_t slab; /* 0: weights; 1 + k: slot k */
    size_t row_begin;
    const st_file_t *f;
    const st_entry_t *e;
} piece_t;

typedef struct {
    st_file_t *files;
    size_t nfiles;
    piece_t *pieces;
    size_t npieces;
    uint64_t step;
} source_t;

static bool has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Lists the safetensors files `path` stands for into paths (caller frees);
 * dir gets the directory they are in, or "" for a single file. */
static int list_files(const char *path, char ***paths, size_t *n, char *dir, char *err,
                      size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    *n = 0;
    *paths = NULL;
    dir[0] = '\0';
    if (S_ISREG(sb.st_mode)) {
        *paths = xcalloc(1, sizeof **paths);
        (*paths)[(*n)++] = xstrdup(path);
        return 0;
    }
    ckpt_manifest_t m;
    int mrc = ckpt_manifest_read(path, &m, err, errlen);
    if (mrc < 0)
        return -1;
    if (mrc == 0)
        ckpt_dir(dir, PATH_MAX, path, m.latest);
    else
        snprintf(dir, PATH_MAX, "%s", path);
    DIR *d = opendir(dir);
    if (!d)
        return ps_errf(err, errlen, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!has_suffix(e->d_name, ".safetensors"))
            continue;
        *paths = xrealloc(*paths, (*n + 1) * sizeof **paths);
        char *p = xmalloc(strlen(dir) + strlen(e->d_name) + 2);
        sprintf(p, "%s/%s", dir, e->d_name);
        (*paths)[(*n)++] = p;
    }
    closedir(d);
    if (*n == 0)
        return ps_errf(err, errlen, "%s holds no .safetensors files", dir);
    return 0;
}

/* Splits "<var>[/<slot>][@<row>]" into a piece of this store's model;
 * returns 1 for a name the store has no use for. */
static int name_to_piece(const store_t *s, const char *name, bool slots, piece_t *p) {
    char base[512];
    snprintf(base, sizeof base, "%s", name);
    p->row_begin = 0;
    char *at = strrchr(base, '@');
    int64_t row;
    if (at && ps_parse_i64(at + 1, &row) == 0 && row >= 0) {
        *at = '\0';
        p->row_begin = (size_t)row;
    }
    p->var = model_find_var(s->model, base);
    p->slab = 0;
    if (p->var >= 0)
        return 0;
    char *slash = strrchr(base, '/');
    if (!slots || !slash)
        return 1;
    *slash = '\0';
    for (size_t k = 0; k < optim_nslots(&s->opt); k++) {
        if (!strcmp(slash + 1, optim_slot_name(&s->opt, k))) {
            p->var = model_find_var(s->model, base);
            p->slab = 1 + k;
            return p->var >= 0 ? 0 : 1;
        }
    }
    return 1;
}

static void shape_text(char *out, size_t len, const size_t *shape, size_t ndim) {
    size_t n = (size_t)snprintf(out, len, "[");
    for (size_t d = 0; d < ndim && n < len; d++)
        n += (size_t)snprintf(out + n, len - n, "%s%zu", d ? ", " : "", shape[d]);
    if (n < len)
        snprintf(out + n, len - n, "]");
}

static int check_piece(const store_t *s, const piece_t *p, char *err, size_t errlen) {
    const var_t *v = &s->model->vars[p->var];
    const st_entry_t *e = p->e;
    bool ok = e->ndim == v->ndim && p->row_begin + e->shape[0] <= v->shape[0];
    for (size_t d = 1; ok && d < v->ndim; d++)
        ok = e->shape[d] == v->shape[d];
    if (ok)
        return 0;
    char have[128], want[128];
    shape_text(have, sizeof have, e->shape, e->ndim);
    shape_text(want, sizeof want, v->shape, v->ndim);
    return ps_errf(err, errlen, "%s: \"%s\" has shape %s from row %zu; the model's %s is %s",
                   p->f->path, e->name, have, p->row_begin, v->name, want);
}

static int check_optimizer(const store_t *s, const st_file_t *f, char *err, size_t errlen) {
    const char *opt = st_meta_get(f, "optimizer");
    const char *want = optim_kind_name(s->opt.kind);
    if (!opt)
        return ps_errf(err, errlen, "%s has no optimizer state (an export?): it cannot resume %s",
                       f->path, want);
    if (strcmp(opt, want) != 0)
        return ps_errf(err, errlen, "%s was written by optimizer %s; train.optimizer is %s",
                       f->path, opt, want);
    return 0;
}

static void source_free(source_t *src) {
    for (size_t i = 0; i < src->nfiles; i++)
        st_close(&src->files[i]);
    free(src->files);
    free(src->pieces);
    memset(src, 0, sizeof *src);
}

static int add_file_pieces(source_t *src, const store_t *s, const st_file_t *f, bool slots,
                           char *err, size_t errlen) {
    const char *step = st_meta_get(f, "step");
    int64_t st;
    if (step && ps_parse_i64(step, &st) == 0 && st >= 0 && (uint64_t)st > src->step)
        src->step = (uint64_t)st;
    if (slots && check_optimizer(s, f, err, errlen))
        return -1;
    src->pieces = xrealloc(src->pieces, (src->npieces + f->n) * sizeof *src->pieces);
    for (size_t i = 0; i < f->n; i++) {
        piece_t *p = &src->pieces[src->npieces];
        if (name_to_piece(s, f->entries[i].name, slots, p))
            continue;
        p->f = f;
        p->e = &f->entries[i];
        if (check_piece(s, p, err, errlen))
            return -1;
        src->npieces++;
    }
    return 0;
}

/* When dir is model_dir/ckpt-<step>: model_dir and the step. */
static bool checkpoint_of(const char *dir, char *model_dir, size_t len, uint64_t *step) {
    const char *slash = strrchr(dir, '/'), *base = slash ? slash + 1 : dir;
    int64_t st;
    if (strncmp(base, "ckpt-", 5) != 0 || ps_parse_i64(base + 5, &st) || st < 0)
        return false;
    *step = (uint64_t)st;
    snprintf(model_dir, len, "%.*s", slash ? (int)(slash - dir) : 1, slash ? dir : ".");
    return true;
}

/* Verifies what source_open is about to read: a checkpoint against its
 * model_dir's manifest, an export's files or a single file on their own. */
static int verify_source(const char *dir, const char *file, bool *unchecked, char *err,
                         size_t errlen) {
    char model_dir[PATH_MAX];
    uint64_t step;
    if (dir[0] && checkpoint_of(dir, model_dir, sizeof model_dir, &step)) {
        ckpt_sums_t want;
        int mrc = ckpt_manifest_sums(model_dir, step, &want, err, errlen);
        if (mrc < 0)
            return -1;
        int rc = ckpt_verify(dir, mrc == 0 ? &want : NULL, NULL, unchecked, err, errlen);
        ckpt_sums_free(&want);
        return rc;
    }
    if (dir[0])
        return ckpt_verify(dir, NULL, NULL, unchecked, err, errlen);
    st_file_t f;
    st_sum_t sum;
    if (st_open(&f, file, err, errlen))
        return CKPT_ECORRUPT;
    int rc = st_verify(&f, true, &sum, err, errlen) ? CKPT_ECORRUPT : 0;
    st_close(&f);
    if (unchecked)
        *unchecked = rc == 0 && sum.nsums == 0;
    return rc;
}

/* A Keras file (.keras, .weights.h5) as a temporary safetensors file under
 * pstrain's names, in TMPDIR; its path in tmp. */
static int keras_as_safetensors(const store_t *s, const char *path, const char *pattern, char *tmp,
                                size_t len, char *err, size_t errlen) {
    const char *dir = getenv("TMPDIR");
    snprintf(tmp, len, "%s/pstrain-keras-XXXXXX", dir && dir[0] ? dir : "/tmp");
    int fd = mkstemp(tmp);
    if (fd < 0)
        return ps_errf(err, errlen, "%s: %s", tmp, strerror(errno));
    close(fd);
    if (keras_weights_to_safetensors(s->model, path, pattern, tmp, err, errlen) == 0)
        return 0;
    unlink(tmp);
    return -1;
}

static int source_open(source_t *src, const store_t *s, const char *path, const char *pattern,
                       bool slots, bool *unchecked, char *err, size_t errlen) {
    memset(src, 0, sizeof *src);
    char **paths = NULL, dir[PATH_MAX], tmp[PATH_MAX] = "";
    size_t n = 0;
    if (kf_is_keras_path(path)) {
        if (keras_as_safetensors(s, path, pattern, tmp, sizeof tmp, err, errlen))
            return -1;
        path = tmp;
    }
    if (list_files(path, &paths, &n, dir, err, errlen)) {
        if (tmp[0])
            unlink(tmp);
        return -1;
    }
    /* A Keras file was read whole by libhdf5 and converted here: nothing to
     * verify; a checkpoint, an export or a file is checked before use. */
    int vrc = 0;
    if (tmp[0] && unchecked)
        *unchecked = false;
    else if (!tmp[0])
        vrc = verify_source(dir, paths[0], unchecked, err, errlen);
    if (vrc) {
        for (size_t i = 0; i < n; i++)
            free(paths[i]);
        free(paths);
        return vrc;
    }
    src->files = xcalloc(n, sizeof *src->files);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && (rc = st_open(&src->files[src->nfiles], paths[i], err, errlen)) == 0)
            src->nfiles++;
        free(paths[i]);
    }
    free(paths);
    if (tmp[0])
        unlink(tmp); /* st_open keeps it open */
    for (size_t i = 0; rc == 0 && i < src->nfiles; i++)
        rc = add_file_pieces(src, s, &src->files[i], slots, err, errlen);
    if (rc)
        source_free(src);
    return rc;
}

/* The tensor names of a source's files, for errors: "a, b, c". */
static void names_found(const source_t *src, char *out, size_t len) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < src->nfiles; i++)
        for (size_t k = 0; k < src->files[i].n && n + 1 < len; k++)
            n += (size_t)snprintf(out + n, len - n, "%s%s", n ? ", " : "",
                                  src->files[i].entries[k].name);
    if (!out[0])
        snprintf(out, len, "none");
}

/* Copies the rows of one partition's slab from the pieces that hold them. */
static int fill_part(const store_t *s, const source_t *src, const store_part_t *p, size_t slab,
                     float *dst, const char *path, char *err, size_t errlen) {
    const var_t *v = &s->model->vars[p->var];
    size_t row = store_row_size(v), found = 0;
    bool named = false; /* some piece of the source is this variable's */
    for (size_t i = 0; i < src->npieces; i++) {
        const piece_t *x = &src->pieces[i];
        if (x->var != p->var || x->slab != slab)
            continue;
        named = true;
        size_t lo = PS_MAX(p->row_begin, x->row_begin);
        size_t hi = PS_MIN(p->row_begin + p->rows, x->row_begin + x->e->shape[0]);
        if (lo >= hi)
            continue;
        if (st_read(x->f, x->e, (lo - x->row_begin) * row, (hi - lo) * row,
                    dst + (lo - p->row_begin) * row, err, errlen))
            return -1;
        found += hi - lo;
    }
    if (found == p->rows)
        return 0;
    const char *what = slab ? optim_slot_name(&s->opt, slab - 1) : "weights";
    if (!named && slab == 0) {
        char names[512];
        names_found(src, names, sizeof names);
        return ps_errf(err, errlen,
                       "%s lacks rows [%zu, %zu) of %s (%s): it has no tensor \"%s\"; the names "
                       "found: %s",
                       path, p->row_begin, p->row_begin + p->rows, v->name, what, v->name, names);
    }
    if (found < p->rows)
        return ps_errf(err, errlen, "%s lacks rows [%zu, %zu) of %s (%s): found %zu of %zu", path,
                       p->row_begin, p->row_begin + p->rows, v->name, what, found, p->rows);
    return ps_errf(err, errlen, "%s holds rows of %s (%s) more than once", path, v->name, what);
}

static int compile_pattern(regex_t *re, const char *pattern, char *err, size_t errlen) {
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc == 0)
        return 0;
    char msg[128];
    regerror(rc, re, msg, sizeof msg);
    return ps_errf(err, errlen, "bad variable pattern \"%s\": %s", pattern, msg);
}

int ckpt_restore_store(store_t *s, const char *path, const ckpt_restore_opts_t *o, uint64_t *step,
                       char *err, size_t errlen) {
    regex_t re;
    if (o->pattern && compile_pattern(&re, o->pattern, err, errlen))
        return -1;
    source_t src;
    int rc = source_open(&src, s, path, o->pattern, o->slots, o->unchecked, err, errlen);
    size_t nslabs = o->slots ? 1 + optim_nslots(&s->opt) : 1;
    for (size_t i = 0; rc == 0 && i < s->nparts; i++) {
        const store_part_t *p = &s->parts[i];
        if (o->pattern && regexec(&re, s->model->vars[p->var].name, 0, NULL, 0) != 0)
            continue;
        size_t slabs = s->model->vars[p->var].moving ? 1 : nslabs; /* no slots */
        for (size_t slab = 0; rc == 0 && slab < slabs; slab++)
            rc = fill_part(s, &src, p, slab, (slab ? s->slots[slab - 1] : s->w) + p->offset, path,
                           err, errlen);
    }
    if (rc == 0 && o->slots)
        s->iterations = src.step;
    if (rc == 0 && step)
        *step = src.step;
    source_free(&src);
    if (o->pattern)
        regfree(&re);
    return rc;
}

int ckpt_load_params(const model_t *m, const char *path, float *params, uint64_t *step, char *err,
                     size_t errlen) {
    store_t s;
    optim_cfg_t plain;
    optim_defaults(&plain, OPTIM_SGD);
    plain.momentum = 0.0;
    store_init_full(&s, m, &plain, 0);
    ckpt_restore_opts_t o = {.pattern = NULL, .slots = false};
    int rc = ckpt_restore_store(&s, path, &o, step, err, errlen);
    if (rc == 0)
        memcpy(params, s.w, m->nparams * sizeof(float));
    store_free(&s);
    return rc;
}

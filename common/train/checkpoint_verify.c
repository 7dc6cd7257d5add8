/* Checkpoints that prove themselves: every file of a checkpoint is read
 * whole and checked against the manifest's length and CRC32C for it, every
 * tensor against the CRC32C in its file's metadata, every value for NaN and
 * Inf; and the newest checkpoint that verifies is found by trying them in
 * turn. */
#include "common/train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/util.h"
#include "common/formats/safetensors.h"

static bool has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of dir's .safetensors files, sorted (caller frees each and the
 * array); -1 when dir cannot be read. */
static int list_names(const char *dir, char ***names, size_t *n, char *err, size_t errlen) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return ps_errf(err, errlen, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!has_suffix(e->d_name, ".safetensors"))
            continue;
        *names = xrealloc(*names, (*n + 1) * sizeof **names);
        (*names)[(*n)++] = xstrdup(e->d_name);
    }
    closedir(d);
    if (*n > 1)
        qsort(*names, *n, sizeof **names, cmp_str);
    return 0;
}

static const ckpt_file_sum_t *find_sum(const ckpt_sums_t *s, const char *name) {
    for (size_t i = 0; s && i < s->n; i++)
        if (!strcmp(s->f[i].name, name))
            return &s->f[i];
    return NULL;
}

/* The manifest's length of a file, before anything else is read: a file
 * cut short says so rather than failing somewhere in its header. */
static int check_length(const char *path, const ckpt_file_sum_t *want, char *err, size_t errlen) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    if ((uint64_t)sb.st_size < want->bytes)
        return ps_errf(err, errlen, "%s: truncated: %lld of the %" PRIu64 " bytes written", path,
                       (long long)sb.st_size, want->bytes);
    if ((uint64_t)sb.st_size > want->bytes)
        return ps_errf(err, errlen, "%s: %lld bytes, but %" PRIu64 " were written", path,
                       (long long)sb.st_size, want->bytes);
    return 0;
}

/* One file: its length (when recorded), its tensors, its whole CRC32C. */
static int verify_file(const char *path, const ckpt_file_sum_t *want, st_sum_t *sum, char *err,
                       size_t errlen) {
    if (want && check_length(path, want, err, errlen))
        return -1;
    st_file_t f;
    if (st_open(&f, path, err, errlen))
        return -1;
    int rc = st_verify(&f, true, sum, err, errlen);
    st_close(&f);
    if (rc == 0 && want && sum->crc32c != want->crc32c)
        /* Every tensor matched its own CRC: the damage is in the header. */
        rc = ps_errf(err, errlen,
                     "%s: CRC32C mismatch in the header (the manifest says %08x, the file gives "
                     "%08x)",
                     path, (unsigned)want->crc32c, (unsigned)sum->crc32c);
    return rc;
}

/* Every file `want` lists must be there. */
static int check_present(const char *dir, const ckpt_sums_t *want, char **names, size_t n,
                         char *err, size_t errlen) {
    for (size_t i = 0; want && i < want->n; i++) {
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = !strcmp(names[k], want->f[i].name);
        if (!found)
            return ps_errf(err, errlen, "%s/%s: missing (the manifest names it)", dir,
                           want->f[i].name);
    }
    return 0;
}

int ckpt_verify(const char *dir, const ckpt_sums_t *want, ckpt_sums_t *got, bool *unchecked,
                char *err, size_t errlen) {
    char **names, path[PATH_MAX];
    size_t n, nsums = 0;
    if (list_names(dir, &names, &n, err, errlen))
        return CKPT_ECORRUPT;
    int rc = check_present(dir, want, names, n, err, errlen);
    if (rc == 0 && n == 0)
        rc = ps_errf(err, errlen, "%s holds no .safetensors files", dir);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        const ckpt_file_sum_t *w = find_sum(want, names[i]);
        st_sum_t sum = {0};
        if (want && !w)
            rc = ps_errf(err, errlen,
                         "%s: not a file of this checkpoint (the manifest does not "
                         "name it)",
                         path);
        else
            rc = verify_file(path, w, &sum, err, errlen);
        if (rc == 0 && got)
            ckpt_sums_add(got, names[i], sum.bytes, sum.crc32c);
        nsums += rc == 0 ? sum.nsums : 0;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (unchecked)
        *unchecked = rc == 0 && !want && nsums == 0;
    return rc ? CKPT_ECORRUPT : 0;
}

int ckpt_verify_step(const char *model_dir, uint64_t step, bool *unchecked, char *err,
                     size_t errlen) {
    ckpt_sums_t want;
    int mrc = ckpt_manifest_sums(model_dir, step, &want, err, errlen);
    if (mrc < 0)
        return -1;
    char dir[PATH_MAX];
    ckpt_dir(dir, sizeof dir, model_dir, step);
    int rc = ckpt_verify(dir, mrc == 0 ? &want : NULL, NULL, unchecked, err, errlen);
    ckpt_sums_free(&want);
    return rc;
}

int ckpt_try_newest(const char *model_dir, const ckpt_manifest_t *m, ckpt_try_fn try,
                    ckpt_bad_fn bad, void *arg, uint64_t *step, char *err, size_t errlen) {
    char dir[PATH_MAX], why[PS_ERRLEN], first[PS_ERRLEN] = "";
    for (size_t i = m->nkept; i-- > 0;) {
        ckpt_dir(dir, sizeof dir, model_dir, m->kept[i]);
        int rc = try(arg, dir, m->kept[i], why, sizeof why);
        if (rc == 0) {
            *step = m->kept[i];
            return 0;
        }
        if (rc != CKPT_ECORRUPT)
            return ps_errf(err, errlen, "%s", why);
        if (!first[0])
            snprintf(first, sizeof first, "%s", why);
        if (bad)
            bad(arg, m->kept[i], why);
    }
    ps_errf(err, errlen, "no checkpoint of %s verifies (%zu tried); the newest: %s", model_dir,
            m->nkept, first);
    return CKPT_ECORRUPT;
}

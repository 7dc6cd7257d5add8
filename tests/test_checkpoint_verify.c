/* Checkpoints that prove themselves: each kind of damage (flipped bits, NaN,
 * truncation, a missing shard, a damaged header) is refused with an error
 * naming the file and the tensor and changes nothing; an old checkpoint
 * without checksums still restores; the fallback to the newest checkpoint
 * that verifies; the manifest's bounds on steps and names; Save's bound on
 * steps over real gRPC. */
#include "test.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/formats/safetensors.h"
#include "common/rpc/msg.h"
#include "common/train/checkpoint.h"
#include "master/checkpointer.h"
#include "master/recovery.h"
#include "ps/shard.h"
#include "test_helpers.h"

/* A model_dir and two PS shards of the MLP (Adam) that write into it. */
typedef struct {
    char root[64];
    model_t m;
    ps_shard_t s[2];
    ps_shard_t fresh; /* ps 0 of 2, restored into */
} fix_t;

static int fix_init(fix_t *f) {
    char err[PS_ERRLEN];
    memset(f, 0, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/pstrain-verify-XXXXXX");
    if (!mkdtemp(f->root) || model_load(&f->m, "mlp", err, sizeof err))
        return -1;
    for (int i = 0; i < 3; i++) {
        ps_shard_opts_t o = {.index = i % 2, .nps = 2, .max_workers = 1, .seed = 7 + (i == 2)};
        optim_defaults(&o.optim, OPTIM_ADAM);
        if (ps_shard_init(i < 2 ? &f->s[i] : &f->fresh, &f->m, &o, err, sizeof err))
            return -1;
    }
    return 0;
}

static void fix_free(fix_t *f) {
    char cmd[128];
    for (int i = 0; i < 2; i++)
        ps_shard_free(&f->s[i]);
    ps_shard_free(&f->fresh);
    model_free(&f->m);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->root);
}

/* Checkpoint `step` by both PS, verified and committed as the master does. */
static int fix_save(fix_t *f, uint64_t step) {
    char dir[PATH_MAX], path[PATH_MAX], err[PS_ERRLEN];
    ckpt_dir(dir, sizeof dir, f->root, step);
    ckpt_sums_t sums = {0};
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = ps_shard_save(&f->s[i], dir, 2, step, path, sizeof path, err, sizeof err);
    if (rc == 0)
        rc = ckpt_write_model(dir, &f->m, err, sizeof err) ||
             ckpt_verify(dir, NULL, &sums, NULL, err, sizeof err) ||
             ckpt_manifest_commit(f->root, step, 5, false, &sums, err, sizeof err);
    ckpt_sums_free(&sums);
    if (rc)
        fprintf(stderr, "%s\n", err);
    return rc;
}

static void shard_file(const fix_t *f, uint64_t step, int ps, char *out, size_t len) {
    char dir[PATH_MAX];
    ckpt_dir(dir, sizeof dir, f->root, step);
    ckpt_shard_path(out, len, dir, ps, 2);
}

/* Restores checkpoint `step` into fix->fresh: its return code. */
static int fix_restore(fix_t *f, uint64_t step, bool *unchecked, char *err, size_t errlen) {
    char dir[PATH_MAX];
    ckpt_dir(dir, sizeof dir, f->root, step);
    return ps_shard_restore(&f->fresh, dir, unchecked, err, errlen);
}

/* XORs one byte of a file with mask. */
static void flip_byte(const char *path, uint64_t at, uint8_t mask) {
    FILE *fp = fopen(path, "r+b");
    if (!fp)
        return;
    fseek(fp, (long)at, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, (long)at, SEEK_SET);
    fputc((c ^ mask) & 0xff, fp);
    fclose(fp);
}

/* The name and file offset of the index-th tensor of a safetensors file. */
static void entry_at(const char *path, size_t index, char *name, size_t len, uint64_t *begin) {
    st_file_t f;
    char err[PS_ERRLEN];
    name[0] = '\0';
    *begin = 0;
    if (st_open(&f, path, err, sizeof err))
        return;
    if (index < f.n) {
        snprintf(name, len, "%s", f.entries[index].name);
        *begin = f.entries[index].begin;
    }
    st_close(&f);
}

void test_checkpoint_verify_flipped_bits(void) {
    fix_t f;
    char path[PATH_MAX], name[256], err[PS_ERRLEN], want[PATH_MAX + 300];
    uint64_t begin;
    CHECK(fix_init(&f) == 0);
    CHECK(fix_save(&f, 10) == 0);
    CHECK(fix_restore(&f, 10, NULL, err, sizeof err) == 0);
    float w0 = f.fresh.store.w[0];
    f.fresh.store.w[0] = 123.0f;
    /* Two bits of the second tensor's data. */
    shard_file(&f, 10, 0, path, sizeof path);
    entry_at(path, 1, name, sizeof name, &begin);
    CHECK(name[0]);
    flip_byte(path, begin + 6, 0x12);
    CHECK_INT_EQ(fix_restore(&f, 10, NULL, err, sizeof err), CKPT_ECORRUPT);
    snprintf(want, sizeof want, "ckpt-10/ps-0-of-2.safetensors: tensor %s: CRC32C mismatch", name);
    CHECK_STR_CONTAINS(err, want);
    CHECK(f.fresh.store.w[0] == 123.0f); /* nothing restored */
    /* The same bits back: it verifies again. */
    flip_byte(path, begin + 6, 0x12);
    CHECK(fix_restore(&f, 10, NULL, err, sizeof err) == 0);
    CHECK(f.fresh.store.w[0] == w0);
    /* A bit of the header (the step in the metadata: "10" -> "11"): only the
     * manifest's CRC32C of the whole file sees it. */
    char *text;
    size_t len;
    CHECK(ps_read_file(path, &text, &len, err, sizeof err) == 0);
    char *at = strstr(text + 8, "\"step\":\"10\"");
    CHECK(at != NULL);
    uint64_t off = (uint64_t)(at - text) + strlen("\"step\":\"1");
    free(text);
    flip_byte(path, off, 0x01);
    CHECK_INT_EQ(fix_restore(&f, 10, NULL, err, sizeof err), CKPT_ECORRUPT);
    CHECK_STR_CONTAINS(err, "ckpt-10/ps-0-of-2.safetensors: CRC32C mismatch in the header");
    fix_free(&f);
}

void test_checkpoint_verify_nan(void) {
    fix_t f;
    char err[PS_ERRLEN], dir[PATH_MAX], path[PATH_MAX];
    CHECK(fix_init(&f) == 0);
    /* A NaN the PS held when it saved: the CRC32C matches, the value does not
     * pass; the master's read-back refuses to commit such a checkpoint. */
    f.s[1].store.w[5] = NAN;
    ckpt_dir(dir, sizeof dir, f.root, 20);
    CHECK(ps_shard_save(&f.s[1], dir, 2, 20, path, sizeof path, err, sizeof err) == 0);
    ckpt_sums_t sums = {0};
    CHECK_INT_EQ(ckpt_verify(dir, NULL, &sums, NULL, err, sizeof err), CKPT_ECORRUPT);
    CHECK_STR_CONTAINS(err, "ps-1-of-2.safetensors: tensor ");
    CHECK_STR_CONTAINS(err, ": element 5 is NaN or Inf");
    ckpt_sums_free(&sums);
    /* Inf in an optimizer slot, committed without a read-back (a checkpoint
     * whose bits were changed to Inf with its checksums recomputed). */
    f.s[1].store.w[5] = 0.5f;
    f.s[0].store.slots[1][2] = INFINITY;
    CHECK(fix_save(&f, 30) != 0);
    for (int i = 0; i < 2; i++)
        CHECK(ps_shard_save(&f.s[i], dir, 2, 20, path, sizeof path, err, sizeof err) == 0);
    CHECK(ckpt_manifest_commit(f.root, 20, 5, false, NULL, err, sizeof err) == 0);
    float before = f.fresh.store.w[0];
    f.fresh.store.w[0] = before + 1.0f;
    CHECK_INT_EQ(fix_restore(&f, 20, NULL, err, sizeof err), CKPT_ECORRUPT);
    CHECK_STR_CONTAINS(err, "ckpt-20/ps-0-of-2.safetensors: tensor ");
    CHECK_STR_CONTAINS(err, "/v");
    CHECK_STR_CONTAINS(err, ": element 2 is NaN or Inf");
    CHECK(f.fresh.store.w[0] == before + 1.0f);
    fix_free(&f);
}

void test_checkpoint_verify_truncated(void) {
    fix_t f;
    char path[PATH_MAX], err[PS_ERRLEN], manifest[PATH_MAX];
    struct stat sb;
    CHECK(fix_init(&f) == 0);
    CHECK(fix_save(&f, 40) == 0);
    shard_file(&f, 40, 1, path, sizeof path);
    CHECK(stat(path, &sb) == 0);
    CHECK(truncate(path, sb.st_size / 2) == 0);
    CHECK_INT_EQ(fix_restore(&f, 40, NULL, err, sizeof err), CKPT_ECORRUPT);
    char want[PATH_MAX + 100];
    snprintf(want, sizeof want, "ckpt-40/ps-1-of-2.safetensors: truncated: %lld of the %lld bytes",
             (long long)(sb.st_size / 2), (long long)sb.st_size);
    CHECK_STR_CONTAINS(err, want);
    /* Without the manifest's length, the header says it, not "bad shape". */
    snprintf(manifest, sizeof manifest, "%s/checkpoint", f.root);
    CHECK(unlink(manifest) == 0);
    CHECK_INT_EQ(fix_restore(&f, 40, NULL, err, sizeof err), CKPT_ECORRUPT);
    CHECK_STR_CONTAINS(err, "ps-1-of-2.safetensors: truncated: tensor ");
    CHECK(strstr(err, "bad shape") == NULL);
    fix_free(&f);
}

void test_checkpoint_verify_missing_shard(void) {
    fix_t f;
    char path[PATH_MAX], err[PS_ERRLEN];
    CHECK(fix_init(&f) == 0);
    CHECK(fix_save(&f, 50) == 0);
    shard_file(&f, 50, 1, path, sizeof path);
    CHECK(unlink(path) == 0);
    CHECK_INT_EQ(fix_restore(&f, 50, NULL, err, sizeof err), CKPT_ECORRUPT);
    CHECK_STR_CONTAINS(err, "ckpt-50/ps-1-of-2.safetensors: missing");
    fix_free(&f);
}

/* Rewrites a safetensors file without the CRC32Cs in its metadata: what
 * pstrain wrote before it kept checksums. */
static int strip_sums(const char *path) {
    char *text, err[PS_ERRLEN];
    size_t len;
    if (ps_read_file(path, &text, &len, err, sizeof err))
        return -1;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)(uint8_t)text[i] << (8 * i);
    char *h = strndup(text + 8, (size_t)hlen);
    json_object *o = json_tokener_parse(h), *meta;
    free(h);
    if (!o || !json_object_object_get_ex(o, "__metadata__", &meta))
        return -1;
    json_object *kept = json_object_new_object();
    json_object_object_foreach(meta, k, v) {
        if (strncmp(k, ST_CRC_PREFIX, strlen(ST_CRC_PREFIX)) != 0)
            json_object_object_add(kept, k, json_object_get(v));
    }
    json_object_object_add(o, "__metadata__", kept);
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    size_t sl = strlen(s), padded = (sl + 7) & ~(size_t)7;
    FILE *fp = fopen(path, "wb");
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(padded >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(s, 1, sl, fp);
    for (size_t i = sl; i < padded; i++)
        fputc(' ', fp);
    fwrite(text + 8 + hlen, 1, len - 8 - hlen, fp);
    fclose(fp);
    json_object_put(o);
    free(text);
    return 0;
}

void test_checkpoint_verify_old_unchecked(void) {
    fix_t f;
    char path[PATH_MAX], err[PS_ERRLEN];
    CHECK(fix_init(&f) == 0);
    CHECK(fix_save(&f, 60) == 0);
    for (int i = 0; i < 2; i++) {
        shard_file(&f, 60, i, path, sizeof path);
        CHECK(strip_sums(path) == 0);
    }
    /* A manifest of that time: no "files". */
    CHECK(ckpt_manifest_commit(f.root, 60, 5, false, NULL, err, sizeof err) == 0);
    char manifest[PATH_MAX];
    snprintf(manifest, sizeof manifest, "%s/checkpoint", f.root);
    json_object *m = json_object_from_file(manifest);
    CHECK(m != NULL);
    json_object_object_del(m, "files");
    CHECK(json_object_to_file(manifest, m) == 0);
    json_object_put(m);
    bool unchecked = false;
    CHECK(fix_restore(&f, 60, &unchecked, err, sizeof err) == 0);
    CHECK(unchecked);
    CHECK(memcmp(f.fresh.store.w, f.s[0].store.w, f.s[0].store.size * sizeof(float)) == 0);
    CHECK_INT_EQ(ps_shard_step(&f.fresh), 60);
    fix_free(&f);
}

typedef struct {
    fix_t *f;
    uint64_t bad[4];
    size_t nbad;
} tries_t;

static int try_restore(void *arg, const char *dir, uint64_t step, char *err, size_t errlen) {
    tries_t *t = arg;
    (void)step;
    return ps_shard_restore(&t->f->fresh, dir, NULL, err, errlen);
}

static void note_bad(void *arg, uint64_t step, const char *why) {
    tries_t *t = arg;
    (void)why;
    if (t->nbad < 4)
        t->bad[t->nbad++] = step;
}

void test_checkpoint_fallback(void) {
    fix_t f;
    char path[PATH_MAX], name[256], err[PS_ERRLEN];
    uint64_t begin, step = 0;
    CHECK(fix_init(&f) == 0);
    CHECK(fix_save(&f, 10) == 0);
    float at10 = f.s[0].store.w[0];
    f.s[0].store.w[0] = at10 + 1.0f;
    CHECK(fix_save(&f, 20) == 0);
    shard_file(&f, 20, 0, path, sizeof path);
    entry_at(path, 0, name, sizeof name, &begin);
    flip_byte(path, begin + 1, 0x40);
    ckpt_manifest_t man;
    CHECK(ckpt_manifest_read(f.root, &man, err, sizeof err) == 0);
    tries_t t = {.f = &f};
    CHECK(ckpt_try_newest(f.root, &man, try_restore, note_bad, &t, &step, err, sizeof err) == 0);
    CHECK_INT_EQ(step, 10);
    CHECK_INT_EQ(t.nbad, 1);
    CHECK_INT_EQ(t.bad[0], 20);
    CHECK(f.fresh.store.w[0] == at10);
    /* The master's view: ckpt-20 leaves the manifest, ckpt-10 is the latest. */
    config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.checkpoint.model_dir, sizeof cfg.checkpoint.model_dir, "%s", f.root);
    CHECK(checkpointer_newest_good(&cfg, &step, err, sizeof err) == 0);
    CHECK_INT_EQ(step, 10);
    CHECK(ckpt_manifest_read(f.root, &man, err, sizeof err) == 0);
    CHECK_INT_EQ(man.latest, 10);
    CHECK_INT_EQ(man.nkept, 1);
    /* Every checkpoint damaged: a permanent error naming the newest's file;
     * the manifest keeps its last checkpoint. */
    CHECK(fix_save(&f, 20) == 0);
    shard_file(&f, 10, 1, path, sizeof path);
    CHECK(truncate(path, 100) == 0);
    shard_file(&f, 20, 0, path, sizeof path);
    flip_byte(path, begin + 1, 0x40);
    CHECK(ckpt_manifest_read(f.root, &man, err, sizeof err) == 0);
    t.nbad = 0;
    CHECK_INT_EQ(ckpt_try_newest(f.root, &man, try_restore, note_bad, &t, &step, err, sizeof err),
                 CKPT_ECORRUPT);
    CHECK_INT_EQ(t.nbad, 2);
    CHECK_STR_CONTAINS(err, "no checkpoint of");
    CHECK_STR_CONTAINS(err, "ckpt-20/ps-0-of-2.safetensors: tensor ");
    CHECK_INT_EQ(checkpointer_newest_good(&cfg, &step, err, sizeof err), CKPT_ECORRUPT);
    CHECK(ckpt_manifest_read(f.root, &man, err, sizeof err) == 0);
    CHECK_INT_EQ(man.nkept, 2);
    CHECK(ckpt_manifest_drop(f.root, 10, err, sizeof err) == 0);
    CHECK(ckpt_manifest_drop(f.root, 20, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "the only checkpoint kept");
    fix_free(&f);
}

static bool exists(const char *root, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", root, name);
    return access(path, F_OK) == 0;
}

void test_checkpoint_manifest_bounds(void) {
    char root[64] = "/tmp/pstrain-bounds-XXXXXX", path[PATH_MAX], err[PS_ERRLEN];
    CHECK(mkdtemp(root) != NULL);
    const char *odd[] = {"ckpt-18446744073709551615", "ckpt-99999999999999999999999",
                         "ckpt-9007199254740992", "ckpt-007"};
    for (size_t i = 0; i < PS_ARRAY_LEN(odd); i++) {
        snprintf(path, sizeof path, "%s/%s", root, odd[i]);
        CHECK(ps_mkdirs(path, err, sizeof err) == 0);
    }
    snprintf(path, sizeof path, "%s/ckpt-best", root);
    CHECK(ps_mkdirs(path, err, sizeof err) == 0);
    /* Out of range: refused, and the manifest stays as it was (none). */
    CHECK(ckpt_manifest_commit(root, UINT64_MAX, 5, false, NULL, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "over the limit");
    ckpt_manifest_t m;
    CHECK_INT_EQ(ckpt_manifest_read(root, &m, err, sizeof err), 1);
    /* A commit prunes every ckpt-<digits> no manifest can name; other names
     * are not pstrain's and stay. */
    snprintf(path, sizeof path, "%s/ckpt-7", root);
    CHECK(ps_mkdirs(path, err, sizeof err) == 0);
    CHECK(ckpt_manifest_commit(root, 7, 5, false, NULL, err, sizeof err) == 0);
    for (size_t i = 0; i < PS_ARRAY_LEN(odd); i++)
        CHECK(!exists(root, odd[i]));
    CHECK(exists(root, "ckpt-7"));
    CHECK(exists(root, "ckpt-best"));
    /* A manifest naming an out-of-range step is broken, not read as -1. */
    snprintf(path, sizeof path, "%s/checkpoint", root);
    FILE *fp = fopen(path, "w");
    fputs("{\"latest_step\": 9007199254740992, \"kept_steps\": [9007199254740992]}", fp);
    fclose(fp);
    CHECK(ckpt_manifest_read(root, &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "latest_step is not a step");
    snprintf(path, sizeof path, "rm -rf '%s'", root);
    CHECK(system(path) == 0);
}

/* Save(step) over gRPC to a PS at step 0; the gRPC status and message. */
static int call_save(test_ps_t *e, uint64_t step, char *err, size_t errlen) {
    Pstrain__SaveRequest req = PSTRAIN__SAVE_REQUEST__INIT;
    req.step = step;
    rpc_buf_t out = {0}, resp = {0};
    msg_pack(&out, &req.base);
    int code = rpc_call(e->ch, "/pstrain.ParameterServer/Save", out.data, out.len, 10.0, &resp, err,
                        errlen);
    rpc_buf_free(&out);
    rpc_buf_free(&resp);
    return code;
}

void test_ps_service_save_step_bounds(void) {
    char root[64] = "/tmp/pstrain-save-XXXXXX", err[PS_ERRLEN], cmd[128];
    CHECK(mkdtemp(root) != NULL);
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    e.svc.model_dir = root;
    e.svc.nps = 1;
    CHECK_INT_EQ(call_save(&e, UINT64_MAX, err, sizeof err), RPC_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(err, "save: step 18446744073709551615 is over the limit");
    CHECK_INT_EQ(call_save(&e, 10001, err, sizeof err), RPC_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(err, "beyond this PS's step 0");
    CHECK(!exists(root, "ckpt-18446744073709551615"));
    CHECK(!exists(root, "ckpt-10001"));
    /* A step a little ahead (another PS's count) is a checkpoint. */
    CHECK_INT_EQ(call_save(&e, 3, err, sizeof err), RPC_OK);
    CHECK(exists(root, "ckpt-3/ps-0-of-1.safetensors"));
    test_ps_stop(&e);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

/* A PS that cannot restore a checkpoint the master verified (it trains
 * with SGD, the checkpoint holds Adam's slots) answers FAILED_PRECONDITION;
 * after 10 such refusals in a row the master's recovery gives up (fatal)
 * instead of rolling back for ever. Real gRPC to an in-process PS. */
void test_master_rollback_refused_gives_up(void) {
    char root[64] = "/tmp/pstrain-refuse-XXXXXX", err[PS_ERRLEN], dir[PATH_MAX], path[PATH_MAX];
    CHECK(mkdtemp(root) != NULL);
    model_t m;
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    ps_shard_t adam;
    ps_shard_opts_t o = {.index = 0, .nps = 1, .max_workers = 1, .seed = 3};
    optim_defaults(&o.optim, OPTIM_ADAM);
    CHECK(ps_shard_init(&adam, &m, &o, err, sizeof err) == 0);
    ckpt_dir(dir, sizeof dir, root, 5);
    ckpt_sums_t sums = {0};
    CHECK(ps_shard_save(&adam, dir, 1, 5, path, sizeof path, err, sizeof err) == 0);
    CHECK(ckpt_verify(dir, NULL, &sums, NULL, err, sizeof err) == 0);
    CHECK(ckpt_manifest_commit(root, 5, 5, false, &sums, err, sizeof err) == 0);
    ckpt_sums_free(&sums);
    ps_shard_free(&adam);
    test_ps_t e;
    CHECK(test_ps_start(&e, false, NULL) == 0);
    e.svc.model_dir = root;
    e.svc.nps = 1;
    config_t cfg;
    config_defaults(&cfg);
    snprintf(cfg.checkpoint.model_dir, sizeof cfg.checkpoint.model_dir, "%s", root);
    static Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "master";
    const char *addrs[] = {e.addr};
    psclient_options_t po = {.addrs = addrs, .nps = 1, .deadline_secs = 5.0};
    psclient_t *ps = psclient_create(&po, &e.m, &caller, NULL, NULL, err, sizeof err);
    CHECK(ps != NULL);
    recovery_t rv;
    recovery_init(&rv, ps, &cfg);
    for (int i = 1; i <= 9; i++) {
        CHECK(recovery_rollback(&rv, "test") != 0);
        CHECK(!rv.fatal);
    }
    CHECK(recovery_rollback(&rv, "test") != 0);
    CHECK(rv.fatal);
    CHECK_STR_CONTAINS(rv.fatal_err, "a PS refused to restore ckpt-5 10 times in a row");
    CHECK_STR_CONTAINS(rv.fatal_err, "written by optimizer adam; train.optimizer is sgd");
    recovery_free(&rv);
    psclient_free(ps);
    test_ps_stop(&e);
    model_free(&m);
    snprintf(path, sizeof path, "rm -rf '%s'", root);
    CHECK(system(path) == 0);
}

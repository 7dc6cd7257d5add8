/* safetensors files, the checkpoint manifest, and saving and restoring PS
 * shards across different numbers of PS (optimizer slots included). */
#include "test.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/train/checkpoint.h"
#include "common/formats/safetensors.h"
#include "common/base/util.h"
#include "kernels/backend.h"
#include "ps/shard.h"

static void make_tmpdir(char *out, size_t len) {
    snprintf(out, len, "/tmp/pstrain-ckpt-XXXXXX");
    if (!mkdtemp(out))
        out[0] = '\0';
}

static void remove_tree(const char *dir) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

void test_safetensors_roundtrip(void) {
    char dir[64], path[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {-1.5f, 0.25f, 1e30f};
    st_tensor_t t[2] = {{.name = "conv/kernel", .ndim = 2, .shape = {2, 3}, .data = a},
                        {.name = "conv/bias", .ndim = 1, .shape = {3}, .data = b}};
    st_meta_t meta[1] = {{"step", "17"}};
    CHECK(st_write(path, t, 2, meta, 1, err, sizeof err) == 0);
    st_file_t f;
    CHECK(st_open(&f, path, err, sizeof err) == 0);
    CHECK_INT_EQ(f.n, 2);
    CHECK(st_meta_get(&f, "step") && !strcmp(st_meta_get(&f, "step"), "17"));
    const st_entry_t *e = st_find(&f, "conv/bias");
    CHECK(e != NULL);
    CHECK_INT_EQ(e->ndim, 1);
    CHECK_INT_EQ(e->shape[0], 3);
    CHECK_INT_EQ(e->begin % 8, 0);
    float got[4];
    CHECK(st_read(&f, e, 0, 3, got, err, sizeof err) == 0);
    CHECK(memcmp(got, b, sizeof b) == 0);
    e = st_find(&f, "conv/kernel");
    CHECK(st_read(&f, e, 3, 3, got, err, sizeof err) == 0);
    CHECK(got[0] == 4 && got[2] == 6);
    CHECK(st_read(&f, e, 4, 3, got, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "outside");
    st_close(&f);
    remove_tree(dir);
}

/* Writes a one-tensor file whose header is `header`, followed by `data_len`
 * zero bytes, and returns the error st_open gives. */
static int open_crafted(const char *path, const char *header, size_t data_len, char *err,
                        size_t errlen) {
    size_t hl = strlen(header);
    uint8_t *buf = calloc(1, 8 + hl + data_len);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    write_bytes(path, buf, 8 + hl + data_len);
    free(buf);
    st_file_t f;
    int rc = st_open(&f, path, err, errlen);
    if (rc == 0)
        st_close(&f);
    return rc;
}

void test_safetensors_rejects_corrupt(void) {
    char dir[64], path[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    write_bytes(path, "\x05\x00", 2);
    CHECK(open_crafted(path, "", 0, err, sizeof err) != 0);
    write_bytes(path, "\xff\xff\xff\xff\x00\x00\x00\x00{}", 10);
    st_file_t f;
    CHECK(st_open(&f, path, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "does not fit");
    CHECK_STR_CONTAINS(err, path);
    CHECK(open_crafted(path, "[1, 2]", 0, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "not a JSON object");
    CHECK(open_crafted(path,
                       "{\"x\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4,
                       err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "F16");
    CHECK(open_crafted(path,
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
                       8, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "truncated");
    CHECK(open_crafted(path,
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 16]}}",
                       16, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "16 bytes for 3 floats");
    CHECK(open_crafted(path,
                       "{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"y\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                       12, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "overlap");
    remove_tree(dir);
}

void test_checkpoint_manifest(void) {
    char dir[64], sub[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    ckpt_manifest_t m;
    CHECK_INT_EQ(ckpt_manifest_read(dir, &m, err, sizeof err), 1);
    uint64_t steps[4] = {10, 20, 30, 40};
    for (int i = 0; i < 4; i++) {
        ckpt_dir(sub, sizeof sub, dir, steps[i]);
        CHECK(ps_mkdirs(sub, err, sizeof err) == 0);
        CHECK(ckpt_manifest_commit(dir, steps[i], 2, i == 3, NULL, err, sizeof err) == 0);
    }
    /* A directory left by a crash before its commit goes at the next commit. */
    ckpt_dir(sub, sizeof sub, dir, 45);
    CHECK(ps_mkdirs(sub, err, sizeof err) == 0);
    ckpt_dir(sub, sizeof sub, dir, 50);
    CHECK(ps_mkdirs(sub, err, sizeof err) == 0);
    CHECK(ckpt_manifest_commit(dir, 50, 2, true, NULL, err, sizeof err) == 0);
    CHECK_INT_EQ(ckpt_manifest_read(dir, &m, err, sizeof err), 0);
    CHECK_INT_EQ(m.latest, 50);
    CHECK_INT_EQ(m.nkept, 2);
    CHECK_INT_EQ(m.kept[0], 40);
    CHECK(m.final);
    ckpt_dir(sub, sizeof sub, dir, 30);
    CHECK(access(sub, F_OK) != 0);
    ckpt_dir(sub, sizeof sub, dir, 45);
    CHECK(access(sub, F_OK) != 0);
    ckpt_dir(sub, sizeof sub, dir, 40);
    CHECK(access(sub, F_OK) == 0);
    /* A rollback to an older step drops the newer ones from the manifest. */
    CHECK(ckpt_manifest_commit(dir, 40, 2, false, NULL, err, sizeof err) == 0);
    CHECK(ckpt_manifest_read(dir, &m, err, sizeof err) == 0);
    CHECK_INT_EQ(m.latest, 40);
    CHECK_INT_EQ(m.nkept, 1);
    snprintf(sub, sizeof sub, "%s/checkpoint", dir);
    write_bytes(sub, "{\"latest_step\": 3", 17);
    CHECK(ckpt_manifest_read(dir, &m, err, sizeof err) < 0);
    CHECK_STR_CONTAINS(err, "checkpoint: not JSON");
    remove_tree(dir);
}

/* ---- shards over N PS ---- */

typedef struct {
    int nps;
    ps_shard_t s[4];
} cluster_t_;

static int shards_init(cluster_t_ *c, const model_t *m, int nps, optim_kind_t kind) {
    char err[PS_ERRLEN];
    c->nps = nps;
    for (int i = 0; i < nps; i++) {
        ps_shard_opts_t o = {.index = i, .nps = nps, .max_workers = 1, .seed = 42};
        optim_defaults(&o.optim, kind);
        if (ps_shard_init(&c->s[i], m, &o, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return -1;
        }
    }
    return 0;
}

static void shards_free(cluster_t_ *c) {
    for (int i = 0; i < c->nps; i++)
        ps_shard_free(&c->s[i]);
}

/* Pushes a gradient slab (model layout) to every shard. */
static int shards_push(cluster_t_ *c, const model_t *m, const float *g) {
    char err[PS_ERRLEN];
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    for (int i = 0; i < c->nps; i++) {
        const store_t *st = &c->s[i].store;
        Pstrain__Tensor *t = xcalloc(st->nparts, sizeof *t);
        Pstrain__Tensor **tp = xcalloc(st->nparts, sizeof *tp);
        for (size_t k = 0; k < st->nparts; k++) {
            const store_part_t *p = &st->parts[k];
            const var_t *v = &m->vars[p->var];
            Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
            t[k] = init;
            t[k].name = (char *)v->name;
            t[k].row_begin = p->row_begin;
            t[k].rows = p->rows;
            t[k].data.data = (uint8_t *)(g + v->offset + p->row_begin * store_row_size(v));
            t[k].data.len = p->size * sizeof(float);
            tp[k] = &t[k];
        }
        Pstrain__PushRequest req = PSTRAIN__PUSH_REQUEST__INIT;
        req.caller = &caller;
        req.n_grads = st->nparts;
        req.grads = tp;
        bool stale;
        int rc = ps_shard_push(&c->s[i], &req, &stale, err, sizeof err);
        free(t);
        free(tp);
        if (rc) {
            fprintf(stderr, "%s\n", err);
            return -1;
        }
    }
    return 0;
}

/* Gathers weights (slab 0) or slot k (slab 1 + k) into a model-layout slab. */
static void shards_gather(const cluster_t_ *c, const model_t *m, size_t slab, float *out) {
    for (int i = 0; i < c->nps; i++) {
        const store_t *st = &c->s[i].store;
        const float *src = slab ? st->slots[slab - 1] : st->w;
        for (size_t k = 0; k < st->nparts; k++) {
            const store_part_t *p = &st->parts[k];
            const var_t *v = &m->vars[p->var];
            memcpy(out + v->offset + p->row_begin * store_row_size(v), src + p->offset,
                   p->size * sizeof(float));
        }
    }
}

static int shards_equal(const cluster_t_ *a, const cluster_t_ *b, const model_t *m) {
    size_t n = m->nparams * sizeof(float);
    float *x = xmalloc(n), *y = xmalloc(n);
    int bad = 0;
    for (size_t slab = 0; slab <= optim_nslots(&a->s[0].store.opt) && !bad; slab++) {
        shards_gather(a, m, slab, x);
        shards_gather(b, m, slab, y);
        if (memcmp(x, y, n) != 0) {
            fprintf(stderr, "slab %zu differs\n", slab);
            bad = 1;
        }
    }
    free(x);
    free(y);
    return bad ? -1 : 0;
}

static void fill_grad(float *g, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        g[i] = rng_uniform(seed, i) - 0.5f;
}

void test_checkpoint_resume_2_to_3_ps(void) {
    char dir[64], ck[PATH_MAX], path[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    model_t m;
    CHECK(model_load(&m, "cnn", err, sizeof err) == 0);
    float *g = xmalloc(m.nparams * sizeof(float));
    cluster_t_ two, three;
    CHECK(shards_init(&two, &m, 2, OPTIM_ADAM) == 0);
    CHECK(shards_init(&three, &m, 3, OPTIM_ADAM) == 0);
    for (uint64_t step = 1; step <= 3; step++) {
        fill_grad(g, m.nparams, step);
        CHECK(shards_push(&two, &m, g) == 0);
    }
    ckpt_dir(ck, sizeof ck, dir, 3);
    for (int i = 0; i < 2; i++)
        CHECK(ps_shard_save(&two.s[i], ck, 2, 3, path, sizeof path, err, sizeof err) == 0);
    CHECK(shards_equal(&two, &three, &m) != 0); /* fresh: slots and weights differ */
    for (int i = 0; i < 3; i++) {
        CHECK(ps_shard_restore(&three.s[i], ck, NULL, err, sizeof err) == 0);
        CHECK_INT_EQ(ps_shard_step(&three.s[i]), 3);
    }
    CHECK(shards_equal(&two, &three, &m) == 0);
    /* The next update is the same, bit for bit (Adam's bias correction
     * depends on the restored step). */
    fill_grad(g, m.nparams, 4);
    CHECK(shards_push(&two, &m, g) == 0);
    CHECK(shards_push(&three, &m, g) == 0);
    CHECK(shards_equal(&two, &three, &m) == 0);
    /* A missing shard file is an error naming the rows, and changes nothing. */
    ckpt_shard_path(path, sizeof path, ck, 1, 2);
    CHECK(unlink(path) == 0);
    float before = three.s[0].store.w[0];
    int failed = 0;
    for (int i = 0; i < 3; i++)
        failed += ps_shard_restore(&three.s[i], ck, NULL, err, sizeof err) != 0;
    CHECK(failed > 0);
    CHECK_STR_CONTAINS(err, "lacks rows");
    CHECK(three.s[0].store.w[0] == before);
    shards_free(&two);
    shards_free(&three);
    free(g);
    model_free(&m);
    remove_tree(dir);
}

void test_checkpoint_resume_needs_same_optimizer(void) {
    char dir[64], path[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    model_t m;
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    cluster_t_ sgd, adam;
    CHECK(shards_init(&sgd, &m, 1, OPTIM_SGD) == 0);
    CHECK(shards_init(&adam, &m, 1, OPTIM_ADAM) == 0);
    CHECK(ps_shard_save(&sgd.s[0], dir, 1, 0, path, sizeof path, err, sizeof err) == 0);
    CHECK(ps_shard_restore(&adam.s[0], dir, NULL, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "written by optimizer sgd; train.optimizer is adam");
    shards_free(&sgd);
    shards_free(&adam);
    model_free(&m);
    remove_tree(dir);
}

void test_checkpoint_warm_start(void) {
    char dir[64], path[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    model_t m, wide;
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    /* The same layer names with a wider second layer. */
    CHECK(model_parse(&wide,
                      "{\"input\": [28, 28, 1], \"layers\": [{\"type\": \"flatten\"},"
                      "{\"type\": \"dense\", \"units\": 128, \"activation\": \"relu\"},"
                      "{\"type\": \"dense\", \"units\": 256, \"activation\": \"relu\"},"
                      "{\"type\": \"dense\", \"units\": 10, \"activation\": \"softmax\"}]}",
                      err, sizeof err) == 0);
    float *trained = xmalloc(m.nparams * sizeof(float));
    fill_grad(trained, m.nparams, 99);
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    st_tensor_t *t = xcalloc(m.nvars, sizeof *t);
    for (size_t i = 0; i < m.nvars; i++) {
        t[i] = (st_tensor_t){
            .name = m.vars[i].name, .ndim = m.vars[i].ndim, .data = trained + m.vars[i].offset};
        memcpy(t[i].shape, m.vars[i].shape, sizeof m.vars[i].shape);
    }
    CHECK(st_write(path, t, m.nvars, NULL, 0, err, sizeof err) == 0);
    free(t);
    /* The first layer only, into 2 PS; the rest keep their initial values. */
    cluster_t_ c;
    CHECK(shards_init(&c, &m, 2, OPTIM_SGD) == 0);
    float *init = xmalloc(m.nparams * sizeof(float)), *got = xmalloc(m.nparams * sizeof(float));
    shards_gather(&c, &m, 0, init);
    for (int i = 0; i < 2; i++)
        CHECK(ps_shard_warm_start(&c.s[i], dir, "^dense/", err, sizeof err) == 0);
    shards_gather(&c, &m, 0, got);
    int k = model_find_var(&m, "dense/kernel"), k2 = model_find_var(&m, "dense_1/kernel");
    CHECK(k >= 0 && k2 >= 0);
    const var_t *v = &m.vars[k], *v2 = &m.vars[k2];
    CHECK(memcmp(got + v->offset, trained + v->offset, v->size * sizeof(float)) == 0);
    CHECK(memcmp(got + v2->offset, init + v2->offset, v2->size * sizeof(float)) == 0);
    CHECK_INT_EQ(ps_shard_step(&c.s[0]), 0);
    shards_free(&c);
    /* Shapes that differ are an error naming the variable and both shapes. */
    cluster_t_ w;
    CHECK(shards_init(&w, &wide, 1, OPTIM_SGD) == 0);
    CHECK(ps_shard_warm_start(&w.s[0], path, NULL, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "dense_1/kernel");
    CHECK_STR_CONTAINS(err, "[128, 128]");
    CHECK_STR_CONTAINS(err, "[128, 256]");
    CHECK(ps_shard_warm_start(&w.s[0], path, "(", err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "bad variable pattern");
    shards_free(&w);
    /* The whole model's weights from the same file. */
    CHECK(ckpt_load_params(&m, path, got, NULL, err, sizeof err) == 0);
    CHECK(memcmp(got, trained, m.nparams * sizeof(float)) == 0);
    free(init);
    free(got);
    free(trained);
    model_free(&m);
    model_free(&wide);
    remove_tree(dir);
}

/* Pushes to every shard the rows of ids it holds of the model's first
 * variable (an embedding table), each row's gradient a function of the row
 * and the seed alone; a shard holding none gets an empty push, so that
 * every shard counts the step. */
static int shards_push_rows(cluster_t_ *c, const model_t *m, const uint64_t *ids, size_t n,
                            uint64_t seed) {
    char err[PS_ERRLEN];
    Pstrain__Caller caller = PSTRAIN__CALLER__INIT;
    caller.role = "worker";
    const var_t *v = &m->vars[0];
    size_t row = store_row_size(v);
    uint64_t *mine = xmalloc(n * sizeof *mine);
    float *g = xmalloc(n * row * sizeof *g);
    int rc = 0;
    for (int i = 0; i < c->nps && rc == 0; i++) {
        size_t k = 0;
        for (size_t j = 0; j < n; j++)
            if (placement_find(&c->s[i].placement, 0, ids[j])->ps == i)
                mine[k++] = ids[j];
        for (size_t a = 0; a < k * row; a++)
            g[a] = rng_uniform(seed, mine[a / row] * row + a % row) - 0.5f;
        Pstrain__Tensor t = PSTRAIN__TENSOR__INIT, *tp = &t;
        t.name = (char *)v->name;
        t.n_row_ids = k;
        t.row_ids = mine;
        t.data = (ProtobufCBinaryData){k * row * sizeof(float), (uint8_t *)g};
        Pstrain__PushRequest req = PSTRAIN__PUSH_REQUEST__INIT;
        req.caller = &caller;
        req.n_grads = k ? 1 : 0;
        req.grads = &tp;
        bool stale;
        if ((rc = ps_shard_push(&c->s[i], &req, &stale, err, sizeof err)) != 0)
            fprintf(stderr, "%s\n", err);
    }
    free(mine);
    free(g);
    return rc;
}

/* An embedding table updated by rows (Adam) on 2 PS restores into 3, its
 * slots included, and the next update by rows is the same bit for bit. */
void test_checkpoint_embedding_rows_2_to_3_ps(void) {
    char dir[64], ck[PATH_MAX], path[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    snprintf(path, sizeof path, "%s/embedding.json", dir);
    const char spec[] =
        "{\"input\": [6], \"layers\": [{\"type\": \"embedding\", \"input_dim\": 1000, "
        "\"output_dim\": 16}, {\"type\": \"global_avg_pool1d\"}, {\"type\": \"dense\", "
        "\"units\": 4, \"activation\": \"softmax\"}]}";
    write_bytes(path, spec, sizeof spec - 1);
    model_t m;
    CHECK(model_load(&m, path, err, sizeof err) == 0);
    cluster_t_ two, three;
    CHECK(shards_init(&two, &m, 2, OPTIM_ADAM) == 0);
    CHECK(shards_init(&three, &m, 3, OPTIM_ADAM) == 0);
    CHECK(two.s[0].store.nparts > 1 || two.s[1].store.nparts > 1); /* the table is split */
    uint64_t ids[3][4] = {{3, 499, 500, 998}, {0, 3, 700, 999}, {1, 2, 500, 501}};
    for (uint64_t step = 0; step < 3; step++)
        CHECK(shards_push_rows(&two, &m, ids[step], 4, step + 1) == 0);
    ckpt_dir(ck, sizeof ck, dir, 3);
    for (int i = 0; i < 2; i++)
        CHECK(ps_shard_save(&two.s[i], ck, 2, 3, path, sizeof path, err, sizeof err) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(ps_shard_restore(&three.s[i], ck, NULL, err, sizeof err) == 0);
    CHECK(shards_equal(&two, &three, &m) == 0);
    CHECK(shards_push_rows(&two, &m, ids[1], 4, 9) == 0);
    CHECK(shards_push_rows(&three, &m, ids[1], 4, 9) == 0);
    CHECK(shards_equal(&two, &three, &m) == 0);
    /* Rows never pushed kept their first moment at zero. */
    float *slot = xmalloc(m.nparams * sizeof(float));
    shards_gather(&three, &m, 1, slot);
    CHECK(slot[4 * 16] == 0.0f && slot[999 * 16] != 0.0f);
    free(slot);
    shards_free(&two);
    shards_free(&three);
    model_free(&m);
    remove_tree(dir);
}

/* A model with BatchNormalization: its moving statistics are saved and
 * restored like any variable, without optimizer slots, from 1 PS into 3 and
 * from 3 into 1; the next push is then the same bit for bit. */
void test_checkpoint_batch_norm_1_3_ps(void) {
    char dir[64], ck[PATH_MAX], ck3[PATH_MAX], path[PATH_MAX], err[PS_ERRLEN];
    make_tmpdir(dir, sizeof dir);
    CHECK(dir[0]);
    model_t m;
    CHECK(model_parse(&m,
                      "{\"input\": [8, 8, 1], \"layers\": [{\"type\": \"conv2d\", \"filters\": 6, "
                      "\"kernel_size\": 3}, {\"type\": \"batch_normalization\", \"momentum\": "
                      "0.9}, {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 300}, "
                      "{\"type\": \"batch_normalization\"}, {\"type\": \"dense\", \"units\": 3, "
                      "\"activation\": \"softmax\"}]}",
                      err, sizeof err) == 0);
    int mm = model_find_var(&m, "batch_normalization/moving_mean");
    CHECK(mm >= 0 && m.vars[mm].moving);
    float *g = xmalloc(m.nparams * sizeof(float));
    cluster_t_ one, three, back;
    CHECK(shards_init(&one, &m, 1, OPTIM_ADAM) == 0);
    CHECK(shards_init(&three, &m, 3, OPTIM_ADAM) == 0);
    CHECK(shards_init(&back, &m, 1, OPTIM_ADAM) == 0);
    for (uint64_t step = 1; step <= 3; step++) {
        fill_grad(g, m.nparams, step);
        CHECK(shards_push(&one, &m, g) == 0);
    }
    /* The moving mean took three moving averages of the pushed statistics. */
    float want = 0.0f;
    for (uint64_t step = 1; step <= 3; step++)
        want = 0.9f * want + (float)(1.0 - 0.9) * (rng_uniform(step, m.vars[mm].offset) - 0.5f);
    float *w = xmalloc(m.nparams * sizeof(float));
    shards_gather(&one, &m, 0, w);
    CHECK_NEAR(w[m.vars[mm].offset], want, 1e-6);
    free(w);
    ckpt_dir(ck, sizeof ck, dir, 3);
    CHECK(ps_shard_save(&one.s[0], ck, 1, 3, path, sizeof path, err, sizeof err) == 0);
    st_file_t f;
    CHECK(st_open(&f, path, err, sizeof err) == 0);
    CHECK(st_find(&f, "batch_normalization/moving_mean") != NULL);
    CHECK(st_find(&f, "batch_normalization/gamma/m") != NULL);
    CHECK(st_find(&f, "batch_normalization/moving_mean/m") == NULL); /* no slots */
    CHECK(st_find(&f, "batch_normalization_1/moving_variance/v") == NULL);
    st_close(&f);
    for (int i = 0; i < 3; i++)
        CHECK(ps_shard_restore(&three.s[i], ck, NULL, err, sizeof err) == 0);
    CHECK(shards_equal(&one, &three, &m) == 0);
    ckpt_dir(ck3, sizeof ck3, dir, 4);
    for (int i = 0; i < 3; i++)
        CHECK(ps_shard_save(&three.s[i], ck3, 3, 3, path, sizeof path, err, sizeof err) == 0);
    CHECK(ps_shard_restore(&back.s[0], ck3, NULL, err, sizeof err) == 0);
    CHECK(shards_equal(&one, &back, &m) == 0);
    fill_grad(g, m.nparams, 4);
    CHECK(shards_push(&one, &m, g) == 0);
    CHECK(shards_push(&three, &m, g) == 0);
    CHECK(shards_equal(&one, &three, &m) == 0);
    shards_free(&one);
    shards_free(&three);
    shards_free(&back);
    free(g);
    model_free(&m);
    remove_tree(dir);
}

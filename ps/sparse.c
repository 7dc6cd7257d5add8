#include "ps/sparse.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/peers/fields.h"
#include "common/rpc/wire.h"
#include "common/train/optim_sparse.h"

/* The buffers of the last row pull, and a push's rows copied out aligned. */
struct ps_sparse {
    float *rows; /* gathered rows of every select, one after the other */
    size_t rows_cap;
    Pstrain__Tensor *t;     /* one per select */
    Pstrain__Tensor **ptrs; /* the answer's tensors: the dense ones, then t */
    size_t t_cap, ptrs_cap;
    float *grad; /* a pushed tensor's rows */
    size_t grad_cap;
};

static struct ps_sparse *state(ps_shard_t *s) {
    if (!s->sparse)
        s->sparse = xcalloc(1, sizeof *s->sparse);
    return s->sparse;
}

void ps_sparse_free(ps_shard_t *s) {
    struct ps_sparse *sp = s->sparse;
    if (!sp)
        return;
    free(sp->rows);
    free(sp->t);
    free(sp->ptrs);
    free(sp->grad);
    free(sp);
    s->sparse = NULL;
}

/* Grows *buf to hold n elements of size each. */
static void *room(void *buf, size_t *cap, size_t n, size_t size) {
    if (n <= *cap)
        return buf;
    *cap = PS_MAX(n, 2 * *cap);
    return xrealloc(buf, *cap * size);
}

/* Checks that the ids of variable v are ascending, in the table and held by
 * this PS. */
static int check_ids(const ps_shard_t *s, const char *what, int v, const uint64_t *ids, size_t n,
                     char *err, size_t errlen) {
    const var_t *var = &s->model->vars[v];
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && ids[k] <= ids[k - 1])
            return ps_errf(err, errlen, "%s: rows of %s must be ascending without repeats", what,
                           var->name);
        const placement_part_t *p =
            ids[k] < var->shape[0] ? placement_find(&s->placement, v, ids[k]) : NULL;
        if (!p || p->ps != s->index)
            return ps_errf(err, errlen, "%s: ps %d holds no row %llu of %s", what, s->index,
                           (unsigned long long)ids[k], var->name);
    }
    return 0;
}

/* The element of the store where row `row` of variable v starts (held). */
static const float *row_of(const ps_shard_t *s, int v, uint64_t row) {
    for (size_t i = 0; i < s->store.nparts; i++) {
        const store_part_t *p = &s->store.parts[i];
        if (p->var == v && row >= p->row_begin && row < p->row_begin + p->rows)
            return s->store.w + p->offset +
                   (row - p->row_begin) * store_row_size(&s->model->vars[v]);
    }
    return NULL;
}

int ps_sparse_pull(ps_shard_t *s, const Pstrain__PullRequest *req, size_t n_dense,
                   Pstrain__PullResponse *resp, char *err, size_t errlen) {
    struct ps_sparse *sp = state(s);
    size_t total = 0;
    for (size_t i = 0; i < req->n_rows; i++) {
        const Pstrain__RowSelect *r = req->rows[i];
        int v = r->name ? model_find_var(s->model, r->name) : -1;
        if (v < 0)
            return ps_errf(err, errlen, "pull: unknown variable \"%s\"", r->name ? r->name : "");
        if (check_ids(s, "pull", v, r->row_ids, r->n_row_ids, err, errlen))
            return -1;
        total += r->n_row_ids * store_row_size(&s->model->vars[v]);
    }
    sp->rows = room(sp->rows, &sp->rows_cap, total ? total : 1, sizeof *sp->rows);
    sp->t = room(sp->t, &sp->t_cap, req->n_rows, sizeof *sp->t);
    sp->ptrs = room(sp->ptrs, &sp->ptrs_cap, n_dense + req->n_rows, sizeof *sp->ptrs);
    memcpy(sp->ptrs, resp->tensors, n_dense * sizeof *sp->ptrs);
    float *at = sp->rows;
    for (size_t i = 0; i < req->n_rows; i++) {
        const Pstrain__RowSelect *r = req->rows[i];
        int v = model_find_var(s->model, r->name);
        size_t row = store_row_size(&s->model->vars[v]);
        Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
        sp->t[i] = init;
        sp->t[i].name = (char *)s->model->vars[v].name;
        sp->t[i].n_row_ids = r->n_row_ids;
        sp->t[i].row_ids = r->row_ids;
        sp->t[i].data = (ProtobufCBinaryData){r->n_row_ids * row * sizeof(float), (uint8_t *)at};
        for (size_t k = 0; k < r->n_row_ids; k++, at += row)
            memcpy(at, row_of(s, v, r->row_ids[k]), row * sizeof(float));
        sp->ptrs[n_dense + i] = &sp->t[i];
    }
    resp->tensors = sp->ptrs;
    resp->n_tensors = n_dense + req->n_rows;
    return 0;
}

int ps_sparse_check(const ps_shard_t *s, const ps_grad_t *t, char *err, size_t errlen) {
    int v = model_find_var(s->model, t->name);
    if (v < 0)
        return ps_errf(err, errlen, "push: unknown variable \"%s\"", t->name);
    if (s->sync)
        return ps_errf(err, errlen,
                       "push: %s by rows: a sync PS takes whole partitions (async and ssp "
                       "take rows)",
                       t->name);
    if (t->dtype != WIRE_DTYPE_FLOAT32 || t->row_begin || t->rows)
        return ps_errf(err, errlen, "push: %s by rows must be float32 without row_begin and rows",
                       t->name);
    size_t want = t->n_row_ids * store_row_size(&s->model->vars[v]) * sizeof(float);
    if (t->data.len != want)
        return ps_errf(err, errlen, "push: %s has %zu bytes for %zu rows, want %zu", t->name,
                       t->data.len, t->n_row_ids, want);
    return check_ids(s, "push", v, t->row_ids, t->n_row_ids, err, errlen);
}

void ps_sparse_apply(ps_shard_t *s, const ps_grad_t *t, double scale) {
    struct ps_sparse *sp = state(s);
    int v = model_find_var(s->model, t->name);
    size_t n = t->data.len / sizeof(float);
    sp->grad = room(sp->grad, &sp->grad_cap, n ? n : 1, sizeof *sp->grad);
    wire_copy(&t->data, sp->grad);
    store_apply_rows(&s->store, v, t->row_ids, t->n_row_ids, sp->grad, scale);
}

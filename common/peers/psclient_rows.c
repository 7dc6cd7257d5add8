#include "common/peers/psclient_rows.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/peers/fields.h"
#include "common/rpc/wire.h"
#include "common/train/store.h"

/* One table's rows held by one PS. */
typedef struct {
    int var;
    uint64_t *ids; /* ascending */
    size_t n;
    Pstrain__RowSelect sel;
    Pstrain__Tensor t;
    float *grad; /* [n, row]: the gathered gradient of a push */
} ps_rows_t;

struct psclient_rows {
    const model_t *m;
    const placement_t *pl;
    size_t nps, ntables;
    int *tables;              /* the sparse variables */
    ps_rows_t *at;            /* [nps * ntables] */
    uint64_t *ids;            /* scratch: one table's rows */
    uint8_t *mark;            /* scratch: of model_sparse_rows */
    Pstrain__RowSelect **sel; /* one PS's selects for a pull */
    uint64_t *got;            /* a pulled tensor's ids */
};

psclient_rows_t *psclient_rows_create(const model_t *m, const placement_t *p) {
    if (!model_has_sparse(m))
        return NULL;
    psclient_rows_t *r = xcalloc(1, sizeof *r);
    r->m = m;
    r->pl = p;
    r->nps = (size_t)p->nps;
    r->tables = xcalloc(m->nvars, sizeof *r->tables);
    size_t max_rows = 1;
    for (size_t v = 0; v < m->nvars; v++)
        if (m->vars[v].sparse) {
            r->tables[r->ntables++] = (int)v;
            max_rows = PS_MAX(max_rows, m->vars[v].shape[0]);
        }
    r->at = xcalloc(r->nps * r->ntables, sizeof *r->at);
    for (size_t k = 0; k < r->nps * r->ntables; k++) {
        ps_rows_t *a = &r->at[k];
        a->var = r->tables[k % r->ntables];
        const var_t *v = &m->vars[a->var];
        a->ids = xmalloc(v->shape[0] * sizeof *a->ids);
        a->grad = xmalloc(v->size * sizeof(float));
        Pstrain__RowSelect si = PSTRAIN__ROW_SELECT__INIT;
        Pstrain__Tensor ti = PSTRAIN__TENSOR__INIT;
        a->sel = si;
        a->t = ti;
        a->sel.name = a->t.name = (char *)v->name;
    }
    r->ids = xmalloc(max_rows * sizeof *r->ids);
    r->got = xmalloc(max_rows * sizeof *r->got);
    r->mark = xcalloc(max_rows, 1);
    r->sel = xcalloc(r->ntables, sizeof *r->sel);
    return r;
}

void psclient_rows_free(psclient_rows_t *r) {
    if (!r)
        return;
    for (size_t k = 0; k < r->nps * r->ntables; k++) {
        free(r->at[k].ids);
        free(r->at[k].grad);
    }
    free(r->at);
    free(r->tables);
    free(r->ids);
    free(r->got);
    free(r->mark);
    free(r->sel);
    free(r);
}

size_t psclient_rows_set(psclient_rows_t *r, const float *x, size_t n) {
    size_t total = 0;
    for (size_t k = 0; k < r->nps * r->ntables; k++)
        r->at[k].n = 0;
    for (size_t t = 0; t < r->ntables; t++) {
        int v = r->tables[t];
        size_t count = model_sparse_rows(r->m, (size_t)v, x, n, r->ids, r->mark);
        for (size_t k = 0; k < count; k++) {
            const placement_part_t *p = placement_find(r->pl, v, r->ids[k]);
            ps_rows_t *a = &r->at[(size_t)p->ps * r->ntables + t];
            a->ids[a->n++] = r->ids[k];
        }
        total += count;
    }
    return total;
}

size_t psclient_rows_selects(psclient_rows_t *r, size_t ps, Pstrain__RowSelect ***out) {
    size_t n = 0;
    for (size_t t = 0; t < r->ntables; t++) {
        ps_rows_t *a = &r->at[ps * r->ntables + t];
        if (!a->n)
            continue;
        a->sel.row_ids = a->ids;
        a->sel.n_row_ids = a->n;
        r->sel[n++] = &a->sel;
    }
    *out = r->sel;
    return n;
}

/* The rows of PS ps's table that a tensor named name answers, or NULL. */
static ps_rows_t *rows_named(psclient_rows_t *r, size_t ps, const char *name) {
    for (size_t t = 0; t < r->ntables; t++) {
        ps_rows_t *a = &r->at[ps * r->ntables + t];
        if (strcmp(r->m->vars[a->var].name, name) == 0)
            return a;
    }
    return NULL;
}

int psclient_rows_take(psclient_rows_t *r, size_t ps, const pull_tensor_t *t, float *params,
                       char *err, size_t errlen) {
    ps_rows_t *a = t->name_len <= PULL_READ_NAME_MAX ? rows_named(r, ps, t->name) : NULL;
    long n = a && t->row_ids.len <= a->n * 10 ? wire_packed_varints(&t->row_ids, NULL) : -1;
    const var_t *v = a ? &r->m->vars[a->var] : NULL;
    size_t row = v ? store_row_size(v) : 0;
    if (n >= 0 && (size_t)n == a->n)
        wire_packed_varints(&t->row_ids, r->got);
    if (n < 0 || (size_t)n != a->n || memcmp(r->got, a->ids, a->n * sizeof *a->ids) != 0 ||
        t->dtype != WIRE_DTYPE_FLOAT32 || t->data.len != a->n * row * sizeof(float))
        return ps_errf(err, errlen,
                       "ps%zu sent rows of %s that were not asked of it: do all roles run the "
                       "same model and cluster spec?",
                       ps, t->name);
    /* The rows arrive one after the other; each goes to its place in the slab. */
    float *tmp = a->grad; /* free until the push */
    wire_copy(&t->data, tmp);
    for (size_t k = 0; k < a->n; k++)
        memcpy(params + v->offset + a->ids[k] * row, tmp + k * row, row * sizeof(float));
    return 0;
}

size_t psclient_rows_push(psclient_rows_t *r, size_t ps, const float *grads,
                          Pstrain__Tensor **out) {
    size_t n = 0;
    for (size_t t = 0; t < r->ntables; t++) {
        ps_rows_t *a = &r->at[ps * r->ntables + t];
        if (!a->n)
            continue;
        const var_t *v = &r->m->vars[a->var];
        size_t row = store_row_size(v);
        for (size_t k = 0; k < a->n; k++)
            memcpy(a->grad + k * row, grads + v->offset + a->ids[k] * row, row * sizeof(float));
        a->t.row_ids = a->ids;
        a->t.n_row_ids = a->n;
        a->t.data = (ProtobufCBinaryData){a->n * row * sizeof(float), (uint8_t *)a->grad};
        a->t.dtype = PSTRAIN__WIRE_DTYPE__FLOAT32;
        out[n++] = &a->t;
    }
    return n;
}

#include "common/model/placement.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

void placement_opts_default(placement_opts_t *o) {
    o->split_bytes = PLACEMENT_SPLIT_BYTES;
    o->parts_per_ps = PLACEMENT_PARTS_PER_PS;
}

static size_t var_rows(const var_t *v) {
    return v->ndim ? v->shape[0] : 1;
}

static size_t var_nparts(const var_t *v, size_t max_parts, const placement_opts_t *o) {
    if (v->size * sizeof(float) <= o->split_bytes)
        return 1;
    return PS_MIN(var_rows(v), max_parts);
}

/* Cuts each variable into partitions in (var, row_begin) order; the first
 * rows % k partitions take one row more, so sizes differ by one row at most. */
static void cut_vars(placement_t *p, const model_t *m, size_t max_parts,
                     const placement_opts_t *o) {
    p->nparts = 0;
    for (size_t i = 0; i < m->nvars; i++)
        p->nparts += var_nparts(&m->vars[i], max_parts, o);
    p->parts = xcalloc(p->nparts, sizeof *p->parts);
    size_t n = 0;
    for (size_t i = 0; i < m->nvars; i++) {
        const var_t *v = &m->vars[i];
        size_t k = var_nparts(v, max_parts, o), rows = var_rows(v);
        size_t row = 0, row_size = v->size / rows;
        p->var_first[i] = n;
        p->var_nparts[i] = k;
        for (size_t j = 0; j < k; j++, n++) {
            placement_part_t *part = &p->parts[n];
            part->var = (int)i;
            part->row_begin = row;
            part->rows = rows / k + (j < rows % k ? 1 : 0);
            part->size = part->rows * row_size;
            row += part->rows;
        }
    }
}

typedef struct {
    size_t size, index;
} by_size_t;

/* Largest first; equal sizes in (var, row_begin) order, which is the parts
 * array's own order, so the order is total and every role sorts the same. */
static int cmp_largest_first(const void *a, const void *b) {
    const by_size_t *x = a, *y = b;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int least_loaded(const placement_t *p) {
    int best = 0;
    for (int k = 1; k < p->nps; k++)
        if (p->ps_bytes[k] < p->ps_bytes[best])
            best = k;
    return best;
}

static void assign(placement_t *p) {
    by_size_t *order = xcalloc(p->nparts, sizeof *order);
    for (size_t i = 0; i < p->nparts; i++)
        order[i] = (by_size_t){p->parts[i].size, i};
    qsort(order, p->nparts, sizeof *order, cmp_largest_first);
    for (size_t i = 0; i < p->nparts; i++) {
        placement_part_t *part = &p->parts[order[i].index];
        part->ps = least_loaded(p);
        p->ps_bytes[part->ps] += part->size * sizeof(float);
    }
    free(order);
}

/* Groups partition indexes by PS (a counting sort, stable, so each group
 * keeps the (var, row_begin) order). */
static void group_by_ps(placement_t *p) {
    for (size_t i = 0; i < p->nparts; i++)
        p->ps_first[p->parts[i].ps + 1]++;
    for (int k = 0; k < p->nps; k++)
        p->ps_first[k + 1] += p->ps_first[k];
    size_t *fill = xcalloc((size_t)p->nps, sizeof *fill);
    for (size_t i = 0; i < p->nparts; i++) {
        int k = p->parts[i].ps;
        p->ps_order[p->ps_first[k] + fill[k]++] = i;
    }
    free(fill);
}

int placement_compute(placement_t *p, const model_t *m, int nps, const placement_opts_t *opts,
                      char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    placement_opts_t o;
    if (opts)
        o = *opts;
    else
        placement_opts_default(&o);
    if (nps < 1)
        return ps_errf(err, errlen, "placement: need at least one parameter server, got %d", nps);
    if (o.parts_per_ps < 1 || o.parts_per_ps > SIZE_MAX / (size_t)nps)
        return ps_errf(err, errlen,
                       "placement: parts_per_ps must be 1 or more (and not absurd), "
                       "got %zu",
                       o.parts_per_ps);
    p->nps = nps;
    p->nvars = m->nvars;
    p->var_first = xcalloc(m->nvars, sizeof *p->var_first);
    p->var_nparts = xcalloc(m->nvars, sizeof *p->var_nparts);
    p->ps_bytes = xcalloc((size_t)nps, sizeof *p->ps_bytes);
    p->ps_first = xcalloc((size_t)nps + 1, sizeof *p->ps_first);
    cut_vars(p, m, (size_t)nps * o.parts_per_ps, &o);
    p->ps_order = xcalloc(p->nparts, sizeof *p->ps_order);
    assign(p);
    group_by_ps(p);
    return 0;
}

void placement_free(placement_t *p) {
    free(p->parts);
    free(p->var_first);
    free(p->var_nparts);
    free(p->ps_order);
    free(p->ps_first);
    free(p->ps_bytes);
    memset(p, 0, sizeof *p);
}

size_t placement_ps_parts(const placement_t *p, int ps, const size_t **idx) {
    if (ps < 0 || ps >= p->nps) {
        *idx = NULL;
        return 0;
    }
    *idx = p->ps_order + p->ps_first[ps];
    return p->ps_first[ps + 1] - p->ps_first[ps];
}

const placement_part_t *placement_find(const placement_t *p, int var, size_t row) {
    if (var < 0 || (size_t)var >= p->nvars)
        return NULL;
    const placement_part_t *first = p->parts + p->var_first[var];
    size_t lo = 0, hi = p->var_nparts[var];
    /* The last partition that starts at or before row. */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (first[mid].row_begin <= row)
            lo = mid;
        else
            hi = mid;
    }
    const placement_part_t *part = &first[lo];
    return row >= part->row_begin && row < part->row_begin + part->rows ? part : NULL;
}

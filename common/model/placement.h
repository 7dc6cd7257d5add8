/* Placement: which parameter server holds which rows of which variable. A
 * pure function of (the model's variables, the number of PS, the options), so
 * every role computes the same map without talking. A variable larger than
 * split_bytes is cut along axis 0 into min(rows, nps * parts_per_ps)
 * partitions of whole rows whose sizes differ by at most one row (the larger
 * ones first); other variables are one partition each. Partitions then go,
 * largest first, to the PS with the fewest bytes so far (ties: the lowest
 * index). A PS may end up with nothing when there are more PS than
 * partitions; that is legal (it holds and serves an empty store). */
#ifndef PSTRAIN_PLACEMENT_H
#define PSTRAIN_PLACEMENT_H

#include <stddef.h>

#include "common/model/model.h"

/* Variables up to 32 KiB stay whole: below that a piece costs more in
 * per-piece overhead than it buys in balance. Larger ones are cut because the
 * greedy pass leaves the fullest PS at most one piece above the mean: the
 * MLP's 64 KiB dense_1 kernel left whole would put one PS 40% above the mean
 * at 4 PS. */
#define PLACEMENT_SPLIT_BYTES 32768
/* One piece of each large variable per PS: enough for the models here (the
 * CNN's dense kernel is 98.9% of its bytes), and the fewest pieces. */
#define PLACEMENT_PARTS_PER_PS 1

typedef struct {
    size_t split_bytes;  /* variables of more bytes than this are split */
    size_t parts_per_ps; /* a split variable becomes parts_per_ps * nps partitions (>= 1) */
} placement_opts_t;

typedef struct {
    int var;          /* index into model_t.vars */
    size_t row_begin; /* first row (axis 0) */
    size_t rows;      /* rows held */
    size_t size;      /* elements: rows * elements per row */
    int ps;           /* the PS that holds it */
} placement_part_t;

typedef struct {
    int nps;
    size_t nvars;
    size_t nparts;
    placement_part_t *parts; /* ordered by (var, row_begin): row order within a variable */
    size_t *var_first;       /* [nvars]: index in parts of each variable's first partition */
    size_t *var_nparts;      /* [nvars]: partitions of each variable */
    size_t *ps_order;        /* [nparts]: indexes into parts, grouped by PS, each group in
                                (var, row_begin) order */
    size_t *ps_first;        /* [nps + 1]: PS k's group is ps_order[ps_first[k] .. ps_first[k+1]) */
    size_t *ps_bytes;        /* [nps]: bytes each PS holds */
} placement_t;

/* The defaults above. */
void placement_opts_default(placement_opts_t *o);
/* Computes the map for nps parameter servers (opts NULL: the defaults).
 * Returns -1 with a message for nps < 1 or parts_per_ps < 1. */
int placement_compute(placement_t *p, const model_t *m, int nps, const placement_opts_t *opts,
                      char *err, size_t errlen);
void placement_free(placement_t *p);

/* PS ps's partitions, in the order its store lays them out: *idx points at
 * that many indexes into p->parts (owned by p). */
size_t placement_ps_parts(const placement_t *p, int ps, const size_t **idx);
/* The partition holding row `row` of variable var, or NULL when there is none. */
const placement_part_t *placement_find(const placement_t *p, int var, size_t row);

#endif

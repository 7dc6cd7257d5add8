/* Placement: every row placed exactly once, the same map on every call, and
 * the CNN's bytes balanced over the parameter servers. */
#include "test.h"

#include <stdint.h>
#include <stdlib.h>

#include "common/model/model.h"
#include "common/model/placement.h"
#include "common/base/util.h"

static size_t model_bytes(const model_t *m) {
    return m->nparams * sizeof(float);
}

/* Checks the invariants every map must keep; returns -1 after reporting the first breach. */
static int check_map(const placement_t *p, const model_t *m) {
    size_t n = 0;
    for (size_t v = 0; v < m->nvars; v++) {
        const var_t *var = &m->vars[v];
        size_t row = 0, row_size = var->size / var->shape[0];
        if (p->var_first[v] != n) {
            test_fail(__FILE__, __LINE__, "%s: first partition %zu, want %zu", var->name,
                      p->var_first[v], n);
            return -1;
        }
        /* Partitions of a variable tile its rows in order: each row exactly once. */
        for (size_t j = 0; j < p->var_nparts[v]; j++, n++) {
            const placement_part_t *part = &p->parts[n];
            if (part->var != (int)v || part->row_begin != row || part->rows == 0 ||
                part->size != part->rows * row_size || part->ps < 0 || part->ps >= p->nps) {
                test_fail(__FILE__, __LINE__,
                          "%s part %zu: var %d rows [%zu, +%zu) size %zu ps %d; want row %zu",
                          var->name, j, part->var, part->row_begin, part->rows, part->size,
                          part->ps, row);
                return -1;
            }
            if (placement_find(p, (int)v, row) != part ||
                placement_find(p, (int)v, row + part->rows - 1) != part) {
                test_fail(__FILE__, __LINE__, "%s: placement_find misses rows of part %zu",
                          var->name, j);
                return -1;
            }
            row += part->rows;
        }
        if (row != var->shape[0] || placement_find(p, (int)v, row) != NULL) {
            test_fail(__FILE__, __LINE__, "%s: partitions cover %zu of %zu rows", var->name, row,
                      var->shape[0]);
            return -1;
        }
    }
    if (n != p->nparts || placement_find(p, (int)m->nvars, 0) || placement_find(p, -1, 0)) {
        test_fail(__FILE__, __LINE__, "%zu partitions walked, %zu in the map", n, p->nparts);
        return -1;
    }
    /* The per-PS lists hold every partition once, in (var, row) order, and add up to the loads. */
    char *seen = xcalloc(p->nparts ? p->nparts : 1, 1);
    size_t total = 0;
    int rc = 0;
    for (int k = 0; k < p->nps && rc == 0; k++) {
        const size_t *idx;
        size_t cnt = placement_ps_parts(p, k, &idx), bytes = 0;
        for (size_t i = 0; i < cnt; i++) {
            const placement_part_t *part = &p->parts[idx[i]];
            if (seen[idx[i]]++ || part->ps != k || (i && idx[i] <= idx[i - 1]))
                rc = -1;
            bytes += part->size * sizeof(float);
        }
        if (bytes != p->ps_bytes[k])
            rc = -1;
        total += bytes;
    }
    for (size_t i = 0; i < p->nparts; i++)
        if (!seen[i])
            rc = -1;
    free(seen);
    if (rc || total != model_bytes(m)) {
        test_fail(__FILE__, __LINE__, "per-PS lists: bad (total %zu bytes of %zu)", total,
                  model_bytes(m));
        return -1;
    }
    return 0;
}

/* Largest-first greedy never leaves a PS above the mean by more than the
 * largest partition: when the fullest PS took its last piece it was the least loaded. */
static int check_greedy_bound(const placement_t *p) {
    size_t total = 0, largest = 0, max = 0;
    for (int k = 0; k < p->nps; k++) {
        total += p->ps_bytes[k];
        max = PS_MAX(max, p->ps_bytes[k]);
    }
    for (size_t i = 0; i < p->nparts; i++)
        largest = PS_MAX(largest, p->parts[i].size * sizeof(float));
    if ((double)max > (double)total / p->nps + (double)largest) {
        test_fail(__FILE__, __LINE__, "max load %zu > mean %.0f + largest part %zu", max,
                  (double)total / p->nps, largest);
        return -1;
    }
    return 0;
}

static void print_loads(const char *what, const placement_t *p) {
    double mean = 0;
    for (int k = 0; k < p->nps; k++)
        mean += (double)p->ps_bytes[k] / p->nps;
    printf("%s, %d PS, %zu partitions, mean %.0f bytes:", what, p->nps, p->nparts, mean);
    for (int k = 0; k < p->nps; k++)
        printf(" %zu (%+.2f%%)", p->ps_bytes[k], mean ? 100.0 * (p->ps_bytes[k] - mean) / mean : 0);
    printf("\n");
}

static double worst_deviation(const placement_t *p) {
    double mean = 0, worst = 0;
    for (int k = 0; k < p->nps; k++)
        mean += (double)p->ps_bytes[k] / p->nps;
    for (int k = 0; k < p->nps; k++)
        worst = PS_MAX(worst, fabs((double)p->ps_bytes[k] - mean) / mean);
    return worst;
}

void test_placement_cnn_balance(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "cnn", err, sizeof err) == 0);
    for (int nps = 1; nps <= 8; nps++) {
        placement_t p;
        CHECK(placement_compute(&p, &m, nps, NULL, err, sizeof err) == 0);
        print_loads("cnn", &p);
        CHECK(check_map(&p, &m) == 0);
        CHECK(check_greedy_bound(&p) == 0);
        if (nps <= 4)
            CHECK(worst_deviation(&p) <= 0.10);
        placement_free(&p);
    }
    /* Finer pieces keep the balance. */
    placement_opts_t o = {.split_bytes = PLACEMENT_SPLIT_BYTES, .parts_per_ps = 4};
    for (int nps = 2; nps <= 4; nps++) {
        placement_t p;
        CHECK(placement_compute(&p, &m, nps, &o, err, sizeof err) == 0);
        print_loads("cnn, 4 parts per PS", &p);
        CHECK(check_map(&p, &m) == 0);
        CHECK_INT_EQ(p.var_nparts[model_find_var(&m, "dense/kernel")], 4 * nps);
        CHECK(worst_deviation(&p) <= 0.10);
        placement_free(&p);
    }
    model_free(&m);
}

/* The 2-PS map of the CNN, worked by hand. Two variables exceed 32 KiB: the
 * dense kernel, cut in two halves of 6272 rows, and conv2d_1's kernel, cut
 * along kh into rows [0, 2) and [2, 3). Largest first: the halves go to PS 0
 * and PS 1; the 2-row conv piece to PS 0 (a tie, so the lowest index); then
 * PS 1 is the lighter for the 1-row piece and every smaller variable. */
void test_placement_cnn_two_ps(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "cnn", err, sizeof err) == 0);
    placement_t p;
    CHECK(placement_compute(&p, &m, 2, NULL, err, sizeof err) == 0);
    CHECK_INT_EQ(p.nparts, 10);
    int dense = model_find_var(&m, "dense/kernel"), conv = model_find_var(&m, "conv2d_1/kernel");
    CHECK_INT_EQ(p.var_nparts[dense], 2);
    CHECK_INT_EQ(p.var_nparts[conv], 2);
    const placement_part_t *a = &p.parts[p.var_first[dense]], *b = a + 1;
    CHECK_INT_EQ(a->rows, 6272);
    CHECK_INT_EQ(a->ps, 0);
    CHECK_INT_EQ(b->row_begin, 6272);
    CHECK_INT_EQ(b->ps, 1);
    const placement_part_t *c0 = &p.parts[p.var_first[conv]], *c1 = c0 + 1;
    CHECK_INT_EQ(c0->rows, 2);
    CHECK_INT_EQ(c0->size, 2 * 3 * 32 * 64);
    CHECK_INT_EQ(c0->ps, 0);
    CHECK_INT_EQ(c1->row_begin, 2);
    CHECK_INT_EQ(c1->rows, 1);
    CHECK_INT_EQ(c1->ps, 1);
    const size_t *idx;
    CHECK_INT_EQ(placement_ps_parts(&p, 0, &idx), 2);
    CHECK_INT_EQ(idx[0], p.var_first[conv]);
    CHECK_INT_EQ(idx[1], p.var_first[dense]);
    CHECK_INT_EQ(placement_ps_parts(&p, 1, &idx), 8);
    CHECK_INT_EQ(p.ps_bytes[0], 6272 * 128 * 4 + 2 * 3 * 32 * 64 * 4);
    CHECK_INT_EQ(p.ps_bytes[0] + p.ps_bytes[1], model_bytes(&m));
    CHECK(placement_find(&p, dense, 6271) == a);
    CHECK(placement_find(&p, dense, 6272) == b);
    CHECK(placement_find(&p, dense, 12544) == NULL);
    placement_free(&p);
    model_free(&m);
}

static int same_map(const placement_t *a, const placement_t *b) {
    if (a->nparts != b->nparts || a->nps != b->nps)
        return 0;
    for (size_t i = 0; i < a->nparts; i++) {
        const placement_part_t *x = &a->parts[i], *y = &b->parts[i];
        if (x->var != y->var || x->row_begin != y->row_begin || x->rows != y->rows ||
            x->size != y->size || x->ps != y->ps || a->ps_order[i] != b->ps_order[i])
            return 0;
    }
    return 1;
}

void test_placement_deterministic(void) {
    char err[PS_ERRLEN];
    static const char *const models[] = {"cnn", "mlp"};
    for (size_t i = 0; i < PS_ARRAY_LEN(models); i++) {
        for (int nps = 1; nps <= 16; nps++) {
            /* Two separate loads of the model, as two processes would have. */
            model_t m1, m2;
            placement_t a, b;
            CHECK(model_load(&m1, models[i], err, sizeof err) == 0);
            CHECK(model_load(&m2, models[i], err, sizeof err) == 0);
            CHECK(placement_compute(&a, &m1, nps, NULL, err, sizeof err) == 0);
            CHECK(placement_compute(&b, &m2, nps, NULL, err, sizeof err) == 0);
            CHECK(same_map(&a, &b));
            placement_free(&a);
            placement_free(&b);
            model_free(&m1);
            model_free(&m2);
        }
    }
}

void test_placement_one_ps(void) {
    char err[PS_ERRLEN];
    static const char *const models[] = {"cnn", "mlp"};
    for (size_t i = 0; i < PS_ARRAY_LEN(models); i++) {
        model_t m;
        placement_t p;
        CHECK(model_load(&m, models[i], err, sizeof err) == 0);
        CHECK(placement_compute(&p, &m, 1, NULL, err, sizeof err) == 0);
        CHECK(check_map(&p, &m) == 0);
        /* One PS holds every variable whole, in the model's own order. */
        CHECK_INT_EQ(p.nparts, m.nvars);
        CHECK_INT_EQ(p.ps_bytes[0], model_bytes(&m));
        const size_t *idx;
        CHECK_INT_EQ(placement_ps_parts(&p, 0, &idx), m.nvars);
        for (size_t v = 0; v < m.nvars; v++) {
            CHECK_INT_EQ(idx[v], v);
            CHECK_INT_EQ(p.parts[v].rows, m.vars[v].shape[0]);
            CHECK_INT_EQ(p.parts[v].ps, 0);
        }
        placement_free(&p);
        model_free(&m);
    }
}

void test_placement_mlp(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    static const int counts[] = {1, 2, 3, 4, 8, 16, 100, 784, 1000};
    for (size_t i = 0; i < PS_ARRAY_LEN(counts); i++) {
        placement_t p;
        CHECK(placement_compute(&p, &m, counts[i], NULL, err, sizeof err) == 0);
        if (counts[i] <= 16)
            print_loads("mlp", &p);
        CHECK(check_map(&p, &m) == 0);
        CHECK(check_greedy_bound(&p) == 0);
        if (counts[i] <= 4)
            CHECK(worst_deviation(&p) <= 0.10);
        /* The 784-row kernel is cut into one piece per PS, never below a row. */
        CHECK_INT_EQ(p.var_nparts[0], PS_MIN(784, counts[i]));
        placement_free(&p);
    }
    model_free(&m);
}

/* More PS than partitions: the map stays valid and the extra PS hold nothing. */
void test_placement_more_ps_than_parts(void) {
    model_t m;
    char err[PS_ERRLEN];
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    placement_opts_t whole = {.split_bytes = SIZE_MAX, .parts_per_ps = 1};
    placement_t p;
    CHECK(placement_compute(&p, &m, 8, &whole, err, sizeof err) == 0);
    print_loads("mlp, no splitting", &p);
    CHECK(check_map(&p, &m) == 0);
    CHECK_INT_EQ(p.nparts, 6);
    /* Six variables, largest first, one to each of PS 0..5. */
    for (int k = 0; k < 8; k++) {
        const size_t *idx;
        size_t n = placement_ps_parts(&p, k, &idx);
        CHECK_INT_EQ(n, k < 6 ? 1 : 0);
        CHECK_INT_EQ(p.ps_bytes[k] == 0, k >= 6);
    }
    CHECK_INT_EQ(p.parts[0].ps, 0); /* dense/kernel, the largest */
    const size_t *idx;
    CHECK_INT_EQ(placement_ps_parts(&p, 8, &idx), 0);
    CHECK(idx == NULL);
    placement_free(&p);
    /* With the defaults, 1000 PS get the MLP's 916 partitions (784 + 128 rows
     * of the two split kernels, 4 small variables): one each, 84 left empty. */
    CHECK(placement_compute(&p, &m, 1000, NULL, err, sizeof err) == 0);
    CHECK(check_map(&p, &m) == 0);
    CHECK_INT_EQ(p.nparts, 916);
    size_t empty = 0;
    for (int k = 0; k < p.nps; k++) {
        size_t n = placement_ps_parts(&p, k, &idx);
        CHECK(n <= 1);
        empty += n == 0;
    }
    CHECK_INT_EQ(empty, 84);
    placement_free(&p);
    /* Splitting everything down to single rows is legal too. */
    placement_opts_t rows = {.split_bytes = 0, .parts_per_ps = 1000};
    CHECK(placement_compute(&p, &m, 3, &rows, err, sizeof err) == 0);
    CHECK(check_map(&p, &m) == 0);
    CHECK_INT_EQ(p.var_nparts[0], 784);
    CHECK(worst_deviation(&p) <= 0.01);
    placement_free(&p);
    model_free(&m);
}

void test_placement_errors(void) {
    model_t m;
    char err[PS_ERRLEN];
    placement_t p;
    CHECK(model_load(&m, "mlp", err, sizeof err) == 0);
    CHECK(placement_compute(&p, &m, 0, NULL, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, "placement: need at least one parameter server, got 0");
    placement_opts_t o = {.split_bytes = 1, .parts_per_ps = 0};
    CHECK(placement_compute(&p, &m, 2, &o, err, sizeof err) == -1);
    CHECK_STR_CONTAINS(err, "parts_per_ps must be 1 or more");
    /* A failed call leaves nothing to free, and freeing it is harmless. */
    placement_free(&p);
    model_free(&m);
}

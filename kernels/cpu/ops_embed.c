/* Embedding on the CPU: a gather of table rows forward, their scatter-add
 * backward. Token ids arrive as floats (the model's input); one that is not
 * an integer row of the table reads zeros and takes no gradient, so a bad
 * id can never reach memory outside the table (the data check,
 * model_check_ids, reports it). */
#include "kernels/cpu/ops_embed.h"

#include <math.h>
#include <string.h>

/* The row an id names, or -1. */
static long row_of(float id, size_t rows) {
    if (!(id >= 0.0f && id < (float)rows) || id != floorf(id))
        return -1;
    return (long)id;
}

void cpu_embed_forward(float *y, const float *ids, const float *table, size_t n, size_t dim,
                       size_t rows) {
    for (size_t i = 0; i < n; i++) {
        long r = row_of(ids[i], rows);
        if (r < 0)
            memset(y + i * dim, 0, dim * sizeof *y);
        else
            memcpy(y + i * dim, table + (size_t)r * dim, dim * sizeof *y);
    }
}

void cpu_embed_backward(float *dtable, const float *dy, const float *ids, size_t n, size_t dim,
                        size_t rows) {
    for (size_t i = 0; i < n; i++) {
        long r = row_of(ids[i], rows);
        if (r < 0)
            continue;
        float *d = dtable + (size_t)r * dim;
        const float *g = dy + i * dim;
        for (size_t j = 0; j < dim; j++)
            d[j] += g[j];
    }
}

/* Embedding (Keras's: a table of input_dim rows of output_dim values, row
 * id the vector of token id) and GlobalAveragePooling1D, which pools the
 * sequence an embedding makes: their shapes and the table; and the token
 * ids a batch reads, which decide what a worker pulls and pushes of a
 * table. A sequence [steps, features] is held as the image [1, steps,
 * features], so the pooling is a global average pool over a 1 x steps
 * image. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model_internal.h"

/* Keras's default embeddings_initializer: RandomUniform(-0.05, 0.05). */
#define EMBED_UNIFORM 0.05f

bool model_takes_sequence(layer_kind_t kind) {
    return kind == LAYER_DROPOUT || kind == LAYER_ACTIVATION || kind == LAYER_RESCALING ||
           kind == LAYER_FLATTEN || kind == LAYER_RESHAPE || kind == LAYER_GLOBAL_AVG_POOL1D;
}

static int embedding_infer(model_t *m, layer_t *l, char *why, size_t whylen) {
    if (!l->flat_in)
        return ps_errf(
            why, whylen,
            "needs a flat input of token ids [steps] (Keras: keras.Input(shape=(steps,))), "
            "got (%zu, %zu, %zu)",
            l->in[0], l->in[1], l->in[2]);
    l->out[0] = 1;
    l->out[1] = l->in[2];
    l->out[2] = l->units;
    l->flat_out = false;
    size_t shape[2] = {l->input_dim, l->units};
    model_add_var(m, l, "embeddings", 2, shape, 0, 0);
    l->kernel_var = (int)m->nvars - 1;
    var_t *v = &m->vars[l->kernel_var];
    v->uniform = EMBED_UNIFORM;
    v->sparse = l->inputs[0] < 0;
    return 0;
}

static int pool1d_infer(layer_t *l, char *why, size_t whylen) {
    if (!l->seq_in)
        return ps_errf(why, whylen,
                       "needs a sequence input [steps, features] (an embedding's output)");
    l->pool[0] = l->strides[0] = 1;
    l->pool[1] = l->strides[1] = l->in[1];
    l->same = false;
    l->out[0] = l->out[1] = 1;
    l->out[2] = l->in[2];
    l->flat_out = true;
    return 0;
}

int model_embed_infer(model_t *m, size_t i, char *why, size_t whylen) {
    layer_t *l = &m->layers[i];
    return l->kind == LAYER_EMBEDDING ? embedding_infer(m, l, why, whylen)
                                      : pool1d_infer(l, why, whylen);
}

bool model_has_sparse(const model_t *m) {
    for (size_t v = 0; v < m->nvars; v++)
        if (m->vars[v].sparse)
            return true;
    return false;
}

int model_var_layer(const model_t *m, size_t v) {
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].kernel_var == (int)v)
            return (int)i;
    return -1;
}

/* A value that names row id of a table of `rows`: an integer in range. */
static bool valid_id(float x, size_t rows) {
    return x >= 0.0f && x < (float)rows && x == floorf(x);
}

int model_check_ids(const model_t *m, const float *x, size_t n, size_t first, char *err,
                    size_t errlen) {
    size_t in_size = m->input[0] * m->input[1] * m->input[2];
    for (size_t i = 0; i < m->nlayers; i++) {
        const layer_t *l = &m->layers[i];
        if (l->kind != LAYER_EMBEDDING || l->inputs[0] >= 0)
            continue;
        for (size_t k = 0; k < n * in_size; k++)
            if (!valid_id(x[k], l->input_dim))
                return ps_errf(err, errlen,
                               "layer \"%s\" (Embedding): example %zu, position %zu: token id "
                               "%g is not an integer in [0, %zu)",
                               l->name, first + k / in_size, k % in_size, (double)x[k],
                               l->input_dim);
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

size_t model_sparse_rows(const model_t *m, size_t v, const float *x, size_t n, uint64_t *rows,
                         uint8_t *mark) {
    int li = model_var_layer(m, v);
    if (li < 0)
        return 0;
    const layer_t *l = &m->layers[li];
    size_t count = 0;
    for (size_t k = 0; k < n * l->in_size; k++) {
        if (!valid_id(x[k], l->input_dim))
            continue;
        size_t id = (size_t)x[k];
        if (!mark[id]) {
            mark[id] = 1;
            rows[count++] = id;
        }
    }
    for (size_t k = 0; k < count; k++)
        mark[rows[k]] = 0;
    qsort(rows, count, sizeof *rows, cmp_u64);
    return count;
}

#include "shard_tensors.h"

#include "common/base/util.h"

void shard_tensors(const ps_shard_t *s, float *g, Pstrain__Tensor **t, Pstrain__Tensor ***tp) {
    size_t n = s->store.nparts;
    *t = xcalloc(n ? n : 1, sizeof **t);
    *tp = xcalloc(n ? n : 1, sizeof **tp);
    for (size_t i = 0; i < n; i++) {
        const store_part_t *p = &s->store.parts[i];
        Pstrain__Tensor init = PSTRAIN__TENSOR__INIT;
        Pstrain__Tensor *x = &(*t)[i];
        *x = init;
        x->name = (char *)s->model->vars[p->var].name;
        x->row_begin = p->row_begin;
        x->rows = p->rows;
        if (g) {
            x->data.data = (uint8_t *)(g + p->offset);
            x->data.len = p->size * sizeof(float);
        }
        (*tp)[i] = x;
    }
}

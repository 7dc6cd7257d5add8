/* The PS's push decoder (ps/push.c) against protobuf-c: the input's first
 * byte splits the rest into up to three segments (as gRPC's slices split a
 * message); when the decoder takes a message, protobuf-c must take it too
 * and agree on every field the PS reads. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ps/push.h"

/* Where they disagree: abort, so that libFuzzer keeps the input. */
static void agree(const ps_push_t *p, const Pstrain__PushRequest *r) {
    int same = r && p->n_grads == r->n_grads && p->step == r->step && p->seq == r->seq &&
               p->partial == (bool)r->partial && p->has_caller == (r->caller != NULL);
    for (size_t i = 0; same && i < p->n_grads; i++) {
        const Pstrain__Tensor *t = r->grads[i];
        same = strcmp(p->grads[i].name, t->name) == 0 && p->grads[i].rows == t->rows &&
               p->grads[i].row_begin == t->row_begin && p->grads[i].data.len == t->data.len &&
               p->grads[i].n_row_ids == t->n_row_ids &&
               (!t->n_row_ids ||
                memcmp(p->grads[i].row_ids, t->row_ids, t->n_row_ids * sizeof *t->row_ids) == 0) &&
               p->grads[i].n_indices == t->n_indices;
        for (size_t j = 0; same && j < t->n_indices; j++)
            same = p->grads[i].indices[j] == t->indices[j];
    }
    if (!same)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const uint8_t *msg = data + 1;
    size_t len = size - 1;
    size_t a = len ? (data[0] & 15) % (len + 1) : 0;
    size_t b = len ? a + (data[0] >> 4) % (len - a + 1) : 0;
    rpc_seg_t segs[3] = {{msg, a}, {msg + a, b - a}, {msg + b, len - b}};
    rpc_msg_t m = {segs, 3, len};
    static ps_push_t p;
    static int init;
    if (!init) {
        ps_push_init(&p);
        init = 1;
    }
    if (ps_push_decode(&p, &m) == 0) {
        Pstrain__PushRequest *r = pstrain__push_request__unpack(NULL, len, msg);
        agree(&p, r);
        pstrain__push_request__free_unpacked(r, NULL);
    }
    return 0;
}

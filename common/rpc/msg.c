#include "common/rpc/msg.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

size_t msg_pack(rpc_buf_t *b, const ProtobufCMessage *m) {
    rpc_buf_reserve(b, protobuf_c_message_get_packed_size(m));
    b->len = protobuf_c_message_pack(m, b->data);
    return b->len;
}

void msg_reply(rpc_call_t *call, rpc_buf_t *b, const ProtobufCMessage *m) {
    msg_pack(b, m);
    rpc_call_reply(call, RPC_OK, NULL, b->data, b->len);
}

static void *arena_alloc(void *data, size_t size) {
    msg_arena_t *a = data;
    size_t need = (size + 63) & ~(size_t)63; /* 64-byte aligned, for float payloads */
    a->high += need;
    if (a->used + need <= a->cap) {
        void *p = a->buf + a->used;
        a->used += need;
        return p;
    }
    if (a->nspill == a->capspill) {
        a->capspill = a->capspill ? 2 * a->capspill : 16;
        a->spill = xrealloc(a->spill, a->capspill * sizeof *a->spill);
    }
    void *p = xalloc_aligned(need);
    a->spill[a->nspill++] = p;
    return p;
}

static void arena_free(void *data, void *ptr) {
    /* Arena memory and spilled blocks alike go back at reset. */
    (void)data;
    (void)ptr;
}

void msg_arena_init(msg_arena_t *a) {
    memset(a, 0, sizeof *a);
    a->base.alloc = arena_alloc;
    a->base.free = arena_free;
    a->base.allocator_data = a;
}

void msg_arena_reset(msg_arena_t *a) {
    for (size_t i = 0; i < a->nspill; i++)
        free(a->spill[i]);
    a->nspill = 0;
    if (a->high > a->cap) {
        /* Grow once to what the last message needed; its pages stay ours. */
        free(a->buf);
        a->cap = a->high;
        a->buf = xalloc_aligned(a->cap);
    }
    a->used = 0;
    a->high = 0;
}

void msg_arena_free(msg_arena_t *a) {
    msg_arena_reset(a);
    free(a->buf);
    free(a->spill);
    memset(a, 0, sizeof *a);
}

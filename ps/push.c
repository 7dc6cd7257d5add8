#include "push.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/peers/fields.h"

void ps_push_init(ps_push_t *p) {
    memset(p, 0, sizeof *p);
}

void ps_push_free(ps_push_t *p) {
    free(p->grads);
    free(p->names);
    free(p->segs);
    free(p->ids);
    free(p->idx);
    memset(p, 0, sizeof *p);
}

static void reset(ps_push_t *p) {
    p->has_caller = false;
    p->caller_index = 0;
    p->caller_incarnation = 0;
    p->step = 0;
    p->partial = false;
    p->seq = 0;
    p->n_grads = 0;
    p->n_ids = 0;
    p->idx_len = 0;
}

/* Room for n more row ids. */
static uint64_t *more_ids(ps_push_t *p, size_t n) {
    if (p->n_ids + n > p->ids_cap) {
        p->ids_cap = PS_MAX(p->n_ids + n, 2 * p->ids_cap);
        p->ids = xrealloc(p->ids, p->ids_cap * sizeof *p->ids);
    }
    uint64_t *at = p->ids + p->n_ids;
    p->n_ids += n;
    return at;
}

/* Where one value of a repeated varint field goes. */
typedef void (*varint_put_fn)(ps_push_t *p, ps_grad_t *g, uint64_t v);

/* A repeated varint field: a packed run (WIRE_LEN) or one varint, as
 * protobuf-c reads a packed repeated field either way. */
static int read_varints(ps_push_t *p, ps_grad_t *g, wire_reader_t *r, int type, varint_put_fn put) {
    uint64_t v;
    if (type == WIRE_VARINT) {
        if (wire_varint(r, &v) < 0)
            return -1;
        put(p, g, v);
        return 0;
    }
    wire_bytes_t run;
    if (type != WIRE_LEN || wire_bytes(r, &run) < 0)
        return -1;
    wire_reader_t sub;
    wire_reader_sub(&sub, &run);
    while (sub.at.len > 0) {
        if (wire_varint(&sub, &v) < 0)
            return -1;
        put(p, g, v);
    }
    return 0;
}

/* Tensor.row_ids. */
static void add_row_id(ps_push_t *p, ps_grad_t *g, uint64_t v) {
    *more_ids(p, 1) = v;
    g->n_row_ids++;
}

static ps_grad_t *add_grad(ps_push_t *p) {
    if (p->n_grads == p->cap_grads) {
        p->cap_grads = p->cap_grads ? 2 * p->cap_grads : 16;
        p->grads = xrealloc(p->grads, p->cap_grads * sizeof *p->grads);
    }
    ps_grad_t *g = &p->grads[p->n_grads++];
    memset(g, 0, sizeof *g);
    return g;
}

/* A field's value when its wire type is the one wanted; -1 otherwise. */
static int want_varint(wire_reader_t *r, int type, uint64_t *v) {
    return type == WIRE_VARINT ? wire_varint(r, v) : -1;
}

static int want_bytes(wire_reader_t *r, int type, wire_bytes_t *b) {
    return type == WIRE_LEN ? wire_bytes(r, b) : -1;
}

/* Copies every tensor's name out of the request into p->names and points
 * the tensors at them (NUL-terminated, as protobuf-c's strings are). */
static void keep_names(ps_push_t *p) {
    size_t need = 0;
    for (size_t i = 0; i < p->n_grads; i++)
        need += p->grads[i].name_wire.len + 1;
    if (need > p->names_cap) {
        p->names_cap = PS_MAX(need, 2 * p->names_cap);
        p->names = xrealloc(p->names, p->names_cap);
    }
    size_t at = 0;
    for (size_t i = 0; i < p->n_grads; i++) {
        ps_grad_t *g = &p->grads[i];
        wire_string(&g->name_wire, p->names + at, g->name_wire.len + 1);
        g->name = p->names + at;
        at += g->name_wire.len + 1;
        g->indices = g->n_indices ? p->idx + g->idx_at : NULL;
    }
}

/* Tensor.indices. */
static void add_index(ps_push_t *p, ps_grad_t *g, uint64_t v) {
    if (p->idx_len == p->idx_cap) {
        p->idx_cap = p->idx_cap ? 2 * p->idx_cap : 1024;
        p->idx = xrealloc(p->idx, p->idx_cap * sizeof *p->idx);
    }
    p->idx[p->idx_len++] = (uint32_t)v; /* protobuf-c keeps the low 32 bits too */
    g->n_indices++;
}

static int decode_caller(ps_push_t *p, const wire_bytes_t *b) {
    wire_reader_t r;
    wire_reader_sub(&r, b);
    uint32_t field;
    int type, more;
    /* A second Caller replaces the first's numbers: protobuf-c's merge of
     * proto3 scalars keeps the later message's, set or not. */
    p->has_caller = true;
    p->caller_index = 0;
    p->caller_incarnation = 0;
    while ((more = wire_next(&r, &field, &type)) == 1) {
        uint64_t v = 0;
        wire_bytes_t role;
        int rc = field == FIELD_CALLER_ROLE          ? want_bytes(&r, type, &role)
                 : field == FIELD_CALLER_INDEX       ? want_varint(&r, type, &v)
                 : field == FIELD_CALLER_INCARNATION ? want_varint(&r, type, &v)
                                                     : wire_skip(&r, type);
        if (rc < 0)
            return -1;
        if (field == FIELD_CALLER_INDEX)
            p->caller_index = (uint32_t)v;
        else if (field == FIELD_CALLER_INCARNATION)
            p->caller_incarnation = v;
    }
    return more;
}

/* Decodes one Tensor; its name is copied out at the end (keep_names). */
static int decode_tensor(ps_push_t *p, const wire_bytes_t *b) {
    wire_reader_t r;
    wire_reader_sub(&r, b);
    ps_grad_t *g = add_grad(p);
    g->ids_at = p->n_ids;
    g->idx_at = p->idx_len;
    uint32_t field;
    int type, more;
    while ((more = wire_next(&r, &field, &type)) == 1) {
        int rc = field == FIELD_TENSOR_NAME        ? want_bytes(&r, type, &g->name_wire)
                 : field == FIELD_TENSOR_INDICES   ? read_varints(p, g, &r, type, add_index)
                 : field == FIELD_TENSOR_ROW_BEGIN ? want_varint(&r, type, &g->row_begin)
                 : field == FIELD_TENSOR_ROWS      ? want_varint(&r, type, &g->rows)
                 : field == FIELD_TENSOR_DATA      ? want_bytes(&r, type, &g->data)
                 : field == FIELD_TENSOR_DTYPE     ? want_varint(&r, type, &g->dtype)
                 : field == FIELD_TENSOR_ROW_IDS   ? read_varints(p, g, &r, type, add_row_id)
                                                   : wire_skip(&r, type);
        if (rc < 0)
            return -1;
    }
    return more;
}

static int decode_field(ps_push_t *p, wire_reader_t *r, uint32_t field, int type) {
    wire_bytes_t b;
    switch (field) {
    case FIELD_PUSH_CALLER:
        return want_bytes(r, type, &b) < 0 ? -1 : decode_caller(p, &b);
    case FIELD_PUSH_STEP:
        return want_varint(r, type, &p->step);
    case FIELD_PUSH_SEQ:
        return want_varint(r, type, &p->seq);
    case FIELD_PUSH_GRADS:
        return want_bytes(r, type, &b) < 0 ? -1 : decode_tensor(p, &b);
    case FIELD_PUSH_PARTIAL: {
        int v;
        if (wire_bool(r, type, &v) < 0)
            return -1;
        p->partial = v;
        return 0;
    }
    }
    return wire_skip(r, type);
}

int ps_push_decode(ps_push_t *p, const rpc_msg_t *m) {
    reset(p);
    wire_reader_t r;
    wire_reader_init(&r, m);
    uint32_t field;
    int type, more;
    while ((more = wire_next(&r, &field, &type)) == 1)
        if (decode_field(p, &r, field, type) < 0)
            return -1;
    if (more < 0)
        return -1;
    keep_names(p);
    for (size_t i = 0; i < p->n_grads; i++)
        p->grads[i].row_ids = p->grads[i].n_row_ids ? p->ids + p->grads[i].ids_at : NULL;
    return 0;
}

void ps_push_from_pb(ps_push_t *p, const Pstrain__PushRequest *r) {
    reset(p);
    p->has_caller = r->caller != NULL;
    p->caller_index = r->caller ? r->caller->index : 0;
    p->caller_incarnation = r->caller ? r->caller->incarnation : 0;
    p->step = r->step;
    p->partial = r->partial;
    p->seq = r->seq;
    p->segs = xrealloc(p->segs, (r->n_grads ? r->n_grads : 1) * sizeof *p->segs);
    for (size_t i = 0; i < r->n_grads; i++) {
        const Pstrain__Tensor *t = r->grads[i];
        ps_grad_t *g = add_grad(p);
        g->name = t->name;
        g->row_begin = t->row_begin;
        g->rows = t->rows;
        g->dtype = (uint64_t)t->dtype;
        g->row_ids = t->row_ids;
        g->n_row_ids = t->n_row_ids;
        g->indices = t->n_indices ? t->indices : NULL;
        g->n_indices = t->n_indices;
        p->segs[i] = (rpc_seg_t){t->data.data, t->data.len};
        g->data = (wire_bytes_t){&p->segs[i], 0, t->data.len};
    }
}

#include "common/peers/pull_read.h"

#include <stdbool.h>
#include <string.h>

#include "common/peers/fields.h"

/* One Tensor. A name repeated replaces the first, as protobuf-c's does. */
static int read_tensor(pull_tensor_t *t, const wire_bytes_t *b) {
    wire_reader_t r;
    wire_reader_sub(&r, b);
    memset(t, 0, sizeof *t);
    uint32_t field;
    int type, more;
    while ((more = wire_next(&r, &field, &type)) == 1) {
        wire_bytes_t name;
        bool len = type == WIRE_LEN, varint = type == WIRE_VARINT;
        int rc = field == FIELD_TENSOR_NAME && len           ? wire_bytes(&r, &name)
                 : field == FIELD_TENSOR_ROW_BEGIN && varint ? wire_varint(&r, &t->row_begin)
                 : field == FIELD_TENSOR_ROWS && varint      ? wire_varint(&r, &t->rows)
                 : field == FIELD_TENSOR_DATA && len         ? wire_bytes(&r, &t->data)
                 : field == FIELD_TENSOR_DTYPE && varint     ? wire_varint(&r, &t->dtype)
                 : field == FIELD_TENSOR_ROW_IDS && len      ? wire_bytes(&r, &t->row_ids)
                 : field >= FIELD_TENSOR_NAME && field <= FIELD_TENSOR_ROW_IDS
                     ? -1
                     : wire_skip(&r, type);
        if (rc < 0)
            return -1;
        if (field == FIELD_TENSOR_NAME)
            t->name_len = wire_string(&name, t->name, sizeof t->name);
    }
    return more;
}

/* One field of the response: 0, -1 when malformed, or what fn returned. */
static int read_field(wire_reader_t *r, uint32_t field, int type, uint64_t *step, uint64_t *lineage,
                      pull_tensor_fn fn, void *arg) {
    if (field == FIELD_PULL_TENSORS && type == WIRE_LEN) {
        wire_bytes_t b;
        pull_tensor_t t;
        if (wire_bytes(r, &b) < 0 || read_tensor(&t, &b) < 0)
            return -1;
        return fn(arg, &t);
    }
    if (field == FIELD_PULL_STEP && type == WIRE_VARINT)
        return wire_varint(r, step);
    if (field == FIELD_PULL_LINEAGE && type == WIRE_VARINT)
        return wire_varint(r, lineage);
    if (field >= FIELD_PULL_STEP && field <= FIELD_PULL_LINEAGE)
        return -1;
    return wire_skip(r, type);
}

int pull_read(const rpc_msg_t *m, uint64_t *step, uint64_t *lineage, pull_tensor_fn fn, void *arg) {
    wire_reader_t r;
    wire_reader_init(&r, m);
    *step = 0;
    *lineage = 0;
    uint32_t field;
    int type, more;
    while ((more = wire_next(&r, &field, &type)) == 1) {
        int rc = read_field(&r, field, type, step, lineage, fn, arg);
        if (rc)
            return rc;
    }
    return more < 0 ? -1 : 0;
}

/* The protobuf field numbers of the hot messages (proto/pstrain.proto), for
 * the code that reads or writes them by hand instead of through protobuf-c:
 * the PS's push decoder (ps/push.c) and pull encoder (ps/pull.c), and
 * psclient's reader of pull answers (pull_read.c). They live in one place so
 * that the three cannot drift apart, and test_fields checks every one of
 * them, with the wire type its readers expect, against protobuf-c's
 * generated descriptors. */
#ifndef PSTRAIN_PEERS_FIELDS_H
#define PSTRAIN_PEERS_FIELDS_H

/* Tensor: every tensor of a push or a pull answer. */
enum {
    FIELD_TENSOR_NAME = 1,      /* string: WIRE_LEN */
    FIELD_TENSOR_ROW_BEGIN = 2, /* uint64: WIRE_VARINT */
    FIELD_TENSOR_ROWS = 3,      /* uint64: WIRE_VARINT */
    FIELD_TENSOR_DATA = 4,      /* bytes: WIRE_LEN */
    FIELD_TENSOR_DTYPE = 5,     /* WireDtype: WIRE_VARINT */
    /* repeated uint64, packed: one WIRE_LEN run of varints (a reader also
     * takes them one WIRE_VARINT each, as protobuf-c does) */
    FIELD_TENSOR_ROW_IDS = 6,
    /* repeated uint32, packed: WIRE_LEN runs of varints (protobuf-c also
     * reads them one WIRE_VARINT at a time) */
    FIELD_TENSOR_INDICES = 7,
};

/* WireDtype: how a Tensor's data encodes its values. */
enum {
    WIRE_DTYPE_FLOAT32 = 0,  /* 4 bytes a value, little-endian */
    WIRE_DTYPE_BFLOAT16 = 1, /* 2 bytes: the upper half of the float32 */
    WIRE_DTYPE_FLOAT16 = 2,  /* 2 bytes: IEEE half precision */
};

/* Caller: who sent a push. */
enum {
    FIELD_CALLER_ROLE = 1,        /* string: WIRE_LEN */
    FIELD_CALLER_INDEX = 2,       /* uint32: WIRE_VARINT */
    FIELD_CALLER_INCARNATION = 3, /* uint64: WIRE_VARINT */
};

/* PullResponse. */
enum {
    FIELD_PULL_STEP = 1,    /* uint64: WIRE_VARINT */
    FIELD_PULL_TENSORS = 2, /* repeated Tensor: WIRE_LEN */
    FIELD_PULL_LINEAGE = 3, /* uint64: WIRE_VARINT */
};

/* PushRequest. */
enum {
    FIELD_PUSH_CALLER = 1,  /* Caller: WIRE_LEN */
    FIELD_PUSH_STEP = 2,    /* uint64: WIRE_VARINT */
    FIELD_PUSH_GRADS = 3,   /* repeated Tensor: WIRE_LEN */
    FIELD_PUSH_PARTIAL = 4, /* bool: WIRE_VARINT */
    FIELD_PUSH_SEQ = 5,     /* uint64: WIRE_VARINT */
};

#endif

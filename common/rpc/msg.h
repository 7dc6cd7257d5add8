/* protobuf-c messages over the RPC layer: pack any message into a reused
 * buffer, answer a call with one. */
#ifndef PSTRAIN_MSG_H
#define PSTRAIN_MSG_H

#include <protobuf-c/protobuf-c.h>

#include "common/rpc/rpc.h"

/* Packs m into b (grown as needed); returns the packed length (also b->len). */
size_t msg_pack(rpc_buf_t *b, const ProtobufCMessage *m);
/* Answers call OK with m, packed into b (which must stay the caller's until
 * the reply is sent: rpc_call_reply copies it). */
void msg_reply(rpc_call_t *call, rpc_buf_t *b, const ProtobufCMessage *m);

/* An allocator for unpacking messages into memory that is kept between
 * messages: a large tensor payload then lands in pages already mapped instead
 * of a fresh mmap per message (page faults cost ~2.3 ms per MiB here, and
 * glibc maps every block over 32 MiB anew). Reset it once the unpacked
 * message is freed; it grows to the largest message seen. */
typedef struct {
    ProtobufCAllocator base; /* pass &arena.base to __unpack and __free_unpacked */
    uint8_t *buf;
    size_t cap, used, high;
    void **spill; /* blocks that did not fit, freed at reset */
    size_t nspill, capspill;
} msg_arena_t;

void msg_arena_init(msg_arena_t *a);
void msg_arena_reset(msg_arena_t *a);
void msg_arena_free(msg_arena_t *a);

#endif

/* protobuf-c messages over the RPC layer: pack any message into a reused
 * buffer, answer a call with one. */
#ifndef PSTRAIN_MSG_H
#define PSTRAIN_MSG_H

#include <protobuf-c/protobuf-c.h>

#include "rpc.h"

/* Packs m into b (grown as needed); returns the packed length (also b->len). */
size_t msg_pack(rpc_buf_t *b, const ProtobufCMessage *m);
/* Answers call OK with m, packed into b (which must stay the caller's until
 * the reply is sent: rpc_call_reply copies it). */
void msg_reply(rpc_call_t *call, rpc_buf_t *b, const ProtobufCMessage *m);

#endif

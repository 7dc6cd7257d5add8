#include "msg.h"

size_t msg_pack(rpc_buf_t *b, const ProtobufCMessage *m) {
    rpc_buf_reserve(b, protobuf_c_message_get_packed_size(m));
    b->len = protobuf_c_message_pack(m, b->data);
    return b->len;
}

void msg_reply(rpc_call_t *call, rpc_buf_t *b, const ProtobufCMessage *m) {
    msg_pack(b, m);
    rpc_call_reply(call, RPC_OK, NULL, b->data, b->len);
}

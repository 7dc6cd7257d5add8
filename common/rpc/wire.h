/* Reads protobuf's wire format in place, from a message in the segments the
 * RPC layer received it in, so that a decoder for a hot message can leave
 * its large `bytes` fields where they lie instead of copying them (what
 * protobuf-c's unpack does). Only what hand-written decoders of pstrain's
 * tensor messages need: tags, varints, length-delimited fields as ranges,
 * skipping unknown fields; every length is checked against what is left.
 * And the few writers an encoder of such messages needs, so that it can send
 * the payloads from where they lie too.
 *
 * The reader is a cursor into a (sub)message; a length-delimited field is a
 * wire_bytes_t range that can be copied out, read as a submessage, or walked
 * as float32 values. */
#ifndef PSTRAIN_WIRE_H
#define PSTRAIN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/rpc.h"

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

/* A run of len bytes that starts off bytes into seg[0] and goes on through
 * the segments after it. */
typedef struct {
    const rpc_seg_t *seg;
    size_t off;
    size_t len;
} wire_bytes_t;

typedef struct {
    wire_bytes_t at; /* what is left to read */
} wire_reader_t;

/* A reader over a whole message. */
void wire_reader_init(wire_reader_t *r, const rpc_msg_t *m);
/* A reader over a length-delimited field, read as a submessage. */
void wire_reader_sub(wire_reader_t *r, const wire_bytes_t *b);

/* The next field's number and wire type: 1, or 0 at the end, or -1 when the
 * tag is malformed, as protobuf-c decides: a truncated varint or one longer
 * than 5 bytes, a first byte with no field bits and no continuation, a wire
 * type that is not one of the four above (protobuf-c refuses groups too). */
int wire_next(wire_reader_t *r, uint32_t *field, int *type);
/* The value of a field of wire type WIRE_VARINT: 0, or -1 when truncated or
 * longer than 10 bytes. */
int wire_varint(wire_reader_t *r, uint64_t *v);
/* The range of a field of wire type WIRE_LEN, and steps past it: 0, or -1
 * when its length runs past the message or is malformed as protobuf-c sees
 * it (more than 5 bytes, over INT_MAX). */
int wire_bytes(wire_reader_t *r, wire_bytes_t *out);
/* The value of a bool field read as protobuf-c reads one, whatever its wire
 * type: 0, or -1 when truncated. */
int wire_bool(wire_reader_t *r, int type, int *v);
/* Steps past a field of the given wire type: 0, or -1 when truncated. */
int wire_skip(wire_reader_t *r, int type);

/* The values of a packed repeated varint field (a WIRE_LEN range): their
 * count, written to out unless it is NULL (count first, then read); -1
 * when one is truncated or too long. */
long wire_packed_varints(const wire_bytes_t *b, uint64_t *out);

/* Copies the range into dst (b->len bytes). */
void wire_copy(const wire_bytes_t *b, void *dst);
/* Copies at most cap - 1 bytes of the range into dst as a NUL-terminated
 * string; returns b->len (compare with cap to see whether it was cut). */
size_t wire_string(const wire_bytes_t *b, char *dst, size_t cap);

/* Called with the float32 values of a range in order, in runs of whole
 * values: n values from bytes (which may be unaligned; read them with
 * memcpy), the first being value number `first` of the range. A nonzero
 * return stops the walk and is returned. */
typedef int (*wire_floats_fn)(void *ctx, size_t first, const uint8_t *bytes, size_t n);
/* Walks the range (whose length must be a multiple of 4) in place; a value
 * split between two segments is assembled on the stack and passed alone. */
int wire_floats(const wire_bytes_t *b, wire_floats_fn fn, void *ctx);

/* ---- bfloat16 ---------------------------------------------------------------- */

/* Tensors of at least this many values may travel as bfloat16 (the upper
 * half of each float32, rounded to nearest even); smaller ones (biases,
 * normalisation) stay float32: they are few bytes and sensitive. */
#define WIRE_BF16_MIN_VALUES 1024

/* Writes n floats as bfloat16 (little-endian, 2 bytes each) at dst. */
void wire_bf16_from_floats(uint8_t *dst, const float *src, size_t n);
/* Error feedback: writes g + residual as bfloat16 at dst and keeps in
 * residual what rounding left out (g + residual - the value sent). */
void wire_bf16_feedback(uint8_t *dst, const float *g, float *residual, size_t n);
/* Reads n bfloat16 values (2 bytes each, any alignment) into floats. */
void wire_bf16_to_floats(float *dst, const uint8_t *src, size_t n);
/* 0 when all n 16-bit floats (2 bytes each, any alignment), whose
 * exponent field is the bits `exponent` (bfloat16 0x7f80, fp16 0x7c00),
 * are finite; -1 when any is NaN or Inf. */
int wire_check_finite16(const uint8_t *src, size_t n, uint16_t exponent);
/* 0 when all n bfloat16 values are finite, -1 when any is NaN or Inf. */
int wire_bf16_check_finite(const uint8_t *src, size_t n);

/* ---- Writing --------------------------------------------------------------- */

/* Bytes that v takes as a varint (1 to 10). */
size_t wire_varint_size(uint64_t v);
/* Writes v as a varint at p; returns the end. */
uint8_t *wire_put_varint(uint8_t *p, uint64_t v);
/* Writes a field's key (number and wire type) at p; returns the end. */
uint8_t *wire_put_key(uint8_t *p, uint32_t field, int type);

#endif

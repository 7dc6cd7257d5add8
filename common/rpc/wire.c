#include "common/rpc/wire.h"

#include <limits.h>
#include <string.h>

#include "common/base/util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire is little-endian: a big-endian build must swap the bytes of 16-bit values"
#endif

void wire_reader_init(wire_reader_t *r, const rpc_msg_t *m) {
    static const rpc_seg_t none = {NULL, 0};
    r->at = (wire_bytes_t){m->nseg ? m->seg : &none, 0, m->len};
}

void wire_reader_sub(wire_reader_t *r, const wire_bytes_t *b) {
    r->at = *b;
}

/* Moves past empty segments and the end of the current one, so that at
 * points at a byte whenever at.len > 0. The lengths of the segments add up
 * to at least at.len, which the callers keep true. */
static void settle(wire_bytes_t *at) {
    while (at->len > 0 && at->off == at->seg->len) {
        at->seg++;
        at->off = 0;
    }
}

static int get_byte(wire_reader_t *r, uint8_t *out) {
    if (r->at.len == 0)
        return -1;
    settle(&r->at);
    *out = r->at.seg->data[r->at.off++];
    r->at.len--;
    return 0;
}

/* Steps n bytes on (n <= at.len). */
static void advance(wire_bytes_t *at, size_t n) {
    while (n > 0) {
        settle(at);
        size_t k = PS_MIN(n, at->seg->len - at->off);
        at->off += k;
        at->len -= k;
        n -= k;
    }
}

/* A varint of at most max_bytes bytes. */
static int varint_upto(wire_reader_t *r, int max_bytes, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 7 * max_bytes; shift += 7) {
        uint8_t b;
        if (get_byte(r, &b) < 0)
            return -1;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

int wire_varint(wire_reader_t *r, uint64_t *v) {
    return varint_upto(r, 10, v);
}

int wire_next(wire_reader_t *r, uint32_t *field, int *type) {
    if (r->at.len == 0)
        return 0;
    /* As protobuf-c reads tags: at most 5 bytes, and a first byte that
     * names no field and does not go on is malformed (field 0 written in
     * more bytes passes, as an unknown field). */
    settle(&r->at);
    if ((r->at.seg->data[r->at.off] & 0xf8) == 0)
        return -1;
    uint64_t tag;
    if (varint_upto(r, 5, &tag) < 0)
        return -1;
    *field = (uint32_t)(tag >> 3);
    *type = (int)(tag & 7);
    if (*type != WIRE_VARINT && *type != WIRE_FIXED64 && *type != WIRE_LEN && *type != WIRE_FIXED32)
        return -1;
    return 1;
}

int wire_bytes(wire_reader_t *r, wire_bytes_t *out) {
    /* protobuf-c reads a length in at most 5 bytes, up to INT_MAX. */
    uint64_t n;
    if (varint_upto(r, 5, &n) < 0 || n > INT_MAX || n > r->at.len)
        return -1;
    settle(&r->at);
    *out = (wire_bytes_t){r->at.seg, r->at.off, (size_t)n};
    advance(&r->at, (size_t)n);
    return 0;
}

int wire_skip(wire_reader_t *r, int type) {
    uint64_t v;
    wire_bytes_t b;
    switch (type) {
    case WIRE_VARINT:
        return wire_varint(r, &v);
    case WIRE_LEN:
        return wire_bytes(r, &b);
    case WIRE_FIXED64:
    case WIRE_FIXED32: {
        size_t n = type == WIRE_FIXED64 ? 8 : 4;
        if (n > r->at.len)
            return -1;
        advance(&r->at, n);
        return 0;
    }
    }
    return -1;
}

int wire_bool(wire_reader_t *r, int type, int *v) {
    /* protobuf-c takes a bool of any wire type: true when any byte of the
     * field (a length's bytes included) has a low bit set. A length is
     * nonzero exactly when its bytes are, and then so is the bool. */
    *v = 0;
    if (type == WIRE_VARINT || type == WIRE_FIXED32 || type == WIRE_FIXED64) {
        size_t n = type == WIRE_FIXED32 ? 4 : 8;
        for (size_t i = 0; type != WIRE_VARINT ? i < n : 1; i++) {
            uint8_t b;
            if (get_byte(r, &b) < 0 || (type == WIRE_VARINT && i == 10))
                return -1;
            *v |= (b & 0x7f) != 0;
            if (type == WIRE_VARINT && !(b & 0x80))
                return 0;
        }
        return 0;
    }
    wire_bytes_t b;
    if (type != WIRE_LEN || wire_bytes(r, &b) < 0)
        return -1;
    *v = b.len > 0;
    return 0;
}

/* Calls fn(ctx, piece, n) for each piece of the range, in order. */
#define FOR_EACH_PIECE(b, p, n, body)                                                              \
    do {                                                                                           \
        wire_bytes_t at_ = *(b);                                                                   \
        while (at_.len > 0) {                                                                      \
            settle(&at_);                                                                          \
            size_t n = PS_MIN(at_.len, at_.seg->len - at_.off);                                    \
            const uint8_t *p = at_.seg->data + at_.off;                                            \
            at_.off += n;                                                                          \
            at_.len -= n;                                                                          \
            body;                                                                                  \
        }                                                                                          \
    } while (0)

void wire_copy(const wire_bytes_t *b, void *dst) {
    uint8_t *out = dst;
    FOR_EACH_PIECE(b, p, n, {
        memcpy(out, p, n);
        out += n;
    });
}

size_t wire_string(const wire_bytes_t *b, char *dst, size_t cap) {
    size_t put = 0;
    FOR_EACH_PIECE(b, p, n, {
        size_t k = PS_MIN(n, cap - 1 - put);
        memcpy(dst + put, p, k);
        put += k;
    });
    dst[put] = '\0';
    return b->len;
}

int wire_floats(const wire_bytes_t *b, wire_floats_fn fn, void *ctx) {
    uint8_t split[4];
    size_t have = 0, first = 0;
    int rc = 0;
    FOR_EACH_PIECE(b, p, n, {
        if (have > 0) { /* finish the value the last piece began */
            size_t k = PS_MIN(n, 4 - have);
            memcpy(split + have, p, k);
            have += k;
            p += k;
            n -= k;
            if (have < 4)
                continue;
            if ((rc = fn(ctx, first++, split, 1)) != 0)
                return rc;
            have = 0;
        }
        size_t whole = n / 4;
        if (whole > 0 && (rc = fn(ctx, first, p, whole)) != 0)
            return rc;
        first += whole;
        have = n - 4 * whole;
        memcpy(split, p + 4 * whole, have);
    });
    return rc;
}

size_t wire_varint_size(uint64_t v) {
    size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        n++;
    return n;
}

uint8_t *wire_put_varint(uint8_t *p, uint64_t v) {
    for (; v >= 0x80; v >>= 7)
        *p++ = (uint8_t)(v | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

uint8_t *wire_put_key(uint8_t *p, uint32_t field, int type) {
    return wire_put_varint(p, (uint64_t)field << 3 | (uint64_t)type);
}

/* Round to nearest even on the 16 bits dropped; NaN stays NaN (a quiet
 * bit is set so that rounding cannot carry it into Inf). Branch-free, so
 * that the loops below vectorize. */
static inline uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t rounded = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    uint16_t quiet = (uint16_t)((u >> 16) | 0x40u);
    return (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
}

/* The 16-bit values go through a block on the stack: a payload may lie at
 * any alignment, and loops of a fixed trip count over whole blocks are what
 * GCC vectorizes at -O2 (5-10x faster than a value at a time); the last
 * partial block takes the same code, unvectorized. The wire is
 * little-endian, as this host is (checked at the top). */
#define BF16_BLOCK 256

static inline void bf16_block_from(uint8_t *dst, const float *src, size_t m) {
    uint16_t h[BF16_BLOCK];
    for (size_t j = 0; j < m; j++)
        h[j] = bf16_of(src[j]);
    memcpy(dst, h, 2 * m);
}

void wire_bf16_from_floats(uint8_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + BF16_BLOCK <= n; i += BF16_BLOCK)
        bf16_block_from(dst + 2 * i, src + i, BF16_BLOCK);
    bf16_block_from(dst + 2 * i, src + i, n - i);
}

static inline void bf16_block_feedback(uint8_t *dst, const float *g, float *residual, size_t m) {
    uint16_t h[BF16_BLOCK];
    for (size_t j = 0; j < m; j++) {
        float e = g[j] + residual[j], q;
        h[j] = bf16_of(e);
        uint32_t u = (uint32_t)h[j] << 16;
        memcpy(&q, &u, sizeof q);
        residual[j] = e - q;
    }
    memcpy(dst, h, 2 * m);
}

void wire_bf16_feedback(uint8_t *dst, const float *g, float *residual, size_t n) {
    size_t i = 0;
    for (; i + BF16_BLOCK <= n; i += BF16_BLOCK)
        bf16_block_feedback(dst + 2 * i, g + i, residual + i, BF16_BLOCK);
    bf16_block_feedback(dst + 2 * i, g + i, residual + i, n - i);
}

static inline void bf16_block_to(float *dst, const uint8_t *src, size_t m) {
    uint16_t h[BF16_BLOCK];
    memcpy(h, src, 2 * m);
    for (size_t j = 0; j < m; j++) {
        uint32_t u = (uint32_t)h[j] << 16;
        memcpy(&dst[j], &u, sizeof u);
    }
}

void wire_bf16_to_floats(float *dst, const uint8_t *src, size_t n) {
    size_t i = 0;
    for (; i + BF16_BLOCK <= n; i += BF16_BLOCK)
        bf16_block_to(dst + i, src + 2 * i, BF16_BLOCK);
    bf16_block_to(dst + i, src + 2 * i, n - i);
}

/* Bit 15 set when one of the m values is NaN or Inf: their exponent bits
 * all ones, adding one to the exponent field carries into the sign bit. */
static inline uint32_t block_nonfinite16(const uint8_t *src, size_t m, uint32_t exponent) {
    uint16_t h[BF16_BLOCK];
    memcpy(h, src, 2 * m);
    uint32_t acc = 0, one = exponent & (~exponent + 1u);
    for (size_t j = 0; j < m; j++)
        acc |= (h[j] & exponent) + one;
    return acc & 0x8000u;
}

int wire_check_finite16(const uint8_t *src, size_t n, uint16_t exponent) {
    size_t i = 0;
    for (; i + BF16_BLOCK <= n; i += BF16_BLOCK)
        if (block_nonfinite16(src + 2 * i, BF16_BLOCK, exponent))
            return -1;
    return block_nonfinite16(src + 2 * i, n - i, exponent) ? -1 : 0;
}

int wire_bf16_check_finite(const uint8_t *src, size_t n) {
    return wire_check_finite16(src, n, 0x7f80u);
}

long wire_packed_varints(const wire_bytes_t *b, uint64_t *out) {
    wire_reader_t r;
    wire_reader_sub(&r, b);
    long n = 0;
    while (r.at.len > 0) {
        uint64_t v;
        if (wire_varint(&r, &v) < 0)
            return -1;
        if (out)
            out[n] = v;
        n++;
    }
    return n;
}

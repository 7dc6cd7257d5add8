#include "common/formats/crc32c.h"

#include <pthread.h>

/* Slicing-by-8: table[k][b] is the CRC of byte b followed by k zero bytes, so
 * eight bytes fold in with eight lookups and no loop-carried shift per byte.
 * The tables are built once, on first use (2 KiB of arithmetic). Bytes are
 * assembled explicitly, so the code does not depend on the host's byte order. */
static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_build(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int i = 0; i < 8; i++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        table[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++)
            table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xff];
}

static uint32_t load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t crc32c(uint32_t crc, const void *data, size_t n) {
    pthread_once(&table_once, table_build);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = c ^ load_le32(p), hi = load_le32(p + 4);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
            table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
    }
    for (; n > 0; n--, p++)
        c = (c >> 8) ^ table[0][(c ^ *p) & 0xff];
    return ~c;
}

#define CRC32C_MASK_DELTA 0xa282ead8u

uint32_t crc32c_mask(uint32_t crc) {
    return ((crc >> 15) | (crc << 17)) + CRC32C_MASK_DELTA;
}

uint32_t crc32c_unmask(uint32_t masked) {
    uint32_t rot = masked - CRC32C_MASK_DELTA;
    return (rot >> 17) | (rot << 15);
}

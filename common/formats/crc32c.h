/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
 * TFRecord framing, and TFRecord's masking of it. zlib has only CRC-32. */
#ifndef PSTRAIN_CRC32C_H
#define PSTRAIN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over n bytes, as zlib's crc32() does:
 * crc32c(crc32c(0, a, na), b, nb) == crc32c(0, a ++ b, na + nb). */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);

/* TFRecord stores masked CRCs: a CRC of data that itself holds CRCs is weak. */
uint32_t crc32c_mask(uint32_t crc);
uint32_t crc32c_unmask(uint32_t masked);

#endif

/* JPEG decoding (libjpeg-turbo through the libjpeg API) from memory, for
 * images inside TFRecord files and in image folders. */
#ifndef PSTRAIN_JPEG_H
#define PSTRAIN_JPEG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True when buf starts as a JPEG file does (FF D8 FF). */
bool jpeg_sniff(const uint8_t *buf, size_t len);

/* Decodes buf into *pix (8-bit, rows of *w * c samples; the caller frees it)
 * as gray (c = 1; libjpeg's ITU-R 601 luma) or RGB (c = 3). Sides over
 * max_side are refused before the pixels are read. Errors name `name`:
 * "NAME: bad JPEG: <libjpeg's message>". */
int jpeg_decode(const char *name, const uint8_t *buf, size_t len, size_t c, size_t max_side,
                uint8_t **pix, size_t *h, size_t *w, char *err, size_t errlen);

#endif

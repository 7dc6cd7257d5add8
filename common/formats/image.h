/* PNG images in and out (libpng), JPEG in: a user's picture becomes a model input
 * normalised exactly as the training data is (pixel byte / 255). */
#ifndef PSTRAIN_IMAGE_H
#define PSTRAIN_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Sides longer than this are refused before the pixels are read. */
#define IMAGE_MAX_SIDE 16384

/* Reads any PNG (gray, gray+alpha, RGB, RGBA, palette; 1 to 16 bits;
 * interlaced or not) into out[h][w][c], c = 1 (gray) or 3 (RGB), values in
 * [0, 1]. On the way:
 *  - 16-bit samples are scaled to 8 bits (rounded);
 *  - colour becomes gray, for c = 1, with ITU-R 601 weights in 16-bit fixed
 *    point, (19595 R + 38470 G + 7471 B + 32768) >> 16, as PIL's convert("L")
 *    and so Keras's load_img(color_mode="grayscale") do; gray becomes RGB, for
 *    c = 3, by repeating it;
 *  - transparency (an alpha channel or a tRNS chunk) is composited over black,
 *    the background of MNIST-like data;
 *  - the image is resized to h x w, each axis on its own: shrinking averages
 *    the source area each output pixel covers (a box filter with fractional
 *    edges, like OpenCV's INTER_AREA and tf.image.resize's "area"), enlarging
 *    interpolates linearly between pixel centres (half-pixel centres, like
 *    tf.image.resize's "bilinear"); an axis of the same size is copied;
 *  - values are divided by 255, as common/dataset.c does, so a PNG of an
 *    h x w x c data-set image loads to exactly the floats training saw.
 * Errors name the file: not a PNG, truncated, corrupt, too large. */
int image_load_png(const char *path, size_t h, size_t w, size_t c, float *out, char *err,
                   size_t errlen);

/* The same from memory, for PNG or JPEG (told apart by their first bytes;
 * JPEG through jpeg.h, its gray from libjpeg's own ITU-R 601 conversion):
 * name only labels the errors ("NAME: bad JPEG: ...", "NAME: neither a PNG
 * nor a JPEG image"). */
int image_decode(const char *name, const uint8_t *buf, size_t len, size_t h, size_t w, size_t c,
                 float *out, char *err, size_t errlen);

/* pix[h][w][c] (c = 1: gray, 3: RGB) as the bytes of an 8-bit PNG in *out
 * (*len bytes; the caller frees it). */
int image_encode_png(size_t h, size_t w, size_t c, const uint8_t *pix, uint8_t **out, size_t *len,
                     char *err, size_t errlen);

/* Writes pix[h][w] as an 8-bit grayscale PNG. */
int image_write_png_gray(const char *path, size_t h, size_t w, const uint8_t *pix, char *err,
                         size_t errlen);

#endif

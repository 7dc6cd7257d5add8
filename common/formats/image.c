#include "common/formats/image.h"

#include <errno.h>
#include <png.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/util.h"
#include "common/formats/jpeg.h"

/* libpng reports errors through a callback that must not return: it records
 * the message here and longjmps back to the setjmp in decode() or encode().
 * Everything that must be freed afterwards lives in this struct, which the
 * caller of those functions owns, so no local variable is clobbered. */
typedef struct {
    const char *path;
    FILE *f;
    png_structp png;
    png_infop info;
    char msg[256];
    uint8_t *pix;                   /* decoded 8-bit samples, rows of width * channels */
    png_bytep *rows;                /* row pointers into pix */
    size_t height, width, channels; /* after libpng's transforms */
} png_ctx_t;

static void on_error(png_structp png, png_const_charp msg) {
    png_ctx_t *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    /* Warnings (an odd colour profile, say) do not stop the image loading. */
}

static void on_read(png_structp png, png_bytep data, size_t n) {
    png_ctx_t *ctx = png_get_io_ptr(png);
    if (fread(data, 1, n, ctx->f) != n)
        png_error(png, ferror(ctx->f) ? strerror(errno) : "truncated (unexpected end of file)");
}

static void on_write(png_structp png, png_bytep data, size_t n) {
    png_ctx_t *ctx = png_get_io_ptr(png);
    if (fwrite(data, 1, n, ctx->f) != n)
        png_error(png, strerror(errno));
}

static void on_flush(png_structp png) {}

/* Makes ctx's libpng read or write struct and its info struct. */
static int ctx_start(png_ctx_t *ctx, bool write, char *err, size_t errlen) {
    ctx->png = write ? png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning)
                     : png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning);
    ctx->info = ctx->png ? png_create_info_struct(ctx->png) : NULL;
    return ctx->info ? 0 : ps_errf(err, errlen, "%s: cannot start libpng", ctx->path);
}

/* ---- reading ------------------------------------------------------------ */

/* Asks libpng for 8-bit gray, gray+alpha, RGB or RGBA: gray stays gray for
 * c = 1 (colour is mixed to gray afterwards, with PIL's weights). */
static void set_transforms(png_ctx_t *ctx, size_t c) {
    int type = png_get_color_type(ctx->png, ctx->info);
    int depth = png_get_bit_depth(ctx->png, ctx->info);
    if (depth == 16)
        png_set_scale_16(ctx->png);
    if (type == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(ctx->png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(ctx->png);
    if (png_get_valid(ctx->png, ctx->info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(ctx->png);
    if (c == 3 && !(type & PNG_COLOR_MASK_COLOR))
        png_set_gray_to_rgb(ctx->png);
    png_set_interlace_handling(ctx->png);
    png_read_update_info(ctx->png, ctx->info);
}

static int decode(png_ctx_t *ctx, size_t c) {
    if (setjmp(png_jmpbuf(ctx->png)))
        return -1;
    png_set_read_fn(ctx->png, ctx, on_read);
    png_set_sig_bytes(ctx->png, 8);
    png_read_info(ctx->png, ctx->info);
    ctx->width = png_get_image_width(ctx->png, ctx->info);
    ctx->height = png_get_image_height(ctx->png, ctx->info);
    if (ctx->width > IMAGE_MAX_SIDE || ctx->height > IMAGE_MAX_SIDE) {
        char why[128];
        snprintf(why, sizeof why, "%zu pixels wide and %zu high, over the limit of %d a side",
                 ctx->width, ctx->height, IMAGE_MAX_SIDE);
        png_error(ctx->png, why);
    }
    set_transforms(ctx, c);
    ctx->channels = png_get_channels(ctx->png, ctx->info);
    size_t rowbytes = png_get_rowbytes(ctx->png, ctx->info);
    if (rowbytes != ctx->width * ctx->channels)
        png_error(ctx->png, "unexpected sample layout");
    ctx->pix = xmalloc(ctx->height * rowbytes);
    ctx->rows = xmalloc(ctx->height * sizeof *ctx->rows);
    for (size_t y = 0; y < ctx->height; y++)
        ctx->rows[y] = ctx->pix + y * rowbytes;
    png_read_image(ctx->png, ctx->rows);
    png_read_end(ctx->png, NULL);
    return 0;
}

/* Reads the PNG open in ctx->f into ctx (8-bit, width * channels per row). */
static int read_png(png_ctx_t *ctx, size_t c, char *err, size_t errlen) {
    uint8_t sig[8];
    size_t got = fread(sig, 1, sizeof sig, ctx->f);
    if (got < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0)
        return ps_errf(err, errlen, "%s: not a PNG file", ctx->path);
    if (ctx_start(ctx, false, err, errlen) != 0)
        return -1;
    if (decode(ctx, c) != 0)
        return ps_errf(err, errlen, "%s: bad PNG: %s", ctx->path, ctx->msg);
    return 0;
}

static void ctx_free_read(png_ctx_t *ctx) {
    if (ctx->png)
        png_destroy_read_struct(&ctx->png, ctx->info ? &ctx->info : NULL, NULL);
    if (ctx->f)
        fclose(ctx->f);
    free(ctx->rows);
    free(ctx->pix);
}

/* 8-bit pixels (rows of w * ch samples) as floats in [0, 255], c channels:
 * colour mixed to gray if c = 1, alpha (ch 2 or 4) composited over black. */
static void to_float(const uint8_t *pix, size_t h, size_t w, size_t ch, size_t c, float *dst) {
    bool alpha = ch == 2 || ch == 4;
    for (size_t i = 0; i < h * w; i++) {
        const uint8_t *s = pix + i * ch;
        float a = alpha ? (float)s[ch - 1] / 255.0f : 1.0f;
        if (c == 1 && ch >= 3) {
            uint32_t gray = ((uint32_t)s[0] * 19595 + (uint32_t)s[1] * 38470 +
                             (uint32_t)s[2] * 7471 + 0x8000) >>
                            16;
            dst[i] = (float)gray * a;
            continue;
        }
        for (size_t k = 0; k < c; k++)
            dst[i * c + k] = (float)s[k] * a;
    }
}

/* ---- resizing ----------------------------------------------------------- */

/* One axis's resampling: output j is the sum over k < count[j] of
 * w[j * stride + k] times input first[j] + k. */
typedef struct {
    size_t *first, *count, stride;
    double *w;
} axis_t;

/* Shrinking: output j covers input [j * src / dst, (j + 1) * src / dst);
 * in units of 1 / dst, input i covers [i * dst, (i + 1) * dst) and the
 * overlaps are whole numbers, so the weights are exact. */
static void axis_area(axis_t *a, size_t src, size_t dst) {
    for (size_t j = 0; j < dst; j++) {
        size_t lo = j * src, hi = (j + 1) * src;
        a->first[j] = lo / dst;
        a->count[j] = 0;
        for (size_t i = lo / dst; i * dst < hi; i++) {
            size_t overlap = PS_MIN((i + 1) * dst, hi) - PS_MAX(i * dst, lo);
            a->w[j * a->stride + a->count[j]++] = (double)overlap / (double)src;
        }
    }
}

/* Enlarging: output j's centre, (j + 0.5) * src / dst - 0.5 in input pixels,
 * between the two nearest input centres; clamped at the edges. */
static void axis_linear(axis_t *a, size_t src, size_t dst) {
    for (size_t j = 0; j < dst; j++) {
        double x = ((double)j + 0.5) * (double)src / (double)dst - 0.5;
        x = x < 0 ? 0 : x > (double)(src - 1) ? (double)(src - 1) : x;
        size_t i0 = (size_t)x;
        double f = x - (double)i0;
        a->first[j] = i0;
        a->count[j] = i0 + 1 < src ? 2 : 1;
        a->w[j * a->stride] = a->count[j] == 2 ? 1.0 - f : 1.0;
        if (a->count[j] == 2)
            a->w[j * a->stride + 1] = f;
    }
}

static void axis_init(axis_t *a, size_t src, size_t dst) {
    a->stride = dst < src ? (src + dst - 1) / dst + 1 : 2;
    a->first = xmalloc(dst * sizeof *a->first);
    a->count = xmalloc(dst * sizeof *a->count);
    a->w = xmalloc(dst * a->stride * sizeof *a->w);
    if (dst <= src)
        axis_area(a, src, dst);
    else
        axis_linear(a, src, dst);
}

static void axis_free(axis_t *a) {
    free(a->first);
    free(a->count);
    free(a->w);
}

/* dst[j] = sum_k w * src[first + k], over n vectors of c floats spaced
 * src_step and dst_step apart along the axis. */
static void resample(const axis_t *a, size_t n, size_t c, const float *src, size_t src_step,
                     float *dst, size_t dst_step) {
    for (size_t j = 0; j < n; j++)
        for (size_t k = 0; k < c; k++) {
            double sum = 0;
            for (size_t t = 0; t < a->count[j]; t++)
                sum += a->w[j * a->stride + t] * src[(a->first[j] + t) * src_step + k];
            dst[j * dst_step + k] = (float)sum;
        }
}

/* src[sh][sw][c] -> out[h][w][c] / 255: rows first, then columns. */
static void resize(const float *src, size_t sh, size_t sw, size_t h, size_t w, size_t c,
                   float *out) {
    axis_t ax, ay;
    axis_init(&ax, sw, w);
    axis_init(&ay, sh, h);
    float *tmp = xmalloc(sh * w * c * sizeof *tmp);
    for (size_t y = 0; y < sh; y++)
        resample(&ax, w, c, src + y * sw * c, c, tmp + y * w * c, c);
    for (size_t x = 0; x < w; x++)
        resample(&ay, h, c, tmp + x * c, w * c, out + x * c, w * c);
    for (size_t i = 0; i < h * w * c; i++)
        out[i] = (float)((double)out[i] / 255.0);
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
}

static int check_target(const char *name, size_t h, size_t w, size_t c, char *err, size_t errlen) {
    if (c != 1 && c != 3)
        return ps_errf(err, errlen, "%s: images load with 1 or 3 channels, not %zu", name, c);
    if (h == 0 || w == 0 || h > IMAGE_MAX_SIDE || w > IMAGE_MAX_SIDE)
        return ps_errf(err, errlen, "%s: cannot resize to %zu x %zu", name, h, w);
    return 0;
}

/* Decoded 8-bit pixels to out[h][w][c] / 255, resized. */
static void finish(const uint8_t *pix, size_t sh, size_t sw, size_t ch, size_t h, size_t w,
                   size_t c, float *out) {
    float *src = xmalloc(sh * sw * c * sizeof *src);
    to_float(pix, sh, sw, ch, c, src);
    resize(src, sh, sw, h, w, c, out);
    free(src);
}

/* Decodes the PNG open in ctx->f and finishes it into out. */
static int load_png(png_ctx_t *ctx, size_t h, size_t w, size_t c, float *out, char *err,
                    size_t errlen) {
    int rc = read_png(ctx, c, err, errlen);
    if (rc == 0)
        finish(ctx->pix, ctx->height, ctx->width, ctx->channels, h, w, c, out);
    ctx_free_read(ctx);
    return rc;
}

int image_load_png(const char *path, size_t h, size_t w, size_t c, float *out, char *err,
                   size_t errlen) {
    if (check_target(path, h, w, c, err, errlen) != 0)
        return -1;
    png_ctx_t ctx = {.path = path, .f = fopen(path, "rb")};
    if (!ctx.f)
        return ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    return load_png(&ctx, h, w, c, out, err, errlen);
}

static int decode_jpeg(const char *name, const uint8_t *buf, size_t len, size_t h, size_t w,
                       size_t c, float *out, char *err, size_t errlen) {
    uint8_t *pix;
    size_t sh, sw;
    if (jpeg_decode(name, buf, len, c, IMAGE_MAX_SIDE, &pix, &sh, &sw, err, errlen) != 0)
        return -1;
    finish(pix, sh, sw, c, h, w, c, out);
    free(pix);
    return 0;
}

int image_decode(const char *name, const uint8_t *buf, size_t len, size_t h, size_t w, size_t c,
                 float *out, char *err, size_t errlen) {
    if (check_target(name, h, w, c, err, errlen) != 0)
        return -1;
    if (jpeg_sniff(buf, len))
        return decode_jpeg(name, buf, len, h, w, c, out, err, errlen);
    if (len < 8 || png_sig_cmp(buf, 0, 8) != 0)
        return ps_errf(err, errlen, "%s: neither a PNG nor a JPEG image", name);
    /* libpng reads through stdio here as for files: one reading path. */
    png_ctx_t ctx = {.path = name, .f = fmemopen((void *)buf, len, "rb")};
    if (!ctx.f)
        return ps_errf(err, errlen, "%s: fmemopen: %s", name, strerror(errno));
    return load_png(&ctx, h, w, c, out, err, errlen);
}

/* ---- writing ------------------------------------------------------------ */

static int encode(png_ctx_t *ctx, size_t h, size_t w, size_t c, const uint8_t *pix) {
    if (setjmp(png_jmpbuf(ctx->png)))
        return -1;
    png_set_write_fn(ctx->png, ctx, on_write, on_flush);
    png_set_IHDR(ctx->png, ctx->info, (png_uint_32)w, (png_uint_32)h, 8,
                 c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(ctx->png, ctx->info);
    for (size_t y = 0; y < h; y++)
        png_write_row(ctx->png, pix + y * w * c);
    png_write_end(ctx->png, NULL);
    return 0;
}

static int write_png(png_ctx_t *ctx, size_t h, size_t w, size_t c, const uint8_t *pix, char *err,
                     size_t errlen) {
    if (ctx_start(ctx, true, err, errlen) != 0)
        return -1;
    if (encode(ctx, h, w, c, pix) != 0)
        return ps_errf(err, errlen, "write %s: %s", ctx->path, ctx->msg);
    return 0;
}

static int check_size(const char *name, size_t h, size_t w, char *err, size_t errlen) {
    if (h == 0 || w == 0 || h > IMAGE_MAX_SIDE || w > IMAGE_MAX_SIDE)
        return ps_errf(err, errlen, "%s: cannot write a %zu x %zu image", name, h, w);
    return 0;
}

int image_encode_png(size_t h, size_t w, size_t c, const uint8_t *pix, uint8_t **out, size_t *len,
                     char *err, size_t errlen) {
    *out = NULL;
    *len = 0;
    if (check_size("PNG", h, w, err, errlen) != 0)
        return -1;
    if (c != 1 && c != 3)
        return ps_errf(err, errlen, "PNG: %zu channels (1 or 3 are written)", c);
    char *buf = NULL;
    size_t n = 0;
    png_ctx_t ctx = {.path = "PNG", .f = open_memstream(&buf, &n)};
    if (!ctx.f)
        return ps_errf(err, errlen, "open_memstream: %s", strerror(errno));
    int rc = write_png(&ctx, h, w, c, pix, err, errlen);
    if (ctx.png)
        png_destroy_write_struct(&ctx.png, ctx.info ? &ctx.info : NULL);
    if (fclose(ctx.f) != 0 && rc == 0)
        rc = ps_errf(err, errlen, "PNG: %s", strerror(errno));
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *out = (uint8_t *)buf;
    *len = n;
    return 0;
}

int image_write_png_gray(const char *path, size_t h, size_t w, const uint8_t *pix, char *err,
                         size_t errlen) {
    if (check_size(path, h, w, err, errlen) != 0)
        return -1;
    png_ctx_t ctx = {.path = path, .f = fopen(path, "wb")};
    if (!ctx.f)
        return ps_errf(err, errlen, "create %s: %s", path, strerror(errno));
    int rc = write_png(&ctx, h, w, 1, pix, err, errlen);
    if (ctx.png)
        png_destroy_write_struct(&ctx.png, ctx.info ? &ctx.info : NULL);
    if (fclose(ctx.f) != 0 && rc == 0)
        rc = ps_errf(err, errlen, "write %s: %s", path, strerror(errno));
    if (rc != 0)
        unlink(path);
    return rc;
}

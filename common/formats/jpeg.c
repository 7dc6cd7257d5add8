#include "common/formats/jpeg.h"

/* jpeglib.h uses FILE without including stdio.h. */
#include <stdio.h>

#include <jpeglib.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

/* libjpeg reports a fatal error through error_exit, which must not return:
 * it keeps the message here and longjmps to the setjmp in decode(). The
 * pixels live in the struct, which the caller owns, so nothing is clobbered. */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    struct jpeg_decompress_struct cinfo;
    uint8_t *pix;
} jpeg_ctx_t;

static void on_error_exit(j_common_ptr cinfo) {
    jpeg_ctx_t *ctx = (jpeg_ctx_t *)cinfo->err;
    cinfo->err->format_message(cinfo, ctx->msg);
    longjmp(ctx->jump, 1);
}

/* libjpeg only warns about corrupt data ("Premature end of JPEG file") and
 * fills the missing rows with gray; a training example made of that filler
 * is worse than an error, so every warning (level -1) is fatal here. Trace
 * messages (levels >= 0) are ignored. */
static void on_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0)
        on_error_exit(cinfo);
}

bool jpeg_sniff(const uint8_t *buf, size_t len) {
    return len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF;
}

/* Header, size check, then every scanline into ctx->pix. */
static int decode(jpeg_ctx_t *ctx, const uint8_t *buf, size_t len, size_t c, size_t max_side) {
    struct jpeg_decompress_struct *ci = &ctx->cinfo;
    if (setjmp(ctx->jump))
        return -1;
    jpeg_create_decompress(ci);
    jpeg_mem_src(ci, buf, (unsigned long)len);
    jpeg_read_header(ci, TRUE);
    ci->out_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(ci);
    if (ci->output_width > max_side || ci->output_height > max_side) {
        snprintf(ctx->msg, sizeof ctx->msg,
                 "%u pixels wide and %u high, over the limit of %zu a side", ci->output_width,
                 ci->output_height, max_side);
        return -1;
    }
    size_t row = (size_t)ci->output_width * c;
    ctx->pix = xmalloc(row * ci->output_height);
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW r = ctx->pix + row * ci->output_scanline;
        jpeg_read_scanlines(ci, &r, 1);
    }
    jpeg_finish_decompress(ci);
    return 0;
}

int jpeg_decode(const char *name, const uint8_t *buf, size_t len, size_t c, size_t max_side,
                uint8_t **pix, size_t *h, size_t *w, char *err, size_t errlen) {
    *pix = NULL;
    if (c != 1 && c != 3)
        return ps_errf(err, errlen, "%s: images decode to 1 or 3 channels, not %zu", name, c);
    if (!jpeg_sniff(buf, len))
        return ps_errf(err, errlen, "%s: not a JPEG file", name);
    jpeg_ctx_t *ctx = xcalloc(1, sizeof *ctx);
    ctx->cinfo.err = jpeg_std_error(&ctx->pub);
    ctx->pub.error_exit = on_error_exit;
    ctx->pub.emit_message = on_emit_message;
    int rc = decode(ctx, buf, len, c, max_side);
    if (rc == 0) {
        *pix = ctx->pix;
        *h = ctx->cinfo.output_height;
        *w = ctx->cinfo.output_width;
    } else {
        free(ctx->pix);
        ps_errf(err, errlen, "%s: bad JPEG: %s", name, ctx->msg);
    }
    jpeg_destroy_decompress(&ctx->cinfo);
    free(ctx);
    return rc;
}

/* Tests of PNG input: every colour type and bit depth libpng writes (the test
 * writes them itself), gray/RGB conversion, alpha, resizing both ways, and
 * damaged files, each refused with a message naming the file. */
#include "test.h"

#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/formats/image.h"
#include "common/base/util.h"

/* A PNG to write: samples[h][w][channels] in the bit depth's range. */
typedef struct {
    int type, depth, interlace;
    size_t h, w;
    const uint16_t *samples;
    const png_color *palette; /* for PNG_COLOR_TYPE_PALETTE */
    int npalette;
    const png_byte *trns; /* palette alpha, or NULL */
    int ntrns;
    int trns_gray; /* a gray level that is transparent, or -1 */
} png_spec_t;

static size_t channels_of(int type) {
    switch (type) {
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        return 2;
    case PNG_COLOR_TYPE_RGB:
        return 3;
    case PNG_COLOR_TYPE_RGB_ALPHA:
        return 4;
    default:
        return 1;
    }
}

/* One row as libpng takes it: 16-bit samples big-endian, others a byte each
 * (png_set_packing packs depths below 8). */
static void pack_row(const png_spec_t *s, size_t y, png_byte *row) {
    size_t n = s->w * channels_of(s->type);
    const uint16_t *src = s->samples + y * n;
    for (size_t i = 0; i < n; i++) {
        if (s->depth == 16) {
            row[2 * i] = (png_byte)(src[i] >> 8);
            row[2 * i + 1] = (png_byte)src[i];
        } else {
            row[i] = (png_byte)src[i];
        }
    }
}

static void set_header(png_structp png, png_infop info, const png_spec_t *s) {
    png_set_IHDR(png, info, (png_uint_32)s->w, (png_uint_32)s->h, s->depth, s->type,
                 s->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->palette)
        png_set_PLTE(png, info, s->palette, s->npalette);
    if (s->trns)
        png_set_tRNS(png, info, s->trns, s->ntrns, NULL);
    if (s->trns_gray >= 0) {
        png_color_16 c = {.gray = (png_uint_16)s->trns_gray};
        png_set_tRNS(png, info, NULL, 0, &c);
    }
}

static void write_spec(const char *path, const png_spec_t *s) {
    FILE *f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    size_t rowbytes = s->w * channels_of(s->type) * (s->depth == 16 ? 2 : 1);
    png_byte *pix = xmalloc(s->h * rowbytes);
    png_bytep *rows = xmalloc(s->h * sizeof *rows);
    if (!f || setjmp(png_jmpbuf(png))) {
        fprintf(stderr, "%s: cannot write the test PNG\n", path);
        exit(2);
    }
    png_init_io(png, f);
    set_header(png, info, s);
    png_write_info(png, info);
    if (s->depth < 8)
        png_set_packing(png);
    for (size_t y = 0; y < s->h; y++) {
        rows[y] = pix + y * rowbytes;
        pack_row(s, y, rows[y]);
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(rows);
    free(pix);
}

/* Loads path at its own size and compares with want[h][w][c] (in 0-255). */
static int load_equals(const char *path, size_t h, size_t w, size_t c, const float *want,
                       double tol) {
    float *got = xmalloc(h * w * c * sizeof *got), *exp = xmalloc(h * w * c * sizeof *exp);
    char err[PS_ERRLEN];
    int rc = image_load_png(path, h, w, c, got, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    for (size_t i = 0; i < h * w * c; i++)
        exp[i] = (float)(want[i] / 255.0);
    if (rc == 0 && test_compare(path, got, exp, h * w * c, tol) != 0)
        rc = -1;
    free(got);
    free(exp);
    return rc;
}

void test_image_gray_exact(void) {
    /* A data-set image saved and loaded gives exactly the floats the data
     * loader makes (byte / 255.0f). */
    uint8_t pix[28 * 28];
    for (size_t i = 0; i < sizeof pix; i++)
        pix[i] = (uint8_t)(i * 7 + i / 28);
    char err[PS_ERRLEN];
    const char *path = test_path("g.png");
    CHECK_INT_EQ(image_write_png_gray(path, 28, 28, pix, err, sizeof err), 0);
    float out[28 * 28];
    CHECK_INT_EQ(image_load_png(path, 28, 28, 1, out, err, sizeof err), 0);
    for (size_t i = 0; i < sizeof pix; i++)
        if (out[i] != (float)pix[i] / 255.0f)
            CHECK_NEAR(out[i], (float)pix[i] / 255.0f, 0);
    /* As RGB, every channel is the gray level. */
    float rgb[28 * 28 * 3];
    CHECK_INT_EQ(image_load_png(path, 28, 28, 3, rgb, err, sizeof err), 0);
    for (size_t i = 0; i < sizeof pix * 3; i++)
        if (rgb[i] != out[i / 3])
            CHECK_NEAR(rgb[i], out[i / 3], 0);
}

/* Gray at depths 1, 2, 4, 8, 16; gray + alpha; gray with a tRNS level;
 * interlaced. Samples grow along the row; expected values follow the rules of
 * image.h (expanded by bit replication, 16 bits scaled, alpha over black). */
void test_image_types_gray(void) {
    enum { H = 3, W = 5 };
    int depths[] = {1, 2, 4, 8, 16};
    for (size_t d = 0; d < PS_ARRAY_LEN(depths); d++) {
        int depth = depths[d];
        unsigned max = (1u << depth) - 1;
        uint16_t s[H * W];
        float want[H * W];
        for (size_t i = 0; i < H * W; i++) {
            s[i] = (uint16_t)((i * 37) % (max + 1));
            /* 16-bit levels are 257 * an 8-bit one, plus noise that rounds away. */
            if (depth == 16)
                s[i] = (uint16_t)((i * 17 % 256) * 257 + (i % 3 ? 100 : 0));
            want[i] = depth == 16 ? (float)(i * 17 % 256) : (float)(s[i] * 255 / max);
        }
        png_spec_t spec = {PNG_COLOR_TYPE_GRAY, depth, (int)d % 2, H, W, s, NULL, 0, NULL, 0, -1};
        const char *path = test_path("gray.png");
        write_spec(path, &spec);
        CHECK(load_equals(path, H, W, 1, want, 1e-6) == 0);
    }
    uint16_t ga[2 * 4] = {200, 255, 200, 0, 100, 51, 0, 128};
    float want_ga[4] = {200, 0, 100 * 51 / 255.0f, 0};
    png_spec_t spec = {PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 2, 2, ga, NULL, 0, NULL, 0, -1};
    write_spec(test_path("ga.png"), &spec);
    CHECK(load_equals(test_path("ga.png"), 2, 2, 1, want_ga, 1e-6) == 0);

    uint16_t g[4] = {10, 20, 30, 20};
    float want_trns[4] = {10, 0, 30, 0};
    spec = (png_spec_t){PNG_COLOR_TYPE_GRAY, 8, 0, 2, 2, g, NULL, 0, NULL, 0, 20};
    write_spec(test_path("trns.png"), &spec);
    CHECK(load_equals(test_path("trns.png"), 2, 2, 1, want_trns, 1e-6) == 0);
}

/* PIL's convert("L"). */
static float pil_gray(unsigned r, unsigned g, unsigned b) {
    return (float)((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16);
}

/* RGB at 8 and 16 bits, RGBA, palette with and without alpha, interlaced;
 * loaded as RGB and as gray. */
void test_image_types_rgb(void) {
    enum { H = 4, W = 3, N = H * W };
    uint16_t rgb[N * 3], rgb16[N * 3], rgba[N * 4], idx[N];
    float want3[N * 3], want1[N], want3a[N * 3], want1a[N];
    png_color pal[N];
    png_byte pal_alpha[N];
    for (size_t i = 0; i < N; i++) {
        unsigned r = (unsigned)(i * 23 % 256), g = (unsigned)(i * 91 % 256),
                 b = (unsigned)(255 - i * 13), a = (unsigned)(i * 29 % 256);
        uint16_t px[4] = {(uint16_t)r, (uint16_t)g, (uint16_t)b, (uint16_t)a};
        for (size_t k = 0; k < 3; k++) {
            rgb[i * 3 + k] = px[k];
            rgb16[i * 3 + k] = (uint16_t)(px[k] * 257);
            want3[i * 3 + k] = px[k];
            want3a[i * 3 + k] = (float)px[k] * ((float)a / 255.0f);
        }
        for (size_t k = 0; k < 4; k++)
            rgba[i * 4 + k] = px[k];
        want1[i] = pil_gray(r, g, b);
        want1a[i] = want1[i] * ((float)a / 255.0f);
        pal[i] = (png_color){(png_byte)r, (png_byte)g, (png_byte)b};
        pal_alpha[i] = (png_byte)a;
        idx[i] = (uint16_t)i;
    }
    struct {
        png_spec_t spec;
        const float *w3, *w1;
    } cases[] = {
        {{PNG_COLOR_TYPE_RGB, 8, 0, H, W, rgb, NULL, 0, NULL, 0, -1}, want3, want1},
        {{PNG_COLOR_TYPE_RGB, 8, 1, H, W, rgb, NULL, 0, NULL, 0, -1}, want3, want1},
        {{PNG_COLOR_TYPE_RGB, 16, 0, H, W, rgb16, NULL, 0, NULL, 0, -1}, want3, want1},
        {{PNG_COLOR_TYPE_RGB_ALPHA, 8, 0, H, W, rgba, NULL, 0, NULL, 0, -1}, want3a, want1a},
        {{PNG_COLOR_TYPE_PALETTE, 8, 0, H, W, idx, pal, N, NULL, 0, -1}, want3, want1},
        {{PNG_COLOR_TYPE_PALETTE, 4, 1, H, W, idx, pal, N, pal_alpha, N, -1}, want3a, want1a},
    };
    for (size_t c = 0; c < PS_ARRAY_LEN(cases); c++) {
        const char *path = test_path("rgb.png");
        write_spec(path, &cases[c].spec);
        CHECK(load_equals(path, H, W, 3, cases[c].w3, 1e-6) == 0);
        CHECK(load_equals(path, H, W, 1, cases[c].w1, 1e-6) == 0);
    }
}

/* Writes a gray image of the given levels and loads it at h x w. */
static int load_resized(const uint8_t *pix, size_t sh, size_t sw, size_t h, size_t w, float *out) {
    char err[PS_ERRLEN];
    const char *path = test_path("r.png");
    if (image_write_png_gray(path, sh, sw, pix, err, sizeof err) != 0 ||
        image_load_png(path, h, w, 1, out, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    for (size_t i = 0; i < h * w; i++)
        out[i] *= 255.0f;
    return 0;
}

void test_image_resize_area(void) {
    /* 6 x 9 -> 2 x 3: each output is the mean of a 3 x 3 block. */
    uint8_t pix[6 * 9];
    for (size_t i = 0; i < sizeof pix; i++)
        pix[i] = (uint8_t)(i * 53 % 256);
    float out[6], want[6];
    CHECK(load_resized(pix, 6, 9, 2, 3, out) == 0);
    for (size_t oy = 0; oy < 2; oy++)
        for (size_t ox = 0; ox < 3; ox++) {
            double sum = 0;
            for (size_t y = 0; y < 3; y++)
                for (size_t x = 0; x < 3; x++)
                    sum += pix[(oy * 3 + y) * 9 + ox * 3 + x];
            want[oy * 3 + ox] = (float)(sum / 9);
        }
    CHECK_ARRAY_NEAR("3x3 blocks", out, want, 6, 1e-5);
    /* 1 x 3 -> 1 x 2: the middle pixel is split half and half. */
    uint8_t row[3] = {30, 90, 240};
    float want2[2] = {(30 + 0.5f * 90) / 1.5f, (0.5f * 90 + 240) / 1.5f};
    CHECK(load_resized(row, 1, 3, 1, 2, out) == 0);
    CHECK_ARRAY_NEAR("1x3 -> 1x2", out, want2, 2, 1e-5);
    /* Anything -> 1 x 1 is the mean. */
    CHECK(load_resized(pix, 6, 9, 1, 1, out) == 0);
    double mean = 0;
    for (size_t i = 0; i < sizeof pix; i++)
        mean += pix[i] / (double)sizeof pix;
    CHECK_NEAR(out[0], mean, 1e-5);
}

void test_image_resize_linear(void) {
    /* 1 x 2 -> 1 x 4: centres at -0.25, 0.25, 0.75, 1.25 input pixels. */
    uint8_t row[2] = {40, 200};
    float out[8];
    float want[4] = {40, 0.75f * 40 + 0.25f * 200, 0.25f * 40 + 0.75f * 200, 200};
    CHECK(load_resized(row, 1, 2, 1, 4, out) == 0);
    CHECK_ARRAY_NEAR("1x2 -> 1x4", out, want, 4, 1e-5);
    /* Down one axis, up the other: 2 x 1 -> 1 x 2 is the mean, twice. */
    uint8_t col[2] = {10, 100};
    float want2[2] = {55, 55};
    CHECK(load_resized(col, 2, 1, 1, 2, out) == 0);
    CHECK_ARRAY_NEAR("2x1 -> 1x2", out, want2, 2, 1e-5);
    /* A constant image stays constant at any size. */
    uint8_t flat[5 * 7];
    memset(flat, 77, sizeof flat);
    float big[11 * 13];
    CHECK(load_resized(flat, 5, 7, 11, 13, big) == 0);
    for (size_t i = 0; i < 11 * 13; i++)
        CHECK_NEAR(big[i], 77, 1e-5);
}

static int load_fails_with(const char *path, size_t c, const char *want) {
    float out[3 * 4 * 4];
    char err[PS_ERRLEN] = "";
    int rc = image_load_png(path, 4, 4, c, out, err, sizeof err);
    if (rc == 0 || !strstr(err, want) || !strstr(err, path) || strchr(err, '\n')) {
        fprintf(stderr, "want \"%s\", got rc %d: %s\n", want, rc, err);
        return -1;
    }
    return 0;
}

void test_image_errors(void) {
    uint8_t pix[16 * 16];
    for (size_t i = 0; i < sizeof pix; i++)
        pix[i] = (uint8_t)(i * 101);
    char err[PS_ERRLEN], *data;
    size_t len;
    const char *good = test_path("good.png");
    CHECK_INT_EQ(image_write_png_gray(good, 16, 16, pix, err, sizeof err), 0);
    CHECK(ps_read_file(good, &data, &len, err, sizeof err) == 0);

    CHECK(load_fails_with(test_path("missing.png"), 1, "No such file") == 0);
    test_write_bytes(test_path("text.png"), "hello, world\n", 13);
    CHECK(load_fails_with(test_path("text.png"), 1, "not a PNG file") == 0);
    test_write_bytes(test_path("empty.png"), "", 0);
    CHECK(load_fails_with(test_path("empty.png"), 1, "not a PNG file") == 0);
    /* Cut in the header, in the pixels, before the end chunk. */
    size_t cuts[] = {20, len / 2, len - 6};
    for (size_t i = 0; i < PS_ARRAY_LEN(cuts); i++) {
        test_write_bytes(test_path("cut.png"), data, cuts[i]);
        CHECK(load_fails_with(test_path("cut.png"), 1, "truncated") == 0);
    }
    /* A flipped bit in IHDR's width: its CRC no longer matches. */
    data[8 + 8 + 2] ^= 1;
    test_write_bytes(test_path("crc.png"), data, len);
    free(data);
    CHECK(load_fails_with(test_path("crc.png"), 1, "bad PNG: IHDR: CRC error") == 0);
    CHECK(load_fails_with(good, 2, "1 or 3 channels, not 2") == 0);
    float out[1];
    CHECK(image_load_png(good, 0, 4, 1, out, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "cannot resize to 0 x 4");
}

void test_image_too_large(void) {
    /* 20000 x 1 is a small file, but wider than IMAGE_MAX_SIDE. */
    uint8_t *pix = xcalloc(20000, 1);
    char err[PS_ERRLEN];
    const char *path = test_path("wide.png");
    CHECK(image_write_png_gray(path, 1, 20000, pix, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "cannot write a 1 x 20000 image");
    png_spec_t spec = {PNG_COLOR_TYPE_GRAY, 8, 0, 1, 20000, NULL, NULL, 0, NULL, 0, -1};
    uint16_t *s = xcalloc(20000, sizeof *s);
    spec.samples = s;
    write_spec(path, &spec);
    free(s);
    free(pix);
    CHECK(load_fails_with(
              path, 1, "bad PNG: 20000 pixels wide and 1 high, over the limit of 16384 a side") ==
          0);
}

void test_image_write_error(void) {
    uint8_t *pix = xmalloc(512 * 512);
    for (size_t i = 0; i < 512 * 512; i++)
        pix[i] = (uint8_t)(i * 2654435761u >> 13);
    char err[PS_ERRLEN] = "";
    const char *path = test_path("big.png");
    test_limit_file_size(4096);
    int rc = image_write_png_gray(path, 512, 512, pix, err, sizeof err);
    free(pix);
    CHECK(rc != 0);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "File too large");
    CHECK(access(path, F_OK) != 0);
    uint8_t one = 0;
    CHECK(image_write_png_gray(test_path("no/such/dir.png"), 1, 1, &one, err, sizeof err) != 0);
    CHECK_STR_CONTAINS(err, "No such file");
}

/* image_encode_png: gray and RGB bytes decode back to the very pixels. */
void test_image_encode_png(void) {
    char err[PS_ERRLEN];
    uint8_t pix[5 * 3 * 3];
    for (size_t i = 0; i < sizeof pix; i++)
        pix[i] = (uint8_t)(i * 37 + 11);
    for (size_t c = 1; c <= 3; c += 2) {
        uint8_t *png;
        size_t len;
        CHECK_INT_EQ(image_encode_png(5, 3, c, pix, &png, &len, err, sizeof err), 0);
        float out[5 * 3 * 3];
        CHECK_INT_EQ(image_decode("enc", png, len, 5, 3, c, out, err, sizeof err), 0);
        for (size_t i = 0; i < 5 * 3 * c; i++)
            CHECK_INT_EQ((int)(out[i] * 255.0f + 0.5f), pix[i]);
        free(png);
    }
    uint8_t *png;
    size_t len;
    CHECK_INT_EQ(image_encode_png(5, 3, 2, pix, &png, &len, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "2 channels");
    CHECK_INT_EQ(image_encode_png(0, 3, 1, pix, &png, &len, err, sizeof err), -1);
}

/* tf.train.Example (common/data/example.c) from a buffer, then the
 * TFRecord-of-Example data reader (common/data/tfrecord_data.c) on a file of
 * two records framed here (the fuzzer could not forge the CRCs). The
 * input's first byte picks the model's input shape and classes, its next
 * two where the first record ends; the rest is the two records. */
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/data/example.h"
#include "common/data/source.h"
#include "common/formats/crc32c.h"
#include "fuzz.h"

/* One TFRecord frame: length, its masked CRC, the data, its masked CRC. */
static size_t frame(uint8_t *out, const uint8_t *rec, size_t len) {
    uint64_t n = len;
    uint32_t crc = crc32c_mask(crc32c(0, &n, 8));
    memcpy(out, &n, 8);
    memcpy(out + 8, &crc, 4);
    memcpy(out + 12, rec, len);
    crc = crc32c_mask(crc32c(0, rec, len));
    memcpy(out + 12 + len, &crc, 4);
    return len + 16;
}

/* Reads every byte the parse points at, so that ASan checks the pointers. */
static void touch(const example_t *e) {
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < e->image_len; i++)
        sum += e->image[i];
    for (size_t i = 0; i < e->nfloats; i++)
        sum += e->floats[i] > 0;
    (void)sum;
}

static void load(const uint8_t *data, const uint8_t *rec, size_t cut, size_t left) {
    static const size_t shapes[4][3] = {{2, 2, 1}, {4, 4, 3}, {1, 1, 3}, {28, 28, 1}};
    const size_t *hwc = shapes[data[0] & 3];
    uint8_t *file = xmalloc(left + 32);
    size_t n = frame(file, rec, cut);
    n += frame(file + n, rec + cut, left - cut);
    data_spec_t s = {.path = fuzz_file("in.tfrecord", file, n),
                     .format = "tfrecord",
                     .h = hwc[0],
                     .w = hwc[1],
                     .c = hwc[2],
                     .nclasses = data[0] & 4 ? 256 : 10,
                     .image_feature = "image",
                     .label_feature = "label"};
    free(file);
    dataset_t d;
    char err[PS_ERRLEN];
    if (dataset_load(&d, &s, err, sizeof err) == 0)
        dataset_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    size_t left = size - 3, cut = ((size_t)data[1] << 8 | data[2]) % (left + 1);
    example_t e;
    char err[PS_ERRLEN];
    if (example_parse(&e, data + 3, cut, "image", "label", err, sizeof err) == 0) {
        touch(&e);
        example_free(&e);
    }
    load(data, data + 3, cut, left);
    return 0;
}

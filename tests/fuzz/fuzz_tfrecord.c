/* The TFRecord reader (common/formats/tfrecord.c): every record. */
#include "common/base/util.h"
#include "common/formats/tfrecord.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[PS_ERRLEN];
    tfrecord_reader_t *r = tfrecord_open(fuzz_file("in.tfrecord", data, size), err, sizeof err);
    if (!r)
        return 0;
    const uint8_t *rec;
    size_t len;
    while (tfrecord_next(r, &rec, &len, err, sizeof err) == 1) {
    }
    tfrecord_close(r);
    return 0;
}

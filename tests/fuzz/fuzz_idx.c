/* The IDX reader (common/data/dataset.c): the input is the images file and
 * the labels file, split where its first two bytes say. */
#include "common/base/util.h"
#include "common/data/dataset.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    size_t cut = ((size_t)data[0] << 8 | data[1]) % (size - 1);
    const char *images = fuzz_file("images", data + 2, cut);
    const char *labels = fuzz_file("labels", data + 2 + cut, size - 2 - cut);
    dataset_t d;
    char err[PS_ERRLEN];
    if (dataset_load_idx(&d, images, labels, err, sizeof err) == 0)
        dataset_free(&d);
    return 0;
}

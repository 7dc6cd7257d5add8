/* The CSV reader (common/data/csv.c), plain or gzip, from a file: the
 * input's first byte picks the options (header names / none / skip, the
 * label column, whether a model fixes the feature count), the rest is the
 * file. */
#include <stdbool.h>

#include "common/base/util.h"
#include "common/data/source.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const headers[4] = {"names", "none", "skip", "names"};
    static const char *const labels[4] = {"", "0", "label", "2"};
    if (size < 1)
        return 0;
    bool model = data[0] & 16;
    data_spec_t s = {.path = fuzz_file("in.csv", data + 1, size - 1),
                     .format = "csv",
                     .h = model ? 1 : 0,
                     .w = model ? 1 : 0,
                     .c = model ? 3 : 0,
                     .nclasses = data[0] & 32 ? 256 : 3,
                     .label_column = labels[data[0] >> 2 & 3],
                     .csv_header = headers[data[0] & 3]};
    dataset_t d;
    char err[PS_ERRLEN];
    if (dataset_load(&d, &s, err, sizeof err) == 0)
        dataset_free(&d);
    return 0;
}

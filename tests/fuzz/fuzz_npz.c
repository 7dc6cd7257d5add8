/* The npz reader (common/formats/npz.c): a zip of .npy arrays. */
#include "common/base/util.h"
#include "common/formats/npz.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    npz_t z;
    char err[PS_ERRLEN];
    if (npz_read(fuzz_file("in.npz", data, size), &z, err, sizeof err) == 0) {
        for (size_t i = 0; i < z.n; i++)
            npz_count(&z.arrays[i]);
        npz_free(&z);
    }
    return 0;
}

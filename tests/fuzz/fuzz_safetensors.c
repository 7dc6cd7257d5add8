/* The safetensors reader (common/formats/safetensors.c): open, then read
 * every tensor it lists (a bounded number of elements each). */
#include <stdlib.h>

#include "common/base/util.h"
#include "common/formats/safetensors.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file_t f;
    char err[PS_ERRLEN];
    if (st_open(&f, fuzz_file("in.safetensors", data, size), err, sizeof err) != 0)
        return 0;
    float out[256];
    for (size_t i = 0; i < f.n; i++) {
        size_t n = f.entries[i].count < 256 ? f.entries[i].count : 256;
        st_read(&f, &f.entries[i], 0, n, out, err, sizeof err);
        st_meta_get(&f, f.entries[i].name);
    }
    st_close(&f);
    return 0;
}

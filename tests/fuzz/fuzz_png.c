/* The PNG loader (common/formats/image.c), into a 28x28 gray image and a
 * 32x32 RGB one. */
#include "common/base/util.h"
#include "common/formats/image.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static float out[32 * 32 * 3];
    char err[PS_ERRLEN];
    const char *path = fuzz_file("in.png", data, size);
    image_load_png(path, 28, 28, 1, out, err, sizeof err);
    image_load_png(path, 32, 32, 3, out, err, sizeof err);
    return 0;
}

/* The checkpoint manifest's reader (common/train/checkpoint.c): the input
 * is the model_dir's "checkpoint" file. */
#include "common/base/util.h"
#include "common/train/checkpoint.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file("checkpoint", data, size);
    ckpt_manifest_t m;
    char err[PS_ERRLEN];
    ckpt_manifest_read(fuzz_dir(), &m, err, sizeof err);
    return 0;
}

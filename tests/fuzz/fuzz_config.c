/* The config file's parser (common/daemon/config.c): a JSON file of keys. */
#include "common/base/util.h"
#include "common/daemon/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    config_t c;
    char err[PS_ERRLEN];
    config_defaults(&c);
    config_load_file(&c, fuzz_file("config.json", data, size), err, sizeof err);
    return 0;
}

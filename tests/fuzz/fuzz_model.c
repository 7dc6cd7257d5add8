/* The model spec's parser (common/model/model.c). */
#include <stdlib.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_string(data, size);
    model_t m;
    char err[PS_ERRLEN];
    if (model_parse(&m, text, err, sizeof err) == 0)
        model_free(&m);
    free(text);
    return 0;
}

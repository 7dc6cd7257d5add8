/* The Keras model JSON reader (common/model/keras_json.c), through
 * model_parse as `pstrain train --model model.json` reaches it. A model it
 * accepts must survive the trip out and back: what model_keras_config writes
 * (the config.json of an exported .keras file) parses again to the same
 * parameters. */
#include <stdio.h>
#include <stdlib.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_string(data, size);
    model_t m;
    char err[PS_ERRLEN];
    if (model_parse(&m, text, err, sizeof err) == 0) {
        char *config = model_keras_config(&m);
        model_t back;
        if (model_parse(&back, config, err, sizeof err) != 0) {
            fprintf(stderr, "model_keras_config does not parse again: %s\n%s\n", err, config);
            abort();
        }
        if (back.nparams != m.nparams || back.nlayers != m.nlayers) {
            fprintf(stderr, "round trip: %zu params in %zu layers, then %zu in %zu\n", m.nparams,
                    m.nlayers, back.nparams, back.nlayers);
            abort();
        }
        model_free(&back);
        free(config);
        model_free(&m);
    }
    free(text);
    return 0;
}

/* TF_CONFIG's parser (common/daemon/cluster.c), and the role check after it. */
#include <stdlib.h>

#include "common/base/util.h"
#include "common/daemon/cluster.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_string(data, size);
    cluster_t c;
    char err[PS_ERRLEN];
    if (cluster_parse(&c, text, err, sizeof err) == 0) {
        cluster_expect_role(&c, CLUSTER_PS, "pstrain-ps", err, sizeof err);
        cluster_free(&c);
    }
    free(text);
    return 0;
}

/* The log's escaping (common/base/log.c): whatever a peer sends, the
 * escaped text holds no control character and no byte that is not part of
 * printable UTF-8, and is cut within the buffer. */
#include <stdlib.h>
#include <string.h>

#include "common/base/log.h"
#include "fuzz.h"

static void check(const char *s, size_t outlen) {
    char *out = malloc(outlen);
    log_escape(s, out, outlen);
    size_t n = strlen(out);
    if (n >= outlen)
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c == 0x7f)
            abort();
        /* C1 controls (U+0080-U+009F) never pass. */
        if (c == 0xc2 && i + 1 < n && (unsigned char)out[i + 1] < 0xa0)
            abort();
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = fuzz_string(data, size);
    check(s, 1);
    check(s, 7);
    check(s, 4 * size + 1);
    free(s);
    return 0;
}

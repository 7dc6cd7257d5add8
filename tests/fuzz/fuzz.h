/* What the libFuzzer targets of tests/fuzz share: the entry point's
 * prototype, and the input as a NUL-terminated string or as a file (most
 * parsers read paths) in a directory of this process's own. Built only with
 * -DPSTRAIN_FUZZ=ON (clang); scripts/fuzz.sh runs them. */
#ifndef PSTRAIN_FUZZ_H
#define PSTRAIN_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* data as a string (caller frees). */
char *fuzz_string(const uint8_t *data, size_t size);
/* Writes data to name in the process's scratch directory (made once,
 * removed at exit); returns the path, valid until the next call with the
 * same name. */
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);
/* The scratch directory itself. */
const char *fuzz_dir(void);

#endif

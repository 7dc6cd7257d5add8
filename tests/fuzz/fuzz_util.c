/* The fuzz targets' shared helpers (fuzz.h). */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"

static char dir[64];
static char path[8][128];
static int npaths;

static void remove_dir(void) {
    for (int i = 0; i < npaths; i++)
        unlink(path[i]);
    rmdir(dir);
}

const char *fuzz_dir(void) {
    if (!dir[0]) {
        /* Memory, not the disk: the file parsers get thousands of files a second. */
        snprintf(dir, sizeof dir, "%s/pstrain-fuzz-XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
        atexit(remove_dir);
        /* The parsers' error lines are expected by the thousand. */
        log_set_level("error");
    }
    return dir;
}

char *fuzz_string(const uint8_t *data, size_t size) {
    char *s = xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    const char *d = fuzz_dir();
    int slot = 0;
    char want[128];
    snprintf(want, sizeof want, "%s/%s", d, name);
    while (slot < npaths && strcmp(path[slot], want) != 0)
        slot++;
    if (slot == npaths) {
        if (npaths == 8)
            abort();
        snprintf(path[npaths++], sizeof path[0], "%s", want);
    }
    FILE *f = fopen(path[slot], "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path[slot]);
        abort();
    }
    return path[slot];
}

#include "common/base/failpoint.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/log.h"

static atomic_long failpoint_hits;

void failpoint(const char *name) {
    const char *spec = getenv("PSTRAIN_FAILPOINT");
    if (!spec || !*spec)
        return;
    char who[64], what[64];
    long n = 1;
    if (sscanf(spec, "%63[^:]:%63[^@]@%ld", who, what, &n) < 2 || strcmp(who, log_name()) ||
        strcmp(what, name))
        return;
    if (atomic_fetch_add(&failpoint_hits, 1) + 1 != n)
        return;
    log_warn("failpoint %s reached: stopping here until killed", name);
    for (;;)
        pause();
}

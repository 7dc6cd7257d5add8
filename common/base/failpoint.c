#include "common/base/failpoint.h"

#include <limits.h>
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

bool failpoint_error(const char *name) {
    const char *spec = getenv("PSTRAIN_FAILPOINT");
    if (!spec || !*spec)
        return false;
    char who[64], what[64];
    long first = 1, last = LONG_MAX;
    int n = sscanf(spec, "%63[^:]:%63[^@]@%ld-%ld", who, what, &first, &last);
    if (n < 2 || strcmp(who, log_name()) || strcmp(what, name))
        return false;
    long hit = atomic_fetch_add(&failpoint_hits, 1) + 1;
    if (hit < first || hit > last)
        return false;
    log_warn("failpoint %s: failing here (hit %ld)", name, hit);
    return true;
}

/* The configuration table's row type, shared by the table (config_keys.c)
 * and the code that reads and writes through it (config.c); private to
 * common/daemon/. */
#ifndef PSTRAIN_CONFIG_INTERNAL_H
#define PSTRAIN_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/daemon/config.h"

typedef enum { KEY_INT, KEY_FLOAT, KEY_BOOL, KEY_STRING, KEY_ENUM } key_type_t;

/* Float bounds are inclusive unless these flags say otherwise. */
#define MIN_EXCL 1u
#define MAX_EXCL 2u

typedef struct {
    const char *name;
    key_type_t type;
    size_t offset;   /* of the field in config_t */
    const char *def; /* default, in the text form config_set takes */
    int64_t imin;    /* ints: bounds; strings: minimum length */
    int64_t imax;
    double fmin, fmax; /* floats: bounds, see MIN_EXCL/MAX_EXCL */
    unsigned flags;
    const char *choices; /* enums: "a|b|c" */
    const char *help;
} config_key_t;

#define NO_LIMIT INT64_MAX

extern const config_key_t config_keys[];
extern const size_t config_nkeys;

#endif

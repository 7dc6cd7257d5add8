/* The configuration table and everything that reads or writes through it.
 *
 * Each key is one row of `config_keys[]` (config_keys.c): its dotted name,
 * type, where it lives in config_t, its default as text, bounds or choices,
 * and one line of help.
 * Every way of setting a key (defaults, --set, a JSON file) goes through the
 * same checks, so a default cannot be something --set would refuse, and every
 * error is one line that starts with the key's name. Files and command lines
 * are applied to a copy that replaces the caller's config only when every key
 * was accepted, so a failed load changes nothing. */
#include "common/daemon/config.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/daemon/config_internal.h"

/* ---- lookup and suggestions ---- */

static const config_key_t *find_key(const char *name) {
    for (size_t i = 0; i < config_nkeys; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* True when some key lives under "prefix." (a section such as "train"). */
static bool is_section(const char *prefix) {
    size_t n = strlen(prefix);
    for (size_t i = 0; i < config_nkeys; i++)
        if (strncmp(config_keys[i].name, prefix, n) == 0 && config_keys[i].name[n] == '.')
            return true;
    return false;
}

#define EDIT_MAX 64

/* Levenshtein distance; names longer than EDIT_MAX count as far from all. */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > EDIT_MAX || lb > EDIT_MAX)
        return SIZE_MAX;
    size_t row[EDIT_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            best = PS_MIN(best, up + 1);
            best = PS_MIN(best, row[j - 1] + 1);
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const char *last_segment(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* Writes " (did you mean X?)" for a key that is a typo away from `name`, or
 * " (did you mean X or Y?)" when `name` is a key without its section. */
static void suggest(const char *name, char *out, size_t outlen) {
    const config_key_t *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < config_nkeys; i++) {
        size_t d = edit_distance(name, config_keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = &config_keys[i];
        }
    }
    size_t limit = PS_MAX((size_t)2, strlen(name) / 4);
    if (best && best_d <= limit) {
        snprintf(out, outlen, " (did you mean %s?)", best->name);
        return;
    }
    const char *found[2] = {NULL, NULL};
    size_t nfound = 0;
    for (size_t i = 0; i < config_nkeys && nfound < 2; i++)
        if (strcmp(last_segment(config_keys[i].name), last_segment(name)) == 0)
            found[nfound++] = config_keys[i].name;
    if (nfound == 1)
        snprintf(out, outlen, " (did you mean %s?)", found[0]);
    else if (nfound == 2)
        snprintf(out, outlen, " (did you mean %s or %s?)", found[0], found[1]);
    else
        out[0] = '\0';
}

/* Copies s into out for an error message: control characters become '?' so
 * the message stays on one line, and a long value is cut with "...". */
static const char *shown(const char *s, char *out, size_t outlen) {
    size_t n = 0, keep = outlen - 4;
    for (; s[n] && n < keep; n++)
        out[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    if (s[n]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

static int unknown_key(const char *name, char *err, size_t errlen) {
    char hint[160], buf[80];
    suggest(name, hint, sizeof hint);
    return ps_errf(err, errlen, "unknown config key \"%s\"%s", shown(name, buf, sizeof buf), hint);
}

/* ---- checked stores, shared by text and JSON ---- */

static void *field(config_t *c, const config_key_t *k) {
    return (char *)c + k->offset;
}

static const void *cfield(const config_t *c, const config_key_t *k) {
    return (const char *)c + k->offset;
}

static int store_int(config_t *c, const config_key_t *k, int64_t v, char *err, size_t errlen) {
    if (v < k->imin)
        return ps_errf(err, errlen, "%s: %" PRId64 " is below the minimum %" PRId64, k->name, v,
                       k->imin);
    if (v > k->imax)
        return ps_errf(err, errlen, "%s: %" PRId64 " is above the maximum %" PRId64, k->name, v,
                       k->imax);
    *(int64_t *)field(c, k) = v;
    return 0;
}

static int store_float(config_t *c, const config_key_t *k, double v, char *err, size_t errlen) {
    if (!isfinite(v))
        return ps_errf(err, errlen, "%s: %g is not a finite number", k->name, v);
    if ((k->flags & MIN_EXCL) && v <= k->fmin)
        return ps_errf(err, errlen, "%s: %g must be greater than %g", k->name, v, k->fmin);
    if (v < k->fmin)
        return ps_errf(err, errlen, "%s: %g is below the minimum %g", k->name, v, k->fmin);
    if ((k->flags & MAX_EXCL) && v >= k->fmax)
        return ps_errf(err, errlen, "%s: %g must be less than %g", k->name, v, k->fmax);
    if (v > k->fmax)
        return ps_errf(err, errlen, "%s: %g is above the maximum %g", k->name, v, k->fmax);
    *(double *)field(c, k) = v;
    return 0;
}

/* True when s is exactly one of the '|'-separated choices. */
static bool is_choice(const char *choices, const char *s) {
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        size_t len = strcspn(p, "|");
        if (len == n && strncmp(p, s, n) == 0)
            return true;
        p += len;
        if (*p == '|')
            p++;
    }
    return false;
}

/* Strings and enums. */
static int store_text(config_t *c, const config_key_t *k, const char *s, char *err, size_t errlen) {
    char buf[80];
    size_t n = strlen(s);
    if (k->type == KEY_ENUM && !is_choice(k->choices, s))
        return ps_errf(err, errlen, "%s: \"%s\" is not one of %s", k->name,
                       shown(s, buf, sizeof buf), k->choices);
    if (k->type == KEY_STRING && n < (size_t)k->imin)
        return ps_errf(err, errlen, "%s: must not be empty", k->name);
    if (n > CONFIG_STR - 1)
        return ps_errf(err, errlen, "%s: value is %zu bytes long, longer than the limit %d",
                       k->name, n, CONFIG_STR - 1);
    memcpy(field(c, k), s, n + 1);
    return 0;
}

/* ---- text ---- */

static int set_int_text(config_t *c, const config_key_t *k, const char *s, char *err,
                        size_t errlen) {
    char buf[80];
    const char *digits = s + (s[0] == '-' || s[0] == '+');
    if (!digits[0] || digits[strspn(digits, "0123456789")] != '\0')
        return ps_errf(err, errlen, "%s: \"%s\" is not an integer", k->name,
                       shown(s, buf, sizeof buf));
    int64_t v;
    if (ps_parse_i64(s, &v) != 0)
        return s[0] == '-' ? ps_errf(err, errlen, "%s: %s is below the minimum %" PRId64, k->name,
                                     shown(s, buf, sizeof buf), k->imin)
                           : ps_errf(err, errlen, "%s: %s is above the maximum %" PRId64, k->name,
                                     shown(s, buf, sizeof buf), k->imax);
    return store_int(c, k, v, err, errlen);
}

static int set_float_text(config_t *c, const config_key_t *k, const char *s, char *err,
                          size_t errlen) {
    char buf[80];
    double v;
    /* strtod also takes leading blanks, "inf", "nan" and hex; a config value takes none. */
    bool looks_numeric = s[0] != '\0' && strchr("+-.0123456789", s[0]) && !strpbrk(s, "xX");
    if (!looks_numeric || ps_parse_f64(s, &v) != 0)
        return ps_errf(err, errlen, "%s: \"%s\" is not a finite number", k->name,
                       shown(s, buf, sizeof buf));
    return store_float(c, k, v, err, errlen);
}

static int set_bool_text(config_t *c, const config_key_t *k, const char *s, char *err,
                         size_t errlen) {
    char buf[80];
    bool *b = field(c, k);
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0)
        *b = true;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0)
        *b = false;
    else
        return ps_errf(err, errlen, "%s: \"%s\" is not a boolean (true, false, 1 or 0)", k->name,
                       shown(s, buf, sizeof buf));
    return 0;
}

static int set_text(config_t *c, const config_key_t *k, const char *s, char *err, size_t errlen) {
    switch (k->type) {
    case KEY_INT:
        return set_int_text(c, k, s, err, errlen);
    case KEY_FLOAT:
        return set_float_text(c, k, s, err, errlen);
    case KEY_BOOL:
        return set_bool_text(c, k, s, err, errlen);
    case KEY_STRING:
    case KEY_ENUM:
        return store_text(c, k, s, err, errlen);
    }
    return ps_errf(err, errlen, "%s: key of unknown type", k->name);
}

void config_defaults(config_t *c) {
    char err[PS_ERRLEN];
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < config_nkeys; i++) {
        if (set_text(c, &config_keys[i], config_keys[i].def, err, sizeof err) != 0) {
            /* Only an edit of the table can get here, and the tests check it. */
            fprintf(stderr, "fatal: bad default in the config table: %s\n", err);
            abort();
        }
    }
}

int config_set(config_t *c, const char *key, const char *value, char *err, size_t errlen) {
    const config_key_t *k = find_key(key);
    if (!k)
        return unknown_key(key, err, errlen);
    return set_text(c, k, value, err, errlen);
}

/* Shortest "%.Ng" text that reads back as the same double. */
static void format_float(double v, char *buf, size_t buflen) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, buflen, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static int format_value(const config_t *c, const config_key_t *k, char *buf, size_t buflen) {
    char num[32];
    int n = 0;
    switch (k->type) {
    case KEY_INT:
        n = snprintf(buf, buflen, "%" PRId64, *(const int64_t *)cfield(c, k));
        break;
    case KEY_FLOAT:
        format_float(*(const double *)cfield(c, k), num, sizeof num);
        n = snprintf(buf, buflen, "%s", num);
        break;
    case KEY_BOOL:
        n = snprintf(buf, buflen, "%s", *(const bool *)cfield(c, k) ? "true" : "false");
        break;
    case KEY_STRING:
    case KEY_ENUM:
        n = snprintf(buf, buflen, "%s", (const char *)cfield(c, k));
        break;
    }
    return n >= 0 && (size_t)n < buflen ? 0 : -1;
}

int config_get(const config_t *c, const char *key, char *buf, size_t buflen) {
    const config_key_t *k = find_key(key);
    if (!k || buflen == 0)
        return -1;
    return format_value(c, k, buf, buflen);
}

/* ---- JSON files ---- */

static const char *type_wanted(const config_key_t *k) {
    switch (k->type) {
    case KEY_INT:
        return "an integer";
    case KEY_FLOAT:
        return "a number";
    case KEY_BOOL:
        return "true or false";
    case KEY_STRING:
        return "a string";
    case KEY_ENUM:
        return k->choices;
    }
    return "?";
}

static int set_json(config_t *c, const config_key_t *k, json_object *v, char *err, size_t errlen) {
    json_type t = json_object_get_type(v);
    switch (k->type) {
    case KEY_INT:
        /* json-c keeps integers above INT64_MAX as uint64 and clamps get_int64. */
        if (t == json_type_int && json_object_get_int64(v) == INT64_MAX &&
            json_object_get_uint64(v) > (uint64_t)INT64_MAX)
            return ps_errf(err, errlen, "%s: %" PRIu64 " is above the maximum %" PRId64, k->name,
                           json_object_get_uint64(v), k->imax);
        if (t == json_type_int)
            return store_int(c, k, json_object_get_int64(v), err, errlen);
        break;
    case KEY_FLOAT:
        if (t == json_type_int || t == json_type_double)
            return store_float(c, k, json_object_get_double(v), err, errlen);
        break;
    case KEY_BOOL:
        if (t == json_type_boolean) {
            *(bool *)field(c, k) = json_object_get_boolean(v);
            return 0;
        }
        break;
    case KEY_STRING:
    case KEY_ENUM:
        if (t == json_type_string)
            return store_text(c, k, json_object_get_string(v), err, errlen);
        break;
    }
    char buf[80];
    const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    return ps_errf(err, errlen, "%s: expected %s%s, got %s", k->name,
                   k->type == KEY_ENUM ? "one of " : "", type_wanted(k),
                   shown(text, buf, sizeof buf));
}

/* Applies the members of obj, whose keys are below `prefix` ("" at the top):
 * an object under a section name is walked, anything else must be a key. */
static int apply_object(config_t *c, json_object *obj, const char *prefix, char *err,
                        size_t errlen) {
    struct json_object_iterator it = json_object_iter_begin(obj);
    struct json_object_iterator end = json_object_iter_end(obj);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *member = json_object_iter_peek_name(&it);
        json_object *v = json_object_iter_peek_value(&it);
        char name[256];
        int n = snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", member);
        if (n < 0 || (size_t)n >= sizeof name)
            return unknown_key(member, err, errlen);
        const config_key_t *k = find_key(name);
        int rc;
        if (!k && json_object_get_type(v) == json_type_object && is_section(name))
            rc = apply_object(c, v, name, err, errlen);
        else if (!k)
            rc = unknown_key(name, err, errlen);
        else
            rc = set_json(c, k, v, err, errlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Line and column (from 1) of byte offset `off` of text. */
static void position(const char *text, size_t off, size_t *line, size_t *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Parses text as exactly one JSON object (blanks around it allowed). */
static json_object *parse_json(const char *path, const char *text, size_t len, char *err,
                               size_t errlen) {
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        ps_errf(err, errlen, "%s: cannot allocate a JSON parser", path);
        return NULL;
    }
    /* The terminating NUL goes in too: it ends a bare top-level literal. */
    json_object *root = json_tokener_parse_ex(tok, text, (int)len + 1);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    size_t line, col;
    position(text, end, &line, &col);
    if (jerr == json_tokener_continue) {
        ps_errf(err, errlen, "%s: not JSON: unexpected end of data at line %zu, column %zu", path,
                line, col);
        return NULL;
    }
    if (jerr != json_tokener_success) {
        ps_errf(err, errlen, "%s: not JSON: %s at line %zu, column %zu", path,
                json_tokener_error_desc(jerr), line, col);
        json_object_put(root);
        return NULL;
    }
    if (text[end + strspn(text + end, " \t\r\n")] != '\0') {
        position(text, end + strspn(text + end, " \t\r\n"), &line, &col);
        ps_errf(err, errlen, "%s: not JSON: text after the top-level value at line %zu, column %zu",
                path, line, col);
        json_object_put(root);
        return NULL;
    }
    if (!root || json_object_get_type(root) != json_type_object) {
        ps_errf(err, errlen, "%s: expected a JSON object at the top level", path);
        json_object_put(root);
        return NULL;
    }
    return root;
}

/* Loads into c directly; callers pass a scratch copy. */
static int load_file(config_t *c, const char *path, char *err, size_t errlen) {
    char *text = NULL;
    size_t len = 0;
    if (ps_read_file(path, &text, &len, err, errlen) != 0)
        return -1;
    if (len >= INT32_MAX || strlen(text) != len) {
        free(text);
        return ps_errf(err, errlen, "%s: not JSON: the file is too large or holds NUL bytes", path);
    }
    json_object *root = parse_json(path, text, len, err, errlen);
    free(text);
    if (!root)
        return -1;
    char inner[PS_ERRLEN];
    int rc = apply_object(c, root, "", inner, sizeof inner);
    json_object_put(root);
    if (rc != 0)
        return ps_errf(err, errlen, "%s: %s", path, inner);
    return 0;
}

int config_load_file(config_t *c, const char *path, char *err, size_t errlen) {
    config_t tmp = *c;
    if (load_file(&tmp, path, err, errlen) != 0)
        return -1;
    *c = tmp;
    return 0;
}

/* ---- command line ---- */

/* What one argument is: not ours, or a --config / --set with its value. */
typedef enum { ARG_OTHER, ARG_CONFIG, ARG_SET } arg_kind_t;

/* Classifies argv[*i]; for a flag whose value is the next argument, advances
 * *i past it. Fails when that argument is missing. */
static int classify(int argc, char **argv, int *i, arg_kind_t *kind, const char **value, char *err,
                    size_t errlen) {
    static const struct {
        const char *flag;
        arg_kind_t kind;
    } flags[] = {{"--config", ARG_CONFIG}, {"--set", ARG_SET}};
    const char *a = argv[*i];
    *kind = ARG_OTHER;
    for (size_t f = 0; f < PS_ARRAY_LEN(flags); f++) {
        size_t n = strlen(flags[f].flag);
        if (strncmp(a, flags[f].flag, n) != 0 || (a[n] != '\0' && a[n] != '='))
            continue;
        *kind = flags[f].kind;
        if (a[n] == '=') {
            *value = a + n + 1;
            return 0;
        }
        if (*i + 1 >= argc)
            return ps_errf(err, errlen, "%s needs an argument (%s)", flags[f].flag,
                           flags[f].kind == ARG_SET ? "key=value" : "a JSON file");
        *value = argv[++*i];
        return 0;
    }
    return 0;
}

/* Applies one "key=value". */
static int apply_set(config_t *c, const char *kv, char *err, size_t errlen) {
    char buf[80];
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return ps_errf(err, errlen, "--set \"%s\": expected key=value", shown(kv, buf, sizeof buf));
    char key[256];
    size_t n = (size_t)(eq - kv);
    if (n >= sizeof key)
        return unknown_key(kv, err, errlen);
    memcpy(key, kv, n);
    key[n] = '\0';
    return config_set(c, key, eq + 1, err, errlen);
}

/* Applies every file of the marked arguments, then every set, into c. */
static int apply_args(config_t *c, const arg_kind_t *kinds, const char **values, int argc,
                      char *err, size_t errlen) {
    for (int i = 0; i < argc; i++)
        if (kinds[i] == ARG_CONFIG && load_file(c, values[i], err, errlen) != 0)
            return -1;
    for (int i = 0; i < argc; i++)
        if (kinds[i] == ARG_SET && apply_set(c, values[i], err, errlen) != 0)
            return -1;
    return 0;
}

/* Arguments after a bare "--" are left alone, as is the "--" itself. On an
 * error neither c nor argv changes. */
int config_parse_args(config_t *c, int *argc, char **argv, char *err, size_t errlen) {
    int n = *argc;
    arg_kind_t *kinds = xcalloc((size_t)PS_MAX(n, 1), sizeof *kinds);
    const char **values = xcalloc((size_t)PS_MAX(n, 1), sizeof *values);
    bool *consumed = xcalloc((size_t)PS_MAX(n, 1), sizeof *consumed);
    config_t tmp = *c;
    int rc = 0;
    for (int i = 1; i < n && strcmp(argv[i], "--") != 0; i++) {
        int first = i;
        arg_kind_t kind;
        const char *value = NULL;
        if ((rc = classify(n, argv, &i, &kind, &value, err, errlen)) != 0)
            goto done;
        kinds[first] = kind;
        values[first] = value;
        for (int j = first; j <= i && kind != ARG_OTHER; j++)
            consumed[j] = true;
    }
    if ((rc = apply_args(&tmp, kinds, values, n, err, errlen)) != 0)
        goto done;
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (!consumed[i])
            argv[kept++] = argv[i];
    argv[kept] = NULL;
    *argc = kept;
    *c = tmp;
done:
    free(consumed);
    free(values);
    free(kinds);
    return rc;
}

/* ---- help and JSON output ---- */

static void range_text(const config_key_t *k, char *buf, size_t buflen) {
    char lo[32], hi[32];
    buf[0] = '\0';
    switch (k->type) {
    case KEY_INT:
        if (k->imax == NO_LIMIT)
            snprintf(buf, buflen, ">= %" PRId64, k->imin);
        else
            snprintf(buf, buflen, "%" PRId64 "..%" PRId64, k->imin, k->imax);
        break;
    case KEY_FLOAT:
        format_float(k->fmin, lo, sizeof lo);
        format_float(k->fmax, hi, sizeof hi);
        if (isinf(k->fmax))
            snprintf(buf, buflen, "%s %s", k->flags & MIN_EXCL ? ">" : ">=", lo);
        else
            snprintf(buf, buflen, "%s%s, %s%s", k->flags & MIN_EXCL ? "(" : "[", lo, hi,
                     k->flags & MAX_EXCL ? ")" : "]");
        break;
    case KEY_BOOL:
        snprintf(buf, buflen, "true|false");
        break;
    case KEY_ENUM:
        snprintf(buf, buflen, "%s", k->choices);
        break;
    case KEY_STRING:
        break;
    }
}

static const char *type_name(key_type_t t) {
    static const char *const names[] = {"int", "float", "bool", "string", "enum"};
    return names[t];
}

/* A table of every key, without an introduction (each program's usage has
 * its own). Defaults are printed as config_get shows them, so that help,
 * config_get and config_to_json agree on the text of every value. */
void config_print_help(FILE *out) {
    config_t defaults;
    config_defaults(&defaults);
    char def[config_nkeys][CONFIG_STR];
    int wname = 0, wdef = 0;
    for (size_t i = 0; i < config_nkeys; i++) {
        format_value(&defaults, &config_keys[i], def[i], sizeof def[i]);
        wname = PS_MAX(wname, (int)strlen(config_keys[i].name));
        wdef = PS_MAX(wdef, (int)strlen(def[i]));
    }
    fprintf(out, "  %-*s  %-6s  %-*s  %s\n", wname, "KEY", "TYPE", wdef, "DEFAULT", "RANGE");
    for (size_t i = 0; i < config_nkeys; i++) {
        char range[128];
        range_text(&config_keys[i], range, sizeof range);
        bool ranged = range[0] != '\0'; /* no padding at the end of a row without a range */
        fprintf(out, "  %-*s  %-6s  %-*s%s%s\n", wname, config_keys[i].name,
                type_name(config_keys[i].type), ranged ? wdef : 0, def[i], ranged ? "  " : "",
                range);
        fprintf(out, "      %s\n", config_keys[i].help);
    }
}

static json_object *json_value(const config_t *c, const config_key_t *k) {
    char num[40];
    switch (k->type) {
    case KEY_INT:
        return json_object_new_int64(*(const int64_t *)cfield(c, k));
    case KEY_FLOAT:
        /* Shortest text that reads back exactly, and always looks like a float. */
        format_float(*(const double *)cfield(c, k), num, sizeof num);
        if (!strpbrk(num, ".e"))
            strcat(num, ".0");
        return json_object_new_double_s(*(const double *)cfield(c, k), num);
    case KEY_BOOL:
        return json_object_new_boolean(*(const bool *)cfield(c, k));
    case KEY_STRING:
    case KEY_ENUM:
        return json_object_new_string(cfield(c, k));
    }
    return NULL;
}

char *config_to_json(const config_t *c) {
    json_object *obj = json_object_new_object();
    for (size_t i = 0; i < config_nkeys; i++)
        json_object_object_add(obj, config_keys[i].name, json_value(c, &config_keys[i]));
    char *s = xstrdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY |
                                                              JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(obj);
    return s;
}

size_t config_replicas(const config_t *c, size_t nworkers) {
    if (strcmp(c->train.mode, "sync") != 0)
        return 1;
    if (c->train.replicas_to_aggregate)
        return (size_t)c->train.replicas_to_aggregate;
    size_t backup = (size_t)c->train.backup_workers;
    return nworkers > backup ? nworkers - backup : 1;
}

size_t config_threads(const config_t *c) {
    return c->threads ? (size_t)c->threads : (size_t)ps_cpu_count();
}

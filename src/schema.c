/*
 * The JSON Schema subset validator of aly/schema.h.  A pattern is compiled
 * once per process and kept (compiling costs far more than matching: ~15 us
 * per call before); schemas are fixed at start-up, so the set stays small.
 */
#include "aly/schema.h"

#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16

static const char *const known_keywords[] = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$defs",
    "$ref",
};

static int known(const char *k)
{
    for (size_t i = 0; i < ALY_ARRAY_SIZE(known_keywords); i++)
        if (strcmp(known_keywords[i], k) == 0)
            return 1;
    return 0;
}

#define MAX_PATTERNS 64

static struct {
    char *text;
    regex_t re;
} patterns[MAX_PATTERNS];
static size_t n_patterns;

/* The compiled form of pattern, or NULL when it does not compile (or the table is full and it does not either). */
static const regex_t *compiled(const char *pattern)
{
    for (size_t i = 0; i < n_patterns; i++)
        if (strcmp(patterns[i].text, pattern) == 0)
            return &patterns[i].re;
    if (n_patterns == MAX_PATTERNS)
        return NULL;
    if (regcomp(&patterns[n_patterns].re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
        return NULL;
    patterns[n_patterns].text = strdup(pattern);
    if (patterns[n_patterns].text == NULL) {
        regfree(&patterns[n_patterns].re);
        return NULL;
    }
    return &patterns[n_patterns++].re;
}

static int check_node(const json_t *s, int depth, aly_err_t *err)
{
    if (depth > MAX_DEPTH)
        return aly_errf(err, "schema nests too deep");
    if (json_is_boolean(s))
        return 0;
    if (!json_is_object(s))
        return aly_errf(err, "a schema must be an object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if (!known(k))
            return aly_errf(err, "schema keyword \"%s\" is not supported by the validator", k);
        if (strcmp(k, "pattern") == 0 && (!json_is_string(v) || compiled(json_string_value(v)) == NULL))
            return aly_errf(err, "pattern does not compile (or more than %d distinct patterns)", MAX_PATTERNS);
        if (strcmp(k, "properties") == 0) {
            const char *pk;
            json_t *pv;
            if (!json_is_object(v))
                return aly_errf(err, "properties must be an object");
            json_object_foreach(v, pk, pv)
                if (check_node(pv, depth + 1, err) != 0)
                    return -1;
        }
        if ((strcmp(k, "items") == 0 || strcmp(k, "additionalProperties") == 0) && check_node(v, depth + 1, err) != 0)
            return -1;
        if (strcmp(k, "$ref") == 0 && (!json_is_string(v) || strncmp(json_string_value(v), "#/$defs/", 8) != 0))
            return aly_errf(err, "only local references (#/$defs/NAME) are supported");
        if (strcmp(k, "$defs") == 0) {
            const char *dk;
            json_t *dv;
            if (!json_is_object(v))
                return aly_errf(err, "$defs must be an object");
            json_object_foreach(v, dk, dv)
                if (check_node(dv, depth + 1, err) != 0)
                    return -1;
        }
    }
    return 0;
}

int schema_check(const json_t *schema, aly_err_t *err)
{
    return check_node(schema, 0, err);
}

static int fail(aly_err_t *err, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(aly_err_t *err, const char *path, const char *fmt, ...)
{
    char rule[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rule, sizeof(rule), fmt, ap);
    va_end(ap);
    return aly_errf(err, "%s: %s", path[0] ? path : "arguments", rule);
}

/*
 * 1 when v is a real with an integral value that a json_int_t holds.  The
 * range is checked before the conversion: converting a double outside it
 * (1e300) is undefined behaviour.  2^63 is exact as a double.
 */
static int integral_real(const json_t *v)
{
    if (!json_is_real(v))
        return 0;
    double d = json_real_value(v);
    return d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(json_int_t)d;
}

static int type_matches(const char *t, const json_t *v)
{
    if (strcmp(t, "string") == 0)
        return json_is_string(v);
    if (strcmp(t, "integer") == 0)
        return json_is_integer(v) || integral_real(v);
    if (strcmp(t, "number") == 0)
        return json_is_number(v);
    if (strcmp(t, "boolean") == 0)
        return json_is_boolean(v);
    if (strcmp(t, "object") == 0)
        return json_is_object(v);
    if (strcmp(t, "array") == 0)
        return json_is_array(v);
    if (strcmp(t, "null") == 0)
        return json_is_null(v);
    return 0;
}

/* Code points of valid UTF-8 (jansson only holds valid UTF-8). */
static size_t utf8_len(const char *s, size_t n)
{
    size_t cp = 0;
    for (size_t i = 0; i < n; i++)
        cp += ((unsigned char)s[i] & 0xc0) != 0x80;
    return cp;
}

static int valid_date(const char *s, size_t n)
{
    int y, m, d;
    char tail;
    if (n != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || s[4] != '-' || s[7] != '-')
        return 0;
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || d < 1 || d > days[m - 1])
        return 0;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 0;
    return 1;
}

static int valid_date_time(const char *s, size_t n)
{
    if (n < 20 || !valid_date(s, 10) || (s[10] != 'T' && s[10] != 't'))
        return 0;
    int hh, mm, ss;
    if (sscanf(s + 11, "%2d:%2d:%2d", &hh, &mm, &ss) != 3 || hh > 23 || mm > 59 || ss > 60)
        return 0;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return 0;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p == 'Z' || *p == 'z')
        return p[1] == '\0';
    int oh, om;
    return (*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &oh, &om) == 2 && strlen(p) == 6 && oh < 24 && om < 60;
}

static void join(char *out, size_t len, const char *path, const char *key)
{
    snprintf(out, len, "%s%s%s", path, path[0] ? "." : "", key);
}

static int validate_in(const json_t *root, const json_t *s, json_t *parent, const char *key, size_t index, json_t *v,
                       const char *path, int depth, aly_err_t *err);

/* 1 when the schema's type is or lists "integer". */
static int wants_integer(const json_t *t)
{
    size_t i;
    json_t *e;
    if (json_is_string(t))
        return strcmp(json_string_value(t), "integer") == 0;
    json_array_foreach(t, i, e)
        if (json_is_string(e) && strcmp(json_string_value(e), "integer") == 0)
            return 1;
    return 0;
}

/*
 * Validates v against s.  When v is an integral real where s wants an
 * integer, *integer receives the integer that replaces it (a new reference
 * the caller puts in v's place) and the checks that follow see the integer.
 */
static int validate(const json_t *root, const json_t *s, json_t *v, json_t **integer, const char *path, int depth, aly_err_t *err)
{
    if (json_is_true(s))
        return 0;
    if (json_is_false(s))
        return fail(err, path, "is not allowed%s", "");
    if (depth > MAX_DEPTH)
        return fail(err, path, "nests too deep%s", "");
    json_t *t = json_object_get(s, "type"), *x;
    if (json_is_string(x = json_object_get(s, "$ref"))) {
        json_t *target = json_object_get(json_object_get(root, "$defs"), json_string_value(x) + 8);
        if (target == NULL)
            return fail(err, path, "refers to a missing definition %s", json_string_value(x));
        if (validate(root, target, v, integer, path, depth + 1, err) != 0)
            return -1;
        if (*integer != NULL)
            v = *integer;
    }
    if (json_is_string(t) && !type_matches(json_string_value(t), v))
        return fail(err, path, "must be of type %s", json_string_value(t));
    if (json_is_array(t)) {
        size_t i, ok = 0;
        json_t *e;
        json_array_foreach(t, i, e)
            ok |= json_is_string(e) && type_matches(json_string_value(e), v);
        if (!ok)
            return fail(err, path, "has the wrong type%s", "");
    }
    if (json_is_real(v) && wants_integer(t) && integral_real(v))
        v = *integer = json_integer((json_int_t)json_real_value(v));
    if ((x = json_object_get(s, "const")) != NULL && !json_equal(x, (json_t *)v))
        return fail(err, path, "must equal the constant value%s", "");
    if (json_is_array(x = json_object_get(s, "enum"))) {
        size_t i;
        json_t *e;
        int found = 0;
        char allowed[200] = "";
        json_array_foreach(x, i, e) {
            found |= json_equal(e, (json_t *)v);
            if (json_is_string(e) && strlen(allowed) + json_string_length(e) + 3 < sizeof(allowed)) {
                if (allowed[0])
                    strcat(allowed, ", ");
                strcat(allowed, json_string_value(e));
            }
        }
        if (!found)
            return fail(err, path, "must be one of: %s", allowed);
    }
    if (json_is_number(v)) {
        double d = json_number_value(v);
        char num[64];
        if (json_is_number(x = json_object_get(s, "minimum")) && d < json_number_value(x))
            return snprintf(num, sizeof(num), "%g", json_number_value(x)), fail(err, path, "must be >= %s", num);
        if (json_is_number(x = json_object_get(s, "maximum")) && d > json_number_value(x))
            return snprintf(num, sizeof(num), "%g", json_number_value(x)), fail(err, path, "must be <= %s", num);
        if (json_is_number(x = json_object_get(s, "exclusiveMinimum")) && d <= json_number_value(x))
            return snprintf(num, sizeof(num), "%g", json_number_value(x)), fail(err, path, "must be > %s", num);
        if (json_is_number(x = json_object_get(s, "exclusiveMaximum")) && d >= json_number_value(x))
            return snprintf(num, sizeof(num), "%g", json_number_value(x)), fail(err, path, "must be < %s", num);
    }
    if (json_is_string(v)) {
        const char *str = json_string_value(v);
        size_t n = json_string_length(v), cp = utf8_len(str, n);
        char num[32];
        if (memchr(str, '\0', n) != NULL)
            return fail(err, path, "must not contain NUL characters%s", "");
        if (json_is_integer(x = json_object_get(s, "minLength")) && cp < (size_t)json_integer_value(x))
            return snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(x)),
                   fail(err, path, "must be at least %s characters long", num);
        if (json_is_integer(x = json_object_get(s, "maxLength")) && cp > (size_t)json_integer_value(x))
            return snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(x)),
                   fail(err, path, "must be at most %s characters long", num);
        if (json_is_string(x = json_object_get(s, "pattern"))) {
            const regex_t *re = compiled(json_string_value(x));
            if (re == NULL || regexec(re, str, 0, NULL, 0) != 0)
                return fail(err, path, "must match the pattern %s", json_string_value(x));
        }
        if (json_is_string(x = json_object_get(s, "format"))) {
            const char *f = json_string_value(x);
            if (strcmp(f, "date") == 0 && !valid_date(str, n))
                return fail(err, path, "must be a date (YYYY-MM-DD)%s", "");
            if (strcmp(f, "date-time") == 0 && !valid_date_time(str, n))
                return fail(err, path, "must be an RFC 3339 date-time%s", "");
        }
    }
    if (json_is_object(v)) {
        json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
               *addl = json_object_get(s, "additionalProperties");
        size_t i;
        json_t *e;
        char sub[256];
        json_array_foreach(req, i, e) {
            if (json_is_string(e) && json_object_get(v, json_string_value(e)) == NULL) {
                join(sub, sizeof(sub), path, json_string_value(e));
                return fail(err, sub, "is required%s", "");
            }
        }
        const char *k;
        json_t *pv;
        json_object_foreach(v, k, pv) {
            join(sub, sizeof(sub), path, k);
            json_t *ps = json_object_get(props, k);
            if (ps != NULL) {
                if (validate_in(root, ps, v, k, 0, pv, sub, depth + 1, err) != 0)
                    return -1;
            } else if (json_is_false(addl)) {
                return fail(err, sub, "is not a known field (additionalProperties is false)%s", "");
            } else if (json_is_object(addl) && validate_in(root, addl, v, k, 0, pv, sub, depth + 1, err) != 0) {
                return -1;
            }
        }
    }
    if (json_is_array(v)) {
        size_t n = json_array_size(v), i;
        char num[32], sub[256];
        if (json_is_integer(x = json_object_get(s, "minItems")) && n < (size_t)json_integer_value(x))
            return snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(x)),
                   fail(err, path, "must have at least %s items", num);
        if (json_is_integer(x = json_object_get(s, "maxItems")) && n > (size_t)json_integer_value(x))
            return snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(x)),
                   fail(err, path, "must have at most %s items", num);
        json_t *items = json_object_get(s, "items"), *e;
        json_array_foreach(v, i, e) {
            snprintf(sub, sizeof(sub), "%s[%zu]", path[0] ? path : "arguments", i);
            if (items != NULL && validate_in(root, items, v, NULL, i, e, sub, depth + 1, err) != 0)
                return -1;
            e = json_array_get(v, i); /* the item may have been replaced by its integer */
            if (json_is_true(json_object_get(s, "uniqueItems")))
                for (size_t k = 0; k < i; k++)
                    if (json_equal(json_array_get(v, k), e))
                        return fail(err, sub, "repeats an earlier item (uniqueItems)%s", "");
        }
    }
    return 0;
}

/* Validates v, member key (or element index) of parent, and puts a normalised integer in its place. */
static int validate_in(const json_t *root, const json_t *s, json_t *parent, const char *key, size_t index, json_t *v,
                       const char *path, int depth, aly_err_t *err)
{
    json_t *integer = NULL;
    if (validate(root, s, v, &integer, path, depth, err) != 0) {
        json_decref(integer);
        return -1;
    }
    if (integer != NULL) {
        /* Replacing a member's value keeps its place, so the caller's iteration over parent goes on undisturbed. */
        if (key != NULL)
            json_object_set_new(parent, key, integer);
        else
            json_array_set_new(parent, index, integer);
    }
    return 0;
}

int schema_validate(const json_t *schema, json_t *value, aly_err_t *err)
{
    json_t *integer = NULL;
    int rc = validate(schema, schema, value, &integer, "", 0, err);
    json_decref(integer); /* the value itself was a number: nothing holds it to replace */
    return rc;
}

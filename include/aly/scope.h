/*
 * The scope catalogue: every scope a credential can hold, and the
 * operations on sets of them.  A
 * principal's scopes are a bit set over this table, so a scope check is one
 * AND; the table order is the bit order and must only ever be appended to.
 */
#ifndef ALY_SCOPE_H
#define ALY_SCOPE_H

#include <stddef.h>
#include <stdint.h>

#include "aly/common.h"

typedef uint32_t scope_set_t;

/* The bits, in catalogue order (scope.c). */
#define SCOPE_READ_SITES ((scope_set_t)1 << 0)
#define SCOPE_WRITE_SITES ((scope_set_t)1 << 1)
#define SCOPE_READ_CONTENT ((scope_set_t)1 << 2)
#define SCOPE_WRITE_CONTENT ((scope_set_t)1 << 3)
#define SCOPE_READ_ORDERS ((scope_set_t)1 << 4)
#define SCOPE_WRITE_ORDERS ((scope_set_t)1 << 5)
#define SCOPE_READ_ANALYTICS ((scope_set_t)1 << 6)

typedef struct scope_desc {
    const char *name;
    const char *grants; /* for error messages and alyctl */
} scope_desc_t;

extern const scope_desc_t scope_catalogue[];
extern const size_t scope_count;

/* Bit of a scope by name (length-delimited); 0 when unknown. */
scope_set_t scope_lookup(const char *name, size_t len);
/* Name of a single-scope set; NULL for anything else. */
const char *scope_name(scope_set_t one);

/* 0 when held has every scope of need; else -1 and *missing (when not NULL) is the first scope lacking. */
int scope_require(scope_set_t held, scope_set_t need, scope_set_t *missing);
/* "read:sites write:content" for a set, into buf (cut at a whole name when buf is too small). */
void scope_format(scope_set_t set, char *buf, size_t len);
/* Parses a comma- or space-separated scope list; -1 with err naming an unknown scope, or none given. */
int scope_parse(const char *text, scope_set_t *out, aly_err_t *err);

#endif

/*
 * The scope catalogue (SPEC §3): every scope a credential can hold.  A
 * principal's scopes are a bit set over this table, so a scope check is one
 * AND; the table order is the bit order and must only ever be appended to.
 */
#ifndef ALY_SCOPE_H
#define ALY_SCOPE_H

#include <stddef.h>
#include <stdint.h>

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

#endif

/*
 * The scope catalogue of aly/scope.h and the operations on scope sets.
 */
#include "aly/scope.h"

#include <stdio.h>
#include <string.h>

const scope_desc_t scope_catalogue[] = {
    {"read:sites", "sites.list, sites.get, site resources"},
    {"write:sites", "sites.create, sites.update"},
    {"read:content", "products.list, products.get, product resources"},
    {"write:content", "products.create, products.update, products.delete"},
    {"read:orders", "orders.list, orders.get"},
    {"write:orders", "orders.fulfill, orders.cancel"},
    {"read:analytics", "analytics.summary, analytics.timeseries"},
};
const size_t scope_count = sizeof(scope_catalogue) / sizeof(scope_catalogue[0]);

scope_set_t scope_lookup(const char *name, size_t len)
{
    for (size_t i = 0; i < scope_count; i++)
        if (strlen(scope_catalogue[i].name) == len && memcmp(scope_catalogue[i].name, name, len) == 0)
            return (scope_set_t)1 << i;
    return 0;
}

const char *scope_name(scope_set_t one)
{
    for (size_t i = 0; i < scope_count; i++)
        if (one == ((scope_set_t)1 << i))
            return scope_catalogue[i].name;
    return NULL;
}

int scope_require(scope_set_t held, scope_set_t need, scope_set_t *missing)
{
    scope_set_t lack = need & ~held;
    if (lack == 0)
        return 0;
    if (missing != NULL)
        *missing = lack & (~lack + 1); /* lowest missing bit */
    return -1;
}

void scope_format(scope_set_t set, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < scope_count; i++) {
        if (!(set & ((scope_set_t)1 << i)))
            continue;
        int n = snprintf(buf + o, len - o, "%s%s", o ? " " : "", scope_catalogue[i].name);
        if (n < 0 || (size_t)n >= len - o)
            break;
        o += (size_t)n;
    }
}

int scope_parse(const char *text, scope_set_t *out, aly_err_t *err)
{
    *out = 0;
    for (const char *s = text; *s;) {
        size_t n = strcspn(s, ", ");
        if (n > 0) {
            scope_set_t bit = scope_lookup(s, n);
            if (bit == 0) {
                char known[256];
                scope_format(~(scope_set_t)0, known, sizeof(known));
                return aly_errf(err, "unknown scope \"%.*s\" (known: %s)", (int)n, s, known);
            }
            *out |= bit;
        }
        s += n;
        while (*s == ',' || *s == ' ')
            s++;
    }
    if (*out == 0)
        return aly_errf(err, "no scopes given");
    return 0;
}

/*
 * The scope catalogue of aly/scope.h.
 */
#include "aly/scope.h"

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

/*
 * sites.list, sites.get, sites.create, sites.update.
 */
#include <stdio.h>
#include <string.h>

#include "aly/tools.h"
#include "aly/tools_schema.h"

typedef struct list_ctx {
    json_t *items;
    int limit;
    char last[ALY_ID_MAX];
    int more;
} list_ctx_t;

static int list_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    list_ctx_t *c = vctx;
    site_record_t s;
    aly_err_t err;
    if ((int)json_array_size(c->items) == c->limit) {
        c->more = 1;
        return 1;
    }
    if (record_decode(&record_site, val->data, val->len, &s, &err) != 0)
        return -1;
    (void)key;
    json_array_append_new(c->items, tools_site_json(&s));
    snprintf(c->last, sizeof(c->last), "%s", s.id);
    return 0;
}

static mcp_status_t sites_list(mcp_call_t *call, json_t *args)
{
    char after[ALY_ID_MAX], prefix[64], start[128];
    if (tools_cursor_in(args, "sites", after, sizeof(after)) != 0)
        return tools_fail(call, "cursor: not a cursor from sites.list; pass next_cursor back unchanged, or omit it");
    size_t pl = shop_key(prefix, sizeof(prefix), tools_ws(call), 'S', NULL, NULL);
    size_t sl = after[0] ? shop_key(start, sizeof(start), tools_ws(call), 'S', after, NULL) : 0;
    list_ctx_t c = {json_array(), tools_limit(args), "", 0};
    store_txn_t t;
    aly_err_t err;
    if (tools_begin(call, 0, &t) != 0) {
        json_decref(c.items);
        return MCP_DONE;
    }
    int rc = store_scan(&t, DB_DATA, prefix, pl, sl ? start : NULL, sl, list_cb, &c, &err);
    store_abort(&t);
    if (rc != 0) {
        json_decref(c.items);
        return tools_store_error(call, &err);
    }
    return tools_ok(call, json_pack("{s:o, s:o}", "sites", c.items, "next_cursor", c.more ? tools_cursor_out("sites", c.last) : json_null()));
}

static mcp_status_t sites_get(mcp_call_t *call, json_t *args)
{
    const char *id = json_string_value(json_object_get(args, "site_id"));
    site_record_t s;
    store_txn_t t;
    if (tools_begin(call, 0, &t) != 0 || tools_load_site(call, &t, id, &s) != 0)
        return MCP_DONE;
    store_abort(&t);
    return tools_ok(call, tools_site_json(&s));
}

static mcp_status_t sites_create(mcp_call_t *call, json_t *args)
{
    site_record_t s = {.version = 1};
    aly_err_t err;
    if (store_new_id("site_", s.id, sizeof(s.id), &err) != 0)
        return tools_store_error(call, &err);
    snprintf(s.name, sizeof(s.name), "%s", json_string_value(json_object_get(args, "name")));
    snprintf(s.domain, sizeof(s.domain), "%s", json_string_value(json_object_get(args, "domain")));
    snprintf(s.currency, sizeof(s.currency), "%s", json_string_value(json_object_get(args, "currency")));
    s.created_ms = s.updated_ms = aly_wall_ms();
    store_txn_t t;
    if (tools_begin(call, 1, &t) != 0)
        return MCP_DONE;
    if (shop_site_put(&t, tools_ws(call), &s, &err) != 0 || tools_audit(call, &t, "sites.create", s.id, 0, 1, &err) != 0) {
        store_abort(&t);
        return tools_store_error(call, &err);
    }
    if (tools_commit(call, &t) != 0)
        return MCP_DONE;
    return tools_ok(call, tools_site_json(&s));
}

static mcp_status_t sites_update(mcp_call_t *call, json_t *args)
{
    const char *id = json_string_value(json_object_get(args, "site_id"));
    json_t *name = json_object_get(args, "name"), *domain = json_object_get(args, "domain"),
           *expected = json_object_get(args, "expected_version");
    if (name == NULL && domain == NULL)
        return tools_fail(call, "name, domain: give at least one field to change");
    site_record_t s;
    store_txn_t t;
    aly_err_t err;
    if (tools_begin(call, 1, &t) != 0 || tools_load_site(call, &t, id, &s) != 0)
        return MCP_DONE;
    if (expected != NULL && (uint64_t)json_integer_value(expected) != s.version) {
        store_abort(&t);
        return tools_fail(call, "expected_version: the site is at version %llu, not %lld; nothing was written (get it again)",
                          (unsigned long long)s.version, (long long)json_integer_value(expected));
    }
    uint64_t before = s.version;
    if (name != NULL)
        snprintf(s.name, sizeof(s.name), "%s", json_string_value(name));
    if (domain != NULL)
        snprintf(s.domain, sizeof(s.domain), "%s", json_string_value(domain));
    s.version++;
    s.updated_ms = aly_wall_ms();
    if (shop_site_put(&t, tools_ws(call), &s, &err) != 0 || tools_audit(call, &t, "sites.update", s.id, before, s.version, &err) != 0) {
        store_abort(&t);
        return tools_store_error(call, &err);
    }
    if (tools_commit(call, &t) != 0)
        return MCP_DONE;
    return tools_ok(call, tools_site_json(&s));
}

#define SITE_OUT "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}," SITE_PROPS "},\"required\":[\"id\",\"name\",\"domain\",\"currency\"]}"

const mcp_tool_desc_t tools_sites[] = {
    {"sites.list", "List sites",
     "List the sites (online shops) of this workspace with their id, name, domain, currency, product_count and order_count. "
     "Start here: other tools take a site_id from this list. Paged: pass next_cursor back as cursor for more.",
     SCOPE_READ_SITES, "{\"type\":\"object\",\"properties\":{" LIMIT_CURSOR "},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"sites\":{\"type\":\"array\",\"items\":" SITE_OUT "},\"next_cursor\":{\"type\":[\"string\",\"null\"]}},"
     "\"required\":[\"sites\",\"next_cursor\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT | TOOL_CACHEABLE, sites_list},
    {"sites.get", "Get a site", "One site by id, with its product and order counts.", SCOPE_READ_SITES,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID "},\"required\":[\"site_id\"],\"additionalProperties\":false}", SITE_OUT,
     TOOL_READ_ONLY | TOOL_IDEMPOTENT | TOOL_CACHEABLE, sites_get},
    {"sites.create", "Create a site", "Create a new site (shop) with a name, a domain and the ISO 4217 currency its prices use.",
     SCOPE_WRITE_SITES,
     "{\"type\":\"object\",\"properties\":{\"name\":" NAME_SCHEMA ",\"domain\":" DOMAIN_SCHEMA ",\"currency\":" CURRENCY_SCHEMA "},"
     "\"required\":[\"name\",\"domain\",\"currency\"],\"additionalProperties\":false}",
     SITE_OUT, 0, sites_create},
    {"sites.update", "Rename a site or change its domain",
     "Change a site's name and/or domain. Pass expected_version (from sites.get) to refuse the change if someone else changed the "
     "site meanwhile.",
     SCOPE_WRITE_SITES,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"name\":" NAME_SCHEMA ",\"domain\":" DOMAIN_SCHEMA
     ",\"expected_version\":{\"type\":\"integer\",\"minimum\":1}},\"required\":[\"site_id\"],\"additionalProperties\":false}",
     SITE_OUT, TOOL_IDEMPOTENT, sites_update},
};
const size_t tools_sites_count = sizeof(tools_sites) / sizeof(tools_sites[0]);

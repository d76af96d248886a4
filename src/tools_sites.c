/*
 * sites.list, sites.get, sites.create, sites.update: the shops of a
 * workspace.  sites.update may carry expected_version (a mismatch writes
 * nothing).
 */
#include "aly/tools.h"
#include "aly/tools_schema.h"

static int list_item(void *ctx, const store_val_t *key, const void *rec, json_t **out, aly_err_t *err)
{
    (void)ctx;
    (void)key;
    (void)err;
    if (out != NULL)
        *out = tools_site_json(rec);
    return 1;
}

static mcp_status_t sites_list(mcp_call_t *call, json_t *args)
{
    tools_page_t pg;
    store_txn_t t;
    if (tools_page_in(call, args, "sites", &pg) != 0 || tools_begin(call, 0, &t) != 0)
        return MCP_DONE;
    site_record_t s;
    tools_list_t l = {.kind = "sites", .type = 'S', .record = &record_site, .rec = &s, .item = list_item};
    return tools_list(call, &t, &pg, &l, json_object());
}

static mcp_status_t sites_get(mcp_call_t *call, json_t *args)
{
    site_record_t s;
    store_txn_t t;
    mcp_status_t st = MCP_DONE;
    if (tools_begin(call, 0, &t) != 0 || tools_site(call, &t, args, &s, &st) != 0)
        return st;
    store_abort(&t);
    return tools_ok(call, tools_site_json(&s));
}

static mcp_status_t sites_create(mcp_call_t *call, json_t *args)
{
    site_record_t s = {.version = 1};
    aly_err_t err;
    if (store_new_id("site_", s.id, sizeof(s.id), &err) != 0)
        return tools_store_error(call, &err);
    const char *unfit = tools_site_apply(&s, args);
    if (unfit != NULL)
        return tools_fail(call, "%s: too long to store; nothing was written", unfit);
    s.created_ms = s.updated_ms = aly_wall_ms();
    store_txn_t t;
    if (tools_begin(call, 1, &t) != 0)
        return MCP_DONE;
    int rc = shop_site_put(&t, tools_ws(call), &s, &err);
    return tools_finish(call, &t, rc, &err, &(tools_change_t){"sites.create", s.id, 0, 1}, tools_site_json(&s));
}

static mcp_status_t sites_update(mcp_call_t *call, json_t *args)
{
    if (json_object_get(args, "name") == NULL && json_object_get(args, "domain") == NULL)
        return tools_fail(call, "name, domain: give at least one field to change");
    site_record_t s;
    store_txn_t t;
    aly_err_t err;
    mcp_status_t st = MCP_DONE;
    if (tools_begin(call, 1, &t) != 0 || tools_site(call, &t, args, &s, &st) != 0 ||
        tools_expect_version(call, &t, args, "site", s.version) != 0)
        return st;
    uint64_t before = s.version;
    const char *unfit = tools_site_apply(&s, args);
    if (tools_check(call, &t, unfit != NULL, NULL, "%s: too long to store; nothing was written", unfit ? unfit : "") != 0)
        return MCP_DONE;
    s.version++;
    s.updated_ms = aly_wall_ms();
    int rc = shop_site_put(&t, tools_ws(call), &s, &err);
    return tools_finish(call, &t, rc, &err, &(tools_change_t){"sites.update", s.id, before, s.version}, tools_site_json(&s));
}

#define SITE_OUT                                                                                                                   \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}," SITE_PROPS                                                \
    "},\"required\":[\"id\",\"name\",\"domain\",\"currency\"]}"

const mcp_tool_desc_t tools_sites[] = {
    {"sites.list", "List sites",
     "List the sites (online shops) of this workspace with their id, name, domain, currency, product_count and order_count. "
     "Start here: other tools take a site_id from this list. Paged: pass next_cursor back as cursor for more.",
     SCOPE_READ_SITES, "{\"type\":\"object\",\"properties\":{" LIMIT_CURSOR "},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"sites\":{\"type\":\"array\",\"items\":" SITE_OUT
     "},\"next_cursor\":{\"type\":[\"string\",\"null\"]}},"
     "\"required\":[\"sites\",\"next_cursor\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT, sites_list, TOOL_CACHED},
    {"sites.get", "Get a site", "One site by id, with its product and order counts.", SCOPE_READ_SITES,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG "},\"additionalProperties\":false}", SITE_OUT,
     TOOL_READ_ONLY | TOOL_IDEMPOTENT, sites_get, TOOL_CACHED},
    {"sites.create", "Create a site", "Create a new site (shop) with a name, a domain and the ISO 4217 currency its prices use.",
     SCOPE_WRITE_SITES,
     "{\"type\":\"object\",\"properties\":{" SITE_FIELDS "},"
     "\"required\":[\"name\",\"domain\",\"currency\"],\"additionalProperties\":false}",
     SITE_OUT, 0, sites_create, 0},
    {"sites.update", "Rename a site or change its domain",
     "Change a site's name and/or domain. Pass expected_version (from sites.get) to refuse the change if someone else changed the "
     "site meanwhile.",
     SCOPE_WRITE_SITES,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG ",\"name\":" NAME_SCHEMA ",\"domain\":" DOMAIN_SCHEMA
     "," EXPECTED_VERSION "},\"additionalProperties\":false}",
     SITE_OUT, TOOL_IDEMPOTENT, sites_update, 0},
};
const size_t tools_sites_count = sizeof(tools_sites) / sizeof(tools_sites[0]);

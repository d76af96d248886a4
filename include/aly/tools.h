/*
 * The workspace tools of SPEC §4 (sites, products, orders, analytics), the
 * resources and prompts over the same data, and the helpers they share.
 * Each tools_*.c holds one table of descriptors; tools_register() hands them
 * all to the registry.  Tenant = the principal's workspace, always.
 */
#ifndef ALY_TOOLS_H
#define ALY_TOOLS_H

#include <jansson.h>

#include "aly/registry.h"
#include "aly/shop.h"

int tools_register(aly_err_t *err);

extern const mcp_tool_desc_t tools_sites[], tools_products[], tools_orders[], tools_analytics[];
extern const size_t tools_sites_count, tools_products_count, tools_orders_count, tools_analytics_count;
extern const mcp_resource_desc_t tools_resources[];
extern const size_t tools_resources_count;
extern const mcp_prompt_desc_t tools_prompts[];
extern const size_t tools_prompts_count;

/* ---- shared by tools_*.c ---- */

#define TOOLS_DEFAULT_LIMIT 50

/* The principal's workspace. */
const char *tools_ws(mcp_call_t *call);

/* Completes call with an isError result carrying message (printf-style). */
mcp_status_t tools_fail(mcp_call_t *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Completes call with structuredContent (stolen) plus the same JSON as text. */
mcp_status_t tools_ok(mcp_call_t *call, json_t *structured);
/* The store failed: log it and answer an internal error result. */
mcp_status_t tools_store_error(mcp_call_t *call, const aly_err_t *err);

/* Begins a transaction on the durable store (write when write != 0); on failure completes call. */
int tools_begin(mcp_call_t *call, int write, store_txn_t *t);
/* Commits t and appends nothing more; on failure completes call with an error. */
int tools_commit(mcp_call_t *call, store_txn_t *t);

/*
 * Reads site_id of the caller's workspace into s inside t.  On failure aborts
 * t, completes call ("no site ..." or the store error) and returns -1.
 */
int tools_load_site(mcp_call_t *call, store_txn_t *t, const char *site_id, site_record_t *s);

/* Audit record for a mutation in transaction t. */
int tools_audit(mcp_call_t *call, store_txn_t *t, const char *tool, const char *object, uint64_t before, uint64_t after,
                aly_err_t *err);

/* Paging: decodes args.cursor for list kind into after (the key suffix to resume after); -1 when it is not ours. */
int tools_cursor_in(json_t *args, const char *kind, char *after, size_t len);
/* Encodes a next_cursor for kind resuming after key suffix; returns a new JSON string. */
json_t *tools_cursor_out(const char *kind, const char *after);
int tools_limit(json_t *args);

/* JSON views of records. */
json_t *tools_money(uint64_t amount, const char *currency);
json_t *tools_time(uint64_t ms); /* RFC 3339 string, or null for 0 */
json_t *tools_site_json(const site_record_t *s);
json_t *tools_product_json(const product_record_t *p, const char *currency);
json_t *tools_order_json(const order_record_t *o);

/* Sites of the workspace whose id or name starts with prefix (completion). */
json_t *tools_complete_site(mcp_call_t *call, const char *arg, const char *prefix);

#endif

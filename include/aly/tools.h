/*
 * The workspace tools (sites, products, orders, analytics), the resources and
 * prompts over the same data, and the helpers they share.  Each tools_*.c
 * holds one table of descriptors; tools_register() hands them all to the
 * registry.  A tool only ever reads and writes the principal's workspace:
 * every key it builds starts with that workspace's id.
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
/* The store failed: log it and answer an internal error result; a refusal (full store, quota) is answered as it is. */
mcp_status_t tools_store_error(mcp_call_t *call, const aly_err_t *err);

/*
 * Begins a transaction on the durable store: write 0 reads, 1 writes,
 * TOOLS_WRITE_FREES writes to free space (a delete), which a full store
 * still admits.  On failure completes call.
 */
#define TOOLS_WRITE_FREES 2
int tools_begin(mcp_call_t *call, int write, store_txn_t *t);

/*
 * The one way a lookup or a rule checked inside t ends a call early.  rc is
 * what a shop_* lookup returned (0 found / free, 1 not found / taken, -1
 * store error in err) or a refusal condition (non-zero: refuse).  0 passes
 * through; otherwise t is aborted, call completes with the store error
 * (rc < 0) or with the message (rc > 0), and -1 tells the tool to return
 * MCP_DONE.
 */
int tools_check(mcp_call_t *call, store_txn_t *t, int rc, const aly_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The records a tool names by id, read in t, each through tools_check(): on failure t is aborted and call completed. */
int tools_load_site(mcp_call_t *call, store_txn_t *t, const char *site_id, site_record_t *s);
/*
 * The site a tool works on: args.site_id when given (as tools_load_site);
 * omitted, the workspace's only site, or with several the one the client
 * picks from a form elicitation (when it declared elicitation; otherwise the
 * call ends with an isError listing them).  0 with s loaded and t still open;
 * otherwise t is aborted and *st is what the tool returns (the call has
 * completed, or waits for the client's answer).
 */
int tools_site(mcp_call_t *call, store_txn_t *t, json_t *args, site_record_t *s, mcp_status_t *st);
int tools_load_product(mcp_call_t *call, store_txn_t *t, const site_record_t *s, const char *product_id, product_record_t *p);
int tools_load_order(mcp_call_t *call, store_txn_t *t, const char *order_id, order_record_t *o);

/* The order a time index key ("<ws>/T/<site>/<ms>/<order>") names: shop_order_get's 0, 1 or -1. */
int tools_order_at(store_txn_t *t, const char *ws, const store_val_t *key, order_record_t *o, aly_err_t *err);

/* Optimistic concurrency: args.expected_version, when given, must be version; else aborts t, completes call ("the <what> is at ..."). */
int tools_expect_version(mcp_call_t *call, store_txn_t *t, json_t *args, const char *what, uint64_t version);

/* The audit record of one mutation: tool changed object from version before to after (0: did not exist / no longer exists). */
typedef struct tools_change {
    const char *tool, *object;
    uint64_t before, after;
} tools_change_t;

/*
 * The end of every mutating tool.  rc is 0 when the caller's writes in t
 * succeeded (else err says why): then the audit record of ch is added, t is
 * committed and call completes with result.  Any failure aborts t, and call
 * completes with the store error.  A NULL result (the answer could not be
 * built) aborts t too: no change is committed behind an error.  result is
 * stolen either way.
 */
mcp_status_t tools_finish(mcp_call_t *call, store_txn_t *t, int rc, const aly_err_t *err, const tools_change_t *ch, json_t *result);

/* ---- paging of the list tools (tools_list.c) ---- */

#define TOOLS_AFTER_MAX 96

/* The hex digits of a listing's scope tag (see tools_list()). */
#define TOOLS_SCOPE_HEX 16

/*
 * The page a call asks for: resume after a key suffix (empty: the first page), at most limit items; when resumed, the
 * scope tag of the listing that made the cursor.
 */
typedef struct tools_page {
    char after[TOOLS_AFTER_MAX];
    char scope[TOOLS_SCOPE_HEX + 1];
    int resumed;
    int limit;
} tools_page_t;

/* Reads args.cursor (which list kind must have made) and args.limit; a bad cursor completes call and returns -1. */
int tools_page_in(mcp_call_t *call, json_t *args, const char *kind, tools_page_t *pg);

/*
 * Whether the entry at key belongs in the page: 1 yes, 0 skip, -1 fail (err
 * filled).  rec is the decoded record (NULL when the list has no record
 * type).  When the entry belongs and out is not NULL, *out receives its JSON
 * view; out is NULL once the page is full, when only "is there more" is asked.
 */
typedef int (*tools_item_fn)(void *ctx, const store_val_t *key, const void *rec, json_t **out, aly_err_t *err);

typedef struct tools_list {
    const char *kind;            /* the cursor's kind and the name of the result's array ("sites") */
    char type;                   /* the listed keys' kind in the shop layout ('S', 'P', 'T') */
    const char *site;            /* the site whose entries are listed; NULL for the sites themselves */
    const char *from;            /* first page only: start after this key suffix (< TOOLS_AFTER_MAX bytes); NULL: from the first */
    const record_type_t *record; /* what the entries hold, decoded into rec for item; NULL: index entries, rec is NULL */
    void *rec;
    tools_item_fn item;
    void *ctx;
    json_t *args;               /* the call's arguments, for the filters below */
    const char *const *filters; /* names of the arguments that choose what is listed (NULL-terminated); NULL: none */
} tools_list_t;

/*
 * Scans the records of l in t after pg's position, keeping those l->item
 * accepts, pg->limit at most, examining list_scan_budget records at most.
 * A cursor resumes only the listing that made it: the same workspace, site
 * and filters (its scope tag); another one completes call with an error.
 * Otherwise: 
 * aborts t and completes call with out (stolen: the fields that come before
 * the list, e.g. site_id) plus l->kind: [items] and next_cursor (null on the
 * last page; set when the page ended on the limit or on the scan budget).
 */
mcp_status_t tools_list(mcp_call_t *call, store_txn_t *t, const tools_page_t *pg, const tools_list_t *l, json_t *out);

/* JSON views of records. */
json_t *tools_money(uint64_t amount, const char *currency);
json_t *tools_time(uint64_t ms); /* RFC 3339 string, or null for 0 */
json_t *tools_site_json(const site_record_t *s);
json_t *tools_product_json(const product_record_t *p, const char *currency);
json_t *tools_order_json(const order_record_t *o);

/* Sites of the workspace whose id or name starts with prefix (completion). */
json_t *tools_complete_site(mcp_call_t *call, const char *arg, const char *prefix);

#endif

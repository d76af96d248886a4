/*
 * orders.list, orders.get, orders.fulfill, orders.cancel.  A fulfilment and a
 * cancellation of the same order race safely: each reads and writes the order
 * in one LMDB write transaction, and write transactions are serialised across
 * all workers, so the second one sees the first one's status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/tools.h"
#include "aly/tools_schema.h"

typedef struct list_ctx {
    store_txn_t *t;
    const char *ws;
    json_t *items;
    int limit, more, failed;
    const char *status;
    char last[96];
    size_t prefix_len;
    aly_err_t err;
} list_ctx_t;

static int list_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)val;
    list_ctx_t *c = vctx;
    const char *k = key->data;
    const char *slash = memrchr(k, '/', key->len);
    if (slash == NULL)
        return 0;
    char id[ALY_ID_MAX];
    size_t idlen = key->len - (size_t)(slash + 1 - k);
    if (idlen >= sizeof(id))
        return 0;
    memcpy(id, slash + 1, idlen);
    id[idlen] = '\0';
    order_record_t o;
    int rc = shop_order_get(c->t, c->ws, id, &o, &c->err);
    if (rc < 0) {
        c->failed = 1;
        return -1;
    }
    if (rc == 1 || (c->status != NULL && strcmp(o.status, c->status) != 0))
        return 0;
    if ((int)json_array_size(c->items) == c->limit) {
        c->more = 1;
        return 1;
    }
    json_array_append_new(c->items, tools_order_json(&o));
    size_t sl = key->len - c->prefix_len;
    if (sl < sizeof(c->last)) {
        memcpy(c->last, k + c->prefix_len, sl);
        c->last[sl] = '\0';
    }
    return 0;
}

/* "since" as a date (YYYY-MM-DD) or an RFC 3339 time with Z; ms since the epoch, or -1. */
static int64_t parse_since(const char *s)
{
    if (strlen(s) == 10)
        return shop_date_ms(s);
    char date[11];
    int hh, mm, ss;
    if (strlen(s) < 20 || s[10] != 'T' || sscanf(s + 11, "%2d:%2d:%2d", &hh, &mm, &ss) != 3)
        return -1;
    memcpy(date, s, 10);
    date[10] = '\0';
    int64_t d = shop_date_ms(date);
    return d < 0 ? -1 : d + ((int64_t)hh * 3600 + mm * 60 + ss) * 1000;
}

static mcp_status_t orders_list(mcp_call_t *call, json_t *args)
{
    const char *ws = tools_ws(call), *site = json_string_value(json_object_get(args, "site_id"));
    const char *since = json_string_value(json_object_get(args, "since"));
    char after[96], prefix[128], start[200];
    if (tools_cursor_in(args, "orders", after, sizeof(after)) != 0)
        return tools_fail(call, "cursor: not a cursor from orders.list; pass next_cursor back unchanged, or omit it");
    int64_t since_ms = 0;
    if (since != NULL && (since_ms = parse_since(since)) < 0)
        return tools_fail(call, "since: must be a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MM:SSZ)");
    site_record_t s;
    store_txn_t t;
    aly_err_t err;
    if (tools_begin(call, 0, &t) != 0 || tools_load_site(call, &t, site, &s) != 0)
        return MCP_DONE;
    size_t pl = shop_key(prefix, sizeof(prefix), ws, 'T', s.id, "");
    size_t sl = 0;
    const char *from = NULL;
    if (after[0]) {
        sl = shop_key(start, sizeof(start), ws, 'T', s.id, after);
        from = start;
    } else if (since_ms > 0) {
        char ts[20];
        /* Resume "after" the key just before since: every order at or after since sorts later. */
        snprintf(ts, sizeof(ts), "%016llx", (unsigned long long)(since_ms - 1));
        sl = shop_key(start, sizeof(start), ws, 'T', s.id, ts);
        from = start;
    }
    list_ctx_t c = {.t = &t, .ws = ws, .items = json_array(), .limit = tools_limit(args),
                    .status = json_string_value(json_object_get(args, "status")), .prefix_len = pl};
    int rc = store_scan(&t, DB_DATA, prefix, pl, from, sl, list_cb, &c, &err);
    store_abort(&t);
    if (rc != 0 || c.failed) {
        json_decref(c.items);
        return tools_store_error(call, c.failed ? &c.err : &err);
    }
    return tools_ok(call, json_pack("{s:s, s:o, s:o}", "site_id", s.id, "orders", c.items, "next_cursor",
                                    c.more ? tools_cursor_out("orders", c.last) : json_null()));
}

static int load_order(mcp_call_t *call, store_txn_t *t, json_t *args, order_record_t *o)
{
    const char *id = json_string_value(json_object_get(args, "order_id"));
    aly_err_t err;
    int rc = shop_order_get(t, tools_ws(call), id, o, &err);
    if (rc == 0)
        return 0;
    store_abort(t);
    if (rc < 0)
        tools_store_error(call, &err);
    else
        tools_fail(call, "order_id: no order %s in this workspace (orders.list shows a site's orders)", id);
    return -1;
}

static mcp_status_t orders_get(mcp_call_t *call, json_t *args)
{
    order_record_t o;
    store_txn_t t;
    if (tools_begin(call, 0, &t) != 0 || load_order(call, &t, args, &o) != 0)
        return MCP_DONE;
    store_abort(&t);
    return tools_ok(call, tools_order_json(&o));
}

static mcp_status_t write_order(mcp_call_t *call, store_txn_t *t, order_record_t *o, const char *tool, uint64_t before)
{
    aly_err_t err;
    if (shop_order_put(t, tools_ws(call), o, 0, &err) != 0 || tools_audit(call, t, tool, o->id, before, o->version, &err) != 0) {
        store_abort(t);
        return tools_store_error(call, &err);
    }
    if (tools_commit(call, t) != 0)
        return MCP_DONE;
    return tools_ok(call, tools_order_json(o));
}

static mcp_status_t orders_fulfill(mcp_call_t *call, json_t *args)
{
    const char *carrier = json_string_value(json_object_get(args, "carrier"));
    const char *tracking = json_string_value(json_object_get(args, "tracking_number"));
    order_record_t o;
    store_txn_t t;
    if (tools_begin(call, 1, &t) != 0 || load_order(call, &t, args, &o) != 0)
        return MCP_DONE;
    if (strcmp(o.status, "fulfilled") == 0) {
        store_abort(&t);
        if (strcmp(o.carrier, carrier) != 0 || strcmp(o.tracking, tracking) != 0)
            return tools_fail(call, "order %s is already fulfilled with %s %s; nothing was changed", o.id, o.carrier, o.tracking);
        return tools_ok(call, tools_order_json(&o)); /* the same fulfilment again: idempotent */
    }
    if (strcmp(o.status, "paid") != 0) {
        store_abort(&t);
        return tools_fail(call, "order %s is %s: only paid orders can be fulfilled", o.id, o.status);
    }
    uint64_t before = o.version;
    snprintf(o.status, sizeof(o.status), "fulfilled");
    snprintf(o.carrier, sizeof(o.carrier), "%s", carrier);
    snprintf(o.tracking, sizeof(o.tracking), "%s", tracking);
    o.fulfilled_ms = aly_wall_ms();
    o.version++;
    return write_order(call, &t, &o, "orders.fulfill", before);
}

static mcp_status_t orders_cancel(mcp_call_t *call, json_t *args)
{
    order_record_t o;
    store_txn_t t;
    if (tools_begin(call, 1, &t) != 0 || load_order(call, &t, args, &o) != 0)
        return MCP_DONE;
    if (strcmp(o.status, "cancelled") == 0) {
        store_abort(&t);
        return tools_ok(call, tools_order_json(&o));
    }
    if (strcmp(o.status, "fulfilled") == 0) {
        store_abort(&t);
        return tools_fail(call, "order %s is already fulfilled and cannot be cancelled", o.id);
    }
    uint64_t before = o.version;
    snprintf(o.status, sizeof(o.status), "cancelled");
    o.cancelled_ms = aly_wall_ms();
    o.version++;
    return write_order(call, &t, &o, "orders.cancel", before);
}

#define ORDER_OUT                                                                                                               \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"site_id\":{\"type\":\"string\"},"                      \
    "\"status\":{\"type\":\"string\",\"enum\":[\"pending\",\"paid\",\"fulfilled\",\"cancelled\"]},\"total\":" MONEY_OUT ","     \
    "\"line_items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"product_id\":{\"type\":\"string\"},"    \
    "\"quantity\":{\"type\":\"integer\"},\"unit_price\":" MONEY_OUT "}}},"                                                      \
    "\"fulfillment\":{\"type\":[\"object\",\"null\"]},\"version\":{\"type\":\"integer\"}},"                                     \
    "\"required\":[\"id\",\"site_id\",\"status\",\"total\",\"line_items\",\"version\"]}"

const mcp_tool_desc_t tools_orders[] = {
    {"orders.list", "List orders of a site",
     "List a site's orders, oldest first, optionally only one status and only those placed at or after since. "
     "Paged: pass next_cursor back as cursor until it is null.",
     SCOPE_READ_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ","
     "\"status\":{\"type\":\"string\",\"enum\":[\"pending\",\"paid\",\"fulfilled\",\"cancelled\"]},"
     "\"since\":{\"type\":\"string\",\"minLength\":10,\"maxLength\":30,\"description\":\"YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ\"},"
     LIMIT_CURSOR "},\"required\":[\"site_id\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"orders\":{\"type\":\"array\",\"items\":" ORDER_OUT "},"
     "\"next_cursor\":{\"type\":[\"string\",\"null\"]}},\"required\":[\"orders\",\"next_cursor\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT | TOOL_CACHEABLE, orders_list},
    {"orders.get", "Get an order", "One order with its customer, line items, total and fulfilment.", SCOPE_READ_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"order_id\":" ORDER_ID "},\"required\":[\"order_id\"],\"additionalProperties\":false}",
     ORDER_OUT, TOOL_READ_ONLY | TOOL_IDEMPOTENT | TOOL_CACHEABLE, orders_get},
    {"orders.fulfill", "Fulfil an order",
     "Mark a paid order as shipped with the carrier and tracking number. Calling it again with the same values changes nothing; "
     "a pending (unpaid) or cancelled order is refused.",
     SCOPE_WRITE_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"order_id\":" ORDER_ID ",\"carrier\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":63},"
     "\"tracking_number\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9 ._/-]{1,127}$\"}},"
     "\"required\":[\"order_id\",\"carrier\",\"tracking_number\"],\"additionalProperties\":false}",
     ORDER_OUT, TOOL_IDEMPOTENT, orders_fulfill},
    {"orders.cancel", "Cancel an order",
     "Cancel an order that has not been fulfilled. Cancelling a cancelled order changes nothing; a fulfilled order is refused.",
     SCOPE_WRITE_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"order_id\":" ORDER_ID ",\"reason\":{\"type\":\"string\",\"maxLength\":500}},"
     "\"required\":[\"order_id\"],\"additionalProperties\":false}",
     ORDER_OUT, TOOL_DESTRUCTIVE | TOOL_IDEMPOTENT, orders_cancel},
};
const size_t tools_orders_count = sizeof(tools_orders) / sizeof(tools_orders[0]);

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
    const char *ws, *status;
} list_ctx_t;

/* Time index entries hold no record: the key ends with the order id, and the order is read by it. */
static int list_item(void *vctx, const store_val_t *key, const void *rec, json_t **out, aly_err_t *err)
{
    (void)rec;
    list_ctx_t *c = vctx;
    order_record_t o;
    int rc = tools_order_at(c->t, c->ws, key, &o, err);
    if (rc < 0)
        return -1;
    if (rc == 1 || (c->status != NULL && strcmp(o.status, c->status) != 0))
        return 0;
    if (out != NULL)
        *out = tools_order_json(&o);
    return 1;
}

/* n decimal digits at s (0 when any is not a digit); their value in *v. */
static int digits(const char *s, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        *v = *v * 10 + (s[i] - '0');
    }
    return 1;
}

/*
 * "since" as a date (YYYY-MM-DD, midnight UTC) or an RFC 3339 date-time
 * (YYYY-MM-DDTHH:MM:SS, an optional fraction, then Z or a +HH:MM / -HH:MM
 * offset); ms since the epoch, or -1 for anything else.  A fraction finer
 * than a millisecond rounds up: "at or after since" then still holds at the
 * millisecond the orders are timed in.
 */
static int64_t parse_since(const char *s)
{
    size_t len = strlen(s);
    if (len == 10)
        return shop_date_ms(s);
    char date[11];
    int hh, mm, ss;
    if (len < 20 || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &hh) || s[13] != ':' || !digits(s + 14, 2, &mm) ||
        s[16] != ':' || !digits(s + 17, 2, &ss) || hh > 23 || mm > 59 || ss > 59)
        return -1;
    memcpy(date, s, 10);
    date[10] = '\0';
    int64_t d = shop_date_ms(date);
    if (d < 0)
        return -1;
    int64_t ms = d + ((int64_t)hh * 3600 + mm * 60 + ss) * 1000;
    const char *p = s + 19;
    if (*p == '.') {
        int n = 0, frac = 0, finer = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++) {
            if (n < 3)
                frac = frac * 10 + (*p - '0');
            else
                finer |= *p != '0';
        }
        if (n == 0 || n > 9)
            return -1;
        for (int i = n; i < 3; i++)
            frac *= 10;
        ms += frac + finer;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
        return ms;
    int oh, om;
    if ((*p != '+' && *p != '-') || strlen(p) != 6 || !digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 ||
        om > 59)
        return -1;
    int64_t off = ((int64_t)oh * 60 + om) * 60000;
    ms += *p == '+' ? -off : off;
    return ms < 0 ? -1 : ms;
}

static mcp_status_t orders_list(mcp_call_t *call, json_t *args)
{
    const char *since = json_string_value(json_object_get(args, "since"));
    tools_page_t pg;
    if (tools_page_in(call, args, "orders", &pg) != 0)
        return MCP_DONE;
    int64_t since_ms = 0;
    if (since != NULL && (since_ms = parse_since(since)) < 0)
        return tools_fail(call, "since: must be a date (YYYY-MM-DD) or an RFC 3339 time (YYYY-MM-DDTHH:MM:SSZ, or with an offset: "
                                "+HH:MM / -HH:MM)");
    site_record_t s;
    store_txn_t t;
    mcp_status_t st = MCP_DONE;
    if (tools_begin(call, 0, &t) != 0 || tools_site(call, &t, args, &s, &st) != 0)
        return st;
    /*
     * Time index keys are "<ms:16x>/<order>".  The scan resumes after a key suffix: "<since - 1 ms:16x>0" sorts after
     * every key of the millisecond before since ('0' > '/') and before every key of since itself.
     */
    char from[20];
    snprintf(from, sizeof(from), "%016llx0", (unsigned long long)(since_ms - 1));
    list_ctx_t c = {&t, tools_ws(call), json_string_value(json_object_get(args, "status"))};
    static const char *const filters[] = {"status", "since", NULL};
    tools_list_t l = {.kind = "orders",
                      .type = 'T',
                      .site = s.id,
                      .from = since_ms > 0 ? from : NULL,
                      .item = list_item,
                      .ctx = &c,
                      .args = args,
                      .filters = filters};
    return tools_list(call, &t, &pg, &l, json_pack("{s:s}", "site_id", s.id));
}

static mcp_status_t orders_get(mcp_call_t *call, json_t *args)
{
    order_record_t o;
    store_txn_t t;
    if (tools_begin(call, 0, &t) != 0 || tools_load_order(call, &t, json_string_value(json_object_get(args, "order_id")), &o) != 0)
        return MCP_DONE;
    store_abort(&t);
    return tools_ok(call, tools_order_json(&o));
}

/* The order as it stands, nothing written: the answer to a change it already has. */
static mcp_status_t unchanged(mcp_call_t *call, store_txn_t *t, const order_record_t *o)
{
    store_abort(t);
    return tools_ok(call, tools_order_json(o));
}

static mcp_status_t write_order(mcp_call_t *call, store_txn_t *t, order_record_t *o, const char *tool, uint64_t before)
{
    aly_err_t err;
    int rc = shop_order_put(t, tools_ws(call), o, 0, &err);
    return tools_finish(call, t, rc, &err, &(tools_change_t){tool, o->id, before, o->version}, tools_order_json(o));
}

static mcp_status_t orders_fulfill(mcp_call_t *call, json_t *args)
{
    const char *carrier = json_string_value(json_object_get(args, "carrier"));
    const char *tracking = json_string_value(json_object_get(args, "tracking_number"));
    order_record_t o;
    store_txn_t t;
    if (tools_begin(call, 1, &t) != 0 || tools_load_order(call, &t, json_string_value(json_object_get(args, "order_id")), &o) != 0)
        return MCP_DONE;
    if (strcmp(o.status, "fulfilled") == 0) {
        if (tools_check(call, &t, strcmp(o.carrier, carrier) != 0 || strcmp(o.tracking, tracking) != 0, NULL,
                        "order %s is already fulfilled with %s %s; nothing was changed", o.id, o.carrier, o.tracking) != 0)
            return MCP_DONE;
        return unchanged(call, &t, &o); /* the same fulfilment again: idempotent */
    }
    if (tools_check(call, &t, strcmp(o.status, "paid") != 0, NULL, "order %s is %s: only paid orders can be fulfilled", o.id,
                    o.status) != 0)
        return MCP_DONE;
    uint64_t before = o.version;
    snprintf(o.status, sizeof(o.status), "fulfilled");
    if (tools_check(call, &t, RECORD_SET_STR(o.carrier, carrier) != 0 || RECORD_SET_STR(o.tracking, tracking) != 0, NULL,
                    "carrier, tracking_number: too long to store; nothing was written") != 0)
        return MCP_DONE;
    o.fulfilled_ms = aly_wall_ms();
    o.version++;
    return write_order(call, &t, &o, "orders.fulfill", before);
}

static mcp_status_t orders_cancel(mcp_call_t *call, json_t *args)
{
    order_record_t o;
    store_txn_t t;
    if (tools_begin(call, 1, &t) != 0 || tools_load_order(call, &t, json_string_value(json_object_get(args, "order_id")), &o) != 0)
        return MCP_DONE;
    if (strcmp(o.status, "cancelled") == 0)
        return unchanged(call, &t, &o);
    if (tools_check(call, &t, strcmp(o.status, "fulfilled") == 0, NULL, "order %s is already fulfilled and cannot be cancelled",
                    o.id) != 0)
        return MCP_DONE;
    uint64_t before = o.version;
    const char *reason = json_string_value(json_object_get(args, "reason"));
    snprintf(o.status, sizeof(o.status), "cancelled");
    snprintf(o.cancel_reason, sizeof(o.cancel_reason), "%s", reason != NULL ? reason : ""); /* fits: the schema's maxLength */
    o.cancelled_ms = aly_wall_ms();
    o.version++;
    return write_order(call, &t, &o, "orders.cancel", before);
}

#define ORDER_OUT                                                                                                                  \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"site_id\":{\"type\":\"string\"},"                         \
    "\"status\":" ORDER_STATUS_SCHEMA ",\"total\":" MONEY_OUT ","                                                                  \
    "\"line_items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"product_id\":{\"type\":\"string\"},"      \
    "\"quantity\":{\"type\":\"integer\"},\"unit_price\":" MONEY_OUT "}}},"                                                         \
    "\"fulfillment\":{\"type\":[\"object\",\"null\"]},\"version\":{\"type\":\"integer\"}},"                                        \
    "\"required\":[\"id\",\"site_id\",\"status\",\"total\",\"line_items\",\"version\"]}"

const mcp_tool_desc_t tools_orders[] = {
    {"orders.list", "List orders of a site",
     "List a site's orders, oldest first, optionally only one status and only those placed at or after since. "
     "Paged: pass next_cursor back as cursor until it is null.",
     SCOPE_READ_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG ","
     "\"status\":" ORDER_STATUS_SCHEMA ","
     "\"since\":{\"type\":\"string\",\"minLength\":10,\"maxLength\":35,\"description\":\"YYYY-MM-DD (UTC) or an RFC 3339 time: YYYY-MM-DDTHH:MM:SS[.fraction] then Z or +HH:MM/-HH:MM\"}," LIMIT_CURSOR
     "},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"orders\":{\"type\":\"array\",\"items\":" ORDER_OUT
     "},"
     "\"next_cursor\":{\"type\":[\"string\",\"null\"]}},\"required\":[\"orders\",\"next_cursor\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT, orders_list, TOOL_CACHED},
    {"orders.get", "Get an order", "One order with its customer, line items, total and fulfilment.", SCOPE_READ_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"order_id\":" ORDER_ID "},\"required\":[\"order_id\"],\"additionalProperties\":false}",
     ORDER_OUT, TOOL_READ_ONLY | TOOL_IDEMPOTENT, orders_get, TOOL_CACHED},
    {"orders.fulfill", "Fulfil an order",
     "Mark a paid order as shipped with the carrier and tracking number. Calling it again with the same values changes nothing; "
     "a pending (unpaid) or cancelled order is refused.",
     SCOPE_WRITE_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"order_id\":" ORDER_ID
     ",\"carrier\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":" MAX_CARRIER "},"
     "\"tracking_number\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9 ._/-]{1,127}$\"}},"
     "\"required\":[\"order_id\",\"carrier\",\"tracking_number\"],\"additionalProperties\":false}",
     ORDER_OUT, TOOL_IDEMPOTENT, orders_fulfill, 0},
    {"orders.cancel", "Cancel an order",
     "Cancel an order that has not been fulfilled. Cancelling a cancelled order changes nothing; a fulfilled order is refused.",
     SCOPE_WRITE_ORDERS,
     "{\"type\":\"object\",\"properties\":{\"order_id\":" ORDER_ID ",\"reason\":{\"type\":\"string\",\"maxLength\":" MAX_REASON
     ",\"description\":\"why; kept with the order (cancel_reason)\"}},"
     "\"required\":[\"order_id\"],\"additionalProperties\":false}",
     ORDER_OUT, TOOL_DESTRUCTIVE | TOOL_IDEMPOTENT, orders_cancel, 0},
};
const size_t tools_orders_count = sizeof(tools_orders) / sizeof(tools_orders[0]);

/*
 * Helpers shared by the workspace tools (aly/tools.h): results, transactions,
 * audit, cursors, and the JSON views of records.  tools_register() is here too.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/cursor.h"
#include "aly/log.h"
#include "aly/tools.h"

int tools_register(aly_err_t *err)
{
    if (registry_add_tools(tools_sites, tools_sites_count, err) != 0 ||
        registry_add_tools(tools_products, tools_products_count, err) != 0 ||
        registry_add_tools(tools_orders, tools_orders_count, err) != 0 ||
        registry_add_tools(tools_analytics, tools_analytics_count, err) != 0 ||
        registry_add_resources(tools_resources, tools_resources_count, err) != 0 ||
        registry_add_prompts(tools_prompts, tools_prompts_count, err) != 0)
        return -1;
    return 0;
}

const char *tools_ws(mcp_call_t *call)
{
    return mcp_call_principal(call)->workspace;
}

mcp_status_t tools_fail(mcp_call_t *call, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mcp_call_result(call, mcp_text_result(msg, 1));
    return MCP_DONE;
}

mcp_status_t tools_ok(mcp_call_t *call, json_t *structured)
{
    mcp_call_result(call, mcp_structured_result(structured));
    return MCP_DONE;
}

mcp_status_t tools_store_error(mcp_call_t *call, const aly_err_t *err)
{
    log_error("tool store error: %s", err->msg);
    return tools_fail(call, "the store could not complete this request; try again");
}

int tools_begin(mcp_call_t *call, int write, store_txn_t *t)
{
    aly_err_t err;
    if (store_begin(mcp_call_store(call), write ? STORE_WRITE : 0, t, &err) != 0) {
        tools_store_error(call, &err);
        return -1;
    }
    return 0;
}

int tools_commit(mcp_call_t *call, store_txn_t *t)
{
    aly_err_t err;
    if (store_commit(t, &err) != 0) {
        tools_store_error(call, &err);
        return -1;
    }
    return 0;
}

int tools_load_site(mcp_call_t *call, store_txn_t *t, const char *site_id, site_record_t *s)
{
    aly_err_t err;
    int rc = shop_site_get(t, tools_ws(call), site_id, s, &err);
    if (rc == 0)
        return 0;
    store_abort(t);
    if (rc < 0)
        tools_store_error(call, &err);
    else
        tools_fail(call, "site_id: no site %s in this workspace (sites.list shows the sites)", site_id);
    return -1;
}

int tools_audit(mcp_call_t *call, store_txn_t *t, const char *tool, const char *object, uint64_t before, uint64_t after,
                aly_err_t *err)
{
    return shop_audit(t, tools_ws(call), mcp_call_principal(call)->id, tool, object, before, after, err);
}

int tools_cursor_in(json_t *args, const char *kind, char *after, size_t len)
{
    json_t *c = json_object_get(args, "cursor");
    after[0] = '\0';
    if (c == NULL)
        return 0;
    char payload[CURSOR_MAX_PAYLOAD + 1];
    long n = json_is_string(c) ? cursor_decode(json_string_value(c), json_string_length(c), payload, sizeof(payload)) : -1;
    size_t kl = strlen(kind);
    if (n < (long)kl + 1 || strncmp(payload, kind, kl) != 0 || payload[kl] != '|' || (size_t)n - kl - 1 >= len)
        return -1;
    memcpy(after, payload + kl + 1, (size_t)n - kl - 1);
    after[n - kl - 1] = '\0';
    return 0;
}

json_t *tools_cursor_out(const char *kind, const char *after)
{
    char payload[CURSOR_MAX_PAYLOAD], text[2 * CURSOR_MAX_PAYLOAD];
    int n = snprintf(payload, sizeof(payload), "%s|%s", kind, after);
    if (n <= 0 || (size_t)n >= sizeof(payload) || cursor_encode(payload, (size_t)n, text, sizeof(text)) == 0)
        return json_null();
    return json_string(text);
}

int tools_limit(json_t *args)
{
    json_t *l = json_object_get(args, "limit");
    return json_is_integer(l) ? (int)json_integer_value(l) : TOOLS_DEFAULT_LIMIT;
}

json_t *tools_money(uint64_t amount, const char *currency)
{
    return json_pack("{s:I, s:s}", "amount", (json_int_t)amount, "currency", currency);
}

json_t *tools_time(uint64_t ms)
{
    if (ms == 0)
        return json_null();
    char buf[40];
    aly_format_time(buf, sizeof(buf), ms);
    return json_string(buf);
}

json_t *tools_site_json(const site_record_t *s)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:o}", "id", s->id, "name", s->name, "domain", s->domain,
                     "currency", s->currency, "product_count", (json_int_t)s->products, "order_count", (json_int_t)s->orders,
                     "version", (json_int_t)s->version, "created_at", tools_time(s->created_ms), "updated_at",
                     tools_time(s->updated_ms));
}

json_t *tools_product_json(const product_record_t *p, const char *currency)
{
    json_t *tags = json_array();
    for (uint64_t i = 0; i < p->n_tags; i++)
        json_array_append_new(tags, json_string(p->tags[i].tag));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:o, s:I, s:o, s:o}", "id", p->id, "site_id", p->site, "title",
                     p->title, "sku", p->sku, "description", p->description, "price", tools_money(p->price, currency),
                     "inventory", (json_int_t)p->inventory, "status", p->status, "tags", tags, "version", (json_int_t)p->version,
                     "created_at", tools_time(p->created_ms), "updated_at", tools_time(p->updated_ms));
}

json_t *tools_order_json(const order_record_t *o)
{
    json_t *items = json_array();
    for (uint64_t i = 0; i < o->n_items; i++) {
        const line_item_t *it = &o->items[i];
        json_array_append_new(items, json_pack("{s:s, s:s, s:I, s:o, s:o}", "product_id", it->product, "title", it->title, "quantity",
                                               (json_int_t)it->quantity, "unit_price", tools_money(it->unit_price, o->currency),
                                               "subtotal", tools_money(it->unit_price * it->quantity, o->currency)));
    }
    json_t *fulfillment = o->fulfilled_ms == 0 ? json_null()
                                               : json_pack("{s:s, s:s, s:o}", "carrier", o->carrier, "tracking_number", o->tracking,
                                                           "fulfilled_at", tools_time(o->fulfilled_ms));
    return json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:o, s:o, s:o, s:o, s:o, s:o, s:I}", "id", o->id, "site_id", o->site, "status",
                     o->status, "customer", "name", o->customer_name, "email", o->customer_email, "line_items", items, "total",
                     tools_money(o->total, o->currency), "fulfillment", fulfillment, "created_at", tools_time(o->created_ms),
                     "paid_at", tools_time(o->paid_ms), "cancelled_at", tools_time(o->cancelled_ms), "version",
                     (json_int_t)o->version);
}

typedef struct complete_ctx {
    const char *prefix;
    json_t *out;
} complete_ctx_t;

static int complete_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)key;
    complete_ctx_t *c = vctx;
    site_record_t s;
    aly_err_t err;
    if (record_decode(&record_site, val->data, val->len, &s, &err) != 0)
        return 0;
    size_t n = strlen(c->prefix);
    if (strncmp(s.id, c->prefix, n) == 0 || strncasecmp(s.name, c->prefix, n) == 0)
        json_array_append_new(c->out, json_string(s.id));
    return json_array_size(c->out) >= 100;
}

json_t *tools_complete_site(mcp_call_t *call, const char *arg, const char *prefix)
{
    json_t *out = json_array();
    if (strcmp(arg, "site_id") != 0)
        return out;
    store_txn_t t;
    aly_err_t err;
    char k[64];
    size_t kl = shop_key(k, sizeof(k), tools_ws(call), 'S', NULL, NULL);
    complete_ctx_t c = {prefix, out};
    if (store_begin(mcp_call_store(call), 0, &t, &err) == 0) {
        store_scan(&t, DB_DATA, k, kl, NULL, 0, complete_cb, &c, &err);
        store_abort(&t);
    }
    return out;
}

/*
 * Helpers shared by the workspace tools (aly/tools.h): results, the checks
 * and loads that end a call early, the mutation epilogue (audit, commit),
 * and the JSON views of records.  tools_register() is here too.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static mcp_status_t vfail(mcp_call_t *call, const char *fmt, va_list ap)
{
    char msg[600];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    mcp_call_result(call, mcp_text_result(msg, 1));
    return MCP_DONE;
}

mcp_status_t tools_fail(mcp_call_t *call, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(call, fmt, ap);
    va_end(ap);
    return MCP_DONE;
}

mcp_status_t tools_ok(mcp_call_t *call, json_t *structured)
{
    mcp_call_result(call, mcp_structured_result(structured));
    return MCP_DONE;
}

mcp_status_t tools_store_error(mcp_call_t *call, const aly_err_t *err)
{
    if (err->refused)
        return tools_fail(call, "%s", err->msg);
    log_error("tool store error: %s", err->msg);
    return tools_fail(call, "the store could not complete this request; try again");
}

int tools_begin(mcp_call_t *call, int write, store_txn_t *t)
{
    aly_err_t err;
    int flags = write == TOOLS_WRITE_FREES ? STORE_WRITE | STORE_RESERVE : write ? STORE_WRITE : 0;
    if (store_begin(mcp_call_store(call), flags, t, &err) != 0) {
        tools_store_error(call, &err);
        return -1;
    }
    return 0;
}

int tools_check(mcp_call_t *call, store_txn_t *t, int rc, const aly_err_t *err, const char *fmt, ...)
{
    if (rc == 0)
        return 0;
    store_abort(t);
    if (rc < 0) {
        tools_store_error(call, err);
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    vfail(call, fmt, ap);
    va_end(ap);
    return -1;
}

int tools_load_site(mcp_call_t *call, store_txn_t *t, const char *site_id, site_record_t *s)
{
    aly_err_t err;
    return tools_check(call, t, shop_site_get(t, tools_ws(call), site_id, s, &err), &err,
                       "site_id: no site %s in this workspace (sites.list shows the sites)", site_id);
}

int tools_load_product(mcp_call_t *call, store_txn_t *t, const site_record_t *s, const char *product_id, product_record_t *p)
{
    aly_err_t err;
    return tools_check(call, t, shop_product_get(t, tools_ws(call), s->id, product_id, p, &err), &err,
                       "product_id: no product %s in site %s", product_id, s->id);
}

int tools_load_order(mcp_call_t *call, store_txn_t *t, const char *order_id, order_record_t *o)
{
    aly_err_t err;
    return tools_check(call, t, shop_order_get(t, tools_ws(call), order_id, o, &err), &err,
                       "order_id: no order %s in this workspace (orders.list shows a site's orders)", order_id);
}

int tools_order_at(store_txn_t *t, const char *ws, const store_val_t *key, order_record_t *o, aly_err_t *err)
{
    const char *k = key->data, *slash = memrchr(k, '/', key->len);
    char id[ALY_ID_MAX];
    size_t idlen = slash != NULL ? key->len - (size_t)(slash + 1 - k) : sizeof(id);
    if (idlen >= sizeof(id))
        return 1;
    memcpy(id, slash + 1, idlen);
    id[idlen] = '\0';
    return shop_order_get(t, ws, id, o, err);
}

int tools_expect_version(mcp_call_t *call, store_txn_t *t, json_t *args, const char *what, uint64_t version)
{
    json_t *expected = json_object_get(args, "expected_version");
    int stale = expected != NULL && (uint64_t)json_integer_value(expected) != version;
    return tools_check(call, t, stale, NULL, "expected_version: the %s is at version %llu, not %lld; nothing was written (get it again)",
                       what, (unsigned long long)version, (long long)json_integer_value(expected));
}

mcp_status_t tools_finish(mcp_call_t *call, store_txn_t *t, int rc, const aly_err_t *err, const tools_change_t *ch, json_t *result)
{
    aly_err_t own;
    if (rc == 0 && result == NULL) {
        /* The answer is built before the commit, so a change that could not be shown is not made at all. */
        store_abort(t);
        log_error("%s: the result could not be built; nothing was committed", ch->tool);
        return tools_fail(call, "the result could not be built; nothing was written");
    }
    if (rc == 0 && shop_audit(t, tools_ws(call), mcp_call_principal(call)->id, ch->tool, ch->object, ch->before, ch->after, &own) != 0) {
        rc = -1;
        err = &own;
    }
    /* Two old records retired for each new one keeps the trail within audit_retention. */
    uint64_t keep = mcp_call_config(call)->audit_retention_ms, now = aly_wall_ms();
    if (rc == 0 && keep != 0 && now > keep && shop_audit_prune(t, tools_ws(call), now - keep, 2, &own) != 0) {
        rc = -1;
        err = &own;
    }
    if (rc != 0) {
        store_abort(t);
        json_decref(result);
        return tools_store_error(call, err);
    }
    if (store_commit(t, &own) != 0) {
        json_decref(result);
        return tools_store_error(call, &own);
    }
    return tools_ok(call, result);
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

static int complete_cb(void *vctx, const store_val_t *key, void *rec)
{
    (void)key;
    complete_ctx_t *c = vctx;
    const site_record_t *s = rec;
    size_t n = strlen(c->prefix);
    if (strncmp(s->id, c->prefix, n) == 0 || strncasecmp(s->name, c->prefix, n) == 0)
        json_array_append_new(c->out, json_string(s->id));
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
    site_record_t s;
    complete_ctx_t c = {prefix, out};
    /* Suggestions are best effort: a record that does not decode is simply not suggested. */
    store_records_t r = {&record_site, &s, complete_cb, NULL, &c};
    if (store_begin(mcp_call_store(call), 0, &t, &err) == 0) {
        store_scan_records(&t, DB_DATA, k, kl, NULL, 0, &r, &err);
        store_abort(&t);
    }
    return out;
}

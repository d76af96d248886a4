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

static mcp_status_t vfail(mcp_call_t *call, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

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
    if (err->refused == STORE_UNAVAILABLE) {
        mcp_call_unavailable(call, STORE_RETRY_AFTER_S);
        return MCP_DONE;
    }
    if (err->refused)
        return tools_fail(call, "%s", err->msg);
    log_error("tool store error: %s", err->msg);
    return tools_fail(call, "the store could not complete this request; try again");
}

/*
 * tools_store_error() for a failure inside t: a store that filled up is
 * named as the cause even where a layer between reworded the refusal
 * ("cannot index sku ..."), so the client hears it rather than "try again".
 */
static mcp_status_t txn_error(mcp_call_t *call, const store_txn_t *t, const aly_err_t *err)
{
    aly_err_t full;
    return tools_store_error(call, store_refused_full(t, &full) ? &full : err);
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
        txn_error(call, t, err);
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

/* More sites than this and the choice is not offered: the model is told to pass site_id. */
#define SITE_CHOICES_MAX 100

static int choice_cb(void *vctx, const store_val_t *key, void *rec)
{
    (void)key;
    json_t *sites = vctx;
    const site_record_t *s = rec;
    json_array_append_new(sites, json_pack("{s:s, s:s}", "id", s->id, "name", s->name));
    return json_array_size(sites) > SITE_CHOICES_MAX;
}

/* The answer to the "site" question, checked against the sites the question offered (state.sites). */
static int site_answered(mcp_call_t *call, store_txn_t *t, json_t *answer, site_record_t *s)
{
    const char *action = json_string_value(json_object_get(answer, "action"));
    if (action == NULL || strcmp(action, "accept") != 0)
        return tools_check(call, t, 1, NULL, "site_id: no site was chosen (%s); nothing was done",
                           action != NULL && strcmp(action, "decline") == 0 ? "declined" : "cancelled");
    const char *id = json_string_value(json_object_get(json_object_get(answer, "content"), "site_id"));
    json_t *offered = json_object_get(mcp_call_state(call), "sites"), *v;
    size_t i;
    int listed = 0;
    json_array_foreach(offered, i, v)
        listed = listed || (id != NULL && json_is_string(v) && strcmp(json_string_value(v), id) == 0);
    if (tools_check(call, t, !listed, NULL, "site_id: the answer names no site that was offered; nothing was done") != 0)
        return -1;
    return tools_load_site(call, t, id, s);
}

/* Ends the call with an isError naming every site (name and id), so the model can pass one. */
static void list_sites(mcp_call_t *call, json_t *sites)
{
    char msg[600];
    size_t off = (size_t)snprintf(msg, sizeof(msg), "site_id: this workspace has several sites; pass site_id, one of:");
    json_t *v;
    size_t i;
    json_array_foreach(sites, i, v) {
        if (off < sizeof(msg))
            off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s %s (%s)", i ? "," : "",
                                    json_string_value(json_object_get(v, "name")), json_string_value(json_object_get(v, "id")));
    }
    if (off >= sizeof(msg) || json_array_size(sites) > SITE_CHOICES_MAX)
        tools_fail(call, "site_id: this workspace has many sites; pass site_id (sites.list shows them)");
    else
        tools_fail(call, "%s", msg);
}

int tools_site(mcp_call_t *call, store_txn_t *t, json_t *args, site_record_t *s, mcp_status_t *st)
{
    *st = MCP_DONE;
    json_t *id = json_object_get(args, "site_id"), *answer = mcp_call_input(call, "site");
    if (id != NULL)
        return tools_load_site(call, t, json_string_value(id), s);
    if (answer != NULL)
        return site_answered(call, t, answer, s);
    char k[64];
    size_t kl = shop_key(k, sizeof(k), tools_ws(call), 'S', NULL, NULL);
    json_t *sites = json_array();
    aly_err_t err;
    store_records_t r = {&record_site, s, choice_cb, NULL, sites};
    int rc = store_scan_records(t, DB_DATA, k, kl, NULL, 0, &r, &err);
    size_t n = json_array_size(sites);
    if (rc != 0 || n == 0) {
        json_decref(sites);
        return tools_check(call, t, rc != 0 ? -1 : 1, &err, "site_id: this workspace has no site yet (sites.create makes one)");
    }
    if (n == 1) {
        json_decref(sites);
        return 0; /* the scan left the only site in s */
    }
    store_abort(t);
    if (n > SITE_CHOICES_MAX || !mcp_call_client_can(call, "elicitation")) {
        list_sites(call, sites);
        json_decref(sites);
        return -1;
    }
    json_t *choices = json_array(), *ids = json_array(), *v;
    size_t i;
    json_array_foreach(sites, i, v) {
        json_array_append_new(choices,
                              json_pack("{s:O, s:O}", "const", json_object_get(v, "id"), "title", json_object_get(v, "name")));
        json_array_append(ids, json_object_get(v, "id"));
    }
    json_decref(sites);
    json_t *ask = json_pack("{s:s, s:{s:s, s:{s:s, s:{s:{s:s, s:s, s:o}}, s:[s]}}}", "method", "elicitation/create", "params",
                            "message", "Which site?", "requestedSchema", "type", "object", "properties", "site_id", "type",
                            "string", "title", "Site", "oneOf", choices, "required", "site_id");
    *st = mcp_call_input_required(call, json_pack("{s:o}", "site", ask), json_pack("{s:o}", "sites", ids));
    return -1;
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
    return tools_check(call, t, stale, NULL,
                       "expected_version: the %s is at version %llu, not %lld; nothing was written (get it again)", what,
                       (unsigned long long)version, (long long)json_integer_value(expected));
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
    if (rc == 0 &&
        shop_audit(t, tools_ws(call), mcp_call_principal(call)->id, ch->tool, ch->object, ch->before, ch->after, &own) != 0) {
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
        return txn_error(call, t, err);
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
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:o}", "id", s->id, "name", s->name, "domain", s->domain, "currency",
                     s->currency, "product_count", (json_int_t)s->products, "order_count", (json_int_t)s->orders, "version",
                     (json_int_t)s->version, "created_at", tools_time(s->created_ms), "updated_at", tools_time(s->updated_ms));
}

json_t *tools_product_json(const product_record_t *p, const char *currency)
{
    json_t *tags = json_array();
    for (uint64_t i = 0; i < p->n_tags; i++)
        json_array_append_new(tags, json_string(p->tags[i].tag));
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:s, s:o, s:I, s:o, s:o}", "id", p->id, "site_id", p->site, "title",
                     p->title, "sku", p->sku, "description", p->description, "price", tools_money(p->price, currency), "inventory",
                     (json_int_t)p->inventory, "status", p->status, "tags", tags, "version", (json_int_t)p->version, "created_at",
                     tools_time(p->created_ms), "updated_at", tools_time(p->updated_ms));
}

/* An order's JSON view, without the fields only some orders have. */
static json_t *order_json_base(const order_record_t *o)
{
    json_t *items = json_array();
    for (uint64_t i = 0; i < o->n_items; i++) {
        const line_item_t *it = &o->items[i];
        json_array_append_new(items,
                              json_pack("{s:s, s:s, s:I, s:o, s:o}", "product_id", it->product, "title", it->title, "quantity",
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

/* The view, and cancel_reason when orders.cancel was given one. */
json_t *tools_order_json(const order_record_t *o)
{
    json_t *j = order_json_base(o);
    if (o->cancel_reason[0] != '\0')
        json_object_set_new(j, "cancel_reason", json_string(o->cancel_reason));
    return j;
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

/*
 * products.list, products.get, products.create, products.update,
 * products.delete.  Creation may carry an idempotency key (same key and same
 * arguments: the same product again; same key, other arguments: refused);
 * update and delete may carry expected_version (optimistic concurrency: a
 * mismatch writes nothing).
 */
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aly/tools.h"
#include "aly/tools_schema.h"

/* The site named by args.site_id (see tools_load_site). */
static int load_site(mcp_call_t *call, store_txn_t *t, json_t *args, site_record_t *s)
{
    return tools_load_site(call, t, json_string_value(json_object_get(args, "site_id")), s);
}

typedef struct list_ctx {
    json_t *items;
    int limit, more;
    const char *status, *query, *currency;
    char last[ALY_ID_MAX];
} list_ctx_t;

static int contains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return n == 0;
}

static int list_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)key;
    list_ctx_t *c = vctx;
    product_record_t p;
    aly_err_t err;
    if (record_decode(&record_product, val->data, val->len, &p, &err) != 0)
        return -1;
    if ((c->status != NULL && strcmp(p.status, c->status) != 0) ||
        (c->query != NULL && !contains(p.title, c->query) && !contains(p.sku, c->query)))
        return 0;
    if ((int)json_array_size(c->items) == c->limit) {
        c->more = 1;
        return 1;
    }
    json_array_append_new(c->items, tools_product_json(&p, c->currency));
    snprintf(c->last, sizeof(c->last), "%s", p.id);
    return 0;
}

static mcp_status_t products_list(mcp_call_t *call, json_t *args)
{
    char after[ALY_ID_MAX], prefix[128], start[160];
    if (tools_cursor_in(args, "products", after, sizeof(after)) != 0)
        return tools_fail(call, "cursor: not a cursor from products.list; pass next_cursor back unchanged, or omit it");
    site_record_t s;
    store_txn_t t;
    aly_err_t err;
    if (tools_begin(call, 0, &t) != 0 || load_site(call, &t, args, &s) != 0)
        return MCP_DONE;
    size_t pl = shop_key(prefix, sizeof(prefix), tools_ws(call), 'P', s.id, "");
    size_t sl = after[0] ? shop_key(start, sizeof(start), tools_ws(call), 'P', s.id, after) : 0;
    list_ctx_t c = {json_array(), tools_limit(args), 0, json_string_value(json_object_get(args, "status")),
                    json_string_value(json_object_get(args, "query")), s.currency, ""};
    int rc = store_scan(&t, DB_DATA, prefix, pl, sl ? start : NULL, sl, list_cb, &c, &err);
    store_abort(&t);
    if (rc != 0) {
        json_decref(c.items);
        return tools_store_error(call, &err);
    }
    return tools_ok(call, json_pack("{s:s, s:o, s:o}", "site_id", s.id, "products", c.items, "next_cursor",
                                    c.more ? tools_cursor_out("products", c.last) : json_null()));
}

static mcp_status_t products_get(mcp_call_t *call, json_t *args)
{
    const char *pid = json_string_value(json_object_get(args, "product_id"));
    site_record_t s;
    product_record_t p;
    store_txn_t t;
    aly_err_t err;
    if (tools_begin(call, 0, &t) != 0 || load_site(call, &t, args, &s) != 0)
        return MCP_DONE;
    int rc = shop_product_get(&t, tools_ws(call), s.id, pid, &p, &err);
    store_abort(&t);
    if (rc != 0)
        return rc < 0 ? tools_store_error(call, &err) : tools_fail(call, "product_id: no product %s in site %s", pid, s.id);
    return tools_ok(call, tools_product_json(&p, s.currency));
}

/* Copies the optional fields present in args into p. */
static void apply(product_record_t *p, json_t *args)
{
    json_t *v;
    if ((v = json_object_get(args, "title")) != NULL)
        snprintf(p->title, sizeof(p->title), "%s", json_string_value(v));
    if ((v = json_object_get(args, "sku")) != NULL)
        snprintf(p->sku, sizeof(p->sku), "%s", json_string_value(v));
    if ((v = json_object_get(args, "description")) != NULL)
        snprintf(p->description, sizeof(p->description), "%s", json_string_value(v));
    if ((v = json_object_get(args, "status")) != NULL)
        snprintf(p->status, sizeof(p->status), "%s", json_string_value(v));
    if ((v = json_object_get(args, "price")) != NULL)
        p->price = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(args, "inventory")) != NULL)
        p->inventory = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(args, "tags")) != NULL) {
        p->n_tags = 0;
        size_t i;
        json_t *tag;
        json_array_foreach(v, i, tag) snprintf(p->tags[p->n_tags++].tag, sizeof(p->tags[0].tag), "%s", json_string_value(tag));
    }
}

/* The fingerprint of a create request: its arguments without the idempotency key, canonically serialised. */
static void request_hash(json_t *args, unsigned char out[32])
{
    json_t *copy = json_deep_copy(args);
    json_object_del(copy, "idempotency_key");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    SHA256((const unsigned char *)(text ? text : ""), text ? strlen(text) : 0, out);
    free(text);
    json_decref(copy);
}

static mcp_status_t products_create(mcp_call_t *call, json_t *args)
{
    site_record_t s;
    product_record_t p = {.version = 1};
    store_txn_t t;
    aly_err_t err;
    const char *ws = tools_ws(call), *idem = json_string_value(json_object_get(args, "idempotency_key"));
    char ik[200];
    size_t ikl = idem ? shop_key(ik, sizeof(ik), ws, 'I', idem, NULL) : 0;
    idempotency_record_t ir;
    if (tools_begin(call, 1, &t) != 0 || load_site(call, &t, args, &s) != 0)
        return MCP_DONE;
    if (idem != NULL) {
        int rc = shop_get(&t, ik, ikl, &record_idempotency, &ir, &err);
        if (rc < 0) {
            store_abort(&t);
            return tools_store_error(call, &err);
        }
        if (rc == 0) {
            unsigned char h[32];
            request_hash(args, h);
            if (memcmp(h, ir.request_hash, 32) != 0) {
                store_abort(&t);
                return tools_fail(call, "idempotency_key: already used for a different request; use a new key for a new product");
            }
            rc = shop_product_get(&t, ws, s.id, ir.product, &p, &err);
            store_abort(&t);
            if (rc != 0)
                return rc < 0 ? tools_store_error(call, &err)
                              : tools_fail(call, "idempotency_key: the product it created (%s) has since been deleted", ir.product);
            return tools_ok(call, tools_product_json(&p, s.currency));
        }
    }
    snprintf(p.site, sizeof(p.site), "%s", s.id);
    snprintf(p.status, sizeof(p.status), "draft");
    apply(&p, args);
    p.created_ms = p.updated_ms = aly_wall_ms();
    int taken = shop_sku_taken(&t, ws, s.id, p.sku, NULL, &err);
    if (taken != 0) {
        store_abort(&t);
        return taken < 0 ? tools_store_error(call, &err)
                         : tools_fail(call, "sku: %s is already used by another product of this site; skus are unique per site", p.sku);
    }
    if (store_new_id("prod_", p.id, sizeof(p.id), &err) != 0)
        goto fail;
    s.products++;
    if (shop_product_put(&t, ws, &p, NULL, &err) != 0 || shop_site_put(&t, ws, &s, &err) != 0 ||
        tools_audit(call, &t, "products.create", p.id, 0, p.version, &err) != 0)
        goto fail;
    if (idem != NULL) {
        request_hash(args, ir.request_hash);
        snprintf(ir.product, sizeof(ir.product), "%s", p.id);
        if (shop_put(&t, ik, ikl, &record_idempotency, &ir, &err) != 0)
            goto fail;
    }
    if (tools_commit(call, &t) != 0)
        return MCP_DONE;
    return tools_ok(call, tools_product_json(&p, s.currency));
fail:
    store_abort(&t);
    return tools_store_error(call, &err);
}

/* Loads site and product for update/delete and checks expected_version; completes call on failure. */
static int load_for_change(mcp_call_t *call, store_txn_t *t, json_t *args, site_record_t *s, product_record_t *p)
{
    const char *pid = json_string_value(json_object_get(args, "product_id"));
    json_t *expected = json_object_get(args, "expected_version");
    aly_err_t err;
    if (load_site(call, t, args, s) != 0)
        return -1;
    int rc = shop_product_get(t, tools_ws(call), s->id, pid, p, &err);
    if (rc != 0) {
        store_abort(t);
        if (rc < 0)
            tools_store_error(call, &err);
        else
            tools_fail(call, "product_id: no product %s in site %s", pid, s->id);
        return -1;
    }
    if (expected != NULL && (uint64_t)json_integer_value(expected) != p->version) {
        store_abort(t);
        tools_fail(call, "expected_version: the product is at version %llu, not %lld; nothing was written (get it again)",
                   (unsigned long long)p->version, (long long)json_integer_value(expected));
        return -1;
    }
    return 0;
}

static mcp_status_t products_update(mcp_call_t *call, json_t *args)
{
    static const char *const fields[] = {"title", "sku", "description", "status", "price", "inventory", "tags"};
    size_t i;
    for (i = 0; i < ALY_ARRAY_SIZE(fields) && json_object_get(args, fields[i]) == NULL; i++)
        ;
    if (i == ALY_ARRAY_SIZE(fields))
        return tools_fail(call, "arguments: give at least one field to change (title, sku, description, status, price, inventory, tags)");
    site_record_t s;
    product_record_t p;
    store_txn_t t;
    aly_err_t err;
    if (tools_begin(call, 1, &t) != 0 || load_for_change(call, &t, args, &s, &p) != 0)
        return MCP_DONE;
    char old_sku[sizeof(p.sku)];
    snprintf(old_sku, sizeof(old_sku), "%s", p.sku);
    uint64_t before = p.version;
    apply(&p, args);
    int taken = strcmp(old_sku, p.sku) != 0 ? shop_sku_taken(&t, tools_ws(call), s.id, p.sku, p.id, &err) : 0;
    if (taken != 0) {
        store_abort(&t);
        return taken < 0 ? tools_store_error(call, &err) : tools_fail(call, "sku: %s is already used by another product of this site", p.sku);
    }
    p.version++;
    p.updated_ms = aly_wall_ms();
    if (shop_product_put(&t, tools_ws(call), &p, old_sku, &err) != 0 ||
        tools_audit(call, &t, "products.update", p.id, before, p.version, &err) != 0) {
        store_abort(&t);
        return tools_store_error(call, &err);
    }
    if (tools_commit(call, &t) != 0)
        return MCP_DONE;
    return tools_ok(call, tools_product_json(&p, s.currency));
}

static mcp_status_t products_delete(mcp_call_t *call, json_t *args)
{
    site_record_t s;
    product_record_t p;
    store_txn_t t;
    aly_err_t err;
    if (tools_begin(call, 1, &t) != 0 || load_for_change(call, &t, args, &s, &p) != 0)
        return MCP_DONE;
    if (s.products > 0)
        s.products--;
    if (shop_product_delete(&t, tools_ws(call), &p, &err) != 0 || shop_site_put(&t, tools_ws(call), &s, &err) != 0 ||
        tools_audit(call, &t, "products.delete", p.id, p.version, 0, &err) != 0) {
        store_abort(&t);
        return tools_store_error(call, &err);
    }
    if (tools_commit(call, &t) != 0)
        return MCP_DONE;
    return tools_ok(call, json_pack("{s:s, s:s, s:b, s:I}", "site_id", s.id, "product_id", p.id, "deleted", 1, "version",
                                    (json_int_t)p.version));
}

#define PRODUCT_FIELDS                                                                                                          \
    "\"title\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":200},"                                                        \
    "\"sku\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9._-]{1,64}$\",\"description\":\"stock keeping unit, unique per site\"}," \
    "\"description\":{\"type\":\"string\",\"maxLength\":2000},"                                                                 \
    "\"price\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":100000000000,\"description\":\"minor units of the site's currency, e.g. 1999 = 19.99\"}," \
    "\"inventory\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":1000000000},"                                               \
    "\"status\":{\"type\":\"string\",\"enum\":[\"draft\",\"active\",\"archived\"]},"                                            \
    "\"tags\":{\"type\":\"array\",\"maxItems\":10,\"uniqueItems\":true,\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":32}}"

#define PRODUCT_OUT                                                                                                             \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"site_id\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"}," \
    "\"sku\":{\"type\":\"string\"},\"price\":" MONEY_OUT ",\"inventory\":{\"type\":\"integer\"},\"status\":{\"type\":\"string\"},"       \
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"version\":{\"type\":\"integer\"}},"                        \
    "\"required\":[\"id\",\"site_id\",\"title\",\"sku\",\"price\",\"status\",\"version\"]}"

const mcp_tool_desc_t tools_products[] = {
    {"products.list", "List products of a site",
     "List a site's products (its catalogue), optionally only one status or those whose title or sku contains query. "
     "Paged: pass next_cursor back as cursor until it is null.",
     SCOPE_READ_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"status\":{\"type\":\"string\",\"enum\":[\"draft\",\"active\",\"archived\"]},"
     "\"query\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100}," LIMIT_CURSOR "},\"required\":[\"site_id\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"products\":{\"type\":\"array\",\"items\":" PRODUCT_OUT "},"
     "\"next_cursor\":{\"type\":[\"string\",\"null\"]}},\"required\":[\"products\",\"next_cursor\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT | TOOL_CACHEABLE, products_list},
    {"products.get", "Get a product", "One product of a site, with price, inventory, status, tags and version.", SCOPE_READ_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"product_id\":" PRODUCT_ID "},\"required\":[\"site_id\",\"product_id\"],"
     "\"additionalProperties\":false}",
     PRODUCT_OUT, TOOL_READ_ONLY | TOOL_IDEMPOTENT | TOOL_CACHEABLE, products_get},
    {"products.create", "Create a product",
     "Add a product to a site. price is an integer in minor units of the site's currency. Pass an idempotency_key to make retries "
     "safe: the same key with the same arguments returns the product created the first time.",
     SCOPE_WRITE_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID "," PRODUCT_FIELDS ","
     "\"idempotency_key\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9._:-]{8,100}$\"}},"
     "\"required\":[\"site_id\",\"title\",\"price\",\"sku\"],\"additionalProperties\":false}",
     PRODUCT_OUT, 0, products_create},
    {"products.update", "Update a product",
     "Change some fields of a product; fields not given stay as they are. Pass expected_version (from products.get) to refuse the "
     "change when the product changed meanwhile.",
     SCOPE_WRITE_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"product_id\":" PRODUCT_ID "," PRODUCT_FIELDS ","
     "\"expected_version\":{\"type\":\"integer\",\"minimum\":1}},\"required\":[\"site_id\",\"product_id\"],\"additionalProperties\":false}",
     PRODUCT_OUT, 0, products_update},
    {"products.delete", "Delete a product",
     "Delete a product from a site for good. Pass expected_version to refuse the deletion when the product changed meanwhile.",
     SCOPE_WRITE_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"product_id\":" PRODUCT_ID ","
     "\"expected_version\":{\"type\":\"integer\",\"minimum\":1}},\"required\":[\"site_id\",\"product_id\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"product_id\":{\"type\":\"string\"},\"deleted\":{\"type\":\"boolean\"},"
     "\"version\":{\"type\":\"integer\"}},\"required\":[\"product_id\",\"deleted\"]}",
     TOOL_DESTRUCTIVE, products_delete},
};
const size_t tools_products_count = sizeof(tools_products) / sizeof(tools_products[0]);

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

typedef struct list_ctx {
    const char *status, *query, *currency;
} list_ctx_t;

static int contains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return 1;
    return n == 0;
}

static int list_item(void *vctx, const store_val_t *key, const void *rec, json_t **out, aly_err_t *err)
{
    (void)key;
    (void)err;
    const list_ctx_t *c = vctx;
    const product_record_t *p = rec;
    if ((c->status != NULL && strcmp(p->status, c->status) != 0) ||
        (c->query != NULL && !contains(p->title, c->query) && !contains(p->sku, c->query)))
        return 0;
    if (out != NULL)
        *out = tools_product_json(p, c->currency);
    return 1;
}

static mcp_status_t products_list(mcp_call_t *call, json_t *args)
{
    tools_page_t pg;
    site_record_t s;
    store_txn_t t;
    mcp_status_t st = MCP_DONE;
    if (tools_page_in(call, args, "products", &pg) != 0 || tools_begin(call, 0, &t) != 0 ||
        tools_site(call, &t, args, &s, &st) != 0)
        return st;
    product_record_t p;
    list_ctx_t c = {json_string_value(json_object_get(args, "status")), json_string_value(json_object_get(args, "query")),
                    s.currency};
    static const char *const filters[] = {"status", "query", NULL};
    tools_list_t l = {.kind = "products",
                      .type = 'P',
                      .site = s.id,
                      .record = &record_product,
                      .rec = &p,
                      .item = list_item,
                      .ctx = &c,
                      .args = args,
                      .filters = filters};
    return tools_list(call, &t, &pg, &l, json_pack("{s:s}", "site_id", s.id));
}

static mcp_status_t products_get(mcp_call_t *call, json_t *args)
{
    site_record_t s;
    product_record_t p;
    store_txn_t t;
    mcp_status_t st = MCP_DONE;
    if (tools_begin(call, 0, &t) != 0 || tools_site(call, &t, args, &s, &st) != 0 ||
        tools_load_product(call, &t, &s, json_string_value(json_object_get(args, "product_id")), &p) != 0)
        return st;
    store_abort(&t);
    return tools_ok(call, tools_product_json(&p, s.currency));
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

/* A retried create: the product the key created the first time, if the arguments are the same.  Ends t, completes call. */
static mcp_status_t replay(mcp_call_t *call, store_txn_t *t, json_t *args, const site_record_t *s, const idempotency_record_t *ir)
{
    unsigned char h[32];
    product_record_t p;
    aly_err_t err;
    request_hash(args, h);
    if (tools_check(call, t, memcmp(h, ir->request_hash, 32) != 0, NULL,
                    "idempotency_key: already used for a different request; use a new key for a new product") != 0 ||
        tools_check(call, t, shop_product_get(t, tools_ws(call), s->id, ir->product, &p, &err), &err,
                    "idempotency_key: the product it created (%s) has since been deleted", ir->product) != 0)
        return MCP_DONE;
    store_abort(t);
    return tools_ok(call, tools_product_json(&p, s->currency));
}

/* Refuses (ending t) a sku that another product of the site already has. */
static int sku_free(mcp_call_t *call, store_txn_t *t, const product_record_t *p, const char *except, const char *hint)
{
    aly_err_t err;
    return tools_check(call, t, shop_sku_taken(t, tools_ws(call), p->site, p->sku, except, &err), &err,
                       "sku: %s is already used by another product of this site%s", p->sku, hint);
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
    mcp_status_t st = MCP_DONE;
    if (tools_begin(call, 1, &t) != 0 || tools_site(call, &t, args, &s, &st) != 0)
        return st;
    if (idem != NULL) {
        int found = shop_get(&t, ik, ikl, &record_idempotency, &ir, &err);
        if (found == 0)
            return replay(call, &t, args, &s, &ir);
        if (found < 0) {
            store_abort(&t);
            return tools_store_error(call, &err);
        }
    }
    snprintf(p.site, sizeof(p.site), "%s", s.id);
    snprintf(p.status, sizeof(p.status), "draft");
    const char *unfit = tools_product_apply(&p, args);
    if (tools_check(call, &t, unfit != NULL, NULL, "%s: too long to store; nothing was written", unfit ? unfit : "") != 0)
        return MCP_DONE;
    p.created_ms = p.updated_ms = aly_wall_ms();
    if (sku_free(call, &t, &p, NULL, "; skus are unique per site") != 0)
        return MCP_DONE;
    s.products++;
    int rc = store_new_id("prod_", p.id, sizeof(p.id), &err) != 0 || shop_product_put(&t, ws, &p, NULL, &err) != 0 ||
             shop_site_put(&t, ws, &s, &err) != 0;
    if (rc == 0 && idem != NULL) {
        request_hash(args, ir.request_hash);
        snprintf(ir.product, sizeof(ir.product), "%s", p.id);
        rc = shop_put(&t, ik, ikl, &record_idempotency, &ir, &err);
    }
    return tools_finish(call, &t, rc, &err, &(tools_change_t){"products.create", p.id, 0, p.version},
                        tools_product_json(&p, s.currency));
}

/*
 * Begins the write of update (write 1) or delete (TOOLS_WRITE_FREES): site and
 * product loaded, expected_version checked; on failure call is completed
 * or (*st MCP_PENDING) waits for the client to pick the site.
 */
static int begin_change(mcp_call_t *call, int write, store_txn_t *t, json_t *args, site_record_t *s, product_record_t *p,
                        mcp_status_t *st)
{
    *st = MCP_DONE;
    if (tools_begin(call, write, t) != 0)
        return -1;
    if (tools_site(call, t, args, s, st) != 0 ||
        tools_load_product(call, t, s, json_string_value(json_object_get(args, "product_id")), p) != 0)
        return -1;
    return tools_expect_version(call, t, args, "product", p->version);
}

static mcp_status_t products_update(mcp_call_t *call, json_t *args)
{
    static const char *const fields[] = {"title", "sku", "description", "status", "price", "inventory", "tags"};
    size_t i;
    for (i = 0; i < ALY_ARRAY_SIZE(fields) && json_object_get(args, fields[i]) == NULL; i++)
        ;
    if (i == ALY_ARRAY_SIZE(fields))
        return tools_fail(call,
                          "arguments: give at least one field to change (title, sku, description, status, price, inventory, tags)");
    site_record_t s;
    product_record_t p;
    store_txn_t t;
    mcp_status_t st;
    if (begin_change(call, 1, &t, args, &s, &p, &st) != 0)
        return st;
    char old_sku[sizeof(p.sku)];
    snprintf(old_sku, sizeof(old_sku), "%s", p.sku);
    uint64_t before = p.version;
    const char *unfit = tools_product_apply(&p, args);
    if (tools_check(call, &t, unfit != NULL, NULL, "%s: too long to store; nothing was written", unfit ? unfit : "") != 0)
        return MCP_DONE;
    if (strcmp(old_sku, p.sku) != 0 && sku_free(call, &t, &p, p.id, "") != 0)
        return MCP_DONE;
    p.version++;
    p.updated_ms = aly_wall_ms();
    aly_err_t err;
    int rc = shop_product_put(&t, tools_ws(call), &p, old_sku, &err);
    return tools_finish(call, &t, rc, &err, &(tools_change_t){"products.update", p.id, before, p.version},
                        tools_product_json(&p, s.currency));
}

static mcp_status_t products_delete(mcp_call_t *call, json_t *args)
{
    site_record_t s;
    product_record_t p;
    store_txn_t t;
    mcp_status_t st;
    if (begin_change(call, TOOLS_WRITE_FREES, &t, args, &s, &p, &st) != 0)
        return st;
    if (s.products > 0)
        s.products--;
    aly_err_t err;
    int rc = shop_product_delete(&t, tools_ws(call), &p, &err) != 0 || shop_site_put(&t, tools_ws(call), &s, &err) != 0;
    return tools_finish(call, &t, rc, &err, &(tools_change_t){"products.delete", p.id, p.version, 0},
                        json_pack("{s:s, s:s, s:b, s:I}", "site_id", s.id, "product_id", p.id, "deleted", 1, "version",
                                  (json_int_t)p.version));
}

#define PRODUCT_OUT                                                                                                                        \
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},\"site_id\":{\"type\":\"string\"},\"title\":{\"type\":\"string\"}," \
    "\"sku\":{\"type\":\"string\"},\"price\":" MONEY_OUT ",\"inventory\":{\"type\":\"integer\"},\"status\":{\"type\":\"string\"},"         \
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},\"version\":{\"type\":\"integer\"}},"                                   \
    "\"required\":[\"id\",\"site_id\",\"title\",\"sku\",\"price\",\"status\",\"version\"]}"

const mcp_tool_desc_t tools_products[] = {
    {"products.list", "List products of a site",
     "List a site's products (its catalogue), optionally only one status or those whose title or sku contains query. "
     "Paged: pass next_cursor back as cursor until it is null.",
     SCOPE_READ_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG ",\"status\":" PRODUCT_STATUS_SCHEMA ","
     "\"query\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100}," LIMIT_CURSOR "},\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"products\":{\"type\":\"array\",\"items\":" PRODUCT_OUT
     "},"
     "\"next_cursor\":{\"type\":[\"string\",\"null\"]}},\"required\":[\"products\",\"next_cursor\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT, products_list, TOOL_CACHED},
    {"products.get", "Get a product", "One product of a site, with price, inventory, status, tags and version.", SCOPE_READ_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG ",\"product_id\":" PRODUCT_ID "},\"required\":[\"product_id\"],"
     "\"additionalProperties\":false}",
     PRODUCT_OUT, TOOL_READ_ONLY | TOOL_IDEMPOTENT, products_get, TOOL_CACHED},
    {"products.create", "Create a product",
     "Add a product to a site. price is an integer in minor units of the site's currency. Pass an idempotency_key to make retries "
     "safe: the same key with the same arguments returns the product created the first time.",
     SCOPE_WRITE_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG "," PRODUCT_FIELDS ","
     "\"idempotency_key\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9._:-]{8,100}$\"}},"
     "\"required\":[\"title\",\"price\",\"sku\"],\"additionalProperties\":false}",
     PRODUCT_OUT, 0, products_create, 0},
    {"products.update", "Update a product",
     "Change some fields of a product; fields not given stay as they are. Pass expected_version (from products.get) to refuse the "
     "change when the product changed meanwhile.",
     SCOPE_WRITE_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG ",\"product_id\":" PRODUCT_ID "," PRODUCT_FIELDS
     "," EXPECTED_VERSION "},\"required\":[\"product_id\"],\"additionalProperties\":false}",
     PRODUCT_OUT, 0, products_update, 0},
    {"products.delete", "Delete a product",
     "Delete a product from a site for good. Pass expected_version to refuse the deletion when the product changed meanwhile.",
     SCOPE_WRITE_CONTENT,
     "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG ",\"product_id\":" PRODUCT_ID "," EXPECTED_VERSION
     "},\"required\":[\"product_id\"],\"additionalProperties\":false}",
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"product_id\":{\"type\":\"string\"},\"deleted\":{\"type\":\"boolean\"},"
     "\"version\":{\"type\":\"integer\"}},\"required\":[\"product_id\",\"deleted\"]}",
     TOOL_DESTRUCTIVE, products_delete, 0},
};
const size_t tools_products_count = sizeof(tools_products) / sizeof(tools_products[0]);

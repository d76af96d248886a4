/*
 * The workspace data model of aly/shop.h: record tables, key layout and the
 * typed reads and writes the tools and alyctl share.
 */
#include "aly/shop.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const record_field_t site_fields[] = {
    RF_STR_(site_record_t, id, "id", 0),
    RF_STR_(site_record_t, name, "name", 0),
    RF_STR_(site_record_t, domain, "domain", 0),
    RF_STR_(site_record_t, currency, "currency", 0),
    RF_U64_(site_record_t, created_ms, "created", 0),
    RF_U64_(site_record_t, updated_ms, "updated", 0),
    RF_U64_(site_record_t, version, "version", 0),
    RF_U64_(site_record_t, products, "products", 0),
    RF_U64_(site_record_t, orders, "orders", 0),
};
const record_type_t record_site = {"site", 1, site_fields, ALY_ARRAY_SIZE(site_fields)};

static const record_field_t tag_fields[] = {RF_STR_(tag_item_t, tag, "tag", 0)};
static const record_type_t record_tag = {"tag", 1, tag_fields, ALY_ARRAY_SIZE(tag_fields)};

static const record_field_t product_fields[] = {
    RF_STR_(product_record_t, id, "id", 0),
    RF_STR_(product_record_t, site, "site", 0),
    RF_STR_(product_record_t, title, "title", 0),
    RF_STR_(product_record_t, sku, "sku", 0),
    RF_STR_(product_record_t, description, "description", 1),
    RF_STR_(product_record_t, status, "status", 0),
    RF_U64_(product_record_t, price, "price", 0),
    RF_U64_(product_record_t, inventory, "inventory", 0),
    RF_U64_(product_record_t, version, "version", 0),
    RF_U64_(product_record_t, created_ms, "created", 0),
    RF_U64_(product_record_t, updated_ms, "updated", 0),
    RF_LIST_(product_record_t, tags, "tags", n_tags, record_tag),
};
const record_type_t record_product = {"product", 1, product_fields, ALY_ARRAY_SIZE(product_fields)};

static const record_field_t item_fields[] = {
    RF_STR_(line_item_t, product, "product", 0),
    RF_STR_(line_item_t, title, "title", 0),
    RF_U64_(line_item_t, quantity, "quantity", 0),
    RF_U64_(line_item_t, unit_price, "unit_price", 0),
};
static const record_type_t record_item = {"item", 1, item_fields, ALY_ARRAY_SIZE(item_fields)};

static const record_field_t order_fields[] = {
    RF_STR_(order_record_t, id, "id", 0),
    RF_STR_(order_record_t, site, "site", 0),
    RF_STR_(order_record_t, customer_name, "customer_name", 1),
    RF_STR_(order_record_t, customer_email, "customer_email", 1),
    RF_STR_(order_record_t, status, "status", 0),
    RF_STR_(order_record_t, currency, "currency", 0),
    RF_STR_(order_record_t, carrier, "carrier", 1),
    RF_STR_(order_record_t, tracking, "tracking", 1),
    RF_STR_(order_record_t, cancel_reason, "cancel_reason", 1),
    RF_U64_(order_record_t, total, "total", 0),
    RF_U64_(order_record_t, created_ms, "created", 0),
    RF_U64_(order_record_t, paid_ms, "paid", 1),
    RF_U64_(order_record_t, fulfilled_ms, "fulfilled", 1),
    RF_U64_(order_record_t, cancelled_ms, "cancelled", 1),
    RF_U64_(order_record_t, version, "version", 0),
    RF_LIST_(order_record_t, items, "items", n_items, record_item),
};
const record_type_t record_order = {"order", 1, order_fields, ALY_ARRAY_SIZE(order_fields)};

static const record_field_t audit_fields[] = {
    RF_STR_(audit_record_t, workspace, "ws", 0),
    RF_STR_(audit_record_t, principal, "principal", 0),
    RF_STR_(audit_record_t, tool, "tool", 0),
    RF_STR_(audit_record_t, object, "object", 0),
    RF_U64_(audit_record_t, at_ms, "at", 0),
    RF_U64_(audit_record_t, before_version, "before", 1),
    RF_U64_(audit_record_t, after_version, "after", 1),
};
const record_type_t record_audit = {"audit", 1, audit_fields, ALY_ARRAY_SIZE(audit_fields)};

static const record_field_t idempotency_fields[] = {
    RF_BIN_(idempotency_record_t, request_hash, "hash"),
    RF_STR_(idempotency_record_t, product, "product", 0),
};
const record_type_t record_idempotency = {"idem", 1, idempotency_fields, ALY_ARRAY_SIZE(idempotency_fields)};

size_t shop_key(char *buf, size_t len, const char *ws, char kind, const char *a, const char *b)
{
    int n;
    if (a == NULL)
        n = snprintf(buf, len, "%s/%c/", ws, kind);
    else if (b == NULL)
        n = snprintf(buf, len, "%s/%c/%s", ws, kind, a);
    else
        n = snprintf(buf, len, "%s/%c/%s/%s", ws, kind, a, b);
    return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

int shop_get(store_txn_t *t, const char *key, size_t klen, const record_type_t *type, void *rec, aly_err_t *err)
{
    /* klen 0 is shop_key()'s "too long for any record": nothing is stored under it. */
    if (klen == 0)
        return 1;
    return store_get_record(t, DB_DATA, key, klen, type, rec, err);
}

int shop_put(store_txn_t *t, const char *key, size_t klen, const record_type_t *type, const void *rec, aly_err_t *err)
{
    if (klen == 0)
        return aly_errf(err, "record key too long");
    return store_put_record(t, DB_DATA, key, klen, type, rec, 0, err) == 0 ? 0 : -1;
}

int shop_site_get(store_txn_t *t, const char *ws, const char *site, site_record_t *out, aly_err_t *err)
{
    char k[128];
    return shop_get(t, k, shop_key(k, sizeof(k), ws, 'S', site, NULL), &record_site, out, err);
}

int shop_site_put(store_txn_t *t, const char *ws, const site_record_t *s, aly_err_t *err)
{
    char k[128];
    return shop_put(t, k, shop_key(k, sizeof(k), ws, 'S', s->id, NULL), &record_site, s, err);
}

int shop_product_get(store_txn_t *t, const char *ws, const char *site, const char *product, product_record_t *out, aly_err_t *err)
{
    char k[160];
    return shop_get(t, k, shop_key(k, sizeof(k), ws, 'P', site, product), &record_product, out, err);
}

int shop_sku_taken(store_txn_t *t, const char *ws, const char *site, const char *sku, const char *except, aly_err_t *err)
{
    char k[200];
    store_val_t v;
    size_t kl = shop_key(k, sizeof(k), ws, 'K', site, sku);
    int rc = kl ? store_get(t, DB_DATA, k, kl, &v, err) : 1;
    if (rc != 0)
        return rc == 1 ? 0 : -1;
    return !(except != NULL && v.len == strlen(except) && memcmp(v.data, except, v.len) == 0);
}

int shop_product_put(store_txn_t *t, const char *ws, const product_record_t *p, const char *old_sku, aly_err_t *err)
{
    char k[200];
    if (old_sku != NULL && strcmp(old_sku, p->sku) != 0 &&
        store_del(t, DB_DATA, k, shop_key(k, sizeof(k), ws, 'K', p->site, old_sku), err) < 0)
        return -1;
    size_t kl = shop_key(k, sizeof(k), ws, 'K', p->site, p->sku);
    if (kl == 0)
        return aly_errf(err, "cannot index sku %s: the key is too long", p->sku);
    /* The store's own refusal (over quota, full) stays as it is: the client is told the cause. */
    if (store_put(t, DB_DATA, k, kl, p->id, strlen(p->id), 0, err) != 0)
        return -1;
    return shop_put(t, k, shop_key(k, sizeof(k), ws, 'P', p->site, p->id), &record_product, p, err);
}

int shop_product_delete(store_txn_t *t, const char *ws, const product_record_t *p, aly_err_t *err)
{
    char k[200];
    if (store_del(t, DB_DATA, k, shop_key(k, sizeof(k), ws, 'K', p->site, p->sku), err) < 0 ||
        store_del(t, DB_DATA, k, shop_key(k, sizeof(k), ws, 'P', p->site, p->id), err) < 0)
        return -1;
    return 0;
}

int shop_order_get(store_txn_t *t, const char *ws, const char *order, order_record_t *out, aly_err_t *err)
{
    char k[128];
    return shop_get(t, k, shop_key(k, sizeof(k), ws, 'O', order, NULL), &record_order, out, err);
}

int shop_order_put(store_txn_t *t, const char *ws, const order_record_t *o, int is_new, aly_err_t *err)
{
    char k[160];
    if (is_new) {
        char ts[64];
        snprintf(ts, sizeof(ts), "%016llx/%s", (unsigned long long)o->created_ms, o->id);
        size_t kl = shop_key(k, sizeof(k), ws, 'T', o->site, ts);
        if (kl == 0)
            return aly_errf(err, "cannot index order %s: the key is too long", o->id);
        if (store_put(t, DB_DATA, k, kl, "", 0, 0, err) != 0)
            return -1;
    }
    return shop_put(t, k, shop_key(k, sizeof(k), ws, 'O', o->id, NULL), &record_order, o, err);
}

int shop_visits_add(store_txn_t *t, const char *ws, const char *site, const char *date, uint64_t n, aly_err_t *err)
{
    char k[160];
    store_val_t v;
    uint64_t cur = 0;
    size_t kl = shop_key(k, sizeof(k), ws, 'V', site, date);
    int rc = kl ? store_get(t, DB_DATA, k, kl, &v, err) : -1;
    if (rc < 0)
        return -1;
    if (rc == 0 && v.len == sizeof(cur))
        memcpy(&cur, v.data, sizeof(cur));
    cur += n;
    return store_put(t, DB_DATA, k, kl, &cur, sizeof(cur), 0, err) == 0 ? 0 : -1;
}

int shop_audit(store_txn_t *t, const char *ws, const char *principal, const char *tool, const char *object, uint64_t before_version,
               uint64_t after_version, aly_err_t *err)
{
    /*
     * The key is the time, then a salt drawn by each process, then that
     * process's sequence: unique across the workers of every host that shares
     * the store, and in time order.  The salt is random, not the pid: two
     * hosts' workers (containers) have the same pids, and one host's pids
     * repeat their low bits once pid_max passes 65536.
     */
    static pid_t salted_by;
    static uint64_t salt;
    static uint32_t seq;
    audit_record_t a = {.at_ms = aly_wall_ms(), .before_version = before_version, .after_version = after_version};
    if (RECORD_SET_STR(a.workspace, ws) != 0 || RECORD_SET_STR(a.principal, principal) != 0 || RECORD_SET_STR(a.tool, tool) != 0 ||
        RECORD_SET_STR(a.object, object) != 0)
        return aly_errf(err, "audit record of %s: a field is too long to store", tool);
    if (salted_by != getpid()) {
        if (RAND_bytes((unsigned char *)&salt, sizeof(salt)) != 1)
            return aly_errf(err, "audit record of %s: no random bytes for its key", tool);
        salted_by = getpid();
        seq = 0;
    }
    char suffix[48], k[128];
    snprintf(suffix, sizeof(suffix), "%016llx%016llx%08x", (unsigned long long)a.at_ms, (unsigned long long)salt, ++seq);
    return shop_put(t, k, shop_key(k, sizeof(k), ws, 'A', suffix, NULL), &record_audit, &a, err);
}

typedef struct prune_ctx {
    uint64_t cutoff;
    size_t plen; /* of "<ws>/A/": the key's time starts there */
    unsigned n, max;
    char keys[8][128];
    size_t lens[8];
} prune_ctx_t;

/* Audit keys are "<ws>/A/<ms:16x><salt:16x><seq:8x>" (<pid:4x> in older ones): the time is read from the key, no record decoded. */
static int prune_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)val;
    prune_ctx_t *c = vctx;
    const char *k = key->data;
    uint64_t ms = 0;
    if (key->len < c->plen + 16 || key->len > sizeof(c->keys[0]))
        return 1;
    for (size_t i = c->plen; i < c->plen + 16; i++) {
        int d = k[i] >= '0' && k[i] <= '9' ? k[i] - '0' : k[i] >= 'a' && k[i] <= 'f' ? k[i] - 'a' + 10 : -1;
        if (d < 0)
            return 1;
        ms = ms << 4 | (uint64_t)d;
    }
    if (ms >= c->cutoff)
        return 1; /* in time order: everything after is newer */
    memcpy(c->keys[c->n], k, key->len);
    c->lens[c->n++] = key->len;
    return c->n == c->max;
}

int shop_audit_prune(store_txn_t *t, const char *ws, uint64_t cutoff_ms, unsigned max, aly_err_t *err)
{
    prune_ctx_t c = {.cutoff = cutoff_ms, .max = max < 8 ? max : 8};
    char prefix[128];
    size_t pl = shop_key(prefix, sizeof(prefix), ws, 'A', NULL, NULL);
    c.plen = pl;
    if (c.max == 0 || pl == 0 || store_scan(t, DB_DATA, prefix, pl, NULL, 0, prune_cb, &c, err) != 0)
        return c.max == 0 || pl == 0 ? 0 : -1;
    for (unsigned i = 0; i < c.n; i++)
        if (store_del(t, DB_DATA, c.keys[i], c.lens[i], err) < 0)
            return -1;
    return 0;
}

void shop_date(uint64_t ms, char out[11])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    /* Years outside 0..9999 cannot come from a uint64 of milliseconds we accept; clamp for the formatter. */
    int y = tm.tm_year + 1900;
    snprintf(out, 11, "%04u-%02u-%02u",
             (unsigned)(y < 0      ? 0
                        : y > 9999 ? 9999
                                   : y) %
                 10000,
             (unsigned)(tm.tm_mon + 1) % 100, (unsigned)tm.tm_mday % 100);
}

int64_t shop_date_ms(const char *date)
{
    int y, m, d;
    char tail;
    if (strlen(date) != 10 || sscanf(date, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || m < 1 || m > 12 || d < 1 || d > 31)
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    char back[11];
    shop_date((uint64_t)t * 1000, back);
    if (strcmp(back, date) != 0)
        return -1; /* 2026-02-30 and friends */
    return (int64_t)t * 1000;
}

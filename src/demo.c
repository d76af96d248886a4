/*
 * Demo data and JSON-lines import (aly/demo.h), written through the same
 * shop_* functions as the tools, so seeded and imported data obey the same
 * invariants (sku index, order time index, site counters).
 */
#include "aly/demo.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "aly/shop.h"

#define DAY_MS 86400000ULL

/* xorshift64*: small, fast, and the same sequence on every machine for a seed. */
static uint64_t next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static unsigned pick(uint64_t *s, unsigned n)
{
    return (unsigned)(next(s) % n);
}

static void make_id(uint64_t *s, const char *prefix, char *out, size_t len)
{
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t pl = strlen(prefix);
    snprintf(out, len, "%s", prefix);
    for (size_t i = 0; i < 20 && pl + i + 1 < len; i++) {
        out[pl + i] = b62[pick(s, 62)];
        out[pl + i + 1] = '\0';
    }
}

static const char *const site_names[] = {"Northwind Outfitters", "Blue Harbor Coffee", "Atlas Home Goods", "Juniper Books",
                                         "Copperleaf Garden", "Summit Cycles", "Luna Ceramics", "Maple & Pine"};
static const char *const site_domains[] = {"northwind.example", "blueharbor.example", "atlashome.example", "juniperbooks.example",
                                           "copperleaf.example", "summitcycles.example", "lunaceramics.example", "maplepine.example"};
static const char *const currencies[] = {"EUR", "USD", "GBP"};
static const char *const adjectives[] = {"Classic", "Organic", "Handmade", "Everyday", "Premium", "Vintage", "Compact", "Deluxe"};
static const char *const nouns[] = {"Mug", "Tote Bag", "Notebook", "Candle", "Blanket", "Water Bottle", "Plant Pot", "Scarf",
                                    "Backpack", "Coffee Beans", "Lamp", "Cutting Board"};
static const char *const first[] = {"Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas"};
static const char *const last[] = {"Lovelace", "Okafor", "Martin", "Patel", "Rossi", "Haddad", "Kim", "Tanaka", "Silva", "Berg"};
static const char *const tags[] = {"gift", "sale", "new", "eco", "bestseller", "limited"};

int demo_seed(store_t *st, const char *ws, const demo_opts_t *o, demo_counts_t *out, aly_err_t *err)
{
    if (o->sites == 0 || o->sites > 50 || o->products > 100000 || o->orders > 1000000 || o->days == 0 || o->days > 3650)
        return aly_errf(err, "demo sizes out of range (sites 1-50, products <= 100000, orders <= 1000000, days 1-3650)");
    uint64_t s = o->seed ? o->seed : 42;
    store_txn_t t;
    store_val_t v;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    if (store_get(&t, DB_WORKSPACES, ws, strlen(ws), &v, err) != 0) {
        store_abort(&t);
        return aly_errf(err, "no workspace %s (alyctl workspace list)", ws);
    }
    memset(out, 0, sizeof(*out));
    uint64_t now = aly_wall_ms(), today = now - now % DAY_MS;
    site_record_t *sites = calloc(o->sites, sizeof(*sites));
    product_record_t **products = calloc(o->sites, sizeof(*products));
    unsigned *n_products = calloc(o->sites, sizeof(unsigned));
    if (sites == NULL || products == NULL || n_products == NULL)
        abort();
    int rc = 0;
    /* Uneven catalogues (site i gets a share proportional to i+1), so "which site has the most products" has an answer. */
    unsigned weight_sum = o->sites * (o->sites + 1) / 2, assigned = 0;
    for (unsigned i = 0; i < o->sites && rc == 0; i++) {
        site_record_t *si = &sites[i];
        make_id(&s, "site_", si->id, sizeof(si->id));
        snprintf(si->name, sizeof(si->name), "%s", site_names[i % ALY_ARRAY_SIZE(site_names)]);
        snprintf(si->domain, sizeof(si->domain), "%s%s", i >= ALY_ARRAY_SIZE(site_domains) ? "x" : "",
                 site_domains[i % ALY_ARRAY_SIZE(site_domains)]);
        snprintf(si->currency, sizeof(si->currency), "%s", currencies[i % ALY_ARRAY_SIZE(currencies)]);
        si->created_ms = si->updated_ms = today - (uint64_t)o->days * DAY_MS;
        si->version = 1;
        n_products[i] = i + 1 == o->sites ? o->products - assigned : o->products * (i + 1) / weight_sum;
        assigned += n_products[i];
        products[i] = calloc(n_products[i] ? n_products[i] : 1, sizeof(product_record_t));
        if (products[i] == NULL)
            abort();
        for (unsigned k = 0; k < n_products[i] && rc == 0; k++) {
            product_record_t *p = &products[i][k];
            make_id(&s, "prod_", p->id, sizeof(p->id));
            snprintf(p->site, sizeof(p->site), "%s", si->id);
            snprintf(p->title, sizeof(p->title), "%s %s %u", adjectives[pick(&s, ALY_ARRAY_SIZE(adjectives))],
                     nouns[pick(&s, ALY_ARRAY_SIZE(nouns))], k + 1);
            snprintf(p->sku, sizeof(p->sku), "SKU-%u-%05u", i + 1, k + 1);
            snprintf(p->description, sizeof(p->description), "Demo product %u of %s.", k + 1, si->name);
            static const char *const statuses[] = {"active", "active", "active", "draft", "archived"};
            snprintf(p->status, sizeof(p->status), "%s", statuses[pick(&s, 5)]);
            p->price = 500 + pick(&s, 20000);
            p->inventory = pick(&s, 500);
            p->n_tags = pick(&s, 3);
            for (uint64_t g = 0; g < p->n_tags; g++)
                snprintf(p->tags[g].tag, sizeof(p->tags[g].tag), "%s", tags[(pick(&s, 2) + g * 2) % ALY_ARRAY_SIZE(tags)]);
            p->version = 1;
            p->created_ms = p->updated_ms = si->created_ms;
            si->products++;
            rc = shop_product_put(&t, ws, p, NULL, err);
            out->products++;
        }
        out->sites++;
    }
    for (unsigned n = 0; n < o->orders && rc == 0; n++) {
        unsigned i = pick(&s, o->sites);
        if (n_products[i] == 0)
            continue;
        order_record_t ord = {.version = 1};
        make_id(&s, "ord_", ord.id, sizeof(ord.id));
        snprintf(ord.site, sizeof(ord.site), "%s", sites[i].id);
        snprintf(ord.currency, sizeof(ord.currency), "%s", sites[i].currency);
        const char *fn = first[pick(&s, ALY_ARRAY_SIZE(first))], *ln = last[pick(&s, ALY_ARRAY_SIZE(last))];
        snprintf(ord.customer_name, sizeof(ord.customer_name), "%s %s", fn, ln);
        snprintf(ord.customer_email, sizeof(ord.customer_email), "%c.%s%u@example.com", fn[0] | 0x20, ln, pick(&s, 100));
        for (char *c = ord.customer_email; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c |= 0x20;
        ord.created_ms = today - (uint64_t)pick(&s, o->days) * DAY_MS + pick(&s, (unsigned)DAY_MS);
        if (ord.created_ms > now)
            ord.created_ms = now - pick(&s, 3600000);
        ord.n_items = 1 + pick(&s, 3);
        for (uint64_t k = 0; k < ord.n_items; k++) {
            const product_record_t *p = &products[i][pick(&s, n_products[i])];
            line_item_t *it = &ord.items[k];
            snprintf(it->product, sizeof(it->product), "%s", p->id);
            snprintf(it->title, sizeof(it->title), "%s", p->title);
            it->quantity = 1 + pick(&s, 3);
            it->unit_price = p->price;
            ord.total += it->quantity * it->unit_price;
        }
        unsigned r = pick(&s, 100);
        const char *status = r < 10 ? "pending" : r < 35 ? "paid" : r < 90 ? "fulfilled" : "cancelled";
        snprintf(ord.status, sizeof(ord.status), "%s", status);
        if (r >= 10)
            ord.paid_ms = ord.created_ms + 60000;
        if (strcmp(status, "fulfilled") == 0) {
            static const char *const carriers[] = {"DHL", "UPS", "FedEx", "La Poste"};
            snprintf(ord.carrier, sizeof(ord.carrier), "%s", carriers[pick(&s, 4)]);
            snprintf(ord.tracking, sizeof(ord.tracking), "TRK%010llu", (unsigned long long)(next(&s) % 10000000000ULL));
            ord.fulfilled_ms = ord.paid_ms + DAY_MS / 2;
            ord.version = 3;
        } else if (strcmp(status, "cancelled") == 0) {
            ord.cancelled_ms = ord.created_ms + 3600000;
            ord.version = 2;
        }
        sites[i].orders++;
        rc = shop_order_put(&t, ws, &ord, 1, err);
        out->orders++;
    }
    for (unsigned i = 0; i < o->sites && rc == 0; i++) {
        for (unsigned d = 0; d < o->days && rc == 0; d++) {
            char date[11];
            shop_date(today - (uint64_t)d * DAY_MS, date);
            rc = shop_visits_add(&t, ws, sites[i].id, date, 40 + pick(&s, 260), err);
            out->visit_days++;
        }
        if (rc == 0)
            rc = shop_site_put(&t, ws, &sites[i], err);
    }
    for (unsigned i = 0; i < o->sites; i++)
        free(products[i]);
    free(products);
    free(n_products);
    free(sites);
    if (rc != 0) {
        store_abort(&t);
        return -1;
    }
    return store_commit(&t, err);
}

/* ---- import ---- */

typedef struct import_ctx {
    store_txn_t *t;
    const char *ws;
    demo_counts_t *counts;
} import_ctx_t;

static const char *str(json_t *o, const char *k, size_t max, int required, char *why, size_t wl)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL) {
        if (required)
            snprintf(why, wl, "%s is required", k);
        return required ? NULL : "";
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max) {
        snprintf(why, wl, "%s must be a string of 1 to %zu bytes", k, max);
        return NULL;
    }
    return json_string_value(v);
}

static int uint_field(json_t *o, const char *k, uint64_t max, uint64_t *out, char *why, size_t wl)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL) {
        *out = 0;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
        snprintf(why, wl, "%s must be an integer from 0 to %llu", k, (unsigned long long)max);
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int valid_id(const char *id, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (strncmp(id, prefix, pl) != 0 || strlen(id) != pl + 20)
        return 0;
    for (const char *c = id + pl; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z')))
            return 0;
    return 1;
}

/* Applies one line inside the transaction; fills why and returns -1 on a bad line. */
static int import_line(import_ctx_t *c, json_t *doc, char *why, size_t wl, aly_err_t *err)
{
    const char *type = json_string_value(json_object_get(doc, "type"));
    if (type == NULL || (strcmp(type, "site") != 0 && strcmp(type, "product") != 0 && strcmp(type, "order") != 0 &&
                         strcmp(type, "visits") != 0)) {
        snprintf(why, wl, "type must be site, product, order or visits");
        return -1;
    }
    if (strcmp(type, "site") == 0) {
        site_record_t s = {.version = 1};
        const char *id = str(doc, "id", 31, 1, why, wl), *name = id ? str(doc, "name", 127, 1, why, wl) : NULL;
        const char *domain = name ? str(doc, "domain", 253, 1, why, wl) : NULL, *cur = domain ? str(doc, "currency", 3, 1, why, wl) : NULL;
        if (cur == NULL)
            return -1;
        if (!valid_id(id, "site_") || strlen(cur) != 3) {
            snprintf(why, wl, "id must be site_ + 20 base62 characters and currency an ISO 4217 code");
            return -1;
        }
        site_record_t old;
        int rc = shop_site_get(c->t, c->ws, id, &old, err);
        if (rc < 0)
            return -2;
        if (rc == 0) {
            snprintf(why, wl, "site %s already exists", id);
            return -1;
        }
        snprintf(s.id, sizeof(s.id), "%s", id);
        snprintf(s.name, sizeof(s.name), "%s", name);
        snprintf(s.domain, sizeof(s.domain), "%s", domain);
        snprintf(s.currency, sizeof(s.currency), "%s", cur);
        s.created_ms = s.updated_ms = aly_wall_ms();
        c->counts->sites++;
        return shop_site_put(c->t, c->ws, &s, err) == 0 ? 0 : -2;
    }
    const char *site_id = str(doc, "site_id", 31, 1, why, wl);
    if (site_id == NULL)
        return -1;
    site_record_t s;
    int rc = shop_site_get(c->t, c->ws, site_id, &s, err);
    if (rc < 0)
        return -2;
    if (rc == 1) {
        snprintf(why, wl, "site_id %s is not a site of this workspace (import its site line first)", site_id);
        return -1;
    }
    if (strcmp(type, "product") == 0) {
        product_record_t p = {.version = 1};
        const char *id = str(doc, "id", 31, 1, why, wl), *title = id ? str(doc, "title", 200, 1, why, wl) : NULL;
        const char *sku = title ? str(doc, "sku", 64, 1, why, wl) : NULL;
        const char *status = sku ? str(doc, "status", 9, 0, why, wl) : NULL;
        const char *desc = status ? str(doc, "description", 2000, 0, why, wl) : NULL;
        if (desc == NULL || uint_field(doc, "price", 100000000000ULL, &p.price, why, wl) != 0 ||
            uint_field(doc, "inventory", 1000000000, &p.inventory, why, wl) != 0)
            return -1;
        if (!valid_id(id, "prod_")) {
            snprintf(why, wl, "id must be prod_ + 20 base62 characters");
            return -1;
        }
        if (status[0] && strcmp(status, "draft") != 0 && strcmp(status, "active") != 0 && strcmp(status, "archived") != 0) {
            snprintf(why, wl, "status must be draft, active or archived");
            return -1;
        }
        int taken = shop_sku_taken(c->t, c->ws, s.id, sku, NULL, err);
        if (taken < 0)
            return -2;
        if (taken) {
            snprintf(why, wl, "sku %s is already used in site %s", sku, s.id);
            return -1;
        }
        snprintf(p.id, sizeof(p.id), "%s", id);
        snprintf(p.site, sizeof(p.site), "%s", s.id);
        snprintf(p.title, sizeof(p.title), "%s", title);
        snprintf(p.sku, sizeof(p.sku), "%s", sku);
        snprintf(p.description, sizeof(p.description), "%s", desc);
        snprintf(p.status, sizeof(p.status), "%s", status[0] ? status : "draft");
        p.created_ms = p.updated_ms = aly_wall_ms();
        s.products++;
        c->counts->products++;
        return shop_product_put(c->t, c->ws, &p, NULL, err) == 0 && shop_site_put(c->t, c->ws, &s, err) == 0 ? 0 : -2;
    }
    if (strcmp(type, "visits") == 0) {
        const char *date = str(doc, "date", 10, 1, why, wl);
        uint64_t n;
        if (date == NULL || uint_field(doc, "count", 1000000000, &n, why, wl) != 0)
            return -1;
        if (shop_date_ms(date) < 0) {
            snprintf(why, wl, "date must be YYYY-MM-DD");
            return -1;
        }
        c->counts->visit_days++;
        return shop_visits_add(c->t, c->ws, s.id, date, n, err) == 0 ? 0 : -2;
    }
    if (strcmp(type, "order") == 0) {
        order_record_t o = {.version = 1};
        const char *id = str(doc, "id", 31, 1, why, wl), *status = id ? str(doc, "status", 11, 1, why, wl) : NULL;
        const char *created = status ? str(doc, "created", 10, 1, why, wl) : NULL;
        json_t *items = json_object_get(doc, "items");
        if (created == NULL)
            return -1;
        if (!valid_id(id, "ord_") || shop_date_ms(created) < 0) {
            snprintf(why, wl, "id must be ord_ + 20 base62 characters and created a date YYYY-MM-DD");
            return -1;
        }
        if (strcmp(status, "pending") != 0 && strcmp(status, "paid") != 0 && strcmp(status, "fulfilled") != 0 &&
            strcmp(status, "cancelled") != 0) {
            snprintf(why, wl, "status must be pending, paid, fulfilled or cancelled");
            return -1;
        }
        if (!json_is_array(items) || json_array_size(items) == 0 || json_array_size(items) > SHOP_MAX_ITEMS) {
            snprintf(why, wl, "items must be an array of 1 to %d line items", SHOP_MAX_ITEMS);
            return -1;
        }
        snprintf(o.id, sizeof(o.id), "%s", id);
        snprintf(o.site, sizeof(o.site), "%s", s.id);
        snprintf(o.status, sizeof(o.status), "%s", status);
        snprintf(o.currency, sizeof(o.currency), "%s", s.currency);
        o.created_ms = (uint64_t)shop_date_ms(created) + 12 * 3600000ULL;
        if (strcmp(status, "pending") != 0)
            o.paid_ms = o.created_ms;
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            line_item_t *li = &o.items[o.n_items++];
            const char *pid = str(it, "product_id", 31, 1, why, wl);
            if (pid == NULL || uint_field(it, "quantity", 1000000, &li->quantity, why, wl) != 0 ||
                uint_field(it, "unit_price", 100000000000ULL, &li->unit_price, why, wl) != 0)
                return -1;
            product_record_t p;
            rc = shop_product_get(c->t, c->ws, s.id, pid, &p, err);
            if (rc < 0)
                return -2;
            if (rc == 1 || li->quantity == 0) {
                snprintf(why, wl, "item %zu: product %s is not in site %s, or quantity is 0", i, pid, s.id);
                return -1;
            }
            snprintf(li->product, sizeof(li->product), "%s", pid);
            snprintf(li->title, sizeof(li->title), "%s", p.title);
            o.total += li->quantity * li->unit_price;
        }
        order_record_t old;
        if ((rc = shop_order_get(c->t, c->ws, id, &old, err)) != 1) {
            if (rc == 0)
                snprintf(why, wl, "order %s already exists", id);
            return rc == 0 ? -1 : -2;
        }
        s.orders++;
        c->counts->orders++;
        return shop_order_put(c->t, c->ws, &o, 1, err) == 0 && shop_site_put(c->t, c->ws, &s, err) == 0 ? 0 : -2;
    }
    snprintf(why, wl, "type must be site, product, order or visits, not \"%.20s\"", type);
    return -1;
}

int demo_import(store_t *st, const char *ws, FILE *in, void (*report)(unsigned line, const char *why, void *ctx), void *ctx,
                demo_counts_t *out, aly_err_t *err)
{
    store_txn_t t;
    store_val_t v;
    memset(out, 0, sizeof(*out));
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    if (store_get(&t, DB_WORKSPACES, ws, strlen(ws), &v, err) != 0) {
        store_abort(&t);
        return aly_errf(err, "no workspace %s (alyctl workspace list)", ws);
    }
    import_ctx_t c = {&t, ws, out};
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0, bad = 0;
    int failed = 0;
    while ((n = getline(&line, &cap, in)) > 0) {
        lineno++;
        if (n > 1024 * 1024) {
            report(lineno, "line longer than 1 MiB", ctx);
            bad++;
            continue;
        }
        size_t len = (size_t)n;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        json_error_t jerr;
        json_t *doc = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
        char why[300] = "";
        if (!json_is_object(doc)) {
            snprintf(why, sizeof(why), "not a JSON object: %s", doc ? "another JSON value" : jerr.text);
            report(lineno, why, ctx);
            bad++;
        } else {
            int rc = import_line(&c, doc, why, sizeof(why), err);
            if (rc == -1) {
                report(lineno, why, ctx);
                bad++;
            } else if (rc == -2) {
                failed = 1;
            }
        }
        json_decref(doc);
        if (failed)
            break;
    }
    free(line);
    if (failed || bad > 0 || ferror(in)) {
        store_abort(&t);
        if (failed)
            return -1;
        return aly_errf(err, ferror(in) ? "read error" : "%u invalid line(s); nothing was imported", bad);
    }
    return store_commit(&t, err);
}

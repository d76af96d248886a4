/*
 * Demo data and JSON-lines import (aly/demo.h), written through the same
 * shop_* functions as the tools, so seeded and imported data obey the same
 * invariants (sku index, order time index, site counters); imported fields
 * are checked against the tools' own schema fragments.
 */
#include "aly/demo.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "aly/schema.h"
#include "aly/shop.h"
#include "aly/tools_schema.h"

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

/* An id shaped like store_new_id's, but drawn from the seeded sequence so a seed always gives the same ids. */
static void make_id(uint64_t *s, const char *prefix, char *out, size_t len)
{
    size_t pl = strlen(prefix);
    snprintf(out, len, "%s", prefix);
    for (size_t i = 0; i < 20 && pl + i + 1 < len; i++) {
        out[pl + i] = aly_b62_digits[pick(s, 62)];
        out[pl + i + 1] = '\0';
    }
}

/*
 * Ends the one write transaction of a seed or an import: commits when rc is
 * 0, else aborts.  Either way nothing or everything is written, and a
 * failure says so after its cause; a store that filled up is named as the
 * cause even where a layer between reworded the error ("cannot index ...").
 */
static int end_txn(store_txn_t *t, int rc, const char *what, aly_err_t *err)
{
    if (rc == 0 && store_commit(t, err) == 0)
        return 0;
    store_abort(t);
    store_refused_full(t, err);
    size_t n = strlen(err->msg);
    snprintf(err->msg + n, sizeof(err->msg) - n, "; nothing was %s", what);
    return -1;
}

/* Begins the one write transaction of a seed or an import, in workspace ws, which must exist. */
static int begin_in(store_t *st, const char *ws, store_txn_t *t, aly_err_t *err)
{
    store_val_t v;
    if (store_begin(st, STORE_WRITE, t, err) != 0)
        return -1;
    int rc = store_get(t, DB_WORKSPACES, ws, strlen(ws), &v, err);
    if (rc == 0)
        return 0;
    store_abort(t);
    return rc < 0 ? -1 : aly_errf(err, "no workspace %s (alyctl workspace list)", ws);
}

static const char *const site_names[] = {"Northwind Outfitters", "Blue Harbor Coffee", "Atlas Home Goods", "Juniper Books",
                                         "Copperleaf Garden",    "Summit Cycles",      "Luna Ceramics",    "Maple & Pine"};
static const char *const site_domains[] = {"northwind.example",    "blueharbor.example", "atlashome.example",
                                           "juniperbooks.example", "copperleaf.example", "summitcycles.example",
                                           "lunaceramics.example", "maplepine.example"};
static const char *const currencies[] = {"EUR", "USD", "GBP"};
static const char *const adjectives[] = {"Classic", "Organic", "Handmade", "Everyday", "Premium", "Vintage", "Compact", "Deluxe"};
static const char *const nouns[] = {"Mug",       "Tote Bag", "Notebook", "Candle",       "Blanket", "Water Bottle",
                                    "Plant Pot", "Scarf",    "Backpack", "Coffee Beans", "Lamp",    "Cutting Board"};
static const char *const first[] = {"Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas"};
static const char *const last[] = {"Lovelace", "Okafor", "Martin", "Patel", "Rossi", "Haddad", "Kim", "Tanaka", "Silva", "Berg"};
static const char *const tags[] = {"gift", "sale", "new", "eco", "bestseller", "limited"};

int demo_seed(store_t *st, const char *ws, const demo_opts_t *o, demo_counts_t *out, aly_err_t *err)
{
    if (o->sites == 0 || o->sites > 50 || o->products > 100000 || o->orders > 1000000 || o->days == 0 || o->days > 3650)
        return aly_errf(err, "demo sizes out of range (sites 1-50, products <= 100000, orders <= 1000000, days 1-3650)");
    uint64_t s = o->seed ? o->seed : 42;
    store_txn_t t;
    if (begin_in(st, ws, &t, err) != 0)
        return -1;
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
    return end_txn(&t, rc, "seeded", err);
}

/* ---- import ---- */

/*
 * Each line type is checked against a schema assembled from the fragments
 * the tools declare (aly/tools_schema.h), so an imported record obeys the
 * rules a tool call would have been held to; what a schema cannot say (the
 * site exists, the sku is free, the id is new) the line's function checks.
 * Fields a line type does not name are ignored, so an export with extra
 * fields imports as it is.
 */
#define SITE_LINE                                                                                                                  \
    "{\"type\":\"object\",\"properties\":{\"id\":" SITE_ID "," SITE_FIELDS                                                         \
    "},\"required\":[\"id\",\"name\",\"domain\",\"currency\"]}"
#define PRODUCT_LINE                                                                                                               \
    "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"id\":" PRODUCT_ID "," PRODUCT_FIELDS "},"                      \
    "\"required\":[\"site_id\",\"id\",\"title\",\"sku\"]}"
/* carrier and tracking_number: orders.fulfill's rules (tools_orders.c), for a fulfilled order's line. */
#define ORDER_LINE                                                                                                                 \
    "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"id\":" ORDER_ID ",\"status\":" ORDER_STATUS_SCHEMA ","         \
    "\"created\":" DATE_SCHEMA ",\"items\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":" MAX_ITEMS ","                         \
    "\"items\":" LINE_ITEM_SCHEMA "},\"carrier\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":" MAX_CARRIER "},"             \
    "\"tracking_number\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9 ._/-]{1,127}$\"}},"                                        \
    "\"required\":[\"site_id\",\"id\",\"status\",\"created\",\"items\"]}"
#define VISITS_LINE                                                                                                                \
    "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ID ",\"date\":" DATE_SCHEMA ","                                       \
    "\"count\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":1000000000}},\"required\":[\"site_id\",\"date\"]}"

typedef struct import_ctx {
    store_txn_t *t;
    const char *ws;
    demo_counts_t *counts;
    site_record_t site; /* the site a product, order or visits line belongs to */
} import_ctx_t;

/* A line's function: 0 applied, 1 a bad line (why says what is wrong), -1 the store failed (err). */
typedef int (*line_fn)(import_ctx_t *c, json_t *line, aly_err_t *why, aly_err_t *err);

static int bad(aly_err_t *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(aly_err_t *why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->msg, sizeof(why->msg), fmt, ap);
    va_end(ap);
    return 1;
}

static const char *field(json_t *line, const char *key)
{
    return json_string_value(json_object_get(line, key));
}

static uint64_t uint_field(json_t *line, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(line, key));
}

/* A date field as ms since the epoch; the schema has checked the calendar, this the epoch. */
static int64_t date_field(json_t *line, const char *key, aly_err_t *why)
{
    int64_t ms = shop_date_ms(field(line, key));
    if (ms < 0)
        bad(why, "%s: must be a date from 1970-01-01 on", key);
    return ms;
}

static int import_site(import_ctx_t *c, json_t *line, aly_err_t *why, aly_err_t *err)
{
    site_record_t s = {.version = 1}, old;
    const char *id = field(line, "id");
    int rc = shop_site_get(c->t, c->ws, id, &old, err);
    if (rc != 1)
        return rc < 0 ? -1 : bad(why, "site %s already exists", id);
    snprintf(s.id, sizeof(s.id), "%s", id);
    const char *unfit = tools_site_apply(&s, line);
    if (unfit != NULL)
        return bad(why, "%s: too long to store", unfit);
    s.created_ms = s.updated_ms = aly_wall_ms();
    c->counts->sites++;
    return shop_site_put(c->t, c->ws, &s, err) == 0 ? 0 : -1;
}

static int import_product(import_ctx_t *c, json_t *line, aly_err_t *why, aly_err_t *err)
{
    site_record_t *s = &c->site;
    product_record_t p = {.version = 1}, old;
    const char *id = field(line, "id");
    int rc = shop_product_get(c->t, c->ws, s->id, id, &old, err);
    if (rc != 1)
        return rc < 0 ? -1 : bad(why, "product %s already exists in site %s", id, s->id);
    snprintf(p.id, sizeof(p.id), "%s", id);
    snprintf(p.site, sizeof(p.site), "%s", s->id);
    snprintf(p.status, sizeof(p.status), "draft");
    const char *unfit = tools_product_apply(&p, line);
    if (unfit != NULL)
        return bad(why, "%s: too long to store", unfit);
    if ((rc = shop_sku_taken(c->t, c->ws, s->id, p.sku, NULL, err)) != 0)
        return rc < 0 ? -1 : bad(why, "sku %s is already used in site %s", p.sku, s->id);
    p.created_ms = p.updated_ms = aly_wall_ms();
    s->products++;
    c->counts->products++;
    return shop_product_put(c->t, c->ws, &p, NULL, err) == 0 && shop_site_put(c->t, c->ws, s, err) == 0 ? 0 : -1;
}

/*
 * The times and fulfilment that go with an imported order's status, as the
 * tools would have left them: paid and fulfilled orders were paid, a
 * fulfilled one carries the carrier and tracking_number orders.get shows
 * (and an orders.fulfill retry must match), a cancelled one was cancelled
 * and, as far as the line says, never paid.  The line gives one day, so
 * each step is dated at the order's creation.  1 with why for a line whose
 * fields do not fit its status.
 */
static int order_state(order_record_t *o, json_t *line, aly_err_t *why)
{
    const char *carrier = field(line, "carrier"), *tracking = field(line, "tracking_number");
    int fulfilled = strcmp(o->status, "fulfilled") == 0;
    if (fulfilled && (carrier == NULL || tracking == NULL))
        return bad(why, "carrier, tracking_number: a fulfilled order needs both (orders.get shows them as its fulfillment)");
    if (!fulfilled && (carrier != NULL || tracking != NULL))
        return bad(why, "carrier, tracking_number: only a fulfilled order has them, not a %s one", o->status);
    if (fulfilled || strcmp(o->status, "paid") == 0)
        o->paid_ms = o->created_ms;
    if (strcmp(o->status, "cancelled") == 0)
        o->cancelled_ms = o->created_ms;
    if (!fulfilled)
        return 0;
    if (RECORD_SET_STR(o->carrier, carrier) != 0 || RECORD_SET_STR(o->tracking, tracking) != 0)
        return bad(why, "carrier, tracking_number: too long to store");
    o->fulfilled_ms = o->created_ms;
    return 0;
}

static int import_order(import_ctx_t *c, json_t *line, aly_err_t *why, aly_err_t *err)
{
    site_record_t *s = &c->site;
    order_record_t o = {.version = 1}, old;
    const char *id = field(line, "id");
    int64_t created = date_field(line, "created", why);
    if (created < 0)
        return 1;
    int rc = shop_order_get(c->t, c->ws, id, &old, err);
    if (rc != 1)
        return rc < 0 ? -1 : bad(why, "order %s already exists", id);
    snprintf(o.id, sizeof(o.id), "%s", id);
    snprintf(o.site, sizeof(o.site), "%s", s->id);
    snprintf(o.status, sizeof(o.status), "%s", field(line, "status"));
    snprintf(o.currency, sizeof(o.currency), "%s", s->currency);
    /* A day is all the line says: noon keeps the order on that day in every analytics range. */
    o.created_ms = (uint64_t)created + 12 * 3600000ULL;
    if ((rc = order_state(&o, line, why)) != 0)
        return rc;
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(line, "items"), i, it) {
        line_item_t *li = &o.items[o.n_items++];
        const char *pid = field(it, "product_id");
        product_record_t p;
        if ((rc = shop_product_get(c->t, c->ws, s->id, pid, &p, err)) != 0)
            return rc < 0 ? -1 : bad(why, "items[%zu].product_id: no product %s in site %s", i, pid, s->id);
        snprintf(li->product, sizeof(li->product), "%s", pid);
        snprintf(li->title, sizeof(li->title), "%s", p.title);
        li->quantity = uint_field(it, "quantity");
        li->unit_price = uint_field(it, "unit_price");
        o.total += li->quantity * li->unit_price;
    }
    s->orders++;
    c->counts->orders++;
    return shop_order_put(c->t, c->ws, &o, 1, err) == 0 && shop_site_put(c->t, c->ws, s, err) == 0 ? 0 : -1;
}

static int import_visits(import_ctx_t *c, json_t *line, aly_err_t *why, aly_err_t *err)
{
    if (date_field(line, "date", why) < 0)
        return 1;
    c->counts->visit_days++;
    return shop_visits_add(c->t, c->ws, c->site.id, field(line, "date"), uint_field(line, "count"), err) == 0 ? 0 : -1;
}

static const struct line_type {
    const char *name;
    const char *schema;
    int in_site; /* the line names its site in site_id, which must exist */
    line_fn apply;
} line_types[] = {
    {"site", SITE_LINE, 0, import_site},
    {"product", PRODUCT_LINE, 1, import_product},
    {"order", ORDER_LINE, 1, import_order},
    {"visits", VISITS_LINE, 1, import_visits},
};

#define N_TYPES ALY_ARRAY_SIZE(line_types)

/* Applies one line inside the transaction: 0, 1 for a bad line (why filled) or -1 when the store failed. */
static int import_line(import_ctx_t *c, json_t *line, json_t *const *schemas, aly_err_t *why, aly_err_t *err)
{
    const char *type = field(line, "type");
    size_t i = 0;
    while (i < N_TYPES && (type == NULL || strcmp(type, line_types[i].name) != 0))
        i++;
    if (i == N_TYPES)
        return type == NULL ? bad(why, "type must be site, product, order or visits")
                            : bad(why, "type must be site, product, order or visits, not \"%.20s\"", type);
    if (schema_validate(schemas[i], line, why) != 0)
        return 1;
    if (line_types[i].in_site) {
        const char *site_id = field(line, "site_id");
        int rc = shop_site_get(c->t, c->ws, site_id, &c->site, err);
        if (rc != 0)
            return rc < 0 ? -1 : bad(why, "site_id: %s is not a site of this workspace (import its site line first)", site_id);
    }
    return line_types[i].apply(c, line, why, err);
}

/* The line schemas, parsed and checked once per import; -1 with err names a broken one (a bug, not bad input). */
static int load_schemas(json_t **schemas, aly_err_t *err)
{
    for (size_t i = 0; i < N_TYPES; i++) {
        json_error_t jerr;
        aly_err_t why;
        schemas[i] = json_loads(line_types[i].schema, 0, &jerr);
        if (schemas[i] == NULL || schema_check(schemas[i], &why) != 0) {
            const char *msg = schemas[i] == NULL ? jerr.text : why.msg;
            for (size_t k = 0; k <= i; k++)
                json_decref(schemas[k]);
            return aly_errf(err, "the import schema of %s lines is broken: %s", line_types[i].name, msg);
        }
    }
    return 0;
}

int demo_import(store_t *st, const char *ws, FILE *in, void (*report)(unsigned line, const char *why, void *ctx), void *ctx,
                demo_counts_t *out, aly_err_t *err)
{
    store_txn_t t;
    json_t *schemas[N_TYPES];
    memset(out, 0, sizeof(*out));
    if (load_schemas(schemas, err) != 0)
        return -1;
    if (begin_in(st, ws, &t, err) != 0) {
        for (size_t i = 0; i < N_TYPES; i++)
            json_decref(schemas[i]);
        return -1;
    }
    import_ctx_t c = {.t = &t, .ws = ws, .counts = out};
    char *text = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0, nbad = 0;
    int failed = 0;
    while (!failed && (n = getline(&text, &cap, in)) > 0) {
        lineno++;
        size_t len = (size_t)n;
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        aly_err_t why;
        json_error_t jerr;
        json_t *line = n > 1024 * 1024 ? NULL : json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        int rc = 1;
        if (n > 1024 * 1024)
            bad(&why, "line longer than 1 MiB");
        else if (!json_is_object(line))
            bad(&why, "not a JSON object: %s", line ? "another JSON value" : jerr.text);
        else
            rc = import_line(&c, line, schemas, &why, err);
        json_decref(line);
        if (rc == 1) {
            report(lineno, why.msg, ctx);
            nbad++;
        }
        failed = rc < 0;
    }
    free(text);
    for (size_t i = 0; i < N_TYPES; i++)
        json_decref(schemas[i]);
    if (!failed && (nbad > 0 || ferror(in))) {
        store_abort(&t);
        return aly_errf(err, ferror(in) ? "read error; nothing was imported" : "%u invalid line(s); nothing was imported", nbad);
    }
    return end_txn(&t, failed, "imported", err);
}

/*
 * analytics.summary and analytics.timeseries, computed from a site's orders
 * (time index scan over the range) and daily visit counters.  An order counts
 * towards orders and revenue once paid (paid or fulfilled); pending and
 * cancelled orders do not.  Money stays integer minor units; the conversion
 * rate (orders / visits) is the only fraction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/tools.h"
#include "aly/tools_schema.h"

#define MAX_DAYS 366
#define DAY_MS 86400000ULL
/*
 * Top products are exact: every product met in the range is summed in a hash
 * table (open addressing, doubled at half load), ranked once the scan ends.
 * A range that meets more distinct products than this is refused, not
 * answered from a sample.  Titles (the one of the first line item met) live
 * in one arena, at their own length.
 */
#define MAX_DISTINCT 50000
#define TOP_SHOWN 5

typedef struct day {
    uint64_t visits, orders, revenue;
} day_t;

typedef struct top {
    char product[ALY_ID_MAX]; /* "" for a free slot */
    uint64_t quantity, revenue;
    size_t title; /* offset of its title in the arena */
} top_t;

typedef struct tops {
    top_t *slot;
    size_t n, cap; /* products held; slots (a power of two) */
    char *titles;
    size_t titles_len, titles_cap;
} tops_t;

typedef struct range {
    store_txn_t *t;
    const char *ws;
    site_record_t site;
    int64_t from_ms;
    unsigned days;
    day_t *day;
    tops_t *top;     /* NULL: not asked for */
    int too_many;    /* the range holds more than MAX_DISTINCT products */
    unsigned budget; /* orders the scan may still examine (analytics_scan_budget) */
    int over_budget; /* the range holds more orders than that */
    size_t prefix_len;
    aly_err_t err;
    int failed;
} range_t;

static int visit_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    range_t *r = vctx;
    char date[11];
    if (key->len < 10 || val->len != sizeof(uint64_t))
        return 0;
    memcpy(date, (const char *)key->data + key->len - 10, 10);
    date[10] = '\0';
    int64_t ms = shop_date_ms(date);
    if (ms < r->from_ms)
        return 0;
    uint64_t idx = (uint64_t)(ms - r->from_ms) / DAY_MS;
    if (idx >= r->days)
        return 1; /* keys are in date order: past the range */
    uint64_t n;
    memcpy(&n, val->data, sizeof(n));
    r->day[idx].visits += n;
    return 0;
}

static size_t slot_of(const tops_t *t, const char *product)
{
    size_t i = (size_t)aly_fnv1a(product, strlen(product)) & (t->cap - 1);
    while (t->slot[i].product[0] != '\0' && strcmp(t->slot[i].product, product) != 0)
        i = (i + 1) & (t->cap - 1);
    return i;
}

static void tops_grow(tops_t *t)
{
    tops_t bigger = *t;
    bigger.cap = t->cap ? 2 * t->cap : 256;
    bigger.slot = calloc(bigger.cap, sizeof(top_t));
    if (bigger.slot == NULL)
        abort();
    for (size_t i = 0; i < t->cap; i++)
        if (t->slot[i].product[0] != '\0')
            bigger.slot[slot_of(&bigger, t->slot[i].product)] = t->slot[i];
    free(t->slot);
    *t = bigger;
}

/* Adds a line item to its product's sums: 0, or -1 when that would be product MAX_DISTINCT + 1. */
static int add_top(tops_t *t, const line_item_t *it)
{
    if (2 * (t->n + 1) > t->cap)
        tops_grow(t);
    top_t *e = &t->slot[slot_of(t, it->product)];
    if (e->product[0] == '\0') {
        if (t->n == MAX_DISTINCT)
            return -1;
        size_t len = strlen(it->title) + 1;
        if (t->titles_len + len > t->titles_cap) {
            t->titles_cap = t->titles_cap ? 2 * t->titles_cap + len : 4096 + len;
            t->titles = realloc(t->titles, t->titles_cap);
            if (t->titles == NULL)
                abort();
        }
        memcpy(t->titles + t->titles_len, it->title, len);
        snprintf(e->product, sizeof(e->product), "%s", it->product);
        e->title = t->titles_len;
        t->titles_len += len;
        t->n++;
    }
    e->quantity += it->quantity;
    e->revenue += it->quantity * it->unit_price;
    return 0;
}

static void tops_free(tops_t *t)
{
    if (t != NULL) {
        free(t->slot);
        free(t->titles);
        free(t);
    }
}

static int order_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)val;
    range_t *r = vctx;
    const char *k = key->data;
    if (key->len < r->prefix_len + 17)
        return 0;
    char hex[17];
    memcpy(hex, k + r->prefix_len, 16);
    hex[16] = '\0';
    uint64_t ms = strtoull(hex, NULL, 16);
    uint64_t idx = (ms - (uint64_t)r->from_ms) / DAY_MS;
    if ((int64_t)ms < r->from_ms)
        return 0;
    if (idx >= r->days)
        return 1;
    if (r->budget == 0) {
        r->over_budget = 1;
        return -1;
    }
    r->budget--;
    order_record_t o;
    int rc = tools_order_at(r->t, r->ws, key, &o, &r->err);
    if (rc < 0) {
        r->failed = 1;
        return -1;
    }
    if (rc == 1 || (strcmp(o.status, "paid") != 0 && strcmp(o.status, "fulfilled") != 0))
        return 0;
    r->day[idx].orders++;
    r->day[idx].revenue += o.total;
    for (uint64_t i = 0; r->top != NULL && i < o.n_items; i++) {
        if (add_top(r->top, &o.items[i]) != 0) {
            r->too_many = 1;
            return -1;
        }
    }
    return 0;
}

/*
 * Parses the range and scans it; otherwise returns -1 (r->day freed) with the
 * call completed, or (*st MCP_PENDING) waiting for the client to pick the site.
 */
static int load_range(mcp_call_t *call, json_t *args, range_t *r, int with_top, mcp_status_t *st)
{
    *st = MCP_DONE;
    const char *from = json_string_value(json_object_get(args, "from")), *to = json_string_value(json_object_get(args, "to"));
    int64_t f = shop_date_ms(from), e = shop_date_ms(to);
    if (f < 0 || e < 0) {
        tools_fail(call, "from, to: must be real dates (YYYY-MM-DD)");
        return -1;
    }
    if (e < f) {
        tools_fail(call, "to: must not be before from");
        return -1;
    }
    uint64_t days = (uint64_t)(e - f) / DAY_MS + 1;
    if (days > MAX_DAYS) {
        tools_fail(call, "to: a range covers at most %d days (this one covers %llu)", MAX_DAYS, (unsigned long long)days);
        return -1;
    }
    memset(r, 0, sizeof(*r));
    r->ws = tools_ws(call);
    r->from_ms = f;
    r->days = (unsigned)days;
    r->budget = mcp_call_config(call)->analytics_scan_budget;
    r->day = calloc(days, sizeof(day_t));
    r->top = with_top ? calloc(1, sizeof(tops_t)) : NULL;
    if (r->day == NULL || (with_top && r->top == NULL))
        abort();
    store_txn_t t;
    if (tools_begin(call, 0, &t) != 0)
        goto fail;
    r->t = &t;
    if (tools_site(call, &t, args, &r->site, st) != 0)
        goto fail;
    char prefix[128], start[160], ts[20];
    size_t pl = shop_key(prefix, sizeof(prefix), r->ws, 'V', r->site.id, "");
    size_t sl;
    int rc = store_scan(&t, DB_DATA, prefix, pl, NULL, 0, visit_cb, r, &r->err);
    if (rc == 0) {
        r->prefix_len = pl = shop_key(prefix, sizeof(prefix), r->ws, 'T', r->site.id, "");
        snprintf(ts, sizeof(ts), "%016llx", (unsigned long long)(f > 0 ? f - 1 : 0));
        sl = shop_key(start, sizeof(start), r->ws, 'T', r->site.id, ts);
        rc = store_scan(&t, DB_DATA, prefix, pl, start, sl, order_cb, r, &r->err);
    }
    store_abort(&t);
    if (r->too_many) {
        tools_fail(call, "from, to: this range holds orders of more than %d distinct products; ask for a shorter range",
                   MAX_DISTINCT);
        goto fail;
    }
    if (r->over_budget) {
        tools_fail(
            call,
            "from, to: this range holds more than %u orders, more than one call examines (analytics_scan_budget); ask for a shorter range",
            mcp_call_config(call)->analytics_scan_budget);
        goto fail;
    }
    if (rc != 0 || r->failed) {
        tools_store_error(call, &r->err);
        goto fail;
    }
    return 0;
fail:
    free(r->day);
    tops_free(r->top);
    return -1;
}

static int by_revenue(const void *a, const void *b)
{
    const top_t *x = a, *y = b;
    return x->revenue < y->revenue ? 1 : x->revenue > y->revenue ? -1 : strcmp(x->product, y->product);
}

static mcp_status_t analytics_summary(mcp_call_t *call, json_t *args)
{
    range_t r;
    mcp_status_t st;
    if (load_range(call, args, &r, 1, &st) != 0)
        return st;
    uint64_t visits = 0, orders = 0, revenue = 0;
    for (unsigned i = 0; i < r.days; i++) {
        visits += r.day[i].visits;
        orders += r.day[i].orders;
        revenue += r.day[i].revenue;
    }
    /* The held slots to the front, then ranked. */
    tops_t *tp = r.top;
    size_t n = 0;
    for (size_t i = 0; i < tp->cap; i++)
        if (tp->slot[i].product[0] != '\0')
            tp->slot[n++] = tp->slot[i];
    if (n > 1)
        qsort(tp->slot, n, sizeof(top_t), by_revenue); /* slot is NULL when the range has no orders */
    json_t *top = json_array();
    for (size_t i = 0; i < n && i < TOP_SHOWN; i++) {
        const top_t *e = &tp->slot[i];
        json_array_append_new(top,
                              json_pack("{s:s, s:s, s:I, s:o}", "product_id", e->product, "title", tp->titles + e->title,
                                        "quantity", (json_int_t)e->quantity, "revenue", tools_money(e->revenue, r.site.currency)));
    }
    /* Rounded half up to whole minor units; the rate to four decimals. */
    uint64_t aov = orders ? (revenue + orders / 2) / orders : 0;
    double rate = visits ? (double)(uint64_t)((double)orders / (double)visits * 10000.0 + 0.5) / 10000.0 : 0.0;
    json_t *out = json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:f, s:o, s:o}", "site_id", r.site.id, "from",
                            json_string_value(json_object_get(args, "from")), "to", json_string_value(json_object_get(args, "to")),
                            "visits", (json_int_t)visits, "orders", (json_int_t)orders, "revenue",
                            tools_money(revenue, r.site.currency), "conversion_rate", rate, "average_order_value",
                            tools_money(aov, r.site.currency), "top_products", top);
    free(r.day);
    tops_free(r.top);
    return tools_ok(call, out);
}

static mcp_status_t analytics_timeseries(mcp_call_t *call, json_t *args)
{
    range_t r;
    mcp_status_t st;
    if (load_range(call, args, &r, 0, &st) != 0)
        return st;
    json_t *points = json_array();
    for (unsigned i = 0; i < r.days; i++) {
        char date[11];
        shop_date((uint64_t)r.from_ms + i * DAY_MS, date);
        json_array_append_new(points,
                              json_pack("{s:s, s:I, s:I, s:o}", "date", date, "visits", (json_int_t)r.day[i].visits, "orders",
                                        (json_int_t)r.day[i].orders, "revenue", tools_money(r.day[i].revenue, r.site.currency)));
    }
    free(r.day);
    return tools_ok(call, json_pack("{s:s, s:s, s:o}", "site_id", r.site.id, "currency", r.site.currency, "points", points));
}

#define RANGE_IN                                                                                                                   \
    "{\"type\":\"object\",\"properties\":{\"site_id\":" SITE_ARG ",\"from\":" DATE_SCHEMA ",\"to\":" DATE_SCHEMA "},"              \
    "\"required\":[\"from\",\"to\"],\"additionalProperties\":false}"

const mcp_tool_desc_t tools_analytics[] = {
    {"analytics.summary", "Sales summary",
     "A site's figures for a date range (inclusive, UTC, at most 366 days): visits, paid orders, revenue, conversion rate "
     "(orders / visits), average order value and the five products with the most revenue. Money is in minor units.",
     SCOPE_READ_ANALYTICS, RANGE_IN,
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"visits\":{\"type\":\"integer\"},\"orders\":{\"type\":\"integer\"},"
     "\"revenue\":" MONEY_OUT ",\"conversion_rate\":{\"type\":\"number\"},\"average_order_value\":" MONEY_OUT ","
     "\"top_products\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"product_id\":{\"type\":\"string\"},"
     "\"quantity\":{\"type\":\"integer\"},\"revenue\":" MONEY_OUT "}}}},"
     "\"required\":[\"site_id\",\"visits\",\"orders\",\"revenue\",\"conversion_rate\",\"average_order_value\",\"top_products\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT, analytics_summary, TOOL_CACHED},
    {"analytics.timeseries", "Daily sales series",
     "Day by day visits, paid orders and revenue of a site for a date range (inclusive, UTC, at most 366 days).",
     SCOPE_READ_ANALYTICS, RANGE_IN,
     "{\"type\":\"object\",\"properties\":{\"site_id\":{\"type\":\"string\"},\"currency\":{\"type\":\"string\"},"
     "\"points\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"date\":{\"type\":\"string\"},"
     "\"visits\":{\"type\":\"integer\"},\"orders\":{\"type\":\"integer\"},\"revenue\":" MONEY_OUT "},"
     "\"required\":[\"date\",\"visits\",\"orders\",\"revenue\"]}}},\"required\":[\"site_id\",\"points\"]}",
     TOOL_READ_ONLY | TOOL_IDEMPOTENT, analytics_timeseries, TOOL_CACHED},
};
const size_t tools_analytics_count = sizeof(tools_analytics) / sizeof(tools_analytics[0]);

/*
 * Resources and prompts over the workspace data: the templates
 * aly://sites/{site_id}, aly://sites/{site_id}/products/{product_id} and
 * aly://orders/{order_id} (JSON, scope-checked like the tools that read the
 * same records), and the prompts sales-report and fulfilment-queue, whose
 * site_id argument completion/complete suggests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/tools.h"

/* Completes a read: rc is the lookup's (0 found: doc is its JSON, 1 not found, -1 store error). */
static mcp_status_t contents(mcp_call_t *call, const char *uri, int rc, const aly_err_t *err, json_t *doc)
{
    if (rc < 0)
        return tools_store_error(call, err);
    if (rc > 0) {
        mcp_call_error(call, RPC_RESOURCE_NOT_FOUND, "Resource not found", json_pack("{s:s}", "uri", uri));
        return MCP_DONE;
    }
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(doc);
    mcp_call_result(call, json_pack("{s:[{s:s, s:s, s:s}]}", "contents", "uri", uri, "mimeType", "application/json", "text",
                                    text ? text : "{}"));
    free(text);
    return MCP_DONE;
}

static const char *var(json_t *vars, const char *name)
{
    return json_string_value(json_object_get(vars, name));
}

/* Reads the record the template variables name in t: shop_*_get's 0, 1 or -1, and its JSON in *doc when found. */
typedef int (*lookup_fn)(store_txn_t *t, const char *ws, json_t *vars, json_t **doc, aly_err_t *err);

static mcp_status_t read_with(mcp_call_t *call, const char *uri, json_t *vars, lookup_fn lookup)
{
    store_txn_t t;
    aly_err_t err;
    json_t *doc = NULL;
    if (tools_begin(call, 0, &t) != 0)
        return MCP_DONE;
    int rc = lookup(&t, tools_ws(call), vars, &doc, &err);
    store_abort(&t);
    return contents(call, uri, rc, &err, doc);
}

static int site_doc(store_txn_t *t, const char *ws, json_t *vars, json_t **doc, aly_err_t *err)
{
    site_record_t s;
    int rc = shop_site_get(t, ws, var(vars, "site_id"), &s, err);
    if (rc == 0)
        *doc = tools_site_json(&s);
    return rc;
}

static int product_doc(store_txn_t *t, const char *ws, json_t *vars, json_t **doc, aly_err_t *err)
{
    site_record_t s;
    product_record_t p;
    int rc = shop_site_get(t, ws, var(vars, "site_id"), &s, err);
    if (rc == 0 && (rc = shop_product_get(t, ws, s.id, var(vars, "product_id"), &p, err)) == 0)
        *doc = tools_product_json(&p, s.currency);
    return rc;
}

static int order_doc(store_txn_t *t, const char *ws, json_t *vars, json_t **doc, aly_err_t *err)
{
    order_record_t o;
    int rc = shop_order_get(t, ws, var(vars, "order_id"), &o, err);
    if (rc == 0)
        *doc = tools_order_json(&o);
    return rc;
}

static mcp_status_t read_site(mcp_call_t *call, const char *uri, json_t *vars)
{
    return read_with(call, uri, vars, site_doc);
}

static mcp_status_t read_product(mcp_call_t *call, const char *uri, json_t *vars)
{
    return read_with(call, uri, vars, product_doc);
}

static mcp_status_t read_order(mcp_call_t *call, const char *uri, json_t *vars)
{
    return read_with(call, uri, vars, order_doc);
}

const mcp_resource_desc_t tools_resources[] = {
    {"aly://sites/{site_id}", 1, "site", "Site", "A site of the workspace, as JSON", "application/json", SCOPE_READ_SITES,
     read_site, tools_complete_site},
    {"aly://sites/{site_id}/products/{product_id}", 1, "product", "Product", "A product of a site, as JSON", "application/json",
     SCOPE_READ_CONTENT, read_product, tools_complete_site},
    {"aly://orders/{order_id}", 1, "order", "Order", "An order with line items and fulfilment, as JSON", "application/json",
     SCOPE_READ_ORDERS, read_order, NULL},
};
const size_t tools_resources_count = sizeof(tools_resources) / sizeof(tools_resources[0]);

static mcp_status_t user_text(mcp_call_t *call, const char *description, const char *text)
{
    mcp_call_result(call, json_pack("{s:s, s:[{s:s, s:{s:s, s:s}}]}", "description", description, "messages", "role", "user",
                                    "content", "type", "text", "text", text));
    return MCP_DONE;
}

static mcp_status_t sales_report(mcp_call_t *call, json_t *args)
{
    const char *site = json_string_value(json_object_get(args, "site_id"));
    const char *period = json_string_value(json_object_get(args, "period"));
    char text[1024];
    snprintf(text, sizeof(text),
             "Write a short sales report for site %s covering %s. Call analytics.summary for the figures (visits, orders, revenue, "
             "conversion rate, average order value, top products) and analytics.timeseries for the daily trend; compare with the "
             "previous period of the same length. Money amounts are in minor units of the site's currency: show them as "
             "currency. End with three concrete suggestions.",
             site, period != NULL ? period : "the last 30 days");
    return user_text(call, "Sales report", text);
}

static mcp_status_t fulfilment_queue(mcp_call_t *call, json_t *args)
{
    const char *site = json_string_value(json_object_get(args, "site_id"));
    char text[1024];
    snprintf(text, sizeof(text),
             "Go through the fulfilment queue of site %s: call orders.list with status \"paid\" (follow next_cursor to the end), "
             "oldest first. For each order show the customer, the items and how long it has waited. Ask me for the carrier and "
             "tracking number before calling orders.fulfill; never fulfil without them.",
             site);
    return user_text(call, "Fulfilment queue", text);
}

const mcp_prompt_desc_t tools_prompts[] = {
    {"sales-report", "Sales report",
     "A sales report for one site and period, built from analytics.summary and analytics.timeseries",
     "[{\"name\":\"site_id\",\"description\":\"the site (sites.list)\",\"required\":true},"
     "{\"name\":\"period\",\"description\":\"e.g. last 30 days, 2026-10\",\"required\":false}]",
     SCOPE_READ_ANALYTICS, sales_report, tools_complete_site},
    {"fulfilment-queue", "Fulfilment queue", "Work through a site's paid, unfulfilled orders",
     "[{\"name\":\"site_id\",\"description\":\"the site (sites.list)\",\"required\":true}]", SCOPE_READ_ORDERS, fulfilment_queue,
     tools_complete_site},
};
const size_t tools_prompts_count = sizeof(tools_prompts) / sizeof(tools_prompts[0]);

/*
 * alyctl's data commands: stats (of the store or of one workspace), demo
 * seed, import and audit.  Each parses its arguments, calls the store, demo
 * or admin function that does the work and prints the result.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alyctl.h"
#include "aly/admin.h"
#include "aly/demo.h"
#include "aly/shop.h"

/* ---- stats ---- */

static int site_counts(void *ctx, const void *rec)
{
    const site_record_t *s = rec;
    json_array_append_new(ctx, json_pack("{s:s, s:s, s:I, s:I}", "id", s->id, "name", s->name, "products", (json_int_t)s->products,
                                         "orders", (json_int_t)s->orders));
    return 0;
}

/* alyctl stats --workspace WS: the workspace's sites with their product and order counts. */
static int workspace_stats(ctl_t *ctl, const char *ws)
{
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    json_t *sites = json_array();
    aly_err_t err;
    int rc = admin_workspace_sites(st, ws, site_counts, sites, &err);
    store_close(st);
    if (rc != 0) {
        json_decref(sites);
        return ctl_fail("%s", err.msg);
    }
    if (ctl->json) {
        ctl_print_json(json_pack("{s:s, s:o}", "workspace", ws, "sites", sites));
        return 0;
    }
    size_t i;
    json_t *s;
    json_array_foreach(sites, i, s) {
        printf("%-26s %6lld products %6lld orders  %s\n", json_string_value(json_object_get(s, "id")),
               (long long)json_integer_value(json_object_get(s, "products")),
               (long long)json_integer_value(json_object_get(s, "orders")), json_string_value(json_object_get(s, "name")));
    }
    json_decref(sites);
    return 0;
}

static void print_store_stats(ctl_t *ctl, const store_db_stat_t *dbs, int n, const store_env_stat_t envs[2], const store_usage_t *u)
{
    if (ctl->json) {
        json_t *doc = json_object(), *je = json_object();
        for (int e = 0; e < 2; e++) {
            json_t *dbo = json_object();
            for (int i = 0; i < n; i++)
                if (strcmp(dbs[i].env, envs[e].env) == 0)
                    json_object_set_new(dbo, dbs[i].name, json_integer((json_int_t)dbs[i].entries));
            json_object_set_new(je, envs[e].env,
                                json_pack("{s:I, s:I, s:i, s:i, s:o}", "map_size", (json_int_t)envs[e].map_size, "used_bytes",
                                          (json_int_t)envs[e].used_bytes, "readers", (int)envs[e].readers, "max_readers",
                                          (int)envs[e].max_readers, "databases", dbo));
        }
        json_object_set_new(json_object_get(je, "store"), "usage",
                            json_pack("{s:I, s:I, s:b}", "in_use_bytes", (json_int_t)u->used_bytes, "write_limit_bytes",
                                      (json_int_t)u->limit_bytes, "full", u->full));
        json_object_set_new(doc, "data_dir", json_string(ctl->cfg->data_dir));
        json_object_set_new(doc, "environments", je);
        ctl_print_json(doc);
        return;
    }
    printf("data_dir %s\n", ctl->cfg->data_dir);
    printf("store     in use %.1f of %.1f MiB (%.2f%%), ordinary writes stop at %.1f MiB%s\n", (double)u->used_bytes / 1048576.0,
           (double)u->map_size / 1048576.0, 100.0 * (double)u->used_bytes / (double)u->map_size, (double)u->limit_bytes / 1048576.0,
           u->full ? ": FULL, raise map_size or delete data" : "");
    for (int e = 0; e < 2; e++) {
        printf("%-9s map %zu MiB, used %zu KiB (%.2f%%), readers %u/%u\n", envs[e].env, envs[e].map_size >> 20,
               envs[e].used_bytes >> 10, 100.0 * (double)envs[e].used_bytes / (double)envs[e].map_size, envs[e].readers,
               envs[e].max_readers);
        for (int i = 0; i < n; i++)
            if (strcmp(dbs[i].env, envs[e].env) == 0)
                printf("  %-20s %zu records\n", dbs[i].name, dbs[i].entries);
    }
}

int ctl_cmd_stats(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace"};
    const char *ws[1] = {NULL};
    if (ctl_take_options(ctl, names, ws, 1) != 0)
        return 1;
    if (ctl->argc != 0)
        return ctl_fail("stats takes no arguments but --workspace WS, got \"%s\"", ctl->argv[0]);
    if (ws[0] != NULL)
        return workspace_stats(ctl, ws[0]);
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    store_db_stat_t dbs[32];
    store_env_stat_t envs[2];
    aly_err_t err;
    store_usage_t u;
    int n = store_stats(st, dbs, ALY_ARRAY_SIZE(dbs), envs, &err);
    if (n >= 0 && store_usage(st, &u, &err) != 0)
        n = -1;
    store_close(st);
    if (n < 0)
        return ctl_fail("%s", err.msg);
    print_store_stats(ctl, dbs, n, envs, &u);
    return 0;
}

/* ---- demo, import ---- */

static int parse_uint(const char *v, const char *opt, unsigned long long max, unsigned long long *out)
{
    char *end;
    if (v == NULL)
        return 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || *end != '\0' || n > max)
        return ctl_fail("%s \"%s\" must be an integer from 0 to %llu", opt, v, max), -1;
    *out = n;
    return 0;
}

#define DEMO_USAGE "usage: demo seed --workspace WS [--sites 3 --products 40 --orders 300 --days 90 --seed N]"

int ctl_cmd_demo(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace", "--sites", "--products", "--orders", "--days", "--seed"};
    const char *v[ALY_ARRAY_SIZE(names)] = {NULL};
    if (ctl->argc < 1 || strcmp(ctl->argv[0], "seed") != 0)
        return ctl_fail(DEMO_USAGE);
    if (ctl_take_options(ctl, names, v, ALY_ARRAY_SIZE(names)) != 0)
        return 1;
    if (ctl->argc != 1 || v[0] == NULL)
        return ctl_fail(DEMO_USAGE);
    unsigned long long sites = 3, products = 40, orders = 300, days = 90, seed = 42;
    if (parse_uint(v[1], "--sites", 50, &sites) || parse_uint(v[2], "--products", 100000, &products) ||
        parse_uint(v[3], "--orders", 1000000, &orders) || parse_uint(v[4], "--days", 3650, &days) ||
        parse_uint(v[5], "--seed", ~0ULL, &seed))
        return 1;
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    demo_opts_t o = {(unsigned)sites, (unsigned)products, (unsigned)orders, (unsigned)days, seed};
    demo_counts_t c;
    aly_err_t err;
    int rc = demo_seed(st, v[0], &o, &c, &err);
    store_close(st);
    if (rc != 0)
        return ctl_fail("%s", err.msg);
    if (ctl->json)
        ctl_print_json(json_pack("{s:s, s:i, s:i, s:i, s:i}", "workspace", v[0], "sites", c.sites, "products", c.products, "orders",
                                 c.orders, "visit_days", c.visit_days));
    else
        printf("seeded %s: %u sites, %u products, %u orders, %u days of visits\n", v[0], c.sites, c.products, c.orders,
               c.visit_days);
    return 0;
}

static void report_line(unsigned line, const char *why, void *ctx)
{
    fprintf(stderr, "%s:%u: %s\n", (const char *)ctx, line, why);
}

int ctl_cmd_import(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace"};
    const char *v[1] = {NULL};
    if (ctl_take_options(ctl, names, v, 1) != 0)
        return 1;
    if (ctl->argc != 1 || v[0] == NULL)
        return ctl_fail("usage: import --workspace WS FILE.jsonl");
    FILE *fp = strcmp(ctl->argv[0], "-") == 0 ? stdin : fopen(ctl->argv[0], "r");
    if (fp == NULL)
        return ctl_fail("cannot open %s: %s", ctl->argv[0], strerror(errno));
    store_t *st = ctl_open_store(ctl);
    int rc = 1;
    demo_counts_t c;
    aly_err_t err;
    if (st != NULL) {
        rc = demo_import(st, v[0], fp, report_line, ctl->argv[0], &c, &err) != 0 ? ctl_fail("%s", err.msg) : 0;
        store_close(st);
    }
    if (fp != stdin)
        fclose(fp);
    if (rc != 0)
        return rc;
    if (ctl->json)
        ctl_print_json(json_pack("{s:i, s:i, s:i, s:i}", "sites", c.sites, "products", c.products, "orders", c.orders, "visit_days",
                                 c.visit_days));
    else
        printf("imported %u sites, %u products, %u orders, %u visit counts\n", c.sites, c.products, c.orders, c.visit_days);
    return 0;
}

/* ---- audit ---- */

static int audit_line(void *ctx, const void *rec)
{
    json_t *out = ctx;
    const audit_record_t *r = rec;
    char at[40];
    aly_format_time(at, sizeof(at), r->at_ms);
    if (out != NULL)
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "at", at, "workspace", r->workspace,
                                             "principal", r->principal, "tool", r->tool, "object", r->object, "before_version",
                                             (json_int_t)r->before_version, "after_version", (json_int_t)r->after_version));
    else
        printf("%s %s %s %s %s v%llu->v%llu\n", at, r->workspace, r->principal, r->tool, r->object,
               (unsigned long long)r->before_version, (unsigned long long)r->after_version);
    return 0;
}

int ctl_cmd_audit(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace", "--since"};
    const char *v[2] = {NULL, NULL};
    if (ctl_take_options(ctl, names, v, 2) != 0)
        return 1;
    if (ctl->argc != 0)
        return ctl_fail("usage: audit [--workspace WS] [--since YYYY-MM-DD]");
    uint64_t since = 0;
    if (v[1] != NULL) {
        int64_t ms = shop_date_ms(v[1]);
        if (ms < 0)
            return ctl_fail("--since \"%s\" must be a date YYYY-MM-DD", v[1]);
        since = (uint64_t)ms;
    }
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    json_t *out = ctl->json ? json_array() : NULL;
    aly_err_t err;
    int rc = admin_audit_list(st, v[0], since, audit_line, out, &err);
    store_close(st);
    if (rc != 0) {
        json_decref(out);
        return ctl_fail("%s", err.msg);
    }
    if (out != NULL)
        ctl_print_json(out);
    return 0;
}

/*
 * alyctl: the operator's command line on alyd's data directory.
 *
 * Commands are rows of a table (name, usage, handler), like the directives of
 * alyd.conf.  Every command takes -c FILE and --json; results go to stdout,
 * errors to stderr with a non-zero exit status.
 */
#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <grp.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/auth.h"
#include "aly/config.h"
#include "aly/demo.h"
#include "aly/record.h"
#include "aly/shop.h"
#include "aly/store.h"

typedef struct ctl {
    aly_config_t *cfg;
    int json;
    int argc;
    char **argv;
} ctl_t;

typedef struct command {
    const char *name;
    const char *usage;
    int (*run)(ctl_t *ctl);
} command_t;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int take_options(ctl_t *ctl, const char *const *names, const char **values, size_t n);

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("alyctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static void print_json(json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (text != NULL)
        puts(text);
    free(text);
    json_decref(doc);
}

/* Appends item to out when listing as JSON; returns -1 (and drops item) when printing text. */
static int ctl_json_append(json_t *out, json_t *item)
{
    if (out == NULL) {
        json_decref(item);
        return -1;
    }
    json_array_append_new(out, item);
    return 0;
}

static int cmd_init(ctl_t *ctl)
{
    if (ctl->argc != 0)
        return fail("init takes no arguments, got \"%s\"", ctl->argv[0]);
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    /* Run as root with "user" set, hand the data directory to that user so workers can open it. */
    if (geteuid() == 0 && ctl->cfg->user != NULL) {
        struct passwd *pw = getpwnam(ctl->cfg->user);
        if (pw == NULL)
            return fail("user \"%s\" does not exist", ctl->cfg->user);
        uid = pw->pw_uid;
        gid = pw->pw_gid;
        if (ctl->cfg->group != NULL) {
            struct group *gr = getgrnam(ctl->cfg->group);
            if (gr == NULL)
                return fail("group \"%s\" does not exist", ctl->cfg->group);
            gid = gr->gr_gid;
        }
    }
    aly_err_t err;
    if (store_init(ctl->cfg, uid, gid, &err) != 0)
        return fail("%s", err.msg);
    if (ctl->json)
        print_json(json_pack("{s:s, s:s, s:i}", "data_dir", ctl->cfg->data_dir, "pepper_file", ctl->cfg->key_pepper_file,
                             "schema", STORE_SCHEMA_VERSION));
    else
        printf("initialised %s (schema %d, pepper %s)\n", ctl->cfg->data_dir, STORE_SCHEMA_VERSION,
               ctl->cfg->key_pepper_file);
    return 0;
}

typedef struct site_stats_ctx {
    json_t *out;
} site_stats_ctx_t;

static int site_stats_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)key;
    site_stats_ctx_t *c = vctx;
    site_record_t s;
    aly_err_t err;
    if (record_decode(&record_site, val->data, val->len, &s, &err) != 0)
        return 0;
    json_array_append_new(c->out, json_pack("{s:s, s:s, s:I, s:I}", "id", s.id, "name", s.name, "products", (json_int_t)s.products,
                                            "orders", (json_int_t)s.orders));
    return 0;
}

/* alyctl stats --workspace WS: the workspace's sites with their product and order counts. */
static int workspace_stats(ctl_t *ctl, const char *ws)
{
    aly_err_t err;
    store_t *st = store_open(ctl->cfg, &err);
    if (st == NULL)
        return fail("%s", err.msg);
    site_stats_ctx_t c = {json_array()};
    char prefix[64];
    size_t pl = shop_key(prefix, sizeof(prefix), ws, 'S', NULL, NULL);
    store_txn_t t;
    store_val_t v;
    int rc = store_begin(st, 0, &t, &err);
    if (rc == 0) {
        if (store_get(&t, DB_WORKSPACES, ws, strlen(ws), &v, &err) != 0)
            rc = aly_errf(&err, "no workspace %s (alyctl workspace list)", ws);
        else
            rc = store_scan(&t, DB_DATA, prefix, pl, NULL, 0, site_stats_cb, &c, &err);
        store_abort(&t);
    }
    store_close(st);
    if (rc != 0) {
        json_decref(c.out);
        return fail("%s", err.msg);
    }
    if (ctl->json) {
        print_json(json_pack("{s:s, s:o}", "workspace", ws, "sites", c.out));
        return 0;
    }
    size_t i;
    json_t *s;
    json_array_foreach(c.out, i, s)
    {
        printf("%-26s %6lld products %6lld orders  %s\n", json_string_value(json_object_get(s, "id")),
               (long long)json_integer_value(json_object_get(s, "products")), (long long)json_integer_value(json_object_get(s, "orders")),
               json_string_value(json_object_get(s, "name")));
    }
    json_decref(c.out);
    return 0;
}

static int cmd_stats(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace"};
    const char *ws[1] = {NULL};
    if (take_options(ctl, names, ws, 1) != 0)
        return 1;
    if (ctl->argc != 0)
        return fail("stats takes no arguments but --workspace WS, got \"%s\"", ctl->argv[0]);
    if (ws[0] != NULL)
        return workspace_stats(ctl, ws[0]);
    aly_err_t err;
    store_t *st = store_open(ctl->cfg, &err);
    if (st == NULL)
        return fail("%s", err.msg);
    store_db_stat_t dbs[32];
    store_env_stat_t envs[2];
    int n = store_stats(st, dbs, ALY_ARRAY_SIZE(dbs), envs, &err);
    store_close(st);
    if (n < 0)
        return fail("%s", err.msg);
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
        json_object_set_new(doc, "data_dir", json_string(ctl->cfg->data_dir));
        json_object_set_new(doc, "environments", je);
        print_json(doc);
        return 0;
    }
    printf("data_dir %s\n", ctl->cfg->data_dir);
    for (int e = 0; e < 2; e++) {
        printf("%-9s map %zu MiB, used %zu KiB (%.2f%%), readers %u/%u\n", envs[e].env, envs[e].map_size >> 20,
               envs[e].used_bytes >> 10, 100.0 * (double)envs[e].used_bytes / (double)envs[e].map_size, envs[e].readers,
               envs[e].max_readers);
        for (int i = 0; i < n; i++)
            if (strcmp(dbs[i].env, envs[e].env) == 0)
                printf("  %-20s %zu records\n", dbs[i].name, dbs[i].entries);
    }
    return 0;
}


/* ---- helpers shared by the store commands ---- */

static store_t *open_store(ctl_t *ctl)
{
    aly_err_t err;
    store_t *st = store_open(ctl->cfg, &err);
    if (st == NULL)
        fail("%s", err.msg);
    return st;
}

/* Takes "--name value" options listed in names out of ctl->argv; the rest stay positional. */
static int take_options(ctl_t *ctl, const char *const *names, const char **values, size_t n)
{
    int kept = 0;
    for (int i = 0; i < ctl->argc; i++) {
        size_t k;
        for (k = 0; k < n; k++)
            if (strcmp(ctl->argv[i], names[k]) == 0)
                break;
        if (k == n) {
            if (strncmp(ctl->argv[i], "--", 2) == 0)
                return fail("unknown option %s", ctl->argv[i]), -1;
            ctl->argv[kept++] = ctl->argv[i];
            continue;
        }
        if (i + 1 >= ctl->argc)
            return fail("%s needs a value", names[k]), -1;
        values[k] = ctl->argv[++i];
    }
    ctl->argc = kept;
    return 0;
}

static void format_time(uint64_t ms, char *buf, size_t len)
{
    if (ms == 0)
        snprintf(buf, len, "-");
    else
        aly_format_time(buf, len, ms);
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= ALY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

static int workspace_exists(store_txn_t *t, const char *ws)
{
    store_val_t v;
    return store_get(t, DB_WORKSPACES, ws, strlen(ws), &v, NULL) == 0;
}

/* ---- workspace ---- */

static int workspace_create(ctl_t *ctl, store_t *st)
{
    if (ctl->argc != 2)
        return fail("usage: workspace create NAME");
    if (!valid_name(ctl->argv[1]))
        return fail("workspace name must be 1 to %d printable bytes", ALY_NAME_MAX - 1);
    workspace_record_t ws = {.created_ms = aly_wall_ms()};
    aly_err_t err;
    if (store_new_id("ws_", ws.id, sizeof(ws.id), &err) != 0)
        return fail("%s", err.msg);
    snprintf(ws.name, sizeof(ws.name), "%s", ctl->argv[1]);
    char *val;
    size_t vlen;
    store_txn_t t;
    if (record_encode(&record_workspace, &ws, &val, &vlen, &err) != 0 || store_begin(st, STORE_WRITE, &t, &err) != 0)
        return fail("%s", err.msg);
    int rc = store_put(&t, DB_WORKSPACES, ws.id, strlen(ws.id), val, vlen, 1, &err);
    free(val);
    if (rc != 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        return fail("%s", rc == 1 ? "workspace id collision, try again" : err.msg);
    }
    if (ctl->json)
        print_json(json_pack("{s:s, s:s}", "id", ws.id, "name", ws.name));
    else
        printf("%s\n", ws.id);
    return 0;
}

typedef struct list_ctx {
    json_t *out;
    int json;
    const record_type_t *type;
    const char *filter_ws;
} list_ctx_t;

static int list_workspace_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)key;
    list_ctx_t *ctx = vctx;
    workspace_record_t ws;
    aly_err_t err;
    if (record_decode(&record_workspace, val->data, val->len, &ws, &err) != 0) {
        fprintf(stderr, "alyctl: skipping a bad workspace record: %s\n", err.msg);
        return 0;
    }
    char created[40];
    format_time(ws.created_ms, created, sizeof(created));
    if (ctl_json_append(ctx->out, json_pack("{s:s, s:s, s:s}", "id", ws.id, "name", ws.name, "created", created)) != 0)
        printf("%-26s %-24s %s\n", ws.id, created, ws.name);
    return 0;
}

static int workspace_list(ctl_t *ctl, store_t *st)
{
    if (ctl->argc != 1)
        return fail("usage: workspace list");
    store_txn_t t;
    aly_err_t err;
    list_ctx_t lc = {ctl->json ? json_array() : NULL, ctl->json, &record_workspace, NULL};
    if (store_begin(st, 0, &t, &err) != 0 || store_scan(&t, DB_WORKSPACES, "", 0, NULL, 0, list_workspace_cb, &lc, &err) != 0)
        return fail("%s", err.msg);
    store_abort(&t);
    if (lc.out != NULL)
        print_json(lc.out);
    return 0;
}

static int cmd_workspace(ctl_t *ctl)
{
    if (ctl->argc < 1)
        return fail("usage: workspace create NAME | workspace list");
    store_t *st = open_store(ctl);
    if (st == NULL)
        return 1;
    int rc;
    if (strcmp(ctl->argv[0], "create") == 0)
        rc = workspace_create(ctl, st);
    else if (strcmp(ctl->argv[0], "list") == 0)
        rc = workspace_list(ctl, st);
    else
        rc = fail("unknown workspace command \"%s\" (create, list)", ctl->argv[0]);
    store_close(st);
    return rc;
}

/* ---- keys ---- */

static json_t *key_json(const key_record_t *k, uint64_t last_used)
{
    char scopes[256], created[40], expires[40], revoked[40], used[40], rate[64] = "default";
    auth_format_scopes((scope_set_t)k->scopes, scopes, sizeof(scopes));
    format_time(k->created_ms, created, sizeof(created));
    format_time(k->expires_ms, expires, sizeof(expires));
    format_time(k->revoked_ms, revoked, sizeof(revoked));
    format_time(last_used, used, sizeof(used));
    if (k->rate_count != 0) {
        aly_rate_t r = {(uint32_t)k->rate_count, (uint32_t)k->rate_period_s, (uint32_t)k->rate_burst};
        config_format_rate(&r, rate, sizeof(rate));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", k->id, "workspace", k->workspace, "name", k->name,
                     "scopes", scopes, "created", created, "expires", expires, "revoked", revoked, "last_used", used,
                     "rate_limit", rate);
}

static uint64_t last_used_of(store_t *st, const char *id)
{
    store_txn_t t;
    store_val_t v;
    uint64_t ms = 0;
    if (store_begin(st, STORE_VOLATILE, &t, NULL) != 0)
        return 0;
    if (store_get(&t, VDB_LAST_USED, id, strlen(id), &v, NULL) == 0 && v.len == sizeof(ms))
        memcpy(&ms, v.data, sizeof(ms));
    store_abort(&t);
    return ms;
}

static void print_key(const key_record_t *k, uint64_t last_used)
{
    json_t *j = key_json(k, last_used);
    const char *fields[] = {"id", "workspace", "name", "scopes", "created", "expires", "revoked", "last_used", "rate_limit"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(fields); i++)
        printf("%-11s %s\n", fields[i], json_string_value(json_object_get(j, fields[i])));
    json_decref(j);
}

static int keys_create(ctl_t *ctl, store_t *st)
{
    static const char *const names[] = {"--workspace", "--scopes", "--name", "--expires", "--rate-limit"};
    const char *v[ALY_ARRAY_SIZE(names)] = {NULL};
    if (take_options(ctl, names, v, ALY_ARRAY_SIZE(names)) != 0)
        return 1;
    if (ctl->argc != 1 || v[0] == NULL || v[1] == NULL)
        return fail("usage: keys create --workspace WS --scopes S1,S2 [--name N] [--expires 90d] [--rate-limit '60/minute burst=10']");
    aly_err_t err;
    key_record_t k = {.created_ms = aly_wall_ms()};
    scope_set_t scopes;
    if (auth_parse_scopes(v[1], &scopes, &err) != 0)
        return fail("%s", err.msg);
    k.scopes = scopes;
    snprintf(k.name, sizeof(k.name), "%s", v[2] != NULL ? v[2] : "");
    if (v[2] != NULL && !valid_name(v[2]))
        return fail("key name must be 1 to %d printable bytes", ALY_NAME_MAX - 1);
    if (v[3] != NULL) {
        char *end;
        unsigned long long n = strtoull(v[3], &end, 10);
        uint64_t unit = strcmp(end, "d") == 0   ? 86400000ULL
                        : strcmp(end, "h") == 0 ? 3600000ULL
                        : strcmp(end, "m") == 0 ? 60000ULL
                        : strcmp(end, "s") == 0 ? 1000ULL
                                                : 0;
        if (v[3][0] < '0' || v[3][0] > '9' || unit == 0 || n == 0 || n > 3650ULL * 86400000ULL / unit)
            return fail("--expires \"%s\" must be a duration like 90d, 12h, 30m or 45s", v[3]);
        k.expires_ms = k.created_ms + n * unit;
    }
    if (v[4] != NULL) {
        aly_rate_t r;
        if (config_parse_rate(v[4], &r, &err) != 0)
            return fail("--rate-limit: %s", err.msg);
        k.rate_count = r.count;
        k.rate_period_s = r.period_s;
        k.rate_burst = r.burst;
    }
    snprintf(k.workspace, sizeof(k.workspace), "%s", v[0]);
    char key[AUTH_KEY_LEN + 1];
    auth_pepper_t *pepper = auth_pepper_load(ctl->cfg->key_pepper_file, &err);
    if (pepper == NULL)
        return fail("%s", err.msg);
    int rc = auth_key_generate(key, sizeof(key), &err) == 0 && auth_key_hash(pepper, key, strlen(key), k.hash, &err) == 0 &&
                     store_new_id("key_", k.id, sizeof(k.id), &err) == 0
                 ? 0
                 : -1;
    auth_pepper_free(pepper);
    if (rc != 0)
        return fail("%s", err.msg);
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, &err) != 0)
        return fail("%s", err.msg);
    if (!workspace_exists(&t, k.workspace)) {
        store_abort(&t);
        return fail("no workspace %s (alyctl workspace list)", k.workspace);
    }
    if (auth_key_store(&t, &k, &err) != 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        return fail("%s", err.msg);
    }
    if (ctl->json) {
        json_t *j = key_json(&k, 0);
        json_object_set_new(j, "key", json_string(key));
        print_json(j);
    } else {
        printf("%s\n", key);
        fprintf(stderr, "created %s in %s; the key above is shown once: store it now\n", k.id, k.workspace);
    }
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
}

typedef struct keys_list_ctx {
    store_t *st;
    json_t *out;
} keys_list_ctx_t;

static int keys_list_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    (void)key;
    keys_list_ctx_t *ctx = vctx;
    key_record_t k;
    aly_err_t err;
    if (record_decode(&record_key, val->data, val->len, &k, &err) != 0) {
        fprintf(stderr, "alyctl: skipping a bad key record: %s\n", err.msg);
        return 0;
    }
    if (ctx->out != NULL) {
        json_array_append_new(ctx->out, key_json(&k, 0));
    } else {
        char scopes[256];
        auth_format_scopes((scope_set_t)k.scopes, scopes, sizeof(scopes));
        printf("%-28s %-26s %-8s %-16s %s\n", k.id, k.workspace, k.revoked_ms ? "revoked" : "active", k.name[0] ? k.name : "-",
               scopes);
    }
    return 0;
}

static int keys_list(ctl_t *ctl, store_t *st)
{
    static const char *const names[] = {"--workspace"};
    const char *v[1] = {NULL};
    if (take_options(ctl, names, v, 1) != 0)
        return 1;
    if (ctl->argc != 1)
        return fail("usage: keys list [--workspace WS]");
    char prefix[ALY_ID_MAX + 2] = "";
    if (v[0] != NULL)
        snprintf(prefix, sizeof(prefix), "%s/", v[0]);
    keys_list_ctx_t lc = {st, ctl->json ? json_array() : NULL};
    store_txn_t t;
    aly_err_t err;
    if (store_begin(st, 0, &t, &err) != 0 || store_scan(&t, DB_KEYS, prefix, strlen(prefix), NULL, 0, keys_list_cb, &lc, &err) != 0)
        return fail("%s", err.msg);
    store_abort(&t);
    if (lc.out != NULL)
        print_json(lc.out);
    return 0;
}

static int keys_show_or_revoke(ctl_t *ctl, store_t *st, int revoke)
{
    if (ctl->argc != 2)
        return fail("usage: keys %s ID", revoke ? "revoke" : "show");
    const char *id = ctl->argv[1];
    key_record_t k;
    store_txn_t t;
    aly_err_t err;
    if (store_begin(st, revoke ? STORE_WRITE : 0, &t, &err) != 0)
        return fail("%s", err.msg);
    int rc = auth_key_find(&t, id, &k, &err);
    if (rc != 0) {
        store_abort(&t);
        return rc == 1 ? fail("no key %s (alyctl keys list)", id) : fail("%s", err.msg);
    }
    if (revoke) {
        if (k.revoked_ms == 0) {
            k.revoked_ms = aly_wall_ms();
            if (auth_key_store(&t, &k, &err) != 0 || auth_bump_revocations(&t, &err) != 0 || store_commit(&t, &err) != 0) {
                store_abort(&t);
                return fail("%s", err.msg);
            }
        } else {
            store_abort(&t);
        }
    } else {
        store_abort(&t);
    }
    uint64_t used = last_used_of(st, k.id);
    if (ctl->json)
        print_json(key_json(&k, used));
    else if (revoke)
        printf("revoked %s\n", k.id);
    else
        print_key(&k, used);
    return 0;
}

static int cmd_keys(ctl_t *ctl)
{
    if (ctl->argc < 1)
        return fail("usage: keys create|list|show|revoke ...");
    store_t *st = open_store(ctl);
    if (st == NULL)
        return 1;
    int rc;
    const char *sub = ctl->argv[0];
    if (strcmp(sub, "create") == 0)
        rc = keys_create(ctl, st);
    else if (strcmp(sub, "list") == 0)
        rc = keys_list(ctl, st);
    else if (strcmp(sub, "show") == 0)
        rc = keys_show_or_revoke(ctl, st, 0);
    else if (strcmp(sub, "revoke") == 0)
        rc = keys_show_or_revoke(ctl, st, 1);
    else
        rc = fail("unknown keys command \"%s\" (create, list, show, revoke)", sub);
    store_close(st);
    return rc;
}

/* ---- oauth ---- */

static int cmd_oauth(ctl_t *ctl)
{
    if (ctl->argc != 2 || (strcmp(ctl->argv[0], "revoke-jti") != 0 && strcmp(ctl->argv[0], "revoke-sub") != 0))
        return fail("usage: oauth revoke-jti JTI | oauth revoke-sub SUB");
    int jti = strcmp(ctl->argv[0], "revoke-jti") == 0;
    const char *what = ctl->argv[1];
    revocation_record_t r = {.revoked_ms = aly_wall_ms()};
    if (strlen(what) == 0 || strlen(what) >= sizeof(r.subject))
        return fail("the %s must be 1 to 255 bytes", jti ? "jti" : "subject");
    snprintf(r.subject, sizeof(r.subject), "%s", what);
    store_t *st = open_store(ctl);
    if (st == NULL)
        return 1;
    aly_err_t err;
    char *val;
    size_t vlen;
    store_txn_t t;
    int rc = 1;
    if (record_encode(&record_revocation, &r, &val, &vlen, &err) == 0) {
        if (store_begin(st, STORE_WRITE, &t, &err) == 0) {
            if (store_put(&t, jti ? DB_REVOKED_JTI : DB_REVOKED_SUB, what, strlen(what), val, vlen, 0, &err) == 0 &&
                auth_bump_revocations(&t, &err) == 0 && store_commit(&t, &err) == 0)
                rc = 0;
            else
                store_abort(&t);
        }
        free(val);
    }
    store_close(st);
    if (rc != 0)
        return fail("%s", err.msg);
    if (ctl->json)
        print_json(json_pack("{s:s, s:s}", jti ? "revoked_jti" : "revoked_sub", what, "status", "revoked"));
    else
        printf("revoked %s %s\n", jti ? "jti" : "subject", what);
    return 0;
}

/* ---- backup ---- */

static int cmd_backup(ctl_t *ctl)
{
    if (ctl->argc != 1)
        return fail("usage: backup DEST_DIR");
    const char *dest = ctl->argv[0];
    if (mkdir(dest, 0750) != 0 && errno != EEXIST)
        return fail("cannot create %s: %s", dest, strerror(errno));
    char probe[4200];
    snprintf(probe, sizeof(probe), "%s/data.mdb", dest);
    if (access(probe, F_OK) == 0)
        return fail("%s already holds a data.mdb: back up into an empty directory", dest);
    store_t *st = open_store(ctl);
    if (st == NULL)
        return 1;
    aly_err_t err;
    int rc = store_backup(st, dest, &err);
    store_close(st);
    if (rc != 0)
        return fail("%s", err.msg);
    if (ctl->json)
        print_json(json_pack("{s:s, s:s}", "backup", probe, "note", "the pepper file is not part of the backup"));
    else
        printf("backed up the store to %s (compacted). The pepper file %s is not in it: keep a copy of it once, apart.\n",
               probe, ctl->cfg->key_pepper_file);
    return 0;
}

/* ---- demo, import, audit ---- */

static int parse_uint(const char *v, const char *opt, unsigned long long max, unsigned long long *out)
{
    char *end;
    if (v == NULL)
        return 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*v < '0' || *v > '9' || *end != '\0' || n > max)
        return fail("%s \"%s\" must be an integer from 0 to %llu", opt, v, max), -1;
    *out = n;
    return 0;
}

static int cmd_demo(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace", "--sites", "--products", "--orders", "--days", "--seed"};
    const char *v[ALY_ARRAY_SIZE(names)] = {NULL};
    if (ctl->argc < 1 || strcmp(ctl->argv[0], "seed") != 0)
        return fail("usage: demo seed --workspace WS [--sites 3 --products 40 --orders 300 --days 90 --seed N]");
    if (take_options(ctl, names, v, ALY_ARRAY_SIZE(names)) != 0)
        return 1;
    if (ctl->argc != 1 || v[0] == NULL)
        return fail("usage: demo seed --workspace WS [--sites 3 --products 40 --orders 300 --days 90 --seed N]");
    unsigned long long sites = 3, products = 40, orders = 300, days = 90, seed = 42;
    if (parse_uint(v[1], "--sites", 50, &sites) || parse_uint(v[2], "--products", 100000, &products) ||
        parse_uint(v[3], "--orders", 1000000, &orders) || parse_uint(v[4], "--days", 3650, &days) ||
        parse_uint(v[5], "--seed", ~0ULL, &seed))
        return 1;
    store_t *st = open_store(ctl);
    if (st == NULL)
        return 1;
    demo_opts_t o = {(unsigned)sites, (unsigned)products, (unsigned)orders, (unsigned)days, seed};
    demo_counts_t c;
    aly_err_t err;
    int rc = demo_seed(st, v[0], &o, &c, &err);
    store_close(st);
    if (rc != 0)
        return fail("%s", err.msg);
    if (ctl->json)
        print_json(json_pack("{s:s, s:i, s:i, s:i, s:i}", "workspace", v[0], "sites", c.sites, "products", c.products, "orders",
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

static int cmd_import(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace"};
    const char *v[1] = {NULL};
    if (take_options(ctl, names, v, 1) != 0)
        return 1;
    if (ctl->argc != 1 || v[0] == NULL)
        return fail("usage: import --workspace WS FILE.jsonl");
    FILE *fp = strcmp(ctl->argv[0], "-") == 0 ? stdin : fopen(ctl->argv[0], "r");
    if (fp == NULL)
        return fail("cannot open %s: %s", ctl->argv[0], strerror(errno));
    store_t *st = open_store(ctl);
    if (st == NULL) {
        if (fp != stdin)
            fclose(fp);
        return 1;
    }
    demo_counts_t c;
    aly_err_t err;
    int rc = demo_import(st, v[0], fp, report_line, ctl->argv[0], &c, &err);
    store_close(st);
    if (fp != stdin)
        fclose(fp);
    if (rc != 0)
        return fail("%s", err.msg);
    if (ctl->json)
        print_json(json_pack("{s:i, s:i, s:i, s:i}", "sites", c.sites, "products", c.products, "orders", c.orders, "visit_days",
                             c.visit_days));
    else
        printf("imported %u sites, %u products, %u orders, %u visit counts\n", c.sites, c.products, c.orders, c.visit_days);
    return 0;
}

typedef struct audit_ctx {
    json_t *out;
    uint64_t since;
    const char *ws;
} audit_ctx_t;

static int audit_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    audit_ctx_t *c = vctx;
    const char *k = key->data;
    const char *a = memchr(k, '/', key->len);
    /* Audit keys are "<ws>/A/<time><seq>"; skip every other record of DB_DATA. */
    if (a == NULL || (size_t)(a - k) + 3 > key->len || a[1] != 'A' || a[2] != '/')
        return 0;
    audit_record_t r;
    aly_err_t err;
    if (record_decode(&record_audit, val->data, val->len, &r, &err) != 0 || r.at_ms < c->since)
        return 0;
    char at[40];
    aly_format_time(at, sizeof(at), r.at_ms);
    if (c->out != NULL)
        json_array_append_new(c->out, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "at", at, "workspace", r.workspace,
                                                "principal", r.principal, "tool", r.tool, "object", r.object, "before_version",
                                                (json_int_t)r.before_version, "after_version", (json_int_t)r.after_version));
    else
        printf("%s %s %s %s %s v%llu->v%llu\n", at, r.workspace, r.principal, r.tool, r.object, (unsigned long long)r.before_version,
               (unsigned long long)r.after_version);
    return 0;
}

static int cmd_audit(ctl_t *ctl)
{
    static const char *const names[] = {"--workspace", "--since"};
    const char *v[2] = {NULL, NULL};
    if (take_options(ctl, names, v, 2) != 0)
        return 1;
    if (ctl->argc != 0)
        return fail("usage: audit [--workspace WS] [--since YYYY-MM-DD]");
    audit_ctx_t c = {ctl->json ? json_array() : NULL, 0, v[0]};
    if (v[1] != NULL) {
        int64_t ms = shop_date_ms(v[1]);
        if (ms < 0)
            return fail("--since \"%s\" must be a date YYYY-MM-DD", v[1]);
        c.since = (uint64_t)ms;
    }
    store_t *st = open_store(ctl);
    if (st == NULL)
        return 1;
    char prefix[64] = "";
    size_t pl = v[0] != NULL ? shop_key(prefix, sizeof(prefix), v[0], 'A', NULL, NULL) : 0;
    store_txn_t t;
    aly_err_t err;
    int rc = store_begin(st, 0, &t, &err);
    if (rc == 0) {
        rc = store_scan(&t, DB_DATA, prefix, pl, NULL, 0, audit_cb, &c, &err);
        store_abort(&t);
    }
    store_close(st);
    if (rc != 0)
        return fail("%s", err.msg);
    if (c.out != NULL)
        print_json(c.out);
    return 0;
}

static const command_t commands[] = {
    {"init", "init                 create data_dir, the pepper file and the store", cmd_init},
    {"stats", "stats [--workspace WS]   store: records, map use, readers; a workspace: its sites' counts", cmd_stats},
    {"workspace", "workspace create NAME | workspace list", cmd_workspace},
    {"keys", "keys create --workspace WS --scopes S1,S2 [--name N] [--expires 90d] [--rate-limit R]\n"
             "                       keys list [--workspace WS] | keys show ID | keys revoke ID",
     cmd_keys},
    {"oauth", "oauth revoke-jti JTI | oauth revoke-sub SUB", cmd_oauth},
    {"backup", "backup DEST_DIR      hot, compacted copy of the durable store", cmd_backup},
    {"demo", "demo seed --workspace WS [--sites 3 --products 40 --orders 300 --days 90 --seed N]", cmd_demo},
    {"import", "import --workspace WS FILE.jsonl   sites, products, orders, visits; all or nothing", cmd_import},
    {"audit", "audit [--workspace WS] [--since YYYY-MM-DD]   every mutation made through the tools", cmd_audit},
};

static void usage(FILE *fp)
{
    fprintf(fp, "usage: alyctl [-c file] [--json] command [args]\n\ncommands:\n");
    for (size_t i = 0; i < ALY_ARRAY_SIZE(commands); i++)
        fprintf(fp, "  %s\n", commands[i].usage);
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    int json = 0, opt;
    static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                             {"config", required_argument, NULL, 'c'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'v'},
                                             {NULL, 0, NULL, 0}};
    /* "+": stop at the command name; the command's own arguments follow it. */
    while ((opt = getopt_long(argc, argv, "+c:hv", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("alyctl %s\n", PACKAGE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const command_t *cmd = NULL;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(commands); i++)
        if (strcmp(commands[i].name, argv[optind]) == 0)
            cmd = &commands[i];
    if (cmd == NULL) {
        fprintf(stderr, "alyctl: unknown command \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    aly_err_t err;
    aly_config_t *cfg = config_load(config_path != NULL ? config_path : ALY_DEFAULT_CONFIG, &err);
    if (cfg == NULL && config_path == NULL && access(ALY_DEFAULT_CONFIG, F_OK) != 0)
        cfg = config_defaults(&err);
    if (cfg == NULL) {
        fprintf(stderr, "alyctl: %s\n", err.msg);
        return 1;
    }
    /* --json may also follow the command name. */
    int first = optind + 1, n = 0;
    char **rest = calloc((size_t)argc, sizeof(*rest));
    if (rest == NULL)
        return 1;
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else
            rest[n++] = argv[i];
    }
    ctl_t ctl = {.cfg = cfg, .json = json, .argc = n, .argv = rest};
    int rc = cmd->run(&ctl);
    free(rest);
    config_free(cfg);
    return rc;
}

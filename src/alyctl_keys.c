/*
 * alyctl's credential commands: workspace, keys and oauth.  Each parses its
 * arguments, calls one admin_*() function and prints the result as text or
 * JSON; minting, storing and revoking happen in admin.c.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alyctl.h"
#include "aly/admin.h"
#include "aly/auth.h"
#include "aly/volatile_redis.h"

/* A subcommand of workspace or keys: runs with the store open. */
typedef struct sub {
    const char *name;
    int (*run)(ctl_t *ctl, store_t *st);
} sub_t;

/* Opens the store, then runs the subcommand named by argv[0]; unknown names what there is. */
static int dispatch(ctl_t *ctl, const sub_t *subs, size_t n, const char *group, const char *names)
{
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    size_t i = 0;
    while (i < n && strcmp(ctl->argv[0], subs[i].name) != 0)
        i++;
    int rc = i < n ? subs[i].run(ctl, st) : ctl_fail("unknown %s command \"%s\" (%s)", group, ctl->argv[0], names);
    store_close(st);
    return rc;
}

/* Printing a listing: into a JSON array with --json, else one line per record. */
typedef struct list_out {
    json_t *out;
    const char *what; /* "workspace", "key": for the message about a bad record */
} list_out_t;

static void skip_bad(void *ctx, const char *why)
{
    fprintf(stderr, "alyctl: skipping a bad %s record: %s\n", ((list_out_t *)ctx)->what, why);
}

/* ---- workspace ---- */

static int workspace_create(ctl_t *ctl, store_t *st)
{
    if (ctl->argc != 2)
        return ctl_fail("usage: workspace create NAME");
    workspace_record_t ws;
    aly_err_t err;
    if (admin_workspace_create(st, ctl->argv[1], &ws, &err) != 0)
        return ctl_fail("%s", err.msg);
    if (ctl->json)
        ctl_print_json(json_pack("{s:s, s:s}", "id", ws.id, "name", ws.name));
    else
        printf("%s\n", ws.id);
    return 0;
}

static int workspace_line(void *ctx, const void *rec)
{
    list_out_t *lo = ctx;
    const workspace_record_t *ws = rec;
    char created[40];
    ctl_format_time(ws->created_ms, created, sizeof(created));
    if (lo->out != NULL)
        json_array_append_new(lo->out, json_pack("{s:s, s:s, s:s}", "id", ws->id, "name", ws->name, "created", created));
    else
        printf("%-26s %-24s %s\n", ws->id, created, ws->name);
    return 0;
}

static int workspace_list(ctl_t *ctl, store_t *st)
{
    if (ctl->argc != 1)
        return ctl_fail("usage: workspace list");
    list_out_t lo = {ctl->json ? json_array() : NULL, "workspace"};
    aly_err_t err;
    if (admin_workspace_list(st, workspace_line, skip_bad, &lo, &err) != 0) {
        json_decref(lo.out);
        return ctl_fail("%s", err.msg);
    }
    if (lo.out != NULL)
        ctl_print_json(lo.out);
    return 0;
}

int ctl_cmd_workspace(ctl_t *ctl)
{
    static const sub_t subs[] = {{"create", workspace_create}, {"list", workspace_list}};
    if (ctl->argc < 1)
        return ctl_fail("usage: workspace create NAME | workspace list");
    return dispatch(ctl, subs, ALY_ARRAY_SIZE(subs), "workspace", "create, list");
}

/* ---- keys ---- */

static json_t *key_json(const key_record_t *k, uint64_t last_used)
{
    char scopes[256], created[40], expires[40], revoked[40], used[40], rate[64] = "default";
    scope_format((scope_set_t)k->scopes, scopes, sizeof(scopes));
    ctl_format_time(k->created_ms, created, sizeof(created));
    ctl_format_time(k->expires_ms, expires, sizeof(expires));
    ctl_format_time(k->revoked_ms, revoked, sizeof(revoked));
    ctl_format_time(last_used, used, sizeof(used));
    if (k->rate_count != 0) {
        aly_rate_t r = {(uint32_t)k->rate_count, (uint32_t)k->rate_period_s, (uint32_t)k->rate_burst};
        config_format_rate(&r, rate, sizeof(rate));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", k->id, "workspace", k->workspace, "name", k->name,
                     "scopes", scopes, "created", created, "expires", expires, "revoked", revoked, "last_used", used, "rate_limit",
                     rate);
}

static void print_key(const key_record_t *k, uint64_t last_used)
{
    json_t *j = key_json(k, last_used);
    const char *fields[] = {"id", "workspace", "name", "scopes", "created", "expires", "revoked", "last_used", "rate_limit"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(fields); i++)
        printf("%-11s %s\n", fields[i], json_string_value(json_object_get(j, fields[i])));
    json_decref(j);
}

#define KEYS_CREATE_USAGE                                                                                                          \
    "usage: keys create --workspace WS --scopes S1,S2 [--name N] [--expires 90d] [--rate-limit '60/minute burst=10']"

/* --expires: a positive duration of at most ten years. */
static int parse_expires(const char *text, uint64_t *ttl_ms)
{
    if (config_parse_duration(text, ttl_ms) != 0 || *ttl_ms == 0 || *ttl_ms > 3650ULL * 86400000ULL)
        return ctl_fail("--expires \"%s\" must be a duration like 90d, 12h, 30m or 45s", text), -1;
    return 0;
}

static int keys_create(ctl_t *ctl, store_t *st)
{
    static const char *const names[] = {"--workspace", "--scopes", "--name", "--expires", "--rate-limit"};
    const char *v[ALY_ARRAY_SIZE(names)] = {NULL};
    if (ctl_take_options(ctl, names, v, ALY_ARRAY_SIZE(names)) != 0)
        return 1;
    if (ctl->argc != 1 || v[0] == NULL || v[1] == NULL)
        return ctl_fail(KEYS_CREATE_USAGE);
    aly_err_t err;
    aly_rate_t rate;
    admin_key_spec_t spec = {.workspace = v[0], .name = v[2]};
    if (scope_parse(v[1], &spec.scopes, &err) != 0)
        return ctl_fail("%s", err.msg);
    if (v[2] != NULL && !admin_name_ok(v[2]))
        return ctl_fail("key name must be 1 to %d printable bytes", ALY_NAME_MAX - 1);
    if (v[3] != NULL && parse_expires(v[3], &spec.ttl_ms) != 0)
        return 1;
    if (v[4] != NULL) {
        if (config_parse_rate(v[4], &rate, &err) != 0)
            return ctl_fail("--rate-limit: %s", err.msg);
        spec.rate = &rate;
    }
    char key[AUTH_KEY_LEN + 1];
    key_record_t k;
    if (admin_key_mint(st, ctl->cfg->key_pepper_file, &spec, &k, key, sizeof(key), &err) != 0)
        return ctl_fail("%s", err.msg);
    if (ctl->json) {
        json_t *j = key_json(&k, 0);
        json_object_set_new(j, "key", json_string(key));
        ctl_print_json(j);
    } else {
        printf("%s\n", key);
        fprintf(stderr, "created %s in %s; the key above is shown once: store it now\n", k.id, k.workspace);
    }
    OPENSSL_cleanse(key, sizeof(key));
    return 0;
}

static int key_line(void *ctx, const void *rec)
{
    list_out_t *lo = ctx;
    const key_record_t *k = rec;
    if (lo->out != NULL) {
        json_array_append_new(lo->out, key_json(k, 0));
    } else {
        char scopes[256];
        scope_format((scope_set_t)k->scopes, scopes, sizeof(scopes));
        printf("%-28s %-26s %-8s %-16s %s\n", k->id, k->workspace, k->revoked_ms ? "revoked" : "active", k->name[0] ? k->name : "-",
               scopes);
    }
    return 0;
}

static int keys_list(ctl_t *ctl, store_t *st)
{
    static const char *const names[] = {"--workspace"};
    const char *v[1] = {NULL};
    if (ctl_take_options(ctl, names, v, 1) != 0)
        return 1;
    if (ctl->argc != 1)
        return ctl_fail("usage: keys list [--workspace WS]");
    list_out_t lo = {ctl->json ? json_array() : NULL, "key"};
    aly_err_t err;
    if (admin_key_list(st, v[0], key_line, skip_bad, &lo, &err) != 0) {
        json_decref(lo.out);
        return ctl_fail("%s", err.msg);
    }
    if (lo.out != NULL)
        ctl_print_json(lo.out);
    return 0;
}

static int keys_show_or_revoke(ctl_t *ctl, store_t *st, int revoke)
{
    if (ctl->argc != 2)
        return ctl_fail("usage: keys %s ID", revoke ? "revoke" : "show");
    const char *id = ctl->argv[1];
    key_record_t k;
    aly_err_t err;
    int rc = revoke ? admin_key_revoke(st, id, &k, &err) : admin_key_get(st, id, &k, &err);
    if (rc != 0)
        return rc == 1 ? ctl_fail("no key %s (alyctl keys list)", id) : ctl_fail("%s", err.msg);
    uint64_t used = admin_key_last_used(st, k.id);
    if (ctl->cfg->volatile_url != NULL) {
        /* Cluster mode: the stamps every host writes are in Redis, not in this host's LMDB. */
        volatile_redis_t *vr = volatile_redis_open(ctl->cfg, &err);
        if (vr == NULL || volatile_redis_last_used(vr, k.id, &used, &err) != 0)
            fprintf(stderr, "alyctl: last_used not shown: %s\n", err.msg);
        volatile_redis_close(vr);
    }
    if (ctl->json)
        ctl_print_json(key_json(&k, used));
    else if (revoke)
        printf("revoked %s\n", k.id);
    else
        print_key(&k, used);
    return 0;
}

static int keys_show(ctl_t *ctl, store_t *st)
{
    return keys_show_or_revoke(ctl, st, 0);
}

static int keys_revoke(ctl_t *ctl, store_t *st)
{
    return keys_show_or_revoke(ctl, st, 1);
}

int ctl_cmd_keys(ctl_t *ctl)
{
    static const sub_t subs[] = {{"create", keys_create}, {"list", keys_list}, {"show", keys_show}, {"revoke", keys_revoke}};
    if (ctl->argc < 1)
        return ctl_fail("usage: keys create|list|show|revoke ...");
    return dispatch(ctl, subs, ALY_ARRAY_SIZE(subs), "keys", "create, list, show, revoke");
}

/* ---- oauth ---- */

int ctl_cmd_oauth(ctl_t *ctl)
{
    if (ctl->argc >= 1 &&
        (strcmp(ctl->argv[0], "clients") == 0 || strcmp(ctl->argv[0], "grants") == 0 || strcmp(ctl->argv[0], "rotate-key") == 0))
        return ctl_oauth_server(ctl);
    if (ctl->argc != 2 || (strcmp(ctl->argv[0], "revoke-jti") != 0 && strcmp(ctl->argv[0], "revoke-sub") != 0))
        return ctl_fail("usage: oauth revoke-jti JTI | oauth revoke-sub SUB");
    int jti = strcmp(ctl->argv[0], "revoke-jti") == 0;
    admin_revoke_t kind = jti ? ADMIN_REVOKE_JTI : ADMIN_REVOKE_SUB;
    const char *what = ctl->argv[1];
    aly_err_t err;
    if (admin_revocation_ok(kind, what, &err) != 0)
        return ctl_fail("%s", err.msg);
    store_t *st = ctl_open_store(ctl);
    if (st == NULL)
        return 1;
    int rc = admin_revoke(st, kind, what, &err);
    store_close(st);
    if (rc != 0)
        return ctl_fail("%s", err.msg);
    if (ctl->json)
        ctl_print_json(json_pack("{s:s, s:s}", jti ? "revoked_jti" : "revoked_sub", what, "status", "revoked"));
    else
        printf("revoked %s %s\n", jti ? "jti" : "subject", what);
    return 0;
}

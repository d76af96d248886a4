/*
 * The administrative operations of aly/admin.h: workspaces, key minting and
 * revocation, OAuth revocations and the audit listing, each in one
 * transaction over the typed record layer.
 */
#include "aly/admin.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "aly/auth.h"
#include "aly/shop.h"

int admin_init(const aly_config_t *cfg, aly_err_t *err)
{
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    /* Only root can hand files to another user; anyone else creates them as themselves. */
    if (geteuid() == 0 && cfg->user != NULL && config_lookup_user(cfg, &uid, &gid, err) != 0)
        return -1;
    return store_init(cfg, uid, gid, err);
}

int admin_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= ALY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return 0;
    return 1;
}

static int workspace_exists(store_txn_t *t, const char *ws, aly_err_t *err)
{
    store_val_t v;
    int rc = store_get(t, DB_WORKSPACES, ws, strlen(ws), &v, err);
    if (rc == 1)
        return aly_errf(err, "no workspace %s (alyctl workspace list)", ws);
    return rc;
}

/* ---- workspaces ---- */

int admin_workspace_create(store_t *st, const char *name, workspace_record_t *out, aly_err_t *err)
{
    if (!admin_name_ok(name))
        return aly_errf(err, "workspace name must be 1 to %d printable bytes", ALY_NAME_MAX - 1);
    *out = (workspace_record_t){.created_ms = aly_wall_ms()};
    snprintf(out->name, sizeof(out->name), "%s", name);
    store_txn_t t;
    if (store_new_id("ws_", out->id, sizeof(out->id), err) != 0 || store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    int rc = store_put_record(&t, DB_WORKSPACES, out->id, strlen(out->id), &record_workspace, out, 1, err);
    if (rc == 1)
        aly_errf(err, "workspace id collision, try again");
    return store_finish(&t, rc != 0 ? -1 : 0, err);
}

/* Adapts a listing's each/bad to store_records_t. */
typedef struct listing {
    admin_each_fn each;
    admin_bad_fn bad;
    void *ctx;
    uint64_t since_ms;
} listing_t;

static int list_each(void *vctx, const store_val_t *key, void *rec)
{
    (void)key;
    listing_t *l = vctx;
    return l->each(l->ctx, rec);
}

static int list_bad(void *vctx, const store_val_t *key, const char *why)
{
    (void)key;
    listing_t *l = vctx;
    l->bad(l->ctx, why);
    return 0;
}

/* One read transaction around a typed scan of db under prefix; with ws, the workspace must exist. */
static int list(store_t *st, int db, const char *prefix, size_t plen, const char *ws, const store_records_t *r, aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(st, 0, &t, err) != 0)
        return -1;
    int rc = ws != NULL ? workspace_exists(&t, ws, err) : 0;
    if (rc == 0)
        rc = store_scan_records(&t, db, prefix, plen, NULL, 0, r, err);
    store_abort(&t);
    return rc;
}

int admin_workspace_list(store_t *st, admin_each_fn each, admin_bad_fn bad, void *ctx, aly_err_t *err)
{
    workspace_record_t ws;
    listing_t l = {each, bad, ctx, 0};
    store_records_t r = {&record_workspace, &ws, list_each, bad != NULL ? list_bad : NULL, &l};
    return list(st, DB_WORKSPACES, "", 0, NULL, &r, err);
}

int admin_workspace_sites(store_t *st, const char *ws, admin_each_fn each, void *ctx, aly_err_t *err)
{
    char prefix[64];
    size_t pl = shop_key(prefix, sizeof(prefix), ws, 'S', NULL, NULL);
    if (pl == 0)
        return aly_errf(err, "no workspace %s (alyctl workspace list)", ws);
    site_record_t s;
    listing_t l = {each, NULL, ctx, 0};
    store_records_t r = {&record_site, &s, list_each, NULL, &l};
    return list(st, DB_DATA, prefix, pl, ws, &r, err);
}

/* ---- API keys ---- */

int admin_key_mint(store_t *st, const char *pepper_file, const admin_key_spec_t *spec, key_record_t *out, char *key, size_t keylen,
                   aly_err_t *err)
{
    if (spec->name != NULL && !admin_name_ok(spec->name))
        return aly_errf(err, "key name must be 1 to %d printable bytes", ALY_NAME_MAX - 1);
    if (strlen(spec->workspace) >= sizeof(out->workspace))
        return aly_errf(err, "no workspace %s (alyctl workspace list)", spec->workspace);
    *out = (key_record_t){.created_ms = aly_wall_ms(), .scopes = spec->scopes};
    if (spec->ttl_ms != 0)
        out->expires_ms = out->created_ms + spec->ttl_ms;
    if (spec->rate != NULL) {
        out->rate_count = spec->rate->count;
        out->rate_period_s = spec->rate->period_s;
        out->rate_burst = spec->rate->burst;
    }
    snprintf(out->name, sizeof(out->name), "%s", spec->name != NULL ? spec->name : "");
    snprintf(out->workspace, sizeof(out->workspace), "%s", spec->workspace);
    auth_pepper_t *pepper = auth_pepper_load(pepper_file, err);
    if (pepper == NULL)
        return -1;
    int rc = auth_key_generate(key, keylen, err) == 0 && auth_key_hash(pepper, key, strlen(key), out->hash, err) == 0 &&
                     store_new_id("key_", out->id, sizeof(out->id), err) == 0
                 ? 0
                 : -1;
    auth_pepper_free(pepper);
    store_txn_t t;
    if (rc == 0 && store_begin(st, STORE_WRITE, &t, err) == 0) {
        rc = workspace_exists(&t, out->workspace, err);
        if (rc == 0)
            rc = auth_key_store(&t, out, err);
        rc = store_finish(&t, rc, err);
    } else {
        rc = -1;
    }
    if (rc != 0)
        OPENSSL_cleanse(key, keylen);
    return rc;
}

int admin_key_list(store_t *st, const char *ws, admin_each_fn each, admin_bad_fn bad, void *ctx, aly_err_t *err)
{
    char prefix[ALY_ID_MAX + 2] = "";
    if (ws != NULL)
        snprintf(prefix, sizeof(prefix), "%s/", ws);
    key_record_t k;
    listing_t l = {each, bad, ctx, 0};
    store_records_t r = {&record_key, &k, list_each, bad != NULL ? list_bad : NULL, &l};
    return list(st, DB_KEYS, prefix, strlen(prefix), NULL, &r, err);
}

int admin_key_get(store_t *st, const char *id, key_record_t *out, aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(st, 0, &t, err) != 0)
        return -1;
    int rc = auth_key_find(&t, id, out, err);
    store_abort(&t);
    return rc;
}

int admin_key_revoke(store_t *st, const char *id, key_record_t *out, aly_err_t *err)
{
    store_txn_t t;
    /* A revocation must work on a full store: it rewrites one record in place. */
    if (store_begin(st, STORE_WRITE | STORE_RESERVE, &t, err) != 0)
        return -1;
    int rc = auth_key_find(&t, id, out, err);
    if (rc != 0 || out->revoked_ms != 0) {
        store_abort(&t);
        return rc;
    }
    out->revoked_ms = aly_wall_ms();
    rc = auth_key_store(&t, out, err) == 0 && auth_bump_revocations(&t, err) == 0 ? 0 : -1;
    return store_finish(&t, rc, err);
}

uint64_t admin_key_last_used(store_t *st, const char *id)
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

/* ---- OAuth revocations ---- */

int admin_revocation_ok(admin_revoke_t kind, const char *what, aly_err_t *err)
{
    size_t n = strlen(what);
    if (n == 0 || n >= sizeof(((revocation_record_t *)0)->subject))
        return aly_errf(err, "the %s must be 1 to 255 bytes", kind == ADMIN_REVOKE_JTI ? "jti" : "subject");
    return 0;
}

int admin_revoke(store_t *st, admin_revoke_t kind, const char *what, aly_err_t *err)
{
    if (admin_revocation_ok(kind, what, err) != 0)
        return -1;
    revocation_record_t r = {.revoked_ms = aly_wall_ms()};
    snprintf(r.subject, sizeof(r.subject), "%s", what);
    store_txn_t t;
    /* One small record: allowed into the reserve, so a leaked token can be revoked on a full store. */
    if (store_begin(st, STORE_WRITE | STORE_RESERVE, &t, err) != 0)
        return -1;
    int db = kind == ADMIN_REVOKE_JTI ? DB_REVOKED_JTI : DB_REVOKED_SUB;
    int rc = store_put_record(&t, db, what, strlen(what), &record_revocation, &r, 0, err) == 0 &&
                     auth_bump_revocations(&t, err) == 0
                 ? 0
                 : -1;
    return store_finish(&t, rc, err);
}

/* ---- audit trail ---- */

static int audit_each(void *vctx, const store_val_t *key, void *rec)
{
    listing_t *l = vctx;
    const audit_record_t *a = rec;
    const char *k = key->data;
    const char *slash = memchr(k, '/', key->len);
    /* Audit keys are "<ws>/A/<time><seq>"; a scan of every workspace meets all of DB_DATA. */
    if (slash == NULL || (size_t)(slash - k) + 3 > key->len || slash[1] != 'A' || slash[2] != '/' || a->at_ms < l->since_ms)
        return 0;
    return l->each(l->ctx, a);
}

int admin_audit_list(store_t *st, const char *ws, uint64_t since_ms, admin_each_fn each, void *ctx, aly_err_t *err)
{
    char prefix[64] = "";
    size_t pl = ws != NULL ? shop_key(prefix, sizeof(prefix), ws, 'A', NULL, NULL) : 0;
    if (ws != NULL && pl == 0)
        return 0; /* an id too long for any workspace has no audit trail */
    audit_record_t a;
    listing_t l = {each, NULL, ctx, since_ms};
    store_records_t r = {&record_audit, &a, audit_each, NULL, &l};
    return list(st, DB_DATA, prefix, pl, NULL, &r, err);
}

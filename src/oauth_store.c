/*
 * The authorization server's records in the durable store (aly/oauth.h):
 * users with Argon2id password hashes, clients, codes, grants, and the
 * checks that keep them apart per workspace, user and client.
 */
#include "aly/oauth.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const record_field_t member_fields[] = {
    RF_STR_(oauth_membership_t, workspace, "ws", 0),
    RF_U64_(oauth_membership_t, scopes, "scopes", 0),
};
static const record_type_t record_member = {"member", 1, member_fields, ALY_ARRAY_SIZE(member_fields)};

static const record_field_t user_fields[] = {
    RF_STR_(oauth_user_t, id, "id", 0),          RF_STR_(oauth_user_t, email, "email", 0),
    RF_STR_(oauth_user_t, hash, "hash", 0),      RF_U64_(oauth_user_t, created_ms, "created", 0),
    RF_U64_(oauth_user_t, generation, "gen", 0), RF_LIST_(oauth_user_t, members, "members", n_members, record_member),
};
static const record_type_t record_user = {"user", 1, user_fields, ALY_ARRAY_SIZE(user_fields)};

static const record_field_t uri_fields[] = {RF_STR_(oauth_uri_t, uri, "uri", 0)};
static const record_type_t record_uri = {"uri", 1, uri_fields, ALY_ARRAY_SIZE(uri_fields)};

static const record_field_t client_fields[] = {
    RF_STR_(oauth_client_t, id, "id", 0),
    RF_STR_(oauth_client_t, name, "name", 1),
    RF_U64_(oauth_client_t, kind, "kind", 0),
    RF_U64_(oauth_client_t, origin, "origin", 0),
    RF_U64_(oauth_client_t, auth_method, "auth", 0),
    RF_BIN_(oauth_client_t, secret_hash, "secret"),
    RF_U64_(oauth_client_t, created_ms, "created", 0),
    RF_U64_(oauth_client_t, last_used_ms, "used", 1),
    RF_LIST_(oauth_client_t, redirects, "redirects", n_redirects, record_uri),
};
const record_type_t oauth_record_client = {"client", 1, client_fields, ALY_ARRAY_SIZE(client_fields)};

static const record_field_t grant_fields[] = {
    RF_STR_(oauth_grant_t, id, "id", 0),
    RF_STR_(oauth_grant_t, workspace, "ws", 0),
    RF_STR_(oauth_grant_t, user, "user", 0),
    RF_STR_(oauth_grant_t, email, "email", 0),
    RF_STR_(oauth_grant_t, client, "client", 0),
    RF_STR_(oauth_grant_t, client_name, "client_name", 1),
    RF_U64_(oauth_grant_t, scopes, "scopes", 0),
    RF_U64_(oauth_grant_t, created_ms, "created", 0),
    RF_U64_(oauth_grant_t, last_used_ms, "used", 1),
    RF_U64_(oauth_grant_t, revoked_ms, "revoked", 1),
};
const record_type_t oauth_record_grant = {"grant", 1, grant_fields, ALY_ARRAY_SIZE(grant_fields)};

static const record_field_t code_fields[] = {
    RF_STR_(oauth_code_t, client, "client", 0),
    RF_STR_(oauth_code_t, redirect, "redirect", 0),
    RF_STR_(oauth_code_t, challenge, "challenge", 0),
    RF_STR_(oauth_code_t, workspace, "ws", 0),
    RF_STR_(oauth_code_t, user, "user", 0),
    RF_STR_(oauth_code_t, email, "email", 0),
    RF_STR_(oauth_code_t, client_name, "client_name", 1),
    RF_U64_(oauth_code_t, scopes, "scopes", 0),
    RF_U64_(oauth_code_t, expires_ms, "expires", 0),
    RF_U64_(oauth_code_t, used_ms, "used", 1),
    RF_STR_(oauth_code_t, grant, "grant", 1),
    RF_U64_(oauth_code_t, redirect_omitted, "noredirect", 1), /* absent in codes of older versions: the redirect is required */
};
const record_type_t oauth_record_code = {"code", 1, code_fields, ALY_ARRAY_SIZE(code_fields)};

int oauth_mac(auth_pepper_t *p, const char *domain, const void *data, size_t len, unsigned char out[32], aly_err_t *err)
{
    size_t dl = strlen(domain);
    char *buf = malloc(dl + 1 + len + 1);
    if (buf == NULL)
        abort();
    memcpy(buf, domain, dl);
    buf[dl] = ':';
    memcpy(buf + dl + 1, data, len);
    int rc = auth_key_hash(p, buf, dl + 1 + len, out, err);
    OPENSSL_cleanse(buf, dl + 1 + len);
    free(buf);
    return rc;
}

/* ---- users ---- */

int oauth_email_ok(const char *e)
{
    size_t n = strlen(e), at = 0;
    if (n < 3 || n > OAUTH_EMAIL_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)e[i];
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '<' || c == '>')
            return 0;
        at += c == '@';
    }
    const char *a = strchr(e, '@');
    return at == 1 && a != e && a[1] != '\0';
}

static void email_key(const char *email, char *out)
{
    size_t i = 0;
    for (; email[i] != '\0' && i < OAUTH_EMAIL_MAX; i++)
        out[i] = (char)tolower((unsigned char)email[i]);
    out[i] = '\0';
}

static int sodium_ready(aly_err_t *err)
{
    if (sodium_init() < 0)
        return aly_errf(err, "libsodium cannot initialise");
    return 0;
}

int oauth_password_hash(const char *password, char out[128], aly_err_t *err)
{
    size_t n = strlen(password);
    if (n == 0 || n > 1024)
        return aly_errf(err, "a password must be 1 to 1024 bytes");
    if (sodium_ready(err) != 0)
        return -1;
    char buf[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str_alg(buf, password, n, crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return aly_errf(err, "out of memory hashing the password");
    snprintf(out, 128, "%s", buf);
    return 0;
}

int oauth_password_check(const char *hash, const char *password, size_t len)
{
    if (len == 0 || len > 1024 || sodium_init() < 0)
        return 0;
    return crypto_pwhash_str_verify(hash, password, len) == 0;
}

int oauth_user_get(store_txn_t *t, const char *email, oauth_user_t *out, aly_err_t *err)
{
    char k[OAUTH_EMAIL_MAX + 1];
    if (!oauth_email_ok(email))
        return 1;
    email_key(email, k);
    return store_get_record(t, DB_OAUTH_USERS, k, strlen(k), &record_user, out, err);
}

int oauth_user_add(store_t *st, const char *email, const char *ws, scope_set_t cap, const char *password, oauth_user_t *out,
                   aly_err_t *err)
{
    if (!oauth_email_ok(email))
        return aly_errf(err, "\"%s\" is not an email address alyd can store", email);
    char k[OAUTH_EMAIL_MAX + 1], hash[128] = "";
    email_key(email, k);
    if (password != NULL && oauth_password_hash(password, hash, err) != 0)
        return -1;
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    store_val_t v;
    int rc = store_get(&t, DB_WORKSPACES, ws, strlen(ws), &v, err);
    if (rc != 0)
        return store_finish(&t, rc == 1 ? aly_errf(err, "no workspace %s (alyctl workspace list)", ws) : -1, err);
    rc = store_get_record(&t, DB_OAUTH_USERS, k, strlen(k), &record_user, out, err);
    if (rc < 0)
        return store_finish(&t, -1, err);
    if (rc == 1) {
        if (password == NULL)
            return store_finish(&t, aly_errf(err, "a new user needs a password"), err);
        memset(out, 0, sizeof(*out));
        snprintf(out->email, sizeof(out->email), "%s", k);
        out->created_ms = aly_wall_ms();
        out->generation = 1;
        if (store_new_id("usr_", out->id, sizeof(out->id), err) != 0)
            return store_finish(&t, -1, err);
    }
    if (password != NULL) {
        memcpy(out->hash, hash, sizeof(out->hash));
        out->generation++;
    }
    size_t i = 0;
    while (i < out->n_members && strcmp(out->members[i].workspace, ws) != 0)
        i++;
    if (i == out->n_members) {
        if (i == OAUTH_MAX_MEMBERSHIPS)
            return store_finish(&t, aly_errf(err, "%s already belongs to %d workspaces", k, OAUTH_MAX_MEMBERSHIPS), err);
        snprintf(out->members[i].workspace, sizeof(out->members[i].workspace), "%s", ws);
        out->n_members++;
    }
    out->members[i].scopes = cap;
    rc = store_put_record(&t, DB_OAUTH_USERS, k, strlen(k), &record_user, out, 0, err);
    OPENSSL_cleanse(hash, sizeof(hash));
    return store_finish(&t, rc, err);
}

int oauth_user_passwd(store_t *st, const char *email, const char *password, aly_err_t *err)
{
    char hash[128];
    if (oauth_password_hash(password, hash, err) != 0)
        return -1;
    store_txn_t t;
    oauth_user_t u;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    int rc = oauth_user_get(&t, email, &u, err);
    if (rc != 0)
        return store_finish(&t, rc, err);
    memcpy(u.hash, hash, sizeof(u.hash));
    u.generation++;
    rc = store_put_record(&t, DB_OAUTH_USERS, u.email, strlen(u.email), &record_user, &u, 0, err);
    /* Sign-in cookies check the generation; the bump also makes workers re-verify tokens. */
    if (rc == 0)
        rc = auth_bump_revocations(&t, err);
    return store_finish(&t, rc, err);
}

typedef struct revoke_scan {
    const char *user, *client;
    const char (*clients)[OAUTH_URI_MAX]; /* when not NULL: grants of any of these n_clients */
    size_t n_clients;
    char (*ids)[ALY_ID_MAX];
    size_t n, cap;
} revoke_scan_t;

static int client_listed(const revoke_scan_t *r, const char *client)
{
    for (size_t i = 0; i < r->n_clients; i++)
        if (strcmp(r->clients[i], client) == 0)
            return 1;
    return 0;
}

static int collect_grant(void *ctx, const store_val_t *key, void *rec)
{
    (void)key;
    revoke_scan_t *r = ctx;
    oauth_grant_t *g = rec;
    if (g->revoked_ms != 0 || (r->user != NULL && strcmp(g->user, r->user) != 0) ||
        (r->client != NULL && strcmp(g->client, r->client) != 0) || (r->clients != NULL && !client_listed(r, g->client)))
        return 0;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->ids = realloc(r->ids, r->cap * sizeof(*r->ids));
        if (r->ids == NULL)
            abort();
    }
    snprintf(r->ids[r->n++], ALY_ID_MAX, "%s", g->id);
    return 0;
}

/* Revokes every live grant r selects (inside the write transaction t). */
static int revoke_selected(store_txn_t *t, revoke_scan_t *r, aly_err_t *err)
{
    oauth_grant_t g;
    store_records_t sr = {&oauth_record_grant, &g, collect_grant, NULL, r};
    int rc = store_scan_records(t, DB_OAUTH_GRANTS, "g/", 2, NULL, 0, &sr, err);
    for (size_t i = 0; rc == 0 && i < r->n; i++)
        rc = oauth_grant_revoke_in(t, r->ids[i], err) < 0 ? -1 : 0;
    free(r->ids);
    return rc == 0 ? auth_bump_revocations(t, err) : -1;
}

/* Revokes every live grant of user or client (inside the write transaction t). */
static int revoke_matching(store_txn_t *t, const char *user, const char *client, aly_err_t *err)
{
    revoke_scan_t r = {.user = user, .client = client};
    return revoke_selected(t, &r, err);
}

int oauth_user_remove(store_t *st, const char *email, aly_err_t *err)
{
    store_txn_t t;
    oauth_user_t u;
    if (store_begin(st, STORE_WRITE | STORE_RESERVE, &t, err) != 0)
        return -1;
    int rc = oauth_user_get(&t, email, &u, err);
    if (rc != 0)
        return store_finish(&t, rc, err);
    rc = store_del(&t, DB_OAUTH_USERS, u.email, strlen(u.email), err) < 0 ? -1 : 0;
    if (rc == 0)
        rc = revoke_matching(&t, u.id, NULL, err);
    return store_finish(&t, rc, err);
}

typedef struct each_ctx {
    oauth_each_fn each;
    void *ctx;
} each_ctx_t;

static int each_record(void *ctx, const store_val_t *key, void *rec)
{
    (void)key;
    each_ctx_t *e = ctx;
    return e->each(e->ctx, rec);
}

static int list_db(store_t *st, int db, const char *prefix, const record_type_t *type, void *rec, oauth_each_fn each, void *ctx,
                   aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(st, 0, &t, err) != 0)
        return -1;
    each_ctx_t e = {each, ctx};
    store_records_t r = {type, rec, each_record, NULL, &e};
    int rc = store_scan_records(&t, db, prefix != NULL ? prefix : "", prefix != NULL ? strlen(prefix) : 0, NULL, 0, &r, err);
    store_abort(&t);
    return rc;
}

int oauth_user_list(store_t *st, oauth_each_fn each, void *ctx, aly_err_t *err)
{
    oauth_user_t u;
    return list_db(st, DB_OAUTH_USERS, NULL, &record_user, &u, each, ctx, err);
}

/* ---- clients ---- */

static int loopback_host(const char *h, size_t n)
{
    return (n == 9 && memcmp(h, "127.0.0.1", 9) == 0) || (n == 5 && memcmp(h, "[::1]", 5) == 0) ||
           (n == 9 && strncasecmp(h, "localhost", 9) == 0);
}

int oauth_redirect_ok(const char *uri)
{
    size_t n = strlen(uri);
    if (n == 0 || n >= OAUTH_URI_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)uri[i] <= 0x20 || (unsigned char)uri[i] >= 0x7f || uri[i] == '#' || uri[i] == '\\' || uri[i] == '"' ||
            uri[i] == '<' || uri[i] == '>')
            return 0;
    int https = strncmp(uri, "https://", 8) == 0;
    if (!https && strncmp(uri, "http://", 7) != 0)
        return 0;
    const char *auth = uri + (https ? 8 : 7);
    size_t alen = strcspn(auth, "/?");
    if (alen == 0 || memchr(auth, '@', alen) != NULL)
        return 0;
    size_t hlen = alen;
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (close == NULL)
            return 0;
        hlen = (size_t)(close - auth) + 1;
    } else {
        const char *colon = memchr(auth, ':', alen);
        if (colon != NULL)
            hlen = (size_t)(colon - auth);
    }
    if (hlen == 0)
        return 0;
    if (hlen < alen) {
        if (auth[hlen] != ':' || hlen + 1 == alen)
            return 0;
        for (size_t i = hlen + 1; i < alen; i++)
            if (!isdigit((unsigned char)auth[i]))
                return 0;
    }
    return https || loopback_host(auth, hlen);
}

int oauth_client_has_redirect(const oauth_client_t *c, const char *uri)
{
    for (size_t i = 0; i < c->n_redirects && i < OAUTH_MAX_REDIRECTS; i++)
        if (strcmp(c->redirects[i].uri, uri) == 0)
            return 1;
    return 0;
}

/* A dynamic client unused for OAUTH_DCR_IDLE_MS: unknown from then on, and deleted by the next sweep. */
static int dcr_idle(const oauth_client_t *c, uint64_t now)
{
    uint64_t seen = c->last_used_ms > c->created_ms ? c->last_used_ms : c->created_ms;
    /* Added, not subtracted: seen may lie ahead of this host's clock (another host's, or one stepped back). */
    return c->origin == OAUTH_ORIGIN_DCR && seen + OAUTH_DCR_IDLE_MS < now;
}

int oauth_client_get(store_txn_t *t, const char *id, oauth_client_t *out, aly_err_t *err)
{
    size_t n = strlen(id);
    if (n == 0 || n >= OAUTH_URI_MAX)
        return 1;
    int rc = store_get_record(t, DB_OAUTH_CLIENTS, id, n, &oauth_record_client, out, err);
    return rc == 0 && dcr_idle(out, aly_wall_ms()) ? 1 : rc;
}

/* Checks c and sets what creation gives it: id, times, and for a confidential client secret and its HMAC. */
static int client_prepare(auth_pepper_t *p, oauth_client_t *c, char *secret, size_t slen, aly_err_t *err)
{
    if (c->n_redirects == 0 || c->n_redirects > OAUTH_MAX_REDIRECTS)
        return aly_errf(err, "a client needs 1 to %d redirect URIs", OAUTH_MAX_REDIRECTS);
    for (size_t i = 0; i < c->n_redirects; i++)
        if (!oauth_redirect_ok(c->redirects[i].uri))
            return aly_errf(err,
                            "redirect URI \"%.200s\" must be https, or http on 127.0.0.1, [::1] or localhost, without a fragment",
                            c->redirects[i].uri);
    if (store_new_id("cli_", c->id, sizeof(c->id), err) != 0)
        return -1;
    c->created_ms = aly_wall_ms();
    c->last_used_ms = 0;
    memset(c->secret_hash, 0, sizeof(c->secret_hash));
    if (c->kind == OAUTH_CLIENT_CONFIDENTIAL) {
        if (slen < 40 || (memcpy(secret, "aly_cs_", 7), aly_random_b62(secret + 7, 32)) != 0)
            return aly_errf(err, "cannot make a client secret");
        if (oauth_mac(p, "client-secret", secret, strlen(secret), c->secret_hash, err) != 0)
            return -1;
    }
    return 0;
}

int oauth_client_create(store_t *st, auth_pepper_t *p, oauth_client_t *c, char *secret, size_t slen, aly_err_t *err)
{
    if (client_prepare(p, c, secret, slen, err) != 0)
        return -1;
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    return store_finish(&t,
                        store_put_record(&t, DB_OAUTH_CLIENTS, c->id, strlen(c->id), &oauth_record_client, c, 1, err) == 0 ? 0 : -1,
                        err);
}

/*
 * The dynamic clients' tally ("d/dynamic" in DB_OAUTH_GRANTS): how many are
 * live, counted by the last sweep and kept since by each registration and
 * removal, when that sweep counted, and whether it stopped at its batch
 * (the next registration then goes on with it).  A registration reads one
 * record to know whether it is over the cap, instead of reading every client.
 */
typedef struct dcr_tally {
    uint64_t live;
    uint64_t swept_ms; /* when live was counted */
    uint64_t more;     /* that sweep stopped at its batch: the next registration goes on with it */
} dcr_tally_t;

static const record_field_t tally_fields[] = {
    RF_U64_(dcr_tally_t, live, "live", 0),
    RF_U64_(dcr_tally_t, swept_ms, "swept", 0),
    RF_U64_(dcr_tally_t, more, "more", 1),
};
static const record_type_t record_tally = {"dcr-tally", 1, tally_fields, ALY_ARRAY_SIZE(tally_fields)};
static const char tally_key[] = "d/dynamic";

typedef struct sweep {
    uint64_t now, live;
    char (*idle)[OAUTH_URI_MAX]; /* OAUTH_DCR_SWEEP_MAX of them */
    size_t n;
    int more; /* idle ones left for the next sweep */
} sweep_t;

static int sweep_client(void *ctx, const store_val_t *key, void *rec)
{
    sweep_t *s = ctx;
    const oauth_client_t *c = rec;
    if (c->origin != OAUTH_ORIGIN_DCR)
        return 0;
    if (!dcr_idle(c, s->now))
        s->live++;
    else if (s->n == OAUTH_DCR_SWEEP_MAX || key->len >= OAUTH_URI_MAX)
        s->more = 1;
    else
        snprintf(s->idle[s->n++], OAUTH_URI_MAX, "%.*s", (int)key->len, (const char *)key->data);
    return 0;
}

/*
 * Deletes idle dynamic clients (a batch) and revokes their grants, as
 * clients remove does, and counts the live ones into *n.  Every client is
 * read: a registration does this at most once per OAUTH_DCR_SWEEP_MS.
 */
static int sweep_dynamic(store_txn_t *t, uint64_t now, dcr_tally_t *n, aly_err_t *err)
{
    sweep_t s = {.now = now};
    s.idle = calloc(OAUTH_DCR_SWEEP_MAX, sizeof(*s.idle));
    if (s.idle == NULL)
        abort();
    oauth_client_t tmp;
    store_records_t r = {&oauth_record_client, &tmp, sweep_client, NULL, &s};
    int rc = store_scan_records(t, DB_OAUTH_CLIENTS, "", 0, NULL, 0, &r, err);
    for (size_t i = 0; rc == 0 && i < s.n; i++)
        rc = store_del(t, DB_OAUTH_CLIENTS, s.idle[i], strlen(s.idle[i]), err) < 0 ? -1 : 0;
    if (rc == 0 && s.n > 0) {
        revoke_scan_t g = {.clients = (const char(*)[OAUTH_URI_MAX])s.idle, .n_clients = s.n};
        rc = revoke_selected(t, &g, err);
    }
    free(s.idle);
    n->live = s.live;
    n->swept_ms = now;
    n->more = s.more;
    return rc;
}

int oauth_client_register(store_t *st, auth_pepper_t *p, oauth_client_t *c, char *secret, size_t slen, unsigned max, aly_err_t *err)
{
    c->origin = OAUTH_ORIGIN_DCR;
    if (client_prepare(p, c, secret, slen, err) != 0)
        return -1;
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    dcr_tally_t n = {0, 0, 0};
    uint64_t now = aly_wall_ms();
    int rc = store_get_record(&t, DB_OAUTH_GRANTS, tally_key, sizeof(tally_key) - 1, &record_tally, &n, err), changed = 0;
    /* Due once an hour, at once after a partial sweep, and when the last one lies ahead of this clock. */
    if (rc == 1 || (rc == 0 && (n.more || n.swept_ms > now || n.swept_ms + OAUTH_DCR_SWEEP_MS <= now))) {
        rc = sweep_dynamic(&t, now, &n, err);
        changed = 1;
    }
    int full = rc == 0 && n.live >= max;
    if (rc == 0 && !full) {
        rc = store_put_record(&t, DB_OAUTH_CLIENTS, c->id, strlen(c->id), &oauth_record_client, c, 1, err) == 0 ? 0 : -1;
        n.live++;
        changed = 1;
    }
    if (rc == 0 && changed)
        rc = store_put_record(&t, DB_OAUTH_GRANTS, tally_key, sizeof(tally_key) - 1, &record_tally, &n, 0, err);
    if (rc == 0 && !changed) {
        store_abort(&t);
        return 1;
    }
    if (store_finish(&t, rc, err) != 0)
        return -1;
    return full ? 1 : 0;
}

int oauth_client_remove(store_t *st, const char *id, aly_err_t *err)
{
    store_txn_t t;
    oauth_client_t c;
    dcr_tally_t n;
    int rc = 0;
    if (store_begin(st, STORE_WRITE | STORE_RESERVE, &t, err) != 0)
        return -1;
    /*
     * A dynamic client the tally counts leaves it now, so removing some makes room at once: one that was live
     * when the tally was counted, or registered since.  One that has gone idle since still counts until the
     * next sweep, and leaves the tally here as well.
     */
    if (store_get_record(&t, DB_OAUTH_CLIENTS, id, strlen(id), &oauth_record_client, &c, err) == 0 &&
        c.origin == OAUTH_ORIGIN_DCR &&
        store_get_record(&t, DB_OAUTH_GRANTS, tally_key, sizeof(tally_key) - 1, &record_tally, &n, err) == 0 &&
        (c.last_used_ms > c.created_ms ? c.last_used_ms : c.created_ms) + OAUTH_DCR_IDLE_MS >= n.swept_ms && n.live > 0) {
        n.live--;
        rc = store_put_record(&t, DB_OAUTH_GRANTS, tally_key, sizeof(tally_key) - 1, &record_tally, &n, 0, err);
    }
    if (rc == 0)
        rc = store_del(&t, DB_OAUTH_CLIENTS, id, strlen(id), err);
    if (rc == 0)
        rc = revoke_matching(&t, NULL, id, err);
    return store_finish(&t, rc, err);
}

int oauth_client_list(store_t *st, oauth_each_fn each, void *ctx, aly_err_t *err)
{
    oauth_client_t c;
    return list_db(st, DB_OAUTH_CLIENTS, NULL, &oauth_record_client, &c, each, ctx, err);
}

/* ---- codes and grants ---- */

typedef struct stale {
    char keys[32][2 + 32];
    size_t n;
    uint64_t now;
} stale_t;

static int find_stale(void *ctx, const store_val_t *key, void *rec)
{
    stale_t *s = ctx;
    const oauth_code_t *c = rec;
    if (c->expires_ms + OAUTH_CODE_KEEP_MS < s->now && key->len == 34)
        memcpy(s->keys[s->n++], key->data, 34);
    return s->n == ALY_ARRAY_SIZE(s->keys) ? 1 : 0;
}

int oauth_code_issue(store_t *st, auth_pepper_t *p, oauth_code_t *c, char *code, size_t clen, aly_err_t *err)
{
    char k[2 + 32] = "c/";
    if (clen < 48 || aly_random_b62(code, 43) != 0)
        return aly_errf(err, "cannot make a code");
    if (oauth_mac(p, "code", code, strlen(code), (unsigned char *)k + 2, err) != 0)
        return -1;
    c->expires_ms = aly_wall_ms() + OAUTH_CODE_TTL_MS;
    c->used_ms = 0;
    c->grant[0] = '\0';
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    /* Codes past their replay window are swept a few at a time by the writers of new ones. */
    stale_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        abort();
    s->now = aly_wall_ms();
    oauth_code_t tmp;
    store_records_t r = {&oauth_record_code, &tmp, find_stale, NULL, s};
    int rc = store_scan_records(&t, DB_OAUTH_GRANTS, "c/", 2, NULL, 0, &r, err);
    for (size_t i = 0; rc == 0 && i < s->n; i++)
        rc = store_del(&t, DB_OAUTH_GRANTS, s->keys[i], 34, err) < 0 ? -1 : 0;
    free(s);
    if (rc == 0)
        rc = store_put_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &oauth_record_code, c, 1, err) == 0 ? 0 : -1;
    return store_finish(&t, rc, err);
}

int oauth_grant_get(store_txn_t *t, const char *id, oauth_grant_t *out, aly_err_t *err)
{
    char k[2 + ALY_ID_MAX];
    int n = snprintf(k, sizeof(k), "g/%s", id);
    if (n <= 2 || (size_t)n >= sizeof(k))
        return 1;
    return store_get_record(t, DB_OAUTH_GRANTS, k, (size_t)n, &oauth_record_grant, out, err);
}

int oauth_grant_revoke_in(store_txn_t *t, const char *id, aly_err_t *err)
{
    oauth_grant_t g;
    int rc = oauth_grant_get(t, id, &g, err);
    if (rc != 0)
        return rc;
    if (g.revoked_ms == 0)
        g.revoked_ms = aly_wall_ms();
    char k[2 + ALY_ID_MAX];
    int n = snprintf(k, sizeof(k), "g/%s", g.id);
    if (store_put_record(t, DB_OAUTH_GRANTS, k, (size_t)n, &oauth_record_grant, &g, 0, err) != 0 ||
        auth_bump_revocations(t, err) != 0)
        return -1;
    return 0;
}

int oauth_grant_revoke(store_t *st, const char *id, aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(st, STORE_WRITE | STORE_RESERVE, &t, err) != 0)
        return -1;
    return store_finish(&t, oauth_grant_revoke_in(&t, id, err), err);
}

typedef struct grant_filter {
    const char *ws;
    oauth_each_fn each;
    void *ctx;
} grant_filter_t;

static int grant_each(void *ctx, const void *rec)
{
    grant_filter_t *f = ctx;
    const oauth_grant_t *g = rec;
    if (f->ws != NULL && strcmp(g->workspace, f->ws) != 0)
        return 0;
    return f->each(f->ctx, g);
}

int oauth_grant_list(store_t *st, const char *ws, oauth_each_fn each, void *ctx, aly_err_t *err)
{
    oauth_grant_t g;
    grant_filter_t f = {ws, each, ctx};
    return list_db(st, DB_OAUTH_GRANTS, "g/", &oauth_record_grant, &g, grant_each, &f, err);
}

int oauth_grant_active(store_txn_t *t, const char *jti, aly_err_t *why)
{
    char id[ALY_ID_MAX];
    size_t n = strcspn(jti, ".");
    if (jti[n] != '.' || n == 0 || n >= sizeof(id))
        return aly_errf(why, "the token's jti names no grant");
    memcpy(id, jti, n);
    id[n] = '\0';
    oauth_grant_t g;
    aly_err_t err;
    int rc = oauth_grant_get(t, id, &g, &err);
    if (rc < 0)
        return aly_errf(why, "cannot check the token's grant");
    if (rc == 1 || g.revoked_ms != 0)
        return aly_errf(why, "the authorization behind this token was revoked: authorize again");
    return 0;
}

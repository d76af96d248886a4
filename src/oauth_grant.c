/*
 * What the token endpoint does to the store (aly/oauth.h): redeeming a code
 * into a grant, rotating refresh tokens, and revoking a family when a code
 * or a refresh token comes back.  Each is one write transaction, so two
 * workers redeeming the same code at once are serialised by LMDB and exactly
 * one of them wins.
 */
#include "aly/oauth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct refresh_record {
    char grant[ALY_ID_MAX];
    char client[OAUTH_URI_MAX];
    uint64_t created_ms;
    uint64_t replaced_ms; /* 0 while it is the family's current token */
} refresh_record_t;

static const record_field_t refresh_fields[] = {
    RF_STR_(refresh_record_t, grant, "grant", 0),
    RF_STR_(refresh_record_t, client, "client", 0),
    RF_U64_(refresh_record_t, created_ms, "created", 0),
    RF_U64_(refresh_record_t, replaced_ms, "replaced", 1),
};
static const record_type_t record_refresh = {"refresh", 1, refresh_fields, ALY_ARRAY_SIZE(refresh_fields)};

#define HKEY_LEN (2 + 32)

static int hashed_key(auth_pepper_t *p, char tag, const char *domain, const char *secret, char out[HKEY_LEN], aly_err_t *err)
{
    out[0] = tag;
    out[1] = '/';
    return oauth_mac(p, domain, secret, strlen(secret), (unsigned char *)out + 2, err);
}

/* A refusal that must still commit what it changed (a burned code, a revoked family). */
static int refuse_commit(store_txn_t *t, aly_err_t *why)
{
    aly_err_t err;
    if (store_commit(t, &err) != 0)
        return aly_errf(why, "%s", err.msg);
    return 1;
}

/* Burns code c (its record, used_ms set, stored as it is) and refuses with why, which the caller has said. */
static int burn_code(store_txn_t *t, const char *k, const oauth_code_t *c, aly_err_t *why)
{
    aly_err_t err;
    if (store_put_record(t, DB_OAUTH_GRANTS, k, HKEY_LEN, &oauth_record_code, c, 0, &err) != 0) {
        store_abort(t);
        return aly_errf(why, "%s", err.msg);
    }
    return refuse_commit(t, why);
}

/*
 * What the account that gave an authorization may still grant in its
 * workspace: 0 with *cap (its membership's scopes, and offline_access), 1
 * when it is gone, no longer a member, or another account under the same
 * email (added again since), -1 with err.  Both the code exchange and every
 * refresh ask, so a cap lowered or a membership ended narrows or ends what
 * the next token carries.
 */
static int member_cap(store_txn_t *t, const char *email, const char *user, const char *ws, uint64_t *cap, aly_err_t *err)
{
    oauth_user_t u;
    int rc = oauth_user_get(t, email, &u, err);
    if (rc < 0)
        return -1;
    int found = 0;
    for (uint64_t i = 0; rc == 0 && strcmp(u.id, user) == 0 && i < u.n_members && !found; i++)
        if (strcmp(u.members[i].workspace, ws) == 0) {
            *cap = u.members[i].scopes | OAUTH_SCOPE_OFFLINE;
            found = 1;
        }
    OPENSSL_cleanse(u.hash, sizeof(u.hash));
    return found ? 0 : 1;
}

static int put_grant(store_txn_t *t, const oauth_grant_t *g, aly_err_t *err)
{
    char k[2 + ALY_ID_MAX];
    int n = snprintf(k, sizeof(k), "g/%s", g->id);
    return store_put_record(t, DB_OAUTH_GRANTS, k, (size_t)n, &oauth_record_grant, g, 0, err) == 0 ? 0 : -1;
}

/* A new refresh token of grant g into out (>= 64 bytes), its record stored in t. */
static int new_refresh(store_txn_t *t, auth_pepper_t *p, const oauth_grant_t *g, char *out, size_t len, aly_err_t *err)
{
    size_t pl = sizeof(OAUTH_REFRESH_PREFIX) - 1;
    if (len < pl + 44)
        return aly_errf(err, "refresh token buffer too small");
    memcpy(out, OAUTH_REFRESH_PREFIX, pl);
    if (aly_random_b62(out + pl, 43) != 0)
        return aly_errf(err, "cannot make a refresh token");
    char k[HKEY_LEN];
    if (hashed_key(p, 'r', "refresh", out, k, err) != 0)
        return -1;
    refresh_record_t r = {.created_ms = aly_wall_ms()};
    snprintf(r.grant, sizeof(r.grant), "%s", g->id);
    snprintf(r.client, sizeof(r.client), "%s", g->client);
    return store_put_record(t, DB_OAUTH_GRANTS, k, sizeof(k), &record_refresh, &r, 1, err) == 0 ? 0 : -1;
}

/* Notes the use of the grant's client, so an idle dynamic client expires only when really idle. */
static int touch_client(store_txn_t *t, const char *id, uint64_t now, aly_err_t *err)
{
    oauth_client_t c;
    int rc = store_get_record(t, DB_OAUTH_CLIENTS, id, strlen(id), &oauth_record_client, &c, err);
    if (rc != 0 || c.last_used_ms + 3600 * 1000 > now) /* a use this hour, or one stamped ahead of this clock */
        return rc < 0 ? -1 : 0;
    c.last_used_ms = now;
    return store_put_record(t, DB_OAUTH_CLIENTS, id, strlen(id), &oauth_record_client, &c, 0, err) == 0 ? 0 : -1;
}

/* PKCE S256: base64url(SHA-256(verifier)) == challenge, the verifier 43 to 128 unreserved characters (RFC 7636). */
static int pkce_ok(const char *verifier, const char *challenge)
{
    size_t n = strlen(verifier);
    if (n < 43 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = verifier[i];
        if (!aly_b62_char(c) && c != '-' && c != '.' && c != '_' && c != '~')
            return 0;
    }
    unsigned char d[32];
    char enc[48];
    SHA256((const unsigned char *)verifier, n, d);
    size_t el = aly_b64url_encode(d, sizeof(d), enc);
    return el == strlen(challenge) && CRYPTO_memcmp(enc, challenge, el) == 0;
}

/*
 * The end both grant paths share once their own record is written (rc its
 * outcome): the grant stored, a new refresh token when with_refresh, the
 * client's last use, the commit.  0, or -1 with why (and refresh emptied).
 */
static int issue(store_txn_t *t, int rc, aly_err_t *err, auth_pepper_t *p, oauth_grant_t *g, int with_refresh, uint64_t now,
                 char *refresh, size_t rlen, aly_err_t *why)
{
    if (rc == 0)
        rc = put_grant(t, g, err);
    if (rc == 0 && with_refresh)
        rc = new_refresh(t, p, g, refresh, rlen, err);
    if (rc == 0)
        rc = touch_client(t, g->client, now, err);
    if (store_finish(t, rc, err) != 0) {
        OPENSSL_cleanse(refresh, rlen);
        refresh[0] = '\0';
        return aly_errf(why, "%s", err->msg);
    }
    return 0;
}

int oauth_code_redeem(store_t *st, auth_pepper_t *p, const char *code, const char *client_id, const char *redirect,
                      const char *verifier, oauth_grant_t *g, char *refresh, size_t rlen, aly_err_t *why)
{
    char k[HKEY_LEN];
    aly_err_t err;
    refresh[0] = '\0';
    if (strlen(code) > 256)
        return aly_errf(why, "unknown authorization code"), 1;
    if (hashed_key(p, 'c', "code", code, k, &err) != 0)
        return aly_errf(why, "%s", err.msg);
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, &err) != 0)
        return aly_errf(why, "%s", err.msg);
    oauth_code_t c;
    int rc = store_get_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &oauth_record_code, &c, &err);
    if (rc != 0) {
        store_abort(&t);
        return rc == 1 ? (aly_errf(why, "unknown authorization code"), 1) : aly_errf(why, "%s", err.msg);
    }
    uint64_t now = aly_wall_ms();
    if (strcmp(c.client, client_id) != 0) {
        store_abort(&t);
        return aly_errf(why, "the authorization code was issued to another client"), 1;
    }
    if (c.used_ms != 0) {
        /* A replay: whoever holds this code is not to be trusted with what it bought. */
        if (c.grant[0] != '\0' && oauth_grant_revoke_in(&t, c.grant, &err) < 0) {
            store_abort(&t);
            return aly_errf(why, "%s", err.msg);
        }
        aly_errf(why, "the authorization code was already used; the tokens it issued are revoked");
        return refuse_commit(&t, why);
    }
    if (now >= c.expires_ms) {
        store_abort(&t);
        return aly_errf(why, "the authorization code has expired (codes live 60 s)"), 1;
    }
    if (redirect == NULL && !c.redirect_omitted) {
        store_abort(&t);
        return aly_errf(why, "redirect_uri is missing: the authorization request named one, so this request must too"), 3;
    }
    c.used_ms = now;
    int redirect_wrong = redirect != NULL && strcmp(c.redirect, redirect) != 0;
    if (redirect_wrong || verifier == NULL || !pkce_ok(verifier, c.challenge)) {
        aly_errf(why, redirect_wrong ? "redirect_uri does not match the authorization request"
                                     : "code_verifier does not match the code_challenge (PKCE S256)");
        return burn_code(&t, k, &c, why);
    }
    /*
     * The account must still be there and still a member: a user removed (or
     * dropped from the workspace) after consenting, within the code's 60 s,
     * gets no grant.  A cap lowered since then narrows what the code buys.
     */
    uint64_t cap = 0;
    rc = member_cap(&t, c.email, c.user, c.workspace, &cap, &err);
    if (rc < 0) {
        store_abort(&t);
        return aly_errf(why, "%s", err.msg);
    }
    if (rc == 1) {
        aly_errf(why, "the account that approved this code is no longer a member of its workspace");
        return burn_code(&t, k, &c, why);
    }
    if ((c.scopes & cap & ~OAUTH_SCOPE_OFFLINE) == 0) {
        aly_errf(why, "the account's membership no longer allows any scope this code was for");
        return burn_code(&t, k, &c, why);
    }
    memset(g, 0, sizeof(*g));
    rc = store_new_id("grt_", g->id, sizeof(g->id), &err);
    snprintf(g->workspace, sizeof(g->workspace), "%s", c.workspace);
    snprintf(g->user, sizeof(g->user), "%s", c.user);
    snprintf(g->email, sizeof(g->email), "%s", c.email);
    snprintf(g->client, sizeof(g->client), "%s", c.client);
    snprintf(g->client_name, sizeof(g->client_name), "%s", c.client_name);
    g->scopes = c.scopes & cap;
    g->created_ms = g->last_used_ms = now;
    snprintf(c.grant, sizeof(c.grant), "%s", g->id);
    if (rc == 0)
        rc = store_put_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &oauth_record_code, &c, 0, &err) == 0 ? 0 : -1;
    return issue(&t, rc, &err, p, g, (g->scopes & OAUTH_SCOPE_OFFLINE) != 0, now, refresh, rlen, why);
}

int oauth_refresh_rotate(store_t *st, auth_pepper_t *p, const char *rt, const char *client_id, uint64_t want, oauth_grant_t *g,
                         char *refresh, size_t rlen, aly_err_t *why)
{
    char k[HKEY_LEN];
    aly_err_t err;
    refresh[0] = '\0';
    if (strncmp(rt, OAUTH_REFRESH_PREFIX, sizeof(OAUTH_REFRESH_PREFIX) - 1) != 0 || strlen(rt) > 256)
        return aly_errf(why, "unknown refresh token"), 1;
    if (hashed_key(p, 'r', "refresh", rt, k, &err) != 0)
        return aly_errf(why, "%s", err.msg);
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, &err) != 0)
        return aly_errf(why, "%s", err.msg);
    refresh_record_t r;
    int rc = store_get_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &record_refresh, &r, &err);
    if (rc == 0)
        rc = oauth_grant_get(&t, r.grant, g, &err);
    if (rc != 0) {
        store_abort(&t);
        return rc == 1 ? (aly_errf(why, "unknown refresh token"), 1) : aly_errf(why, "%s", err.msg);
    }
    if (strcmp(r.client, client_id) != 0) {
        store_abort(&t);
        return aly_errf(why, "the refresh token was issued to another client"), 1;
    }
    if (g->revoked_ms != 0) {
        store_abort(&t);
        return aly_errf(why, "the authorization behind this refresh token was revoked"), 1;
    }
    /* What the account may grant now: a lowered cap narrows the grant for good; an ended membership ends it. */
    uint64_t cap = 0;
    rc = member_cap(&t, g->email, g->user, g->workspace, &cap, &err);
    if (rc < 0) {
        store_abort(&t);
        return aly_errf(why, "%s", err.msg);
    }
    if (rc == 1 || (g->scopes & cap & ~OAUTH_SCOPE_OFFLINE) == 0) {
        if (oauth_grant_revoke_in(&t, g->id, &err) < 0) {
            store_abort(&t);
            return aly_errf(why, "%s", err.msg);
        }
        aly_errf(why, rc == 1 ? "the account that gave this authorization is no longer a member of its workspace; it is revoked"
                              : "the account's membership no longer allows any scope of this authorization; it is revoked");
        return refuse_commit(&t, why);
    }
    g->scopes &= cap;
    uint64_t now = aly_wall_ms();
    if (r.replaced_ms == 0 && (want & ~g->scopes) != 0) {
        store_abort(&t);
        return aly_errf(why, "a refresh may only narrow the scopes granted"), 2;
    }
    if (r.replaced_ms != 0) {
        /* A rotated token came back: someone else has a copy.  The whole family goes. */
        if (oauth_grant_revoke_in(&t, g->id, &err) < 0) {
            store_abort(&t);
            return aly_errf(why, "%s", err.msg);
        }
        aly_errf(why, "the refresh token was already used; every token of this authorization is revoked");
        return refuse_commit(&t, why);
    }
    r.replaced_ms = now;
    g->last_used_ms = now;
    rc = store_put_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &record_refresh, &r, 0, &err) == 0 ? 0 : -1;
    return issue(&t, rc, &err, p, g, 1, now, refresh, rlen, why);
}

int oauth_refresh_revoke(store_t *st, auth_pepper_t *p, const char *rt, const char *client_id, aly_err_t *err)
{
    char k[HKEY_LEN];
    if (strncmp(rt, OAUTH_REFRESH_PREFIX, sizeof(OAUTH_REFRESH_PREFIX) - 1) != 0 || strlen(rt) > 256)
        return 0;
    if (hashed_key(p, 'r', "refresh", rt, k, err) != 0)
        return -1;
    store_txn_t t;
    if (store_begin(st, STORE_WRITE | STORE_RESERVE, &t, err) != 0)
        return -1;
    refresh_record_t r;
    int rc = store_get_record(&t, DB_OAUTH_GRANTS, k, sizeof(k), &record_refresh, &r, err);
    /* RFC 7009: a token of another client, or an unknown one, is answered like a revoked one, and changes nothing. */
    if (rc != 0 || strcmp(r.client, client_id) != 0) {
        store_abort(&t);
        return rc < 0 ? -1 : 0;
    }
    return store_finish(&t, oauth_grant_revoke_in(&t, r.grant, err) < 0 ? -1 : 0, err);
}

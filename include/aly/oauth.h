/*
 * The built-in OAuth 2.1 authorization server's data: workspace users,
 * clients, authorization codes, grants with their refresh-token families, and
 * the ES256 signing keys.  Everything lives in the durable store; alyctl and
 * the workers share these functions (oauth_store.c, oauth_keys.c).  The HTTP
 * endpoints over them are aly/oauth_server.h.
 *
 * Layout (one named database each):
 *   DB_OAUTH_USERS    lower-cased email -> user (Argon2id hash, memberships)
 *   DB_OAUTH_CLIENTS  client_id -> client (redirect URIs, HMAC of the secret)
 *   DB_OAUTH_GRANTS   "g/" grant id -> grant (who, which workspace, client, scopes)
 *                     "r/" HMAC(refresh token) -> refresh record (grant, replaced?)
 *                     "c/" HMAC(code) -> code record (PKCE challenge, redirect, used?)
 *                     "d/dynamic" -> the tally of live dynamic clients and their last sweep
 *   DB_OAUTH_KEYS     kid -> signing key (public point, sealed private scalar)
 * Secrets (client secrets, refresh tokens, codes) are stored only as
 * HMAC-SHA256 under the pepper, and compared with CRYPTO_memcmp.  A signing
 * key's private scalar is sealed (XChaCha20-Poly1305, the kid as associated
 * data) under a key derived from the pepper, so a backup of the store without
 * the pepper file cannot forge a token.
 *
 * Tenant isolation: a grant, a code and a refresh token each name their
 * workspace, user and client; every redemption checks all three against the
 * presenting client, and a user may only grant into a workspace of which
 * they are a member, at most the scopes their membership caps.
 *
 * Revocation: revoking a grant (alyctl, RFC 7009, refresh-token reuse, code
 * replay, user removal) marks it revoked and bumps the store's revocation
 * generation, so every worker re-verifies its cached access tokens at once;
 * the validator refuses a built-in token whose grant (named by its jti,
 * "<grant id>.<random>") is revoked or gone.
 */
#ifndef ALY_OAUTH_H
#define ALY_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "aly/auth.h"
#include "aly/common.h"
#include "aly/config.h"
#include "aly/record.h"
#include "aly/scope.h"
#include "aly/store.h"

#define OAUTH_ACCESS_TTL_S 3600
#define OAUTH_CODE_TTL_MS 60000
#define OAUTH_CODE_KEEP_MS (10 * 60000)                 /* a used or expired code is kept this long, to detect replays */
#define OAUTH_DCR_IDLE_MS ((uint64_t)30 * 86400 * 1000) /* a dynamic client unused this long is gone */
#define OAUTH_DCR_SWEEP_MS ((uint64_t)3600 * 1000)      /* how often registrations sweep idle dynamic clients */
#define OAUTH_DCR_SWEEP_MAX 256                         /* idle dynamic clients one sweep deletes at most */
#define OAUTH_KEY_KID_PREFIX "alyk_"                    /* kids of keys alyd made: the validator looks these up in the store */
#define OAUTH_REFRESH_PREFIX "aly_oauth_rt_"
#define OAUTH_MAX_REDIRECTS 8
#define OAUTH_URI_MAX 512
#define OAUTH_EMAIL_MAX 254
#define OAUTH_MAX_MEMBERSHIPS 16
#define OAUTH_SCOPE_OFFLINE ((uint64_t)1 << 32) /* offline_access, beside the catalogue's bits in a grant's scope set */

/* ---- records ---- */

typedef struct oauth_membership {
    char workspace[ALY_ID_MAX];
    uint64_t scopes; /* the most this user may grant in it (scope_set_t) */
} oauth_membership_t;

typedef struct oauth_user {
    char id[ALY_ID_MAX]; /* "usr_…": the sub of the tokens */
    char email[OAUTH_EMAIL_MAX + 1];
    char hash[128]; /* crypto_pwhash_str (Argon2id) */
    uint64_t created_ms;
    uint64_t generation; /* moves with every password change: sign-in cookies of an older one are refused */
    uint64_t n_members;
    oauth_membership_t members[OAUTH_MAX_MEMBERSHIPS];
} oauth_user_t;

typedef enum { OAUTH_CLIENT_PUBLIC = 0, OAUTH_CLIENT_CONFIDENTIAL = 1 } oauth_client_kind_t;
typedef enum { OAUTH_ORIGIN_ALYCTL = 0, OAUTH_ORIGIN_DCR = 1, OAUTH_ORIGIN_CIMD = 2 } oauth_client_origin_t;

typedef struct oauth_uri {
    char uri[OAUTH_URI_MAX];
} oauth_uri_t;

typedef struct oauth_client {
    char id[OAUTH_URI_MAX]; /* "cli_…", or the https URL of a metadata document (never stored) */
    char name[ALY_NAME_MAX];
    uint64_t kind;        /* oauth_client_kind_t */
    uint64_t origin;      /* oauth_client_origin_t */
    uint64_t auth_method; /* 0 none, 1 client_secret_post, 2 client_secret_basic (what it registered) */
    unsigned char secret_hash[32];
    uint64_t created_ms;
    uint64_t last_used_ms;
    uint64_t n_redirects;
    oauth_uri_t redirects[OAUTH_MAX_REDIRECTS];
} oauth_client_t;

typedef struct oauth_grant {
    char id[ALY_ID_MAX]; /* "grt_…" */
    char workspace[ALY_ID_MAX];
    char user[ALY_ID_MAX];
    char email[OAUTH_EMAIL_MAX + 1];
    char client[OAUTH_URI_MAX];
    char client_name[ALY_NAME_MAX];
    uint64_t scopes; /* scope_set_t | OAUTH_SCOPE_OFFLINE */
    uint64_t created_ms;
    uint64_t last_used_ms;
    uint64_t revoked_ms;
} oauth_grant_t;

typedef struct oauth_code {
    char client[OAUTH_URI_MAX];
    char redirect[OAUTH_URI_MAX];
    char challenge[64]; /* base64url SHA-256 of the verifier: 43 characters */
    char workspace[ALY_ID_MAX];
    char user[ALY_ID_MAX];
    char email[OAUTH_EMAIL_MAX + 1];
    char client_name[ALY_NAME_MAX];
    uint64_t scopes;
    uint64_t expires_ms;
    uint64_t used_ms;          /* 0 until redeemed (or burned by a wrong verifier) */
    char grant[ALY_ID_MAX];    /* what the redemption issued: revoked if the code comes back */
    uint64_t redirect_omitted; /* 1: the authorization request named no redirect_uri, so the token request may omit it */
} oauth_code_t;

extern const record_type_t oauth_record_client;
extern const record_type_t oauth_record_grant;
extern const record_type_t oauth_record_code;

/* ---- shared secrets under the pepper ---- */

/* HMAC-SHA256(pepper, domain ":" data): one pepper, separate uses. */
int oauth_mac(auth_pepper_t *p, const char *domain, const void *data, size_t len, unsigned char out[32], aly_err_t *err);

/* ---- users (oauth_store.c) ---- */

/* 1 when e looks like an email address we store: 3 to 254 bytes, one "@", no space or control character. */
int oauth_email_ok(const char *e);
/* Argon2id (libsodium crypto_pwhash_str, interactive limits); password 1 to 1024 bytes. */
int oauth_password_hash(const char *password, char out[128], aly_err_t *err);
/* Constant-time verification of password against a stored hash: 1 match, 0 not. */
int oauth_password_check(const char *hash, const char *password, size_t len);

/*
 * users add: creates the user, or adds a membership (workspace ws must exist,
 * scopes capped to cap) to an existing one; password may be NULL only for an
 * existing user (it is kept).  out receives the stored record.
 */
int oauth_user_add(store_t *st, const char *email, const char *ws, scope_set_t cap, const char *password, oauth_user_t *out,
                   aly_err_t *err);
/* 0 found, 1 none, -1 error.  email is matched case-insensitively. */
int oauth_user_get(store_txn_t *t, const char *email, oauth_user_t *out, aly_err_t *err);
int oauth_user_passwd(store_t *st, const char *email, const char *password, aly_err_t *err); /* 0, 1 no such user, -1 */
/* Removes the user and revokes every grant they made: 0, 1 no such user, -1. */
int oauth_user_remove(store_t *st, const char *email, aly_err_t *err);
typedef int (*oauth_each_fn)(void *ctx, const void *rec);
int oauth_user_list(store_t *st, oauth_each_fn each, void *ctx, aly_err_t *err);

/* ---- clients (oauth_store.c) ---- */

/*
 * 1 when uri may be a redirect URI: https with a host, or http on a loopback
 * host (127.0.0.1, [::1], localhost) with any port; no fragment, no user
 * info, at most OAUTH_URI_MAX - 1 printable ASCII bytes.
 */
int oauth_redirect_ok(const char *uri);
/* The client (a stored one; 1 when unknown or an idle dynamic client past OAUTH_DCR_IDLE_MS, deleted or not yet). */
int oauth_client_get(store_txn_t *t, const char *id, oauth_client_t *out, aly_err_t *err);
/*
 * Registers c (id, created set here; c->redirects validated).  When
 * confidential, secret (>= 44 bytes) receives "aly_cs_" + 32 base62, shown
 * once; only its HMAC is stored.
 */
int oauth_client_create(store_t *st, auth_pepper_t *p, oauth_client_t *c, char *secret, size_t slen, aly_err_t *err);
/*
 * Dynamic registration (RFC 7591): c (origin set here to dynamic) is checked
 * and created as by oauth_client_create, unless max live dynamic clients are
 * stored already: 0 stored, 1 refused at the cap (nothing stored), -1 error.
 * The count is the tally "d/dynamic" in DB_OAUTH_GRANTS, one record read per
 * registration.  When the last sweep is OAUTH_DCR_SWEEP_MS old (or stopped
 * at its batch) the same transaction sweeps first: dynamic clients idle past
 * OAUTH_DCR_IDLE_MS are deleted (OAUTH_DCR_SWEEP_MAX at most, the rest by
 * the next registration) with their grants revoked, and the live ones
 * counted again.  Only registrations add dynamic clients, so sweeping there
 * keeps what they can add bounded.
 */
int oauth_client_register(store_t *st, auth_pepper_t *p, oauth_client_t *c, char *secret, size_t slen, unsigned max,
                          aly_err_t *err);
/* Removes the client and revokes its grants (a live dynamic one also leaves the tally): 0, 1 none, -1. */
int oauth_client_remove(store_t *st, const char *id, aly_err_t *err);
int oauth_client_list(store_t *st, oauth_each_fn each, void *ctx, aly_err_t *err);
/* 1 when c lists uri exactly. */
int oauth_client_has_redirect(const oauth_client_t *c, const char *uri);

/* ---- codes, grants, refresh tokens (oauth_store.c) ---- */

/* Stores a new code for what c describes (expires_ms set here); code (>= 48 bytes) receives it. */
int oauth_code_issue(store_t *st, auth_pepper_t *p, oauth_code_t *c, char *code, size_t clen, aly_err_t *err);

/* The grant named by id: 0, 1 none, -1. */
int oauth_grant_get(store_txn_t *t, const char *id, oauth_grant_t *out, aly_err_t *err);
/* Marks the grant revoked (inside t, a write) and bumps the revocation generation: 0, 1 none, -1. */
int oauth_grant_revoke_in(store_txn_t *t, const char *id, aly_err_t *err);
int oauth_grant_revoke(store_t *st, const char *id, aly_err_t *err);
/* Grants of workspace ws (every one when NULL), newest state, in id order. */
int oauth_grant_list(store_t *st, const char *ws, oauth_each_fn each, void *ctx, aly_err_t *err);
/*
 * The token endpoint's redemptions, each one write transaction.  0 issued
 * (*g the grant, refresh filled with a new refresh token when the grant has
 * offline_access, else ""), 1 refused as invalid_grant (why says why), -1
 * error.
 *
 * redirect may be NULL when the authorization request named none (RFC 6749
 * 4.1.3); when it did, a NULL redirect is 3, changing nothing
 * (invalid_request).  A redirect given must be the code's, either way.
 *
 * A code is single use: a second redemption revokes the grant the first one
 * issued.  A wrong PKCE verifier burns the code.  A refresh token is rotated
 * on every use; presenting a replaced one revokes its grant (the family).
 */
int oauth_code_redeem(store_t *st, auth_pepper_t *p, const char *code, const char *client_id, const char *redirect,
                      const char *verifier, oauth_grant_t *g, char *refresh, size_t rlen, aly_err_t *why);
/* want: the scopes asked for (0: all granted); 2, changing nothing, when want holds a scope not granted (invalid_scope). */
int oauth_refresh_rotate(store_t *st, auth_pepper_t *p, const char *rt, const char *client_id, uint64_t want, oauth_grant_t *g,
                         char *refresh, size_t rlen, aly_err_t *why);
/* RFC 7009 for a refresh token of client_id: revokes its grant.  0 (also when unknown), -1 error. */
int oauth_refresh_revoke(store_t *st, auth_pepper_t *p, const char *rt, const char *client_id, aly_err_t *err);
/* For the validator: 0 when the grant a built-in token's jti names exists and is not revoked; -1 with why otherwise. */
int oauth_grant_active(store_txn_t *t, const char *jti, aly_err_t *why);

/* ---- signing keys (oauth_keys.c) ---- */

/* Adds a new active key (its kid into kid, >= 32 bytes); the previous active key is retired now. */
int oauth_key_rotate(store_t *st, auth_pepper_t *p, char *kid, size_t klen, aly_err_t *err);
/* The public key of kid as PEM (malloc'd, *pem) when it may verify tokens now: 0, 1 unknown or retired too long ago, -1. */
int oauth_key_public_pem(store_txn_t *t, const char *kid, char **pem, size_t *len, aly_err_t *err);
/* The JWKS document of every key that may still verify a token (new reference). */
int oauth_key_jwks(store_t *st, void **json_doc, aly_err_t *err);

/* A worker's signer: the active key decrypted once and kept while the revocation generation stays. */
typedef struct oauth_signer oauth_signer_t;
oauth_signer_t *oauth_signer_new(store_t *st, auth_pepper_t *p);
void oauth_signer_free(oauth_signer_t *s);
/* Signs claims (a json_t object, borrowed) with the active key, making one when there is none: *jwt malloc'd. */
int oauth_signer_sign(oauth_signer_t *s, void *claims, char **jwt, aly_err_t *err);

#endif

/*
 * Credentials and principals.
 *
 * A bearer credential is either an API key ("aly_" + 32 base62 secret + 6
 * base62 CRC32 of the secret) or an OAuth access token ("aly_oauth_" + a JWS
 * compact JWT).  Both become the same principal: who, which workspace, which
 * scopes, which rate policy.  The registry checks the scope a tool,
 * resource or prompt needs (aly/scope.h); the gate turns an auth failure into
 * the 401 with WWW-Authenticate.
 *
 * Keys are stored only as HMAC-SHA256(pepper, key); the pepper lives in a file
 * outside the store, so a leaked store does not allow offline guessing.  JWTs
 * are verified with libjwt, the algorithm pinned by the key we select (libjwt
 * 1.10 would otherwise take it from the token, "none" included), and every
 * claim checked here (libjwt checks none).
 */
#ifndef ALY_AUTH_H
#define ALY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "aly/config.h"
#include "aly/record.h"
#include "aly/scope.h"
#include "aly/store.h"

#define AUTH_KEY_PREFIX "aly_"
#define AUTH_OAUTH_PREFIX "aly_oauth_"
#define AUTH_KEY_SECRET_LEN 32
#define AUTH_KEY_CHECK_LEN 6
#define AUTH_KEY_LEN (sizeof(AUTH_KEY_PREFIX) - 1 + AUTH_KEY_SECRET_LEN + AUTH_KEY_CHECK_LEN)
#define AUTH_MAX_TOKEN 8192 /* bearer tokens longer than this are refused unread */

typedef enum { PRINCIPAL_KEY = 1, PRINCIPAL_OAUTH = 2 } principal_kind_t;

typedef struct principal {
    principal_kind_t kind;
    char id[160]; /* "key_…", or "oauth:" + workspace + ":" + sub (a sub is unique only per issuer) */
    char workspace[ALY_ID_MAX];
    scope_set_t scopes;
    aly_rate_t rate;     /* the policy that applies to this principal */
    char client_id[128]; /* OAuth client (client_id or azp claim), "" for keys */
    uint64_t expires_ms; /* 0: no expiry */
} principal_t;

typedef enum {
    AUTH_OK = 0,
    AUTH_MISSING = 1, /* no credential at all: 401 without an error code */
    AUTH_INVALID = 2, /* malformed, unknown, revoked, expired: 401 invalid_token */
    AUTH_ERROR = 3,   /* our fault (store unreadable): 503 */
} auth_result_t;

typedef struct auth auth_t;

/* Per-process state: the pepper's MAC, the OAuth keys, the token cache.  Opened by each worker. */
auth_t *auth_new(const aly_config_t *cfg, store_t *st, aly_err_t *err);
void auth_free(auth_t *a);

/* Loads and checks the OAuth key files of cfg without keeping them (alyd -t, reload). */
int auth_check_config(const aly_config_t *cfg, aly_err_t *err);

/*
 * Authenticates an Authorization header value (NULL when absent).  On
 * AUTH_INVALID, why says what was wrong in words fit for the client.
 */
auth_result_t auth_authenticate(auth_t *a, const char *header, size_t len, principal_t *out, aly_err_t *why);

/* ---- API keys (auth_key.c) ---- */

/* A new key: writes the key text (AUTH_KEY_LEN + 1 bytes). */
int auth_key_generate(char *out, size_t len, aly_err_t *err);
/* Format and checksum only (no store access): 1 when well-formed. */
int auth_key_well_formed(const char *key, size_t len);

typedef struct auth_pepper auth_pepper_t;
auth_pepper_t *auth_pepper_load(const char *path, aly_err_t *err);
void auth_pepper_free(auth_pepper_t *p);
int auth_key_hash(auth_pepper_t *p, const char *key, size_t len, unsigned char out[32], aly_err_t *err);

/* Store operations shared by alyctl and the gate. */
int auth_key_store(store_txn_t *t, const key_record_t *rec, aly_err_t *err);
/* Finds a key record by id (any workspace): 0 found, 1 not found, -1 error. */
int auth_key_find(store_txn_t *t, const char *id, key_record_t *rec, aly_err_t *err);

/* Bumps the revocation generation; workers flush their token caches when it changes. */
int auth_bump_revocations(store_txn_t *t, aly_err_t *err);
/*
 * The revocation generation as t sees it into *gen (0 when none was ever stored), what caches of verified
 * credentials are made under: 0, or -1 when the store failed or the record is damaged (never read as 0).
 */
int auth_revocation_generation(store_txn_t *t, uint64_t *gen, aly_err_t *err);

#endif

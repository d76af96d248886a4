/*
 * Between auth.c (the gate) and auth_oauth.c (JWT verification).  Not for
 * other modules: they use aly/auth.h.
 */
#ifndef ALY_AUTH_INTERNAL_H
#define ALY_AUTH_INTERNAL_H

#include "aly/auth.h"

typedef struct auth_oauth auth_oauth_t;

/* *out is NULL when OAuth is off (no oauth_issuer).  -1 with err when a key file is bad. */
int auth_oauth_new(const aly_config_t *cfg, auth_oauth_t **out, aly_err_t *err);
void auth_oauth_free(auth_oauth_t *o);
int auth_oauth_check_config(const aly_config_t *cfg, aly_err_t *err);

/*
 * Verifies the JWS part of an "aly_oauth_" token (len <= AUTH_MAX_TOKEN)
 * inside the read transaction t.  generation is the store's revocation
 * generation: cache entries from another generation are not trusted.
 */
auth_result_t auth_oauth_verify(auth_oauth_t *o, const char *jws, size_t len, store_txn_t *t, uint64_t generation, principal_t *out,
                                aly_err_t *why);

#endif

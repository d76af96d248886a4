/*
 * The HTTP surface (SPEC §2): the route table, JSON responses, access log.
 *
 * One catch-all h2o handler per host dispatches on an exact path from a table
 * of routes; a route names its methods and whether it is reachable on the
 * public listeners, the admin (metrics) listener, or both.  Everything the
 * table does not name is a 404 with a JSON body.
 */
#ifndef ALY_HTTP_H
#define ALY_HTTP_H

#include <h2o.h>

#include "aly/auth.h"
#include "aly/config.h"
#include "aly/stats.h"
#include "aly/store.h"

typedef struct http_ctx {
    const aly_config_t *cfg;
    store_t *store;
    auth_t *auth;
    h2o_loop_t *loop;
    stats_shared_t *stats;
    stats_slot_t *slot;
    uint64_t started_ms;
    unsigned worker_number;
} http_ctx_t;

/*
 * Registers the public host and the admin host on conf.  *public_hosts and
 * *admin_hosts receive NULL-terminated host lists for h2o_accept_ctx_t.hosts.
 */
void http_register(h2o_globalconf_t *conf, http_ctx_t *hctx, h2o_hostconf_t ***public_hosts, h2o_hostconf_t ***admin_hosts);

/*
 * Test builds only: when set, a request with no Authorization header gets the
 * principal this fills (return 0) instead of a 401.  The shipped alyd never
 * sets it; t/fixtures/main.c does, for the MCP conformance suite.
 */
extern int (*http_anonymous_principal)(principal_t *out);

/*
 * The gate of every /api/mcp request: refuses an address over
 * auth_failure_limit (429, before any credential work), authenticates req's
 * bearer credential into p, then takes the principal's rate-limit decision.
 * On failure sends the 401 (WWW-Authenticate, Cache-Control: no-store,
 * JSON-RPC error body), the 429 (Retry-After, RateLimit-Policy, RateLimit) or
 * a 503, and returns -1; the caller just returns.  On success the response
 * will carry the RateLimit header.
 */
int http_authenticate(http_ctx_t *hctx, h2o_req_t *req, principal_t *p);

/* Adds the 403 challenge for a principal lacking need: insufficient_scope with held + required scopes. */
void http_add_scope_challenge(http_ctx_t *hctx, h2o_req_t *req, scope_set_t held, scope_set_t need);

/* Notes a field for the access log line of req: "principal" or "rpc" (copied into the request's pool). */
void http_log_note(h2o_req_t *req, const char *key, const char *value, size_t len);

/* Sends body (JSON text) with status; the body is copied. */
void http_send_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len);

/* Sends {"error":code,"message":msg} with status. */
void http_send_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif

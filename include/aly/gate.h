/*
 * The gate every /api/mcp request passes before the MCP engine sees it:
 * request -> principal, or a refusal already sent.
 *
 * In order: an address over auth_failure_limit is refused (429) before any
 * credential work; the bearer credential becomes a principal (401 with
 * WWW-Authenticate when missing or bad, 503 when the credential store cannot
 * be read); the principal's rate limit is decided (429 with Retry-After,
 * RateLimit-Policy and RateLimit).  An admitted response carries the
 * RateLimit header.  A limiter that cannot decide admits the request: a full
 * volatile map must not become an outage; that is counted and logged.  With
 * "volatile redis://" the cells are in Redis (aly/ratelimit_redis.h, one
 * round trip per request), and a Redis that cannot be reached means 503 with
 * Retry-After (volatile_failure closed) or admission (open).
 *
 * One unit buys one call: the gate charges a request its first unit, and
 * the engine charges each further call of a 2025-03-26 batch through
 * gate_charge() before dispatching it.  A batch is not refused as a whole
 * (a batch may hold more calls than a burst): the calls over the budget are
 * answered one by one with the rate-limit error and never run.
 */
#ifndef ALY_GATE_H
#define ALY_GATE_H

#include <h2o.h>
#include <jansson.h>

#include "aly/auth.h"
#include "aly/config.h"
#include "aly/ratelimit.h"
#include "aly/stats.h"
#include "aly/store.h"

/* How a bearer header becomes a principal: auth_authenticate() unless a test build substitutes its own. */
typedef auth_result_t (*gate_auth_fn)(auth_t *a, const char *header, size_t len, principal_t *out, aly_err_t *why);

typedef struct gate {
    const aly_config_t *cfg;
    auth_t *auth;
    gate_auth_fn authenticate;
    ratelimit_t *limiter; /* NULL when it could not be made: every request is admitted (and counted) */
    stats_slot_t *slot;
    int modern; /* the request gate_pass is deciding names MCP 2026-07-28: its refusals carry that era's codes */
} gate_t;

/* Sets up g for one worker after fork; authenticate NULL means auth_authenticate. */
void gate_init(gate_t *g, const aly_config_t *cfg, auth_t *auth, store_t *store, stats_slot_t *slot, gate_auth_fn authenticate);
void gate_free(gate_t *g);

/*
 * 0: *p is the request's principal, admitted.  -1: the refusal was sent; the caller just returns.  modern: the
 * request names MCP 2026-07-28 (the caller's reading of its header), so a refusal carries that era's JSON-RPC code.
 */
int gate_pass(gate_t *g, h2o_req_t *req, int modern, principal_t *p);

/*
 * Charges n more calls of p's admitted request, one unit each, in order,
 * stopping at the first refusal; returns how many were admitted.  When fewer
 * than n, *refused is the refusing decision: answer each remaining call with
 * gate_refused_error().  The response's RateLimit header is brought up to
 * date.  A limiter that cannot decide admits all n.
 */
size_t gate_charge(gate_t *g, h2o_req_t *req, const principal_t *p, size_t n, ratelimit_decision_t *refused);

/* The JSON-RPC error object (code, message, data) of a call gate_charge() refused; a new reference. */
json_t *gate_refused_error(const principal_t *p, const ratelimit_decision_t *d);

/* Adds the 403 challenge for a principal lacking need: insufficient_scope with held + required scopes. */
void gate_scope_challenge(gate_t *g, h2o_req_t *req, scope_set_t held, scope_set_t need);

#endif

/*
 * The credential and rate-limit gate (aly/gate.h).
 */
#include "aly/gate.h"

#include <stdio.h>
#include <string.h>

#include "aly/http.h"
#include "aly/log.h"
#include "aly/ratelimit_redis.h"
#include "aly/rpc.h"
#include "aly/scope.h"
#include "aly/volatile_redis.h"

void gate_init(gate_t *g, const aly_config_t *cfg, auth_t *auth, store_t *store, stats_slot_t *slot, gate_auth_fn authenticate)
{
    aly_err_t err;
    *g = (gate_t){.cfg = cfg, .auth = auth, .authenticate = authenticate != NULL ? authenticate : auth_authenticate, .slot = slot};
    if (cfg->volatile_url != NULL)
        return; /* the cells are in Redis (ratelimit_redis.c): no table file on this host */
    if ((g->limiter = ratelimit_new(store, RATELIMIT_MAX_ADDRESSES, &err)) == NULL)
        log_error("rate limiter: %s (every request is admitted)", err.msg);
}

void gate_free(gate_t *g)
{
    ratelimit_free(g->limiter);
    g->limiter = NULL;
}

/*
 * A limiter that cannot decide (its table file cannot be created or mapped,
 * or a cell stays claimed by a stalled process) admits the request: failing closed would turn a full map into an outage.  Counted, and
 * logged at most every 10 s so a flood cannot fill the error log.
 */
static void limiter_failed(gate_t *g, const char *err)
{
    static uint64_t logged_ms;
    uint64_t now = aly_now_ms();
    stats_add(&g->slot->ratelimit[STATS_RL_ERROR], 1);
    if (logged_ms == 0 || now - logged_ms >= 10000) {
        logged_ms = now;
        log_error("rate limit decision failed, request admitted: %s", err);
    }
}

/*
 * Redis (volatile redis://) could not decide: 1 when the request goes on
 * (volatile_failure open), 0 when it must get the 503 of send_volatile_down.
 * An outage is logged once by volatile_redis.c; an error while Redis
 * answers (a script error) goes through limiter_failed's rate-limited log.
 */
static int volatile_failed(gate_t *g, volatile_redis_t *vr, const char *err)
{
    if (volatile_redis_up(vr))
        limiter_failed(g, err);
    else
        stats_add(&g->slot->ratelimit[STATS_RL_ERROR], 1);
    return volatile_redis_fail_open(vr);
}

static void send_volatile_down(h2o_req_t *req)
{
    http_add_header(req, "retry-after", "1");
    http_send_rpc_error(req, 503, RPC_INTERNAL_ERROR, "the shared rate-limit state (redis) is unreachable; try again shortly",
                        NULL);
}

/* The principal's decision into *d: 0 decided; 1 undecided, admit; -1 undecided, refuse (send_volatile_down). */
static int decide_principal(gate_t *g, const principal_t *p, ratelimit_decision_t *d)
{
    aly_err_t err;
    volatile_redis_t *vr = volatile_redis();
    if (vr != NULL)
        return ratelimit_redis_principal(vr, p->id, &p->rate, d, &err) == 0 ? 0 : volatile_failed(g, vr, err.msg) ? 1 : -1;
    if (g->limiter == NULL) {
        limiter_failed(g, "no limiter");
        return 1;
    }
    if (ratelimit_principal(g->limiter, p->id, &p->rate, ratelimit_now_ns(), d, &err) != 0) {
        limiter_failed(g, err.msg);
        return 1;
    }
    return 0;
}

/* The 429: Retry-After, RateLimit-Policy, RateLimit and a JSON-RPC error whose data says when to come back. */
static void send_rate_limited(const gate_t *g, h2o_req_t *req, const char *policy, const aly_rate_t *rate,
                              const ratelimit_decision_t *d, const char *what)
{
    char text[160], rate_text[64];
    snprintf(text, sizeof(text), "%llu", (unsigned long long)d->retry_after_s);
    http_add_header(req, "retry-after", text);
    ratelimit_policy_header(policy, rate, text, sizeof(text));
    http_add_header(req, "ratelimit-policy", text);
    ratelimit_header(policy, d, text, sizeof(text));
    http_add_header(req, "ratelimit", text);
    config_format_rate(rate, rate_text, sizeof(rate_text));
    snprintf(text, sizeof(text), "%s (%s): retry in %llu s", what, rate_text, (unsigned long long)d->retry_after_s);
    http_send_rpc_error(req, 429, g->modern ? RPC_MODERN_RATE_LIMITED : RPC_RATE_LIMITED, text,
                        json_pack("{s:I, s:s, s:s}", "retry_after_seconds", (json_int_t)d->retry_after_s, "limit", policy, "policy",
                                  rate_text));
}

/* A principal's decision applied: the RateLimit header, or the 429 (then -1). */
static int apply_principal(gate_t *g, h2o_req_t *req, const principal_t *p, const ratelimit_decision_t *d)
{
    if (d->allowed) {
        char text[160];
        stats_add(&g->slot->ratelimit[STATS_RL_ALLOWED], 1);
        ratelimit_header(RATELIMIT_POLICY_PRINCIPAL, d, text, sizeof(text));
        http_add_header(req, "ratelimit", text);
        return 0;
    }
    stats_add(&g->slot->ratelimit[STATS_RL_REFUSED], 1);
    send_rate_limited(g, req, RATELIMIT_POLICY_PRINCIPAL, &p->rate, d, "rate limit exceeded");
    return -1;
}

/* The principal's decision, once per authenticated request; -1 when the 429 (or 503) was sent. */
static int limit_principal(gate_t *g, h2o_req_t *req, const principal_t *p)
{
    ratelimit_decision_t d;
    int rc = decide_principal(g, p, &d);
    if (rc != 0) {
        if (rc < 0)
            send_volatile_down(req);
        return rc < 0 ? -1 : 0;
    }
    return apply_principal(g, req, p, &d);
}

static void send_address_limited(gate_t *g, h2o_req_t *req, const ratelimit_decision_t *d)
{
    stats_add(&g->slot->auth_refused, 1);
    send_rate_limited(g, req, RATELIMIT_POLICY_ADDRESS, &g->cfg->auth_failure_limit, d,
                      "too many failed authentications from this address");
}

/*
 * Redis, and an address this worker has not seen fail: the address's check
 * and the principal's charge in one round trip (aly/ratelimit_redis.h).
 */
static int admit_pipelined(gate_t *g, h2o_req_t *req, volatile_redis_t *vr, const ratelimit_addr_t *addr, const principal_t *p)
{
    ratelimit_decision_t ad, d;
    aly_err_t err;
    if (ratelimit_redis_admit(vr, addr, &g->cfg->auth_failure_limit, p->id, &p->rate, &ad, &d, &err) != 0) {
        if (volatile_failed(g, vr, err.msg))
            return 0;
        send_volatile_down(req);
        return -1;
    }
    if (!ad.allowed) {
        ratelimit_redis_suspect_mark(addr, &g->cfg->auth_failure_limit, aly_now_ms());
        send_address_limited(g, req, &ad);
        return -1;
    }
    return apply_principal(g, req, p, &d);
}

size_t gate_charge(gate_t *g, h2o_req_t *req, const principal_t *p, size_t n, ratelimit_decision_t *refused)
{
    ratelimit_decision_t d;
    size_t admitted = 0;
    for (; admitted < n; admitted++) {
        int rc = decide_principal(g, p, &d);
        if (rc > 0)
            return n;
        if (rc < 0) {
            /* Redis down, volatile_failure closed: the rest of the batch waits like a refused call, for a second. */
            d = (ratelimit_decision_t){.allowed = 0, .remaining = 0, .reset_s = 1, .retry_after_s = 1};
            break;
        }
        if (!d.allowed)
            break;
        stats_add(&g->slot->ratelimit[STATS_RL_ALLOWED], 1);
    }
    if (admitted < n) {
        /* A refusal changes no state, so every later call of the batch would be refused too: no need to ask again. */
        stats_add(&g->slot->ratelimit[STATS_RL_REFUSED], n - admitted);
        *refused = d;
    }
    if (n > 0) {
        char text[160];
        ratelimit_header(RATELIMIT_POLICY_PRINCIPAL, &d, text, sizeof(text));
        h2o_iovec_t v = h2o_strdup(&req->pool, text, SIZE_MAX);
        h2o_set_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("ratelimit"), 0, v.base, v.len, 1);
    }
    return admitted;
}

json_t *gate_refused_error(const principal_t *p, const ratelimit_decision_t *d)
{
    char text[160], rate_text[64];
    config_format_rate(&p->rate, rate_text, sizeof(rate_text));
    snprintf(text, sizeof(text), "rate limit exceeded (%s): this call of the batch was not made; retry in %llu s", rate_text,
             (unsigned long long)d->retry_after_s);
    return json_pack("{s:i, s:s, s:{s:I, s:s, s:s}}", "code", RPC_RATE_LIMITED, "message", text, "data", "retry_after_seconds",
                     (json_int_t)d->retry_after_s, "limit", RATELIMIT_POLICY_PRINCIPAL, "policy", rate_text);
}

static void peer_address(h2o_req_t *req, ratelimit_addr_t *out)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    ratelimit_address(len != 0 ? (struct sockaddr *)&ss : NULL, out);
}

/* Quoted-string content for an auth-param: our messages hold no quotes or backslashes, but make sure. */
static void auth_param(char *out, size_t len, const char *in)
{
    size_t o = 0;
    for (; *in && o + 1 < len; in++)
        out[o++] = (*in == '"' || *in == '\\' || (unsigned char)*in < 0x20) ? '\'' : *in;
    out[o] = '\0';
}

/* The 401: WWW-Authenticate naming the protected-resource metadata, and a JSON-RPC error body. */
static void send_unauthorized(gate_t *g, h2o_req_t *req, auth_result_t r, aly_err_t *why)
{
    char metadata[1200], desc[600], header[2048];
    snprintf(metadata, sizeof(metadata), "%s/.well-known/oauth-protected-resource/api/mcp", g->cfg->public_url);
    if (r == AUTH_MISSING) {
        snprintf(header, sizeof(header), "Bearer realm=\"aly\", resource_metadata=\"%s\"", metadata);
        snprintf(why->msg, sizeof(why->msg), "%s",
                 "this endpoint needs a credential: send Authorization: Bearer aly_... (an API key) or an OAuth access token");
    } else {
        auth_param(desc, sizeof(desc), why->msg);
        snprintf(header, sizeof(header),
                 "Bearer realm=\"aly\", error=\"invalid_token\", error_description=\"%s\", resource_metadata=\"%s\"", desc,
                 metadata);
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, h2o_strdup(&req->pool, header, SIZE_MAX).base,
                   strlen(header));
    http_send_rpc_error(req, 401, g->modern ? RPC_MODERN_UNAUTHORIZED : RPC_UNAUTHORIZED, why->msg,
                        json_pack("{s:s}", "resource_metadata", metadata));
}

int gate_pass(gate_t *g, h2o_req_t *req, int modern, principal_t *p)
{
    g->modern = modern;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    const char *value = i >= 0 ? req->headers.entries[i].value.base : NULL;
    size_t len = i >= 0 ? req->headers.entries[i].value.len : 0;
    const aly_rate_t *fail_rate = &g->cfg->auth_failure_limit;
    ratelimit_t *rl = value != NULL ? g->limiter : NULL;
    volatile_redis_t *vr = value != NULL ? volatile_redis() : NULL;
    ratelimit_addr_t addr = {.len = 0};
    aly_err_t why = {.msg = ""};
    int suspect = 1;
    if (rl != NULL || vr != NULL)
        peer_address(req, &addr);
    if (vr != NULL)
        suspect = ratelimit_redis_suspect(&addr, aly_now_ms());
    /* An address over its failure budget is refused before any credential work: no HMAC, no JWT, no key lookup. */
    if ((rl != NULL || vr != NULL) && suspect) {
        ratelimit_decision_t d;
        aly_err_t err;
        if (vr != NULL ? ratelimit_redis_address_check(vr, &addr, fail_rate, &d, &err) != 0
                       : ratelimit_address_check(rl, &addr, fail_rate, ratelimit_now_ns(), &d, &err) != 0) {
            if (vr == NULL) {
                limiter_failed(g, err.msg);
            } else if (!volatile_failed(g, vr, err.msg)) {
                send_volatile_down(req);
                return -1;
            }
        } else if (!d.allowed) {
            send_address_limited(g, req, &d);
            return -1;
        }
    }
    if (value != NULL)
        stats_add(&g->slot->credential_checks, 1);
    auth_result_t r = g->authenticate(g->auth, value, len, p, &why);
    if (r == AUTH_OK) {
        http_log_note(req, "principal", p->id, strlen(p->id));
        return vr != NULL && !suspect ? admit_pipelined(g, req, vr, &addr, p) : limit_principal(g, req, p);
    }
    if (r == AUTH_ERROR) {
        http_send_rpc_error(req, 503, RPC_INTERNAL_ERROR, "the credential store cannot be read; try again shortly", NULL);
        return -1;
    }
    if (r == AUTH_INVALID && (rl != NULL || vr != NULL)) {
        /* A request without any credential is no failure (clients send one after a restart); a bad one is. */
        ratelimit_decision_t d;
        aly_err_t err;
        stats_add(&g->slot->auth_failures, 1);
        if (vr != NULL ? ratelimit_redis_address_failure(vr, &addr, fail_rate, &d, &err) != 0
                       : ratelimit_address_failure(rl, &addr, fail_rate, ratelimit_now_ns(), &d, &err) != 0) {
            if (vr == NULL) {
                limiter_failed(g, err.msg);
            } else if (!volatile_failed(g, vr, err.msg)) {
                /* volatile_failure closed: a failure that cannot be counted is not answered either (a 401 here, where a
                 * good credential gets 503, would both lift the failure budget and tell a guess from a hit). */
                send_volatile_down(req);
                return -1;
            }
        } else if (vr != NULL) {
            ratelimit_redis_suspect_mark(&addr, fail_rate, aly_now_ms());
            if (!d.allowed && !suspect) {
                /* Over the budget already (failures on other hosts): the answer the check first would have given. */
                send_address_limited(g, req, &d);
                return -1;
            }
        }
    }
    send_unauthorized(g, req, r, &why);
    return -1;
}

void gate_scope_challenge(gate_t *g, h2o_req_t *req, scope_set_t held, scope_set_t need)
{
    char scopes[512], header[2048];
    scope_format(held | need, scopes, sizeof(scopes));
    snprintf(
        header, sizeof(header),
        "Bearer error=\"insufficient_scope\", scope=\"%s\", resource_metadata=\"%s/.well-known/oauth-protected-resource/api/mcp\"",
        scopes, g->cfg->public_url);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, h2o_strdup(&req->pool, header, SIZE_MAX).base,
                   strlen(header));
}

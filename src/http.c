/*
 * The HTTP surface: route table, endpoint handlers that need no credential
 * (/healthz, /metrics, protected-resource metadata), JSON responses and the
 * access log.  The MCP endpoint's handler lives with the MCP engine; until it
 * lands, /api/mcp answers 501.
 */
#include "aly/http.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "aly/log.h"
#include "aly/mcp.h"
#include "aly/ratelimit.h"
#include "aly/scope.h"
#include "aly/worker.h"

enum {
    M_GET = 1 << 0,
    M_POST = 1 << 1,
    M_DELETE = 1 << 2,
};

enum {
    R_PUBLIC = 1 << 0,   /* reachable on the public listeners */
    R_ADMIN = 1 << 1,    /* reachable on metrics_listen */
    R_LOOPBACK = 1 << 2, /* on public listeners, only from loopback clients */
};

typedef struct route {
    const char *path;
    unsigned methods;
    unsigned flags;
    void (*serve)(http_ctx_t *hctx, h2o_req_t *req);
} route_t;

typedef struct http_handler {
    h2o_handler_t super;
    http_ctx_t *hctx;
    unsigned listener_flag; /* R_PUBLIC or R_ADMIN */
} http_handler_t;

typedef struct http_logger {
    h2o_logger_t super;
    http_ctx_t *hctx;
} http_logger_t;

static void serve_mcp(http_ctx_t *hctx, h2o_req_t *req);
static void serve_resource_metadata(http_ctx_t *hctx, h2o_req_t *req);
static void serve_healthz(http_ctx_t *hctx, h2o_req_t *req);
static void serve_metrics(http_ctx_t *hctx, h2o_req_t *req);

static const route_t routes[] = {
    {"/api/mcp", M_POST | M_GET | M_DELETE, R_PUBLIC, serve_mcp},
    {"/.well-known/oauth-protected-resource", M_GET, R_PUBLIC, serve_resource_metadata},
    {"/.well-known/oauth-protected-resource/api/mcp", M_GET, R_PUBLIC, serve_resource_metadata},
    {"/healthz", M_GET, R_PUBLIC | R_ADMIN, serve_healthz},
    {"/metrics", M_GET, R_PUBLIC | R_ADMIN | R_LOOPBACK, serve_metrics},
};

static void add_header(h2o_req_t *req, const h2o_token_t *token, const char *value)
{
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, value, strlen(value));
}

void http_send_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = len;
    add_header(req, H2O_TOKEN_CONTENT_TYPE, "application/json");
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-store");
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL, H2O_STRLIT("nosniff"));
    h2o_send_inline(req, body, len);
}

static void send_json_object(h2o_req_t *req, int status, const char *reason, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL) {
        static const char oom[] = "{\"error\":\"internal\",\"message\":\"out of memory\"}";
        http_send_json(req, 500, "Internal Server Error", oom, sizeof(oom) - 1);
        return;
    }
    http_send_json(req, status, reason, text, strlen(text));
    free(text);
}

void http_send_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* json_string rejects invalid UTF-8 (a client's path may hold any bytes); fall back to a fixed text. */
    json_t *m = json_string(msg);
    if (m == NULL)
        m = json_string("the request named something that is not valid UTF-8");
    send_json_object(req, status, reason, json_pack("{s:s, s:o}", "error", code, "message", m));
}

static int is_loopback_client(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len == 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6) {
        const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

static unsigned method_bit(h2o_iovec_t m)
{
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")))
        return M_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return M_POST;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("DELETE")))
        return M_DELETE;
    return 0;
}

static void allow_header(h2o_req_t *req, unsigned methods)
{
    char buf[32] = "";
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{M_GET, "GET"}, {M_POST, "POST"}, {M_DELETE, "DELETE"}};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(names); i++) {
        if (methods & names[i].bit) {
            if (buf[0] != '\0')
                strcat(buf, ", ");
            strcat(buf, names[i].name);
        }
    }
    add_header(req, H2O_TOKEN_ALLOW, h2o_strdup(&req->pool, buf, SIZE_MAX).base);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_handler_t *h = (http_handler_t *)self;
    http_ctx_t *hctx = h->hctx;
    worker_conn_t *conn = worker_conn_of(req);
    if (conn != NULL)
        conn->inflight++;
    stats_add(&hctx->slot->in_flight, 1);

    /* path_normalized has no query string and resolved dot segments. */
    h2o_iovec_t path = req->path_normalized;
    const route_t *route = NULL;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(routes); i++) {
        if (h2o_memis(path.base, path.len, routes[i].path, strlen(routes[i].path))) {
            route = &routes[i];
            break;
        }
    }
    if (route == NULL || !(route->flags & h->listener_flag) ||
        (h->listener_flag == R_PUBLIC && (route->flags & R_LOOPBACK) && !is_loopback_client(req))) {
        http_send_error(req, 404, "Not Found", "not_found", "no such endpoint: %.*s (the MCP endpoint is POST /api/mcp)",
                        (int)(path.len > 200 ? 200 : path.len), path.base);
        return 0;
    }
    if (!(method_bit(req->method) & route->methods)) {
        allow_header(req, route->methods);
        http_send_error(req, 405, "Method Not Allowed", "method_not_allowed", "%.*s does not accept %.*s",
                        (int)path.len, path.base, (int)(req->method.len > 16 ? 16 : req->method.len), req->method.base);
        return 0;
    }
    /*
     * h2o's own limit is set above max_request_body (see worker.c) so that the
     * usual oversize body reaches us and gets a JSON 413 on HTTP/1 and HTTP/2
     * alike; only bodies past h2o's limit are refused by h2o itself.
     */
    if (req->entity.base != NULL && req->entity.len > hctx->cfg->max_request_body) {
        http_send_error(req, 413, "Payload Too Large", "body_too_large", "request body over %zu bytes (max_request_body)",
                        hctx->cfg->max_request_body);
        return 0;
    }
    route->serve(hctx, req);
    return 0;
}

/* Error codes of JSON-RPC error bodies for HTTP-level refusals (implementation-defined range). */
#define RPC_UNAUTHORIZED (-32001)

static void send_rpc_error(h2o_req_t *req, int status, const char *reason, int code, const char *message, json_t *data)
{
    json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (data != NULL)
        json_object_set_new(e, "data", data);
    send_json_object(req, status, reason, json_pack("{s:s, s:n, s:o}", "jsonrpc", "2.0", "id", "error", e));
}

/* Quoted-string content for an auth-param: our messages hold no quotes or backslashes, but make sure. */
static void auth_param(char *out, size_t len, const char *in)
{
    size_t o = 0;
    for (; *in && o + 1 < len; in++)
        out[o++] = (*in == '"' || *in == '\\' || (unsigned char)*in < 0x20) ? '\'' : *in;
    out[o] = '\0';
}

int (*http_anonymous_principal)(principal_t *out);

/* Access-log fields ride on req->env as (name, value) pairs: h2o keeps that vector per request and never reads it here. */
void http_log_note(h2o_req_t *req, const char *key, const char *value, size_t len)
{
    h2o_vector_reserve(&req->pool, &req->env, req->env.size + 2);
    req->env.entries[req->env.size++] = h2o_iovec_init(key, strlen(key));
    req->env.entries[req->env.size++] = h2o_strdup(&req->pool, value, len);
}

static h2o_iovec_t log_field(h2o_req_t *req, const char *key)
{
    for (size_t i = 0; i + 1 < req->env.size; i += 2)
        if (h2o_memis(req->env.entries[i].base, req->env.entries[i].len, key, strlen(key)))
            return req->env.entries[i + 1];
    return h2o_iovec_init(H2O_STRLIT("-"));
}

/* This worker's limiter: made on first use, after fork, on the worker's own store. */
static ratelimit_t *limiter(http_ctx_t *hctx)
{
    static ratelimit_t *rl;
    if (rl != NULL && ratelimit_store(rl) == hctx->store)
        return rl;
    ratelimit_free(rl);
    aly_err_t err;
    if ((rl = ratelimit_new(hctx->store, RATELIMIT_MAX_ADDRESSES, &err)) == NULL)
        log_error("rate limiter: %s", err.msg);
    return rl;
}

/*
 * A limiter that cannot decide (volatile store full or unreadable) admits the
 * request: failing closed would turn a full map into an outage.  Counted, and
 * logged at most every 10 s so a flood cannot fill the error log.
 */
static void limiter_failed(http_ctx_t *hctx, const char *err)
{
    static uint64_t logged_ms;
    uint64_t now = aly_now_ms();
    stats_add(&hctx->slot->ratelimit[STATS_RL_ERROR], 1);
    if (logged_ms == 0 || now - logged_ms >= 10000) {
        logged_ms = now;
        log_error("rate limit decision failed, request admitted: %s", err);
    }
}

static void add_pool_header(h2o_req_t *req, const char *name, const char *value)
{
    h2o_iovec_t v = h2o_strdup(&req->pool, value, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, v.base, v.len);
}

/* The 429: Retry-After, RateLimit-Policy, RateLimit and a JSON-RPC error whose data says when to come back. */
static void send_rate_limited(h2o_req_t *req, const char *policy, const aly_rate_t *rate, const ratelimit_decision_t *d,
                              const char *what)
{
    char text[160], rate_text[64];
    snprintf(text, sizeof(text), "%llu", (unsigned long long)d->retry_after_s);
    add_pool_header(req, "retry-after", text);
    ratelimit_policy_header(policy, rate, text, sizeof(text));
    add_pool_header(req, "ratelimit-policy", text);
    ratelimit_header(policy, d, text, sizeof(text));
    add_pool_header(req, "ratelimit", text);
    config_format_rate(rate, rate_text, sizeof(rate_text));
    snprintf(text, sizeof(text), "%s (%s): retry in %llu s", what, rate_text, (unsigned long long)d->retry_after_s);
    send_rpc_error(req, 429, "Too Many Requests", RATELIMIT_RPC_CODE, text,
                   json_pack("{s:I, s:s, s:s}", "retry_after_seconds", (json_int_t)d->retry_after_s, "limit", policy, "policy",
                             rate_text));
}

/* The principal's decision, once per authenticated request; -1 when the 429 was sent. */
static int limit_principal(http_ctx_t *hctx, h2o_req_t *req, const principal_t *p)
{
    ratelimit_t *rl = limiter(hctx);
    ratelimit_decision_t d;
    aly_err_t err;
    if (rl == NULL) {
        limiter_failed(hctx, "no limiter");
        return 0;
    }
    if (ratelimit_principal(rl, p->id, &p->rate, ratelimit_now_ns(), &d, &err) != 0) {
        limiter_failed(hctx, err.msg);
        return 0;
    }
    if (d.allowed) {
        char text[160];
        stats_add(&hctx->slot->ratelimit[STATS_RL_ALLOWED], 1);
        ratelimit_header(RATELIMIT_POLICY_PRINCIPAL, &d, text, sizeof(text));
        add_pool_header(req, "ratelimit", text);
        return 0;
    }
    stats_add(&hctx->slot->ratelimit[STATS_RL_REFUSED], 1);
    send_rate_limited(req, RATELIMIT_POLICY_PRINCIPAL, &p->rate, &d, "rate limit exceeded");
    return -1;
}

static void peer_address(h2o_req_t *req, ratelimit_addr_t *out)
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    ratelimit_address(len != 0 ? (struct sockaddr *)&ss : NULL, out);
}

int http_authenticate(http_ctx_t *hctx, h2o_req_t *req, principal_t *p)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    const char *value = i >= 0 ? req->headers.entries[i].value.base : NULL;
    size_t len = i >= 0 ? req->headers.entries[i].value.len : 0;
    const aly_rate_t *fail_rate = &hctx->cfg->auth_failure_limit;
    ratelimit_t *rl = value != NULL ? limiter(hctx) : NULL;
    ratelimit_addr_t addr = {.len = 0};
    aly_err_t why = {""};
    /* An address over its failure budget is refused before any credential work: no HMAC, no JWT, no key lookup. */
    if (rl != NULL) {
        ratelimit_decision_t d;
        aly_err_t err;
        peer_address(req, &addr);
        if (ratelimit_address_check(rl, &addr, fail_rate, ratelimit_now_ns(), &d, &err) != 0) {
            limiter_failed(hctx, err.msg);
        } else if (!d.allowed) {
            stats_add(&hctx->slot->auth_refused, 1);
            send_rate_limited(req, RATELIMIT_POLICY_ADDRESS, fail_rate, &d, "too many failed authentications from this address");
            return -1;
        }
    }
    if (value != NULL)
        stats_add(&hctx->slot->credential_checks, 1);
    auth_result_t r = auth_authenticate(hctx->auth, value, len, p, &why);
    if (r == AUTH_OK || (r == AUTH_MISSING && http_anonymous_principal != NULL && http_anonymous_principal(p) == 0)) {
        http_log_note(req, "principal", p->id, strlen(p->id));
        return limit_principal(hctx, req, p);
    }
    if (r == AUTH_ERROR) {
        send_rpc_error(req, 503, "Service Unavailable", -32603, "the credential store cannot be read; try again shortly", NULL);
        return -1;
    }
    if (r == AUTH_INVALID && rl != NULL) {
        /* A request without any credential is no failure (clients send one after a restart); a bad one is. */
        ratelimit_decision_t d;
        aly_err_t err;
        stats_add(&hctx->slot->auth_failures, 1);
        if (ratelimit_address_failure(rl, &addr, fail_rate, ratelimit_now_ns(), &d, &err) != 0)
            limiter_failed(hctx, err.msg);
    }
    char metadata[1200], desc[600], header[2048];
    snprintf(metadata, sizeof(metadata), "%s/.well-known/oauth-protected-resource/api/mcp", hctx->cfg->public_url);
    if (r == AUTH_MISSING) {
        snprintf(header, sizeof(header), "Bearer realm=\"aly\", resource_metadata=\"%s\"", metadata);
        snprintf(why.msg, sizeof(why.msg), "%s", "this endpoint needs a credential: send Authorization: Bearer aly_... (an API key) or an OAuth access token");
    } else {
        auth_param(desc, sizeof(desc), why.msg);
        snprintf(header, sizeof(header), "Bearer realm=\"aly\", error=\"invalid_token\", error_description=\"%s\", resource_metadata=\"%s\"",
                 desc, metadata);
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, h2o_strdup(&req->pool, header, SIZE_MAX).base,
                   strlen(header));
    send_rpc_error(req, 401, "Unauthorized", RPC_UNAUTHORIZED, why.msg, json_pack("{s:s}", "resource_metadata", metadata));
    return -1;
}

void http_add_scope_challenge(http_ctx_t *hctx, h2o_req_t *req, scope_set_t held, scope_set_t need)
{
    char scopes[512], header[2048];
    auth_format_scopes(held | need, scopes, sizeof(scopes));
    snprintf(header, sizeof(header),
             "Bearer error=\"insufficient_scope\", scope=\"%s\", resource_metadata=\"%s/.well-known/oauth-protected-resource/api/mcp\"",
             scopes, hctx->cfg->public_url);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, h2o_strdup(&req->pool, header, SIZE_MAX).base,
                   strlen(header));
}

static void serve_mcp(http_ctx_t *hctx, h2o_req_t *req)
{
    mcp_serve(hctx, req);
}

static void serve_resource_metadata(http_ctx_t *hctx, h2o_req_t *req)
{
    const aly_config_t *cfg = hctx->cfg;
    char resource[1024];
    snprintf(resource, sizeof(resource), "%s/api/mcp", cfg->public_url);
    json_t *servers = json_array(), *scopes = json_array();
    for (size_t i = 0; i < cfg->authorization_servers.n; i++)
        json_array_append_new(servers, json_string(cfg->authorization_servers.items[i]));
    for (size_t i = 0; i < scope_count; i++)
        json_array_append_new(scopes, json_string(scope_catalogue[i].name));
    json_t *doc = json_pack("{s:s, s:o, s:o, s:[s], s:s}", "resource", resource, "authorization_servers", servers,
                            "scopes_supported", scopes, "bearer_methods_supported", "header", "resource_name", "Aly");
    send_json_object(req, 200, "OK", doc);
}

static void serve_healthz(http_ctx_t *hctx, h2o_req_t *req)
{
    aly_err_t err;
    char body[512];
    int n;
    uint64_t up = (aly_now_ms() - hctx->started_ms) / 1000;
    if (store_check(hctx->store, &err) != 0) {
        log_error("health check: %s", err.msg);
        n = snprintf(body, sizeof(body),
                     "{\"status\":\"unavailable\",\"pid\":%d,\"version\":\"%s\",\"worker\":%u,\"error\":\"the store cannot be "
                     "read; see the error log\"}",
                     (int)getpid(), PACKAGE_VERSION, hctx->worker_number);
        http_send_json(req, 503, "Service Unavailable", body, (size_t)n);
        return;
    }
    n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"pid\":%d,\"version\":\"%s\",\"uptime_seconds\":%llu,\"worker\":%u}",
                 (int)getpid(), PACKAGE_VERSION, (unsigned long long)up, hctx->worker_number);
    http_send_json(req, 200, "OK", body, (size_t)n);
}

static void serve_metrics(http_ctx_t *hctx, h2o_req_t *req)
{
    size_t len;
    char *text = stats_render(hctx->stats, &len);
    if (text == NULL) {
        http_send_error(req, 500, "Internal Server Error", "internal", "cannot render metrics");
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = len;
    add_header(req, H2O_TOKEN_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-store");
    h2o_send_inline(req, text, len);
    free(text);
}

/* Copies at most max bytes of s into out, replacing anything outside printable ASCII (no log forging). */
static size_t sanitize(char *out, const char *s, size_t len, size_t max)
{
    if (len > max)
        len = max;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c > 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
    }
    return len;
}

static void on_log(h2o_logger_t *self, h2o_req_t *req)
{
    http_ctx_t *hctx = ((http_logger_t *)self)->hctx;
    worker_conn_t *conn = worker_conn_of(req);
    if (conn != NULL) {
        if (conn->inflight > 0)
            conn->inflight--;
        conn->responses++;
        conn->read_at_idle = conn->sock->bytes_read;
    }
    stats_add(&hctx->slot->in_flight, -1);
    stats_add(&hctx->slot->requests[stats_status_index(req->res.status)], 1);
    if (!log_access_enabled())
        return;

    char line[1400], ts[40], client[INET6_ADDRSTRLEN + 2] = "-", method[24], path[512], principal[161], rpc[161];
    aly_format_time(ts, sizeof(ts), aly_wall_ms());
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl != 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, client, sizeof(client));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, client, sizeof(client));
    }
    size_t ml = sanitize(method, req->method.base, req->method.len, sizeof(method) - 1);
    method[ml] = '\0';
    size_t pl = sanitize(path, req->path.base, req->path.len, sizeof(path) - 1);
    path[pl] = '\0';
    h2o_iovec_t f = log_field(req, "principal");
    principal[sanitize(principal, f.base, f.len, sizeof(principal) - 1)] = '\0';
    f = log_field(req, "rpc");
    rpc[sanitize(rpc, f.base, f.len, sizeof(rpc) - 1)] = '\0';
    struct timeval now;
    gettimeofday(&now, NULL);
    int64_t usec = (int64_t)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000000 +
                   (now.tv_usec - req->timestamps.request_begin_at.tv_usec);
    const char *proto = req->version >= 0x200 ? "HTTP/2" : req->version == 0x101 ? "HTTP/1.1" : "HTTP/1.0";
    int n = snprintf(line, sizeof(line), "%s %s %s %s %s %s %d %zu %.3f %s %d", ts, client, principal, method, path, rpc,
                     req->res.status, req->bytes_sent, (double)usec / 1000.0, proto, (int)getpid());
    if (n > 0)
        log_access_line(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static h2o_hostconf_t *register_host(h2o_globalconf_t *conf, const char *name, http_ctx_t *hctx, unsigned flag)
{
    h2o_hostconf_t *host = h2o_config_register_host(conf, h2o_iovec_init(name, strlen(name)), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    http_handler_t *h = (http_handler_t *)h2o_create_handler(pathconf, sizeof(*h));
    h->super.on_req = on_req;
    h->hctx = hctx;
    h->listener_flag = flag;
    http_logger_t *lg = (http_logger_t *)h2o_create_logger(pathconf, sizeof(*lg));
    lg->super.log_access = on_log;
    lg->hctx = hctx;
    return host;
}

void http_register(h2o_globalconf_t *conf, http_ctx_t *hctx, h2o_hostconf_t ***public_hosts, h2o_hostconf_t ***admin_hosts)
{
    static h2o_hostconf_t *pub[2], *adm[2];
    pub[0] = register_host(conf, "default", hctx, R_PUBLIC);
    adm[0] = register_host(conf, "admin", hctx, R_ADMIN);
    pub[1] = adm[1] = NULL;
    *public_hosts = pub;
    *admin_hosts = adm;
}

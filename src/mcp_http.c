/*
 * The HTTP front of /api/mcp: the DNS-rebinding guard (Origin, Host), the
 * protocol version header, the credential gate, then GET (a session's event
 * stream), DELETE (end a session) or POST (one message, or a 2025-03-26
 * batch, dispatched into an exchange).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "aly/http.h"
#include "aly/json_ref.h"
#include "aly/mcp_internal.h"
#include "aly/rpc_parse.h"

#define PROTOCOL_DEFAULT 2        /* a request without MCP-Protocol-Version is 2025-03-26 */
#define STREAM_KEEPALIVE_MS 20000 /* Node's fetch drops an SSE stream silent for 300 s */

const char *const mcp_protocol_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26"};
const size_t mcp_protocol_count = ALY_ARRAY_SIZE(mcp_protocol_versions);

static h2o_linklist_t open_streams = {&open_streams, &open_streams};
static h2o_timeout_t keepalive_timeout;
static int keepalive_ready;

/* aly_now_ms() when req began (h2o stamps it with the wall clock): what a session lookup that misses must look past. */
static uint64_t asked_ms(h2o_req_t *req)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    int64_t age = (int64_t)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000 +
                  (now.tv_usec - req->timestamps.request_begin_at.tv_usec) / 1000;
    uint64_t mono = aly_now_ms();
    return age > 0 && (uint64_t)age < mono ? mono - (uint64_t)age - 1 : mono - 1;
}

/*
 * The headers /api/mcp reads, in one pass (h2o keeps names lower-case); the first of each name counts.  The
 * wanted names differ in length but for origin and accept, so a header's length picks the one name it can be.
 */
static void read_headers(h2o_req_t *req, mcp_headers_t *h)
{
    typedef struct {
        const char *name;
        size_t off;
    } wanted_t;
#define WANTED(lit, field) [sizeof(lit) - 1] = { lit, offsetof(mcp_headers_t, field) }
    static const wanted_t by_len[] = {WANTED("accept", accept), WANTED("mcp-name", name), WANTED("mcp-method", method),
                                      WANTED("mcp-session-id", session), WANTED("mcp-protocol-version", version)};
    static const wanted_t origin = {"origin", offsetof(mcp_headers_t, origin)}; /* accept's length: told by its 'o' */
#undef WANTED
    *h = (mcp_headers_t){{NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}, {NULL, 0}};
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_iovec_t *n = req->headers.entries[i].name;
        if (n->len >= ALY_ARRAY_SIZE(by_len) || by_len[n->len].name == NULL)
            continue;
        const wanted_t *w = n->len == sizeof("origin") - 1 && n->base[0] == 'o' ? &origin : &by_len[n->len];
        h2o_iovec_t *to = (h2o_iovec_t *)((char *)h + w->off);
        if (to->base == NULL && memcmp(n->base, w->name, n->len) == 0)
            *to = req->headers.entries[i].value;
    }
    /* Header values are compared trimmed: HTTP/2 passes a value's surrounding spaces on, where HTTP/1 parsers may not. */
    if (h->version.base != NULL)
        h->version = h2o_str_stripws(h->version.base, h->version.len);
    if (h->method.base != NULL)
        h->method = h2o_str_stripws(h->method.base, h->method.len);
    if (h->name.base != NULL)
        h->name = h2o_str_stripws(h->name.base, h->name.len);
}

/*
 * Origin against allowed_origins.  A loopback origin may also name the same
 * scheme and port by another loopback alias (localhost, 127.0.0.1, [::1]):
 * a browser on this machine says "localhost" where public_url says
 * 127.0.0.1, and no other host can answer to any of those names.
 */
static int origin_allowed(const aly_config_t *cfg, h2o_iovec_t o)
{
    static const char *const loop[] = {"localhost", "127.0.0.1", "[::1]"};
    if (config_strlist_has(&cfg->allowed_origins, o.base, o.len))
        return 1;
    size_t at = o.len < 256 ? h2o_strstr(o.base, o.len, H2O_STRLIT("://")) : SIZE_MAX;
    if (at == SIZE_MAX)
        return 0;
    const char *sep = o.base + at;
    size_t sl = (size_t)(sep + 3 - o.base), rest = o.len - sl;
    const char *host = sep + 3, *tail = NULL;
    for (size_t k = 0; k < ALY_ARRAY_SIZE(loop) && tail == NULL; k++) {
        size_t n = strlen(loop[k]);
        if (rest >= n && strncasecmp(host, loop[k], n) == 0 && (rest == n || host[n] == ':'))
            tail = host + n;
    }
    if (tail == NULL)
        return 0;
    for (size_t k = 0; k < ALY_ARRAY_SIZE(loop); k++) {
        char buf[300];
        int n = snprintf(buf, sizeof(buf), "%.*s%s%.*s", (int)sl, o.base, loop[k], (int)(o.base + o.len - tail), tail);
        if (n > 0 && (size_t)n < sizeof(buf) && config_strlist_has(&cfg->allowed_origins, buf, (size_t)n))
            return 1;
    }
    return 0;
}

static void refuse(h2o_req_t *req, int status, int code, const char *message)
{
    http_send_rpc_error(req, status, code, message, NULL);
}

/* A session that could not be loaded: 503 when the store failed, 404 when it is unknown or expired. */
static void refuse_session(h2o_req_t *req, int rc, const char *unknown)
{
    refuse(req, rc < 0 ? 503 : 404, RPC_INVALID_REQUEST, rc < 0 ? "the session store cannot be read" : unknown);
}

static int accepts(h2o_iovec_t accept, const char *type)
{
    return accept.base != NULL && h2o_strstr(accept.base, accept.len, type, strlen(type)) != SIZE_MAX;
}

static void on_keepalive(h2o_timeout_entry_t *entry)
{
    mcp_exchange_t *x = H2O_STRUCT_FROM_MEMBER(mcp_exchange_t, keepalive, entry);
    mcp_buf_append(&x->queued, ": keep-alive\n\n", 14);
    mcp_exchange_flush(x);
    h2o_timeout_link(x->ctx->loop, &keepalive_timeout, &x->keepalive);
}

void mcp_close_streams(void)
{
    while (!h2o_linklist_is_empty(&open_streams)) {
        mcp_exchange_t *x = H2O_STRUCT_FROM_MEMBER(mcp_exchange_t, stream_link, open_streams.next);
        h2o_linklist_unlink(&x->stream_link);
        x->stream_linked = 0;
        if (h2o_timeout_is_linked(&x->keepalive))
            h2o_timeout_unlink(&x->keepalive);
        x->finishing = 1;
        mcp_exchange_flush(x);
    }
}

static void serve_get(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p, const mcp_headers_t *h)
{
    h2o_iovec_t sid = h->session;
    if (sid.base == NULL) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("POST, DELETE"));
        refuse(req, 405, RPC_INVALID_REQUEST, "GET opens the event stream of a session: send Mcp-Session-Id (from initialize)");
        return;
    }
    if (h->accept.base == NULL || !accepts(h->accept, "text/event-stream")) {
        refuse(req, 406, RPC_INVALID_REQUEST, "the event stream needs Accept: text/event-stream");
        return;
    }
    session_record_t s;
    int rc = mcp_session_load(ctx->store, sid.base, sid.len, p, asked_ms(req), &s);
    if (rc != 0) {
        refuse_session(req, rc, "unknown or expired session: initialize again");
        return;
    }
    mcp_exchange_t *x = mcp_exchange_new(ctx, req, p);
    x->is_stream = 1;
    x->has_session = 1;
    x->session = s;
    if (!keepalive_ready) {
        h2o_timeout_init(ctx->loop, &keepalive_timeout, STREAM_KEEPALIVE_MS);
        keepalive_ready = 1;
    }
    x->keepalive.cb = on_keepalive;
    h2o_timeout_link(ctx->loop, &keepalive_timeout, &x->keepalive);
    h2o_linklist_insert(&open_streams, &x->stream_link);
    x->stream_linked = 1;
    mcp_exchange_start_sse(x);
    mcp_buf_append(&x->queued, ": stream open\n\n", 15);
    mcp_exchange_flush(x);
}

static void serve_delete(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p, h2o_iovec_t sid)
{
    session_record_t s;
    if (sid.base == NULL) {
        refuse(req, 400, RPC_INVALID_REQUEST, "DELETE ends a session: send its Mcp-Session-Id");
        return;
    }
    int rc = mcp_session_load(ctx->store, sid.base, sid.len, p, asked_ms(req), &s);
    if (rc != 0) {
        refuse_session(req, rc, "unknown or expired session");
        return;
    }
    mcp_session_delete(ctx->store, s.id);
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_send_inline(req, "", 0);
}

/* prefix + at most max bytes of s into buf (which holds them): the length.  Every request's note, so no printf. */
static size_t note_join(const char *prefix, const char *s, char *buf, size_t max)
{
    size_t pl = strlen(prefix), sl = strnlen(s, max);
    memcpy(buf, prefix, pl);
    memcpy(buf + pl, s, sl);
    return pl + sl;
}

/* The access log's rpc field: the method, "tools/call:NAME" for a tool, or "batch:N" (body NULL: read flat). */
static void log_rpc(h2o_req_t *req, json_t *body, const rpc_view_t *v)
{
    char buf[160];
    size_t n;
    if (json_is_array(body)) {
        n = (size_t)snprintf(buf, sizeof(buf), "batch:%zu", json_array_size(body));
    } else {
        const char *m = json_string_value(v->method), *tool = json_string_value(v->name);
        if (m == NULL)
            n = (size_t)snprintf(buf, sizeof(buf), "%s", v->id != NULL ? "response" : "-");
        else if (tool != NULL && strcmp(m, "tools/call") == 0)
            n = note_join("tools/call:", tool, buf, 100);
        else
            n = note_join("", m, buf, 150);
    }
    http_log_note(req, "rpc", buf, n);
}

static int is_initialize(json_t *msg)
{
    const char *m = json_string_value(json_object_get(msg, "method"));
    return m != NULL && strcmp(m, "initialize") == 0;
}

/* A message that makes a call (a request: a method and an id), which costs one unit of the rate limit. */
static int is_call(json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    return json_is_string(json_object_get(msg, "method")) && (json_is_string(id) || json_is_integer(id));
}

/*
 * A batch's calls: the gate charged the request one unit, so the calls
 * after the first are charged here, and those over the budget are answered
 * with the rate-limit error instead of being made.
 */
static void dispatch_batch(mcp_ctx_t *ctx, mcp_exchange_t *x, h2o_req_t *req, const principal_t *p, json_t *body)
{
    size_t i, calls = 0, seen = 0;
    json_t *m;
    json_array_foreach(body, i, m)
        calls += is_call(m);
    ratelimit_decision_t refused = {0};
    size_t admitted = 1 + (calls > 1 ? gate_charge(ctx->gate, req, p, calls - 1, &refused) : 0);
    json_array_foreach(body, i, m) {
        if (is_call(m) && ++seen > admitted)
            mcp_emit(x,
                     json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", json_object_get(m, "id"), "error",
                               gate_refused_error(p, &refused)),
                     1);
        else
            mcp_dispatch(x, m, NULL);
    }
}

/* Why a batch cannot be served, or NULL. */
static const char *batch_refusal(json_t *body, int protocol)
{
    if (strcmp(mcp_protocol_versions[protocol], "2025-03-26") != 0)
        return "batches are only part of protocol 2025-03-26: send one message per POST";
    if (json_array_size(body) == 0)
        return "an empty batch";
    if (json_array_size(body) > MCP_MAX_BATCH)
        return "a batch holds at most 100 messages";
    return NULL;
}

static void serve_post(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p, int protocol, const mcp_headers_t *h)
{
    h2o_iovec_t accept = h->accept;
    int sse = accepts(accept, "text/event-stream"), json = accepts(accept, "application/json") || accepts(accept, "*/*");
    if (accept.base != NULL && !sse && !json) {
        refuse(req, 406, RPC_INVALID_REQUEST, "Accept must include application/json and text/event-stream");
        return;
    }
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct < 0 || !accepts(req->headers.entries[ct].value, "application/json")) {
        refuse(req, 415, RPC_INVALID_REQUEST, "POST a JSON-RPC message as application/json");
        return;
    }
    json_error_t jerr;
    json_t *body;
    rpc_view_t view;
    /*
     * A modern claim in the header: the flat reader, which builds no tree.  A
     * modern request is self-contained and the modern era reads only the
     * view; a body the reader declines is read whole below.
     */
    if (protocol < 0 && rpc_parse_flat(req->entity.base, req->entity.len, &view) == 0) {
        /* The note first: answering may end the request.  Under a modern header the route answers whatever was read flat. */
        log_rpc(req, NULL, &view);
        mcp_modern_route(ctx, req, p, NULL, &view, h, sse);
        rpc_view_release(&view);
        return;
    }
    if (rpc_parse(req->entity.base, req->entity.len, &body, &view) == 0)
        ;
    else if ((body = json_loadb(req->entity.base, req->entity.len, JSON_DECODE_ANY, &jerr)) != NULL)
        rpc_view_of(body, &view);
    else {
        char msg[300];
        snprintf(msg, sizeof(msg), "Parse error: %s (at byte %d)", jerr.text, jerr.position);
        refuse(req, 400, RPC_PARSE_ERROR, msg);
        return;
    }
    int batch = json_is_array(body);
    log_rpc(req, body, &view);
    if (!batch && !json_is_object(body)) {
        json_unref(body);
        refuse(req, 400, RPC_INVALID_REQUEST, "the body must be a JSON-RPC message (an object)");
        return;
    }
    if (mcp_modern_route(ctx, req, p, body, &view, h, sse)) {
        json_unref(body);
        return;
    }
    /* Only the legacy era has sessions. */
    h2o_iovec_t sid = h->session;
    int pv_sent = h->version.base != NULL;
    if (protocol < 0) /* a modern version header on a message that is a legacy one (a reply to our request) */
        protocol = PROTOCOL_DEFAULT;
    session_record_t s;
    int has_session = 0;
    if (sid.base != NULL && !(!batch && is_initialize(body))) {
        int rc = mcp_session_load(ctx->store, sid.base, sid.len, p, asked_ms(req), &s);
        if (rc != 0) {
            json_unref(body);
            refuse_session(req, rc, "unknown or expired session: initialize again");
            return;
        }
        has_session = 1;
        if (!pv_sent)
            for (size_t i = 0; i < mcp_protocol_count; i++)
                if (strcmp(s.protocol, mcp_protocol_versions[i]) == 0)
                    protocol = (int)i;
    }
    const char *why = batch ? batch_refusal(body, protocol) : NULL;
    if (why != NULL) {
        json_unref(body);
        refuse(req, 400, RPC_INVALID_REQUEST, why);
        return;
    }

    mcp_exchange_t *x = mcp_exchange_new(ctx, req, p);
    x->batch = batch;
    x->accepts_sse = sse;
    x->protocol = protocol;
    x->has_session = has_session;
    if (has_session)
        x->session = s;
    x->refs++; /* held while dispatching, so nothing can free x under us */
    x->dispatching = 1;
    if (batch) {
        dispatch_batch(ctx, x, req, p, body);
    } else {
        mcp_dispatch(x, body, &view);
        /* A single invalid message: HTTP 400 with its JSON-RPC error (no call was made). */
        if (x->pending == 0 && x->n_answers == 1 &&
            (x->protocol_error_code == RPC_INVALID_REQUEST || x->protocol_error_code == RPC_PARSE_ERROR))
            x->status = 400;
    }
    json_unref(body);
    x->dispatching = 0;
    mcp_exchange_maybe_finish(x);
    mcp_exchange_release(x);
}

void mcp_serve(void *vctx, h2o_req_t *req)
{
    mcp_ctx_t *ctx = vctx;
    /* DNS-rebinding guard first: a browser page must not reach us through a name it controls. */
    mcp_headers_t h;
    read_headers(req, &h);
    if (h.origin.base != NULL && !origin_allowed(ctx->cfg, h.origin)) {
        refuse(req, 403, RPC_INVALID_REQUEST, "Origin not allowed (allowed_origins)");
        return;
    }
    if (!http_host_allowed(ctx->cfg, req)) {
        refuse(req, 421, RPC_INVALID_REQUEST, "Host not served here (allowed_hosts)");
        return;
    }
    h2o_iovec_t pv = h.version;
    int protocol = PROTOCOL_DEFAULT;
    if (pv.base != NULL) {
        size_t i;
        for (i = 0; i < mcp_protocol_count; i++)
            if (h2o_memis(pv.base, pv.len, mcp_protocol_versions[i], strlen(mcp_protocol_versions[i])))
                break;
        int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
        if (i < mcp_protocol_count) {
            protocol = (int)i;
        } else if (post && mcp_modern_version(pv.base, pv.len)) {
            protocol = -1; /* the body decides: a modern request, or a modern claim where none belongs */
        } else {
            refuse(req, 400, RPC_INVALID_REQUEST,
                   "unsupported MCP-Protocol-Version (supported: 2025-11-25, 2025-06-18, 2025-03-26)");
            return;
        }
    }
    principal_t p;
    /* protocol < 0 exactly when the header names a modern revision: any other value was refused above, or is legacy. */
    if (gate_pass(ctx->gate, req, protocol < 0, &p) != 0)
        return;
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
        serve_get(ctx, req, &p, &h);
    else if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE")))
        serve_delete(ctx, req, &p, h.session);
    else
        serve_post(ctx, req, &p, protocol, &h);
}

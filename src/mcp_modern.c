/*
 * The modern era of /api/mcp (MCP 2026-07-28, stateless) beside the legacy
 * one: which POSTs belong to it, the checks a modern request passes before a
 * method runs (the _meta envelope, the version, the standard headers, the
 * multi round-trip fields), its method table (server/discover and the
 * registry's methods, nothing of sessions), the fields every modern result
 * carries, and the sealing of requestState.
 *
 * The order of the checks is the order clients rely on to tell the eras
 * apart: a 400 with -32020, -32021 or -32022, or a 404 with -32601, tells a
 * client it talks to a modern server; any other refusal sends it to
 * initialize.  So nothing on the legacy path uses those codes.
 */
#include <fcntl.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/http.h"
#include "aly/json_ref.h"
#include "aly/log.h"
#include "aly/mcp_internal.h"
#include "aly/registry.h"
#include "aly/volatile_redis.h"

#define MODERN_VERSION "2026-07-28"
#define LIST_TTL_MS 300000
#define STATE_TTL_MS (10 * 60 * 1000)
#define STATE_MAX 8192 /* characters of a requestState we are willing to look at */

enum { NAME_NONE, NAME_FROM_NAME, NAME_FROM_URI };

static void do_discover(mcp_call_t *call, json_t *params);

/*
 * The modern method table.  name_from: which params field Mcp-Name must
 * repeat.  cache: the caching hint of a complete result; lists are the same
 * for every credential (no tool is hidden by scope), reads are not.  mrtr:
 * the method may answer input_required, so its params may carry
 * inputResponses and requestState.
 */
typedef struct modern_method {
    const char *name;
    void (*handle)(mcp_call_t *call, json_t *params);
    void (*handle_named)(mcp_call_t *call, json_t *name, json_t *arguments); /* for a request read flat; may be NULL */
    int name_from;
    int cache;
    int mrtr;
} modern_method_t;

static const modern_method_t methods[] = {
    {"server/discover", do_discover, NULL, NAME_NONE, MCP_CACHE_PUBLIC, 0},
    {"tools/list", registry_tools_list, NULL, NAME_NONE, MCP_CACHE_PUBLIC, 0},
    {"tools/call", registry_tools_call, registry_tools_call_named, NAME_FROM_NAME, MCP_CACHE_NONE, 1},
    {"resources/list", registry_resources_list, NULL, NAME_NONE, MCP_CACHE_PUBLIC, 0},
    {"resources/templates/list", registry_resource_templates_list, NULL, NAME_NONE, MCP_CACHE_PUBLIC, 0},
    {"resources/read", registry_resources_read, NULL, NAME_FROM_URI, MCP_CACHE_PRIVATE, 1},
    {"prompts/list", registry_prompts_list, NULL, NAME_NONE, MCP_CACHE_PUBLIC, 0},
    {"prompts/get", registry_prompts_get, NULL, NAME_FROM_NAME, MCP_CACHE_NONE, 1},
    {"completion/complete", registry_complete, NULL, NAME_NONE, MCP_CACHE_NONE, 0},
};

int mcp_modern_version(const char *v, size_t len)
{
    size_t n = sizeof(MODERN_VERSION) - 1;
    int c = memcmp(v, MODERN_VERSION, len < n ? len : n);
    return c > 0 || (c == 0 && len >= n);
}

static void do_discover(mcp_call_t *call, json_t *params)
{
    (void)params;
    json_t *caps = json_pack("{s:{}, s:{}, s:{}, s:{}, s:{}}", "tools", "prompts", "resources", "completions", "logging");
    mcp_call_result(call, json_pack("{s:[s], s:o, s:s}", "supportedVersions", MODERN_VERSION, "capabilities", caps, "instructions",
                                    mcp_instructions));
}

void mcp_modern_result_head(const mcp_call_t *c, mcp_buf_t *b)
{
#define RESULT_TYPE(t) "\"resultType\":\"" t "\""
#define SERVER_INFO ",\"_meta\":{\"io.modelcontextprotocol/serverInfo\":{\"name\":\"alyd\",\"version\":\"" PACKAGE_VERSION "\"}}"
    /* Each head whole, so a result's costs one append. */
    static const char input[] = RESULT_TYPE("input_required") SERVER_INFO, complete[] = RESULT_TYPE("complete") SERVER_INFO,
                      public_hint[] = RESULT_TYPE("complete") ",\"ttlMs\":" ALY_STR(
                          LIST_TTL_MS) ",\"cacheScope\":\"public\"" SERVER_INFO,
                      private_hint[] = RESULT_TYPE("complete") ",\"ttlMs\":0,\"cacheScope\":\"private\"" SERVER_INFO;
#undef RESULT_TYPE
#undef SERVER_INFO
    _Static_assert(sizeof(input) <= MCP_RESULT_HEAD_MAX && sizeof(complete) <= MCP_RESULT_HEAD_MAX &&
                       sizeof(public_hint) <= MCP_RESULT_HEAD_MAX && sizeof(private_hint) <= MCP_RESULT_HEAD_MAX,
                   "the envelope reserves MCP_RESULT_HEAD_MAX for the modern head");
    if (c->input_required)
        mcp_buf_append(b, input, sizeof(input) - 1);
    else if (c->cache_scope == MCP_CACHE_PUBLIC)
        mcp_buf_append(b, public_hint, sizeof(public_hint) - 1);
    else if (c->cache_scope != MCP_CACHE_NONE)
        mcp_buf_append(b, private_hint, sizeof(private_hint) - 1);
    else
        mcp_buf_append(b, complete, sizeof(complete) - 1);
}

/* ---- refusals ---- */

/* A JSON-RPC error answering the request (id echoed when it has a usable one); data stolen. */
static void refuse(h2o_req_t *req, int status, json_t *id, int code, const char *message, json_t *data)
{
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (data != NULL)
        json_object_set_new(err, "data", data);
    if (!json_is_string(id) && !json_is_integer(id))
        id = json_null();
    http_send_json_object(req, status, json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "error", err));
}

static void accepted(h2o_req_t *req)
{
    req->res.status = 202;
    req->res.reason = "Accepted";
    req->res.content_length = 0;
    h2o_send_inline(req, "", 0);
}

/* ---- standard headers ---- */

static int b64_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/*
 * Decodes a standard header's value into out (malloc'd, NUL-terminated).  A
 * value wrapped in "=?base64?" and "?=" carries UTF-8 a header cannot: it
 * must be canonical Base64 (alphabet, length, padding only at the end).  A
 * value lacking either marker is literal.  -1 when the Base64 is malformed.
 */
static int header_decode(h2o_iovec_t v, char **out, size_t *outlen)
{
    static const char pre[] = "=?base64?", post[] = "?=";
    size_t pl = sizeof(pre) - 1, sl = sizeof(post) - 1;
    if (v.len < pl + sl || memcmp(v.base, pre, pl) != 0 || memcmp(v.base + v.len - sl, post, sl) != 0) {
        *out = malloc(v.len + 1);
        if (*out == NULL)
            abort();
        memcpy(*out, v.base, v.len);
        (*out)[v.len] = '\0';
        *outlen = v.len;
        return 0;
    }
    const char *b = v.base + pl;
    size_t n = v.len - pl - sl, pad = 0;
    if (n % 4 != 0)
        return -1;
    while (pad < 2 && n > pad && b[n - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < n - pad; i++)
        if (!b64_char((unsigned char)b[i]))
            return -1;
    *out = malloc(n / 4 * 3 + 1);
    if (*out == NULL)
        abort();
    int got = n ? EVP_DecodeBlock((unsigned char *)*out, (const unsigned char *)b, (int)n) : 0;
    if (got < 0 || (size_t)got < pad) {
        free(*out);
        return -1;
    }
    *outlen = (size_t)got - pad;
    (*out)[*outlen] = '\0';
    return 0;
}

/* 0 when header value v (base NULL: absent) decodes to exactly want; else -1 with *why. */
static int header_matches(h2o_iovec_t v, const char *want, size_t wantlen, const char **why)
{
    char *d;
    size_t dl;
    if (v.base == NULL)
        return *why = "is missing", -1;
    /* The literal form, nearly every request's, is compared where it lies. */
    if (v.len == wantlen && memcmp(v.base, want, wantlen) == 0 && (v.len < 2 || memcmp(v.base, "=?", 2) != 0))
        return 0;
    if (header_decode(v, &d, &dl) != 0)
        return *why = "is not valid =?base64?...?= text", -1;
    int same = dl == wantlen && memcmp(d, want, dl) == 0;
    free(d);
    if (!same)
        return *why = "does not match the body", -1;
    return 0;
}

static void mismatch(h2o_req_t *req, json_t *id, const char *name, const char *why)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "Header mismatch: %s %s", name, why);
    refuse(req, 400, id, RPC_HEADER_MISMATCH, msg, NULL);
}

/* ---- requestState ---- */

static unsigned char state_key[32];
static int state_key_ready;

/*
 * The requestState key is derived from the pepper file that alyctl init made
 * (HMAC under its own label), so every worker and every restart holds the
 * same key without a second secret file to deploy and protect.
 */
static int state_key_load(const aly_config_t *cfg)
{
    if (state_key_ready)
        return 0;
    unsigned char pepper[256];
    int fd = open(cfg->key_pepper_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, pepper, sizeof(pepper));
    close(fd);
    static const char label[] = "aly-mcp-request-state-v1";
    unsigned int outl = 0;
    int ok = n >= 32 &&
             HMAC(EVP_sha256(), pepper, (int)n, (const unsigned char *)label, sizeof(label) - 1, state_key, &outl) != NULL;
    OPENSSL_cleanse(pepper, sizeof(pepper));
    if (!ok)
        return -1;
    state_key_ready = 1;
    return 0;
}

/*
 * A number is one value however it is written: 5.0 and 5 alike.  The schema
 * check turns an integral real into an integer in the arguments a handler
 * gets, after the request's digest was taken from what the client sent.
 */
static void integral_reals(json_t *v);

/* m itself as an integer when it is an integral real (exact in a double, so in a json_int_t); else NULL, m's own members done. */
static json_t *integral(json_t *m)
{
    double d = json_is_real(m) ? json_real_value(m) : 0.5;
    if (d == trunc(d) && fabs(d) < 9007199254740992.0)
        return json_integer((json_int_t)d);
    integral_reals(m);
    return NULL;
}

static void integral_reals(json_t *v)
{
    const char *k;
    json_t *m, *i;
    size_t n;
    json_object_foreach(v, k, m)
        if ((i = integral(m)) != NULL)
            json_object_set_new(v, k, i);
    json_array_foreach(v, n, m)
        if ((i = integral(m)) != NULL)
            json_array_set_new(v, n, i);
}

/* Hex SHA-256 of the params: canonical JSON (integral numbers as integers) without _meta and the round-trip fields. */
static void params_digest(json_t *params, char out[65])
{
    json_t *p = json_is_object(params) ? json_deep_copy(params) : json_object();
    integral_reals(p);
    json_object_del(p, "_meta");
    json_object_del(p, "inputResponses");
    json_object_del(p, "requestState");
    char *text = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    json_unref(p);
    unsigned char d[32];
    SHA256((const unsigned char *)(text ? text : ""), text ? strlen(text) : 0, d);
    free(text);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* base64url(HMAC(key, body)), NUL-terminated into mac (at least 44 bytes). */
static void state_mac(const char *body, size_t len, char *mac)
{
    unsigned char m[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), state_key, sizeof(state_key), (const unsigned char *)body, len, m, &ml);
    mac[aly_b64url_encode(m, sizeof(m), mac)] = '\0';
}

/*
 * "v1." + base64url(payload) + "." + base64url(MAC).  The payload binds the
 * principal, the method, the params digest and an expiry; the handler's state
 * rides inside it.  Not encrypted: a client may read what a handler keeps.
 */
char *mcp_modern_state_seal(mcp_call_t *c, json_t *state)
{
    if (state_key_load(c->x->ctx->cfg) != 0) {
        log_error("requestState: cannot derive the key from %s", c->x->ctx->cfg->key_pepper_file);
        return NULL;
    }
    char digest[65];
    params_digest(mcp_call_params(c), digest);
    json_t *payload = json_pack("{s:s, s:s, s:s, s:I, s:O}", "p", c->x->principal.id, "m", c->method ? c->method : "", "d", digest,
                                "e", (json_int_t)(aly_wall_ms() + STATE_TTL_MS), "s", state ? state : json_null());
    char *text = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    json_unref(payload);
    if (text == NULL)
        return NULL;
    size_t tl = strlen(text);
    char *out = malloc(3 + tl * 4 / 3 + 8 + 1 + 44);
    if (out == NULL)
        abort();
    memcpy(out, "v1.", 3);
    size_t n = 3 + aly_b64url_encode((const unsigned char *)text, tl, out + 3);
    free(text);
    char mac[48];
    state_mac(out, n, mac);
    out[n++] = '.';
    strcpy(out + n, mac);
    return out;
}

#define USED_SWEEP_EVERY 64 /* marks between sweeps of the expired ones */

typedef struct used_sweep {
    uint64_t now;
    json_t *expired; /* keys to delete, collected because a scan must not write */
} used_sweep_t;

static int used_expired(void *vctx, const store_val_t *key, const store_val_t *val)
{
    used_sweep_t *u = vctx;
    uint64_t until = 0;
    if (val->len == sizeof(until))
        memcpy(&until, val->data, sizeof(until));
    if (until <= u->now)
        json_array_append_new(u->expired, json_stringn(key->data, key->len));
    return 0;
}

/*
 * A requestState answers its round once: its MAC is recorded in the volatile
 * store ("s:" + MAC -> expiry) until it would have expired anyway, so a replay
 * within those ten minutes, on any worker, cannot run the handler again.
 * Returns 0 when this is the first use (now recorded), 1 when it was used, -1
 * when the store cannot tell.  With "volatile redis://" the mark is the
 * Redis key aly:{s:MAC}:s, set with NX and expiring at the token's expiry,
 * so a replay on any host is refused and no sweep is needed.
 */
static int state_use(mcp_ctx_t *ctx, const char *mac, size_t ml, uint64_t until)
{
    static unsigned marks;
    char k[64];
    if (ml + 2 > sizeof(k))
        return -1;
    memcpy(k, "s:", 2);
    memcpy(k + 2, mac, ml);
    volatile_redis_t *vr = volatile_redis();
    if (vr != NULL) {
        char rk[128];
        aly_err_t err = {.msg = "requestState mark key too long"};
        uint64_t now = aly_wall_ms();
        int rc = volatile_redis_key(rk, sizeof(rk), k, ml + 2, "s") < 0
                     ? -1
                     : volatile_redis_set(vr, rk, "1", 1, until > now ? until - now : 1, 1, &err);
        if (rc < 0)
            log_warn("requestState use record: %s", err.msg);
        return rc;
    }
    store_txn_t t;
    aly_err_t err;
    if (store_begin(ctx->store, STORE_WRITE | STORE_VOLATILE, &t, &err) != 0)
        return -1;
    int rc = store_put(&t, VDB_REPLIES, k, ml + 2, &until, sizeof(until), 1, &err);
    if (rc == 0 && ++marks % USED_SWEEP_EVERY == 0) {
        used_sweep_t u = {aly_wall_ms(), json_array()};
        size_t i;
        json_t *v;
        if (store_scan(&t, VDB_REPLIES, "s:", 2, NULL, 0, used_expired, &u, &err) == 0) {
            json_array_foreach(u.expired, i, v) {
                store_del(&t, VDB_REPLIES, json_string_value(v), json_string_length(v), &err);
            }
        }
        json_unref(u.expired);
    }
    if (rc != 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        if (rc < 0)
            log_warn("requestState use record: %s", err.msg);
        return rc == 1 ? 1 : -1;
    }
    return 0;
}

/* The handler's state from a requestState sealed for this principal, method and params; NULL with *why otherwise. */
static json_t *state_open(mcp_ctx_t *ctx, const principal_t *p, const char *method, json_t *params, json_t *token, const char **why)
{
    const char *t = json_string_value(token);
    size_t tl = json_string_length(token);
    *why = "requestState is not one this server issued";
    if (t == NULL || tl > STATE_MAX || tl < 4 || memcmp(t, "v1.", 3) != 0)
        return NULL;
    if (state_key_load(ctx->cfg) != 0) {
        *why = "requestState cannot be checked now; start the request again";
        return NULL;
    }
    const char *dot = memchr(t + 3, '.', tl - 3);
    if (dot == NULL)
        return NULL;
    char mac[48];
    state_mac(t, (size_t)(dot - t), mac);
    size_t ml = tl - (size_t)(dot + 1 - t);
    if (ml != strlen(mac) || CRYPTO_memcmp(mac, dot + 1, ml) != 0) {
        *why = "requestState failed its integrity check";
        return NULL;
    }
    unsigned char *text = malloc(tl);
    if (text == NULL)
        abort();
    long n = aly_b64url_decode(t + 3, (size_t)(dot - t - 3), text, tl);
    json_t *payload = n > 0 ? json_loadb((const char *)text, (size_t)n, 0, NULL) : NULL;
    free(text);
    char digest[65];
    params_digest(params, digest);
    const char *pp = json_string_value(json_object_get(payload, "p")), *pm = json_string_value(json_object_get(payload, "m")),
               *pd = json_string_value(json_object_get(payload, "d"));
    json_t *e = json_object_get(payload, "e");
    uint64_t now = aly_wall_ms();
    json_t *state = NULL;
    int used;
    if (pp == NULL || pm == NULL || pd == NULL || !json_is_integer(e))
        *why = "requestState is not one this server issued";
    else if ((uint64_t)json_integer_value(e) <= now || (uint64_t)json_integer_value(e) > now + STATE_TTL_MS)
        *why = "requestState has expired: start the request again without it";
    else if (strcmp(pp, p->id) != 0)
        *why = "requestState belongs to another credential";
    else if (strcmp(pm, method) != 0 || strcmp(pd, digest) != 0)
        *why = "requestState belongs to another request: retry with the same method and params";
    else if ((used = state_use(ctx, dot + 1, ml, (uint64_t)json_integer_value(e))) != 0)
        *why = used > 0 ? "requestState was already used: each one answers its round once; start the request again without it"
                        : "requestState cannot be checked now; start the request again";
    else
        state = json_ref(json_object_get(payload, "s"));
    json_unref(payload);
    return state;
}

/* ---- classification and the modern rungs ---- */

static int serve_modern(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p, json_t *body, const rpc_view_t *v,
                        const mcp_headers_t *h, int sse)
{
    h2o_iovec_t pv = h->version;
    json_t *id = v->id, *params = v->params, *claim = v->claim, *caps = v->caps, *level = v->log_level;
    const char *method = json_string_value(v->method);
    int code;
    const char *why;
    if (mcp_message_check_view(body, v, &code, &why) != 0 || method == NULL) {
        refuse(req, 400, id, RPC_INVALID_REQUEST, method == NULL ? "a modern message is a request or a notification" : why, NULL);
        return 1;
    }
    if (!json_is_string(claim) || !json_is_object(caps)) {
        refuse(req, 400, id, RPC_INVALID_PARAMS,
               "params._meta needs io.modelcontextprotocol/protocolVersion (a string) and "
               "io.modelcontextprotocol/clientCapabilities (an object)",
               NULL);
        return 1;
    }
    if (pv.base != NULL && !h2o_memis(pv.base, pv.len, json_string_value(claim), json_string_length(claim))) {
        mismatch(req, id, "MCP-Protocol-Version", "differs from _meta's protocolVersion");
        return 1;
    }
    if (strcmp(json_string_value(claim), MODERN_VERSION) != 0) {
        refuse(req, 400, id, RPC_UNSUPPORTED_VERSION, "Unsupported protocol version",
               json_pack("{s:[s], s:O}", "supported", MODERN_VERSION, "requested", claim));
        return 1;
    }
    if (pv.base == NULL) {
        mismatch(req, id, "MCP-Protocol-Version", "is missing");
        return 1;
    }
    if (header_matches(h->method, method, json_string_length(v->method), &why) != 0) {
        mismatch(req, id, "Mcp-Method", why);
        return 1;
    }
    if (id == NULL) {
        /* Cancellation is the client closing the stream; nothing else a modern client notifies needs us. */
        accepted(req);
        return 1;
    }
    const modern_method_t *m = NULL;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(methods) && m == NULL; i++)
        if (methods[i].name[0] == method[0] && strcmp(methods[i].name, method) == 0)
            m = &methods[i];
    if (m == NULL) {
        refuse(req, 404, id, RPC_METHOD_NOT_FOUND, "Method not found", json_pack("{s:s}", "method", method));
        return 1;
    }
    if (m->name_from != NAME_NONE) {
        json_t *name = m->name_from == NAME_FROM_URI ? json_object_get(params, "uri") : v->name;
        if (json_is_string(name) && header_matches(h->name, json_string_value(name), json_string_length(name), &why) != 0) {
            mismatch(req, id, "Mcp-Name", why);
            return 1;
        }
    }
    int log_min = -1;
    if (level != NULL && (log_min = mcp_log_level(json_string_value(level))) < 0) {
        refuse(req, 400, id, RPC_INVALID_PARAMS,
               "_meta logLevel must be one of debug, info, notice, warning, error, critical, alert, emergency", NULL);
        return 1;
    }
    json_t *inputs = m->mrtr ? v->inputs : NULL, *state = NULL;
    if (inputs != NULL) {
        const char *k;
        json_t *answer;
        int ok = json_is_object(inputs);
        json_object_foreach(inputs, k, answer)
            ok = ok && json_is_object(answer);
        if (!ok) {
            refuse(req, 200, id, RPC_INVALID_PARAMS, "inputResponses must be an object of results, one per inputRequests key",
                   NULL);
            return 1;
        }
    }
    json_t *token = m->mrtr ? v->state : NULL;
    if (token != NULL && (state = state_open(ctx, p, method, params, token, &why)) == NULL) {
        refuse(req, 200, id, RPC_INVALID_PARAMS, why, NULL);
        return 1;
    }

    mcp_exchange_t *x = mcp_exchange_new(ctx, req, p);
    x->modern = 1;
    x->accepts_sse = sse;
    x->client_caps = json_ref(caps);
    x->log_min = log_min;
    x->refs++; /* held while dispatching, so nothing can free x under us */
    x->dispatching = 1;
    mcp_call_t *c = mcp_call_new(x, id, params, v->meta);
    c->method = m->name;
    c->cache_scope = m->cache;
    c->inputs = json_ref(inputs);
    c->state = state;
    if (body != NULL) {
        m->handle(c, params);
    } else {
        /* Read flat: no params object, unless the handler needs one. */
        c->name = json_ref(v->name);
        c->arguments = json_ref(v->arguments);
        if (m->handle_named != NULL)
            m->handle_named(c, v->name, v->arguments);
        else
            m->handle(c, mcp_call_params(c));
    }
    x->dispatching = 0;
    mcp_exchange_maybe_finish(x);
    mcp_exchange_release(x);
    return 1;
}

int mcp_modern_route(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p, json_t *body, const rpc_view_t *v,
                     const mcp_headers_t *h, int accepts_sse)
{
    h2o_iovec_t pv = h->version;
    int header_modern = pv.base != NULL && mcp_modern_version(pv.base, pv.len);
    json_t *id = v->id;
    if (json_is_array(body)) {
        size_t i;
        json_t *m;
        json_array_foreach(body, i, m) {
            rpc_view_t mv;
            rpc_view_of(m, &mv);
            if (mv.claim != NULL || header_modern) {
                refuse(req, 400, NULL, RPC_INVALID_REQUEST,
                       "a batch belongs to protocol 2025-03-26: send a modern request on its own", NULL);
                return 1;
            }
        }
        return 0;
    }
    const char *method = json_string_value(v->method);
    json_t *claim = v->claim;
    if (method == NULL)
        return 0; /* a reply to one of our requests, or no message at all: the legacy path answers */
    if (strcmp(method, "initialize") == 0 &&
        !(json_is_string(claim) && mcp_modern_version(json_string_value(claim), json_string_length(claim)))) {
        if (!header_modern)
            return 0;
        mismatch(req, id, "MCP-Protocol-Version", "names a stateless revision, which has no initialize");
        return 1;
    }
    if (claim == NULL) {
        if (!header_modern)
            return 0;
        if (id == NULL) {
            accepted(req);
            return 1;
        }
        refuse(req, 400, id, RPC_INVALID_PARAMS,
               "a 2026-07-28 request carries params._meta with io.modelcontextprotocol/protocolVersion and clientCapabilities",
               NULL);
        return 1;
    }
    return serve_modern(ctx, req, p, body, v, h, accepts_sse);
}

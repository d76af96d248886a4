/*
 * The authorization server's HTTP plumbing (aly/oauth_internal.h) and its
 * small endpoints: RFC 8414 metadata, the JWKS and revocation (RFC 7009).  Forms are decoded strictly (a bad
 * escape or invalid UTF-8 is an error, never a guess), and every counter
 * that limits abuse lives in the volatile store so all workers share it.
 */
#include "aly/oauth_internal.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aly/http.h"
#include "aly/log.h"
#include "aly/ratelimit.h"
#include "aly/scope.h"

/* ---- forms ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static const char *decode(h2o_mem_pool_t *pool, const char *s, size_t n, aly_err_t *why)
{
    char *out = h2o_mem_alloc_pool(pool, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return aly_errf(why, "a %% escape in the form is not two hex digits"), NULL;
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    if (memchr(out, '\0', o) != NULL)
        return aly_errf(why, "the form holds a NUL byte"), NULL;
    if (!record_utf8_valid(out, o))
        return aly_errf(why, "the form is not valid UTF-8"), NULL;
    return out;
}

int oauth_form_parse(h2o_mem_pool_t *pool, const char *text, size_t len, oauth_form_t *form, aly_err_t *why)
{
    form->n = 0;
    if (len > OAUTH_FORM_MAX_BYTES)
        return aly_errf(why, "the form is larger than %d bytes", OAUTH_FORM_MAX_BYTES);
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && text[end] != '&')
            end++;
        if (end > i) {
            const char *eq = memchr(text + i, '=', end - i);
            size_t nlen = eq != NULL ? (size_t)(eq - (text + i)) : end - i;
            if (form->n == OAUTH_FORM_MAX_FIELDS)
                return aly_errf(why, "the form has more than %d fields", OAUTH_FORM_MAX_FIELDS);
            const char *name = decode(pool, text + i, nlen, why);
            const char *value = eq != NULL ? decode(pool, eq + 1, (size_t)(text + end - eq - 1), why) : "";
            if (name == NULL || value == NULL)
                return -1;
            form->f[form->n].name = name;
            form->f[form->n].value = value;
            form->n++;
        }
        i = end + 1;
    }
    return 0;
}

const char *oauth_form_get(const oauth_form_t *form, const char *name, int *dup)
{
    const char *found = NULL;
    for (size_t i = 0; i < form->n; i++) {
        if (strcmp(form->f[i].name, name) != 0)
            continue;
        if (found != NULL) {
            if (dup != NULL)
                *dup = 1;
            return NULL;
        }
        found = form->f[i].value;
    }
    return found;
}

const char *oauth_html(h2o_mem_pool_t *pool, const char *s)
{
    size_t n = strlen(s), o = 0;
    char *out = h2o_mem_alloc_pool(pool, n * 6 + 1);
    for (size_t i = 0; i < n; i++) {
        const char *rep = s[i] == '&'    ? "&amp;"
                          : s[i] == '<'  ? "&lt;"
                          : s[i] == '>'  ? "&gt;"
                          : s[i] == '"'  ? "&quot;"
                          : s[i] == '\'' ? "&#39;"
                                         : NULL;
        if (rep != NULL) {
            memcpy(out + o, rep, strlen(rep));
            o += strlen(rep);
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

const char *oauth_urlenc(h2o_mem_pool_t *pool, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s), o = 0;
    char *out = h2o_mem_alloc_pool(pool, n * 3 + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (aly_b62_char(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

void oauth_send_error(h2o_req_t *req, int status, const char *error, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *d = json_string(msg);
    if (d == NULL)
        d = json_string("the request holds text that is not valid UTF-8");
    http_add_header(req, "pragma", "no-cache");
    if (status == 503) /* the store is unavailable (cluster mode): when to come back, as everywhere else */
        http_add_header(req, "retry-after", STORE_RETRY_AFTER_TEXT);
    http_send_json_object(req, status, json_pack("{s:s, s:o}", "error", error, "error_description", d));
}

/* ---- limits ---- */

typedef struct window {
    uint64_t start_ms;
    uint64_t count;
} window_t;

int oauth_limit_over(store_t *st, const char *key, unsigned max, uint64_t window_ms, uint64_t *retry_s)
{
    store_txn_t t;
    store_val_t v;
    window_t w = {0, 0};
    if (store_begin(st, STORE_VOLATILE, &t, NULL) != 0)
        return 0;
    if (store_get(&t, VDB_OAUTH, key, strlen(key), &v, NULL) == 0 && v.len == sizeof(w))
        memcpy(&w, v.data, sizeof(w));
    store_abort(&t);
    uint64_t now = aly_wall_ms();
    if (now - w.start_ms >= window_ms || w.count < max)
        return 0;
    *retry_s = (w.start_ms + window_ms - now + 999) / 1000;
    return 1;
}

/*
 * One write transaction on key's window: adds delta (+1, or -1 down to 0 in
 * the same window) unless max is given and already reached.  1 when refused
 * (*retry_s set); 0 otherwise, also when the store fails (logged: a limiter
 * that cannot count does not lock everyone out).
 */
static int limit_add(store_t *st, const char *key, int delta, unsigned max, uint64_t window_ms, uint64_t *retry_s)
{
    store_txn_t t;
    store_val_t v;
    aly_err_t err;
    window_t w = {0, 0};
    if (store_begin(st, STORE_WRITE | STORE_VOLATILE, &t, &err) != 0) {
        log_warn("oauth limit: %s", err.msg);
        return 0;
    }
    if (store_get(&t, VDB_OAUTH, key, strlen(key), &v, NULL) == 0 && v.len == sizeof(w))
        memcpy(&w, v.data, sizeof(w));
    uint64_t now = aly_wall_ms();
    if (now - w.start_ms >= window_ms)
        w = (window_t){now, 0};
    if (max != 0 && w.count >= max) {
        store_abort(&t);
        *retry_s = (w.start_ms + window_ms - now + 999) / 1000;
        return 1;
    }
    if (delta < 0 && w.count == 0) {
        store_abort(&t);
        return 0;
    }
    w.count += delta > 0 ? 1 : (uint64_t)-1;
    if (store_put(&t, VDB_OAUTH, key, strlen(key), &w, sizeof(w), 0, &err) != 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        log_warn("oauth limit: %s", err.msg);
    }
    return 0;
}

int oauth_limit_take(store_t *st, const char *key, unsigned max, uint64_t window_ms, uint64_t *retry_s)
{
    return limit_add(st, key, 1, max, window_ms, retry_s);
}

void oauth_limit_give_back(store_t *st, const char *key, uint64_t window_ms)
{
    limit_add(st, key, -1, 0, window_ms, NULL);
}

void oauth_peer_key(h2o_req_t *req, char out[OAUTH_PEER_KEY])
{
    struct sockaddr_storage ss;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    ratelimit_addr_t a;
    ratelimit_address(len != 0 ? (struct sockaddr *)&ss : NULL, &a);
    if (a.len < 4) {
        strcpy(out, "-");
        return;
    }
    /* key: "a:", the family ('4' or '6'), then the 4 or 8 address bytes. */
    size_t o = (size_t)snprintf(out, OAUTH_PEER_KEY, "%c:", a.key[2]);
    for (size_t i = 3; i < a.len && o + 2 < OAUTH_PEER_KEY; i++, o += 2)
        snprintf(out + o, OAUTH_PEER_KEY - o, "%02x", a.key[i]);
}

/* ---- bodies and client authentication ---- */

int oauth_content_type_is(h2o_req_t *req, const char *want)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    size_t n = strlen(want);
    return v.len >= n && strncasecmp(v.base, want, n) == 0 && (v.len == n || v.base[n] == ';' || v.base[n] == ' ');
}

int oauth_body_form(h2o_req_t *req, oauth_form_t *form, int html)
{
    aly_err_t why;
    if (!oauth_content_type_is(req, "application/x-www-form-urlencoded")) {
        if (html)
            http_send_error(req, 415, "invalid_request", "send the form as application/x-www-form-urlencoded");
        else
            oauth_send_error(req, 400, "invalid_request", "the body must be application/x-www-form-urlencoded");
        return -1;
    }
    if (req->entity.len > OAUTH_FORM_MAX_BYTES) {
        oauth_send_error(req, 413, "invalid_request", "the form is larger than %d bytes", OAUTH_FORM_MAX_BYTES);
        return -1;
    }
    if (oauth_form_parse(&req->pool, req->entity.base != NULL ? req->entity.base : "", req->entity.len, form, &why) != 0) {
        oauth_send_error(req, 400, "invalid_request", "malformed form: %s", why.msg);
        return -1;
    }
    return 0;
}

/* Splits a client_secret_basic header into the form-decoded id and secret (RFC 6749 §2.3.1). */
static int basic_credentials(h2o_req_t *req, const char **id, const char **secret)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 7 || strncasecmp(v.base, "Basic ", 6) != 0)
        return -1;
    size_t off = 6;
    while (off < v.len && v.base[off] == ' ')
        off++;
    /* Standard base64 with padding: mapped onto the base64url alphabet h2o decodes. */
    char *b = h2o_mem_alloc_pool(&req->pool, v.len - off + 1);
    size_t bl = 0;
    for (size_t k = off; k < v.len && v.base[k] != '='; k++)
        b[bl++] = v.base[k] == '+' ? '-' : v.base[k] == '/' ? '_' : v.base[k];
    h2o_iovec_t dec = h2o_decode_base64url(&req->pool, b, bl);
    if (dec.base == NULL)
        return -1;
    const char *colon = memchr(dec.base, ':', dec.len);
    aly_err_t why;
    if (colon == NULL)
        return -1;
    *id = decode(&req->pool, dec.base, (size_t)(colon - dec.base), &why);
    *secret = decode(&req->pool, colon + 1, dec.len - (size_t)(colon - dec.base) - 1, &why);
    return *id != NULL && *secret != NULL ? 1 : -1;
}

static int invalid_client(h2o_req_t *req, int basic, const char *msg)
{
    if (basic)
        http_add_header(req, "www-authenticate", "Basic realm=\"aly\"");
    oauth_send_error(req, 401, "invalid_client", "%s", msg);
    return -1;
}

int oauth_client_request(oauth_server_t *s, h2o_req_t *req, oauth_form_t *form, const char **id)
{
    if (oauth_server_off(s, req) || oauth_body_form(req, form, 0) != 0 || oauth_client_authenticate(s, req, form, id) != 0)
        return -1;
    return 0;
}

int oauth_client_authenticate(oauth_server_t *s, h2o_req_t *req, const oauth_form_t *form, const char **id)
{
    const char *bid = NULL, *bsecret = NULL;
    int dup = 0, basic = basic_credentials(req, &bid, &bsecret);
    const char *fid = oauth_form_get(form, "client_id", &dup), *fsecret = oauth_form_get(form, "client_secret", &dup);
    if (basic < 0)
        return invalid_client(req, 1, "the Authorization header is not valid client_secret_basic");
    if (dup)
        return oauth_send_error(req, 400, "invalid_request", "client_id or client_secret appears twice"), -1;
    if (basic && fsecret != NULL)
        return oauth_send_error(req, 400, "invalid_request", "use one client authentication method, not two"), -1;
    if (basic && fid != NULL && strcmp(fid, bid) != 0)
        return invalid_client(req, 1, "client_id in the form differs from the one in the Authorization header");
    const char *cid = basic ? bid : fid, *secret = basic ? bsecret : fsecret;
    if (cid == NULL || cid[0] == '\0')
        return invalid_client(req, 0, "client_id is missing");
    if (strncmp(cid, "https://", 8) == 0) {
        /* A client-ID metadata document names a public client: there is nothing to check a secret against. */
        if (secret != NULL)
            return invalid_client(req, basic, "a client identified by a metadata document has no secret");
        *id = cid;
        return 0;
    }
    store_txn_t t;
    aly_err_t err;
    oauth_client_t c;
    if (store_begin(s->store, 0, &t, &err) != 0) {
        log_error("oauth client: %s", err.msg);
        return oauth_send_error(req, 503, "temporarily_unavailable", "the client store cannot be read now; retry"), -1;
    }
    int rc = oauth_client_get(&t, cid, &c, &err);
    store_abort(&t);
    if (rc < 0) {
        log_error("oauth client: %s", err.msg);
        return oauth_send_error(req, 503, "temporarily_unavailable", "the client store cannot be read now; retry"), -1;
    }
    if (rc == 1)
        return invalid_client(req, basic, "unknown client_id");
    if (c.kind == OAUTH_CLIENT_CONFIDENTIAL) {
        unsigned char h[32];
        if (secret == NULL)
            return invalid_client(req, basic, "this client is confidential: authenticate with its client_secret");
        if (oauth_mac(s->pepper, "client-secret", secret, strlen(secret), h, &err) != 0 ||
            CRYPTO_memcmp(h, c.secret_hash, sizeof(h)) != 0)
            return invalid_client(req, basic, "client authentication failed (wrong client_secret)");
    } else if (secret != NULL && secret[0] != '\0') {
        return invalid_client(req, basic, "this client is public and has no secret");
    }
    *id = h2o_strdup(&req->pool, cid, SIZE_MAX).base;
    return 0;
}

/* ---- the server ---- */

int oauth_server_init(oauth_server_t *s, const aly_config_t *cfg, store_t *st, h2o_loop_t *loop, aly_err_t *err)
{
    memset(s, 0, sizeof(*s));
    s->cfg = cfg;
    if (!cfg->oauth_server)
        return 0;
    s->store = st;
    s->loop = loop;
    snprintf(s->resource, sizeof(s->resource), "%s/api/mcp", cfg->public_url);
    if ((s->pepper = auth_pepper_load(cfg->key_pepper_file, err)) == NULL)
        return -1;
    s->signer = oauth_signer_new(st, s->pepper);
    return 0;
}

void oauth_server_free(oauth_server_t *s)
{
    oauth_signer_free(s->signer);
    auth_pepper_free(s->pepper);
    s->signer = NULL;
    s->pepper = NULL;
}

int oauth_server_off(oauth_server_t *s, h2o_req_t *req)
{
    if (!s->cfg->oauth_server) {
        http_send_error(req, 404, "not_found", "the built-in authorization server is off (oauth_server off)");
        return 1;
    }
    /* A page reached through a name an attacker controls (DNS rebinding) must not see a sign-in or a consent. */
    if (!http_host_allowed(s->cfg, req)) {
        http_send_error(req, 421, "misdirected", "Host not served here (allowed_hosts)");
        return 1;
    }
    return 0;
}

void oauth_serve_metadata(void *data, h2o_req_t *req)
{
    oauth_server_t *s = data;
    if (oauth_server_off(s, req))
        return;
    const char *u = s->cfg->public_url;
    char buf[5][1100];
    const char *paths[] = {"authorize", "token", "register", "revoke", "jwks"};
    for (size_t i = 0; i < 5; i++)
        snprintf(buf[i], sizeof(buf[i]), "%s/oauth/%s", u, paths[i]);
    json_t *scopes = json_array();
    for (size_t i = 0; i < scope_count; i++)
        json_array_append_new(scopes, json_string(scope_catalogue[i].name));
    json_array_append_new(scopes, json_string("offline_access"));
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:[s], s:[s], s:[ss], s:[s], s:[sss], s:[sss], s:b, s:b}",
                            "issuer", u, "authorization_endpoint", buf[0], "token_endpoint", buf[1], "registration_endpoint",
                            buf[2], "revocation_endpoint", buf[3], "jwks_uri", buf[4], "scopes_supported", scopes,
                            "response_types_supported", "code", "response_modes_supported", "query", "grant_types_supported",
                            "authorization_code", "refresh_token", "code_challenge_methods_supported", "S256",
                            "token_endpoint_auth_methods_supported", "none", "client_secret_post", "client_secret_basic",
                            "revocation_endpoint_auth_methods_supported", "none", "client_secret_post", "client_secret_basic",
                            "client_id_metadata_document_supported", 1, "authorization_response_iss_parameter_supported", 1);
    http_send_json_object(req, 200, doc);
}

void oauth_serve_jwks(void *data, h2o_req_t *req)
{
    oauth_server_t *s = data;
    if (oauth_server_off(s, req))
        return;
    void *doc;
    aly_err_t err;
    if (oauth_key_jwks(s->store, &doc, &err) != 0) {
        log_error("jwks: %s", err.msg);
        http_add_header(req, "retry-after", STORE_RETRY_AFTER_TEXT);
        http_send_error(req, 503, "unavailable", "the signing keys cannot be read now; retry");
        return;
    }
    http_send_json_object(req, 200, doc);
}

/* ---- RFC 7009 revocation ---- */

/* The grant a jti names, when it belongs to client: the unverified claims only choose which grant to look at. */
static int revoke_access(oauth_server_t *s, const char *jti, const char *client, aly_err_t *err)
{
    char gid[ALY_ID_MAX];
    size_t gl = strcspn(jti, ".");
    if (gl == 0 || gl >= sizeof(gid))
        return 0;
    memcpy(gid, jti, gl);
    gid[gl] = '\0';
    store_txn_t t;
    oauth_grant_t g;
    if (store_begin(s->store, STORE_WRITE | STORE_RESERVE, &t, err) != 0)
        return -1;
    int rc = oauth_grant_get(&t, gid, &g, err);
    if (rc != 0 || strcmp(g.client, client) != 0) {
        store_abort(&t);
        return rc < 0 ? -1 : 0;
    }
    if (oauth_grant_revoke_in(&t, gid, err) < 0 || store_commit(&t, err) != 0) {
        store_abort(&t);
        return -1;
    }
    return 0;
}

/*
 * The claims of an access token this server signed, or NULL: the signature is
 * checked against the signing key its kid names (ES256, as issued), since a
 * revocation acts on the grant the token names and anyone can write a token.
 * Expiry is not checked: revoking an expired token still ends its grant.
 */
static json_t *signed_claims(oauth_server_t *s, const char *jws)
{
    size_t len = strlen(jws);
    const char *dot = memchr(jws, '.', len);
    unsigned char hbuf[512];
    long hn = dot != NULL && len <= AUTH_MAX_TOKEN && dot - jws < 600
                  ? aly_b64url_decode(jws, (size_t)(dot - jws), hbuf, sizeof(hbuf))
                  : -1;
    json_t *header = hn > 0 ? json_loadb((const char *)hbuf, (size_t)hn, 0, NULL) : NULL;
    const char *kid = json_string_value(json_object_get(header, "kid"));
    char *pem = NULL;
    size_t pem_len = 0;
    store_txn_t t;
    aly_err_t err;
    if (kid != NULL && strlen(kid) < ALY_ID_MAX && store_begin(s->store, 0, &t, &err) == 0) {
        if (oauth_key_public_pem(&t, kid, &pem, &pem_len, &err) != 0)
            pem = NULL;
        store_abort(&t);
    }
    json_decref(header);
    jwt_t *jwt = NULL;
    json_t *claims = NULL;
    if (pem != NULL && jwt_decode(&jwt, jws, (const unsigned char *)pem, (int)pem_len) == 0 && jwt != NULL &&
        jwt_get_alg(jwt) == JWT_ALG_ES256) {
        char *grants = jwt_get_grants_json(jwt, NULL);
        claims = grants != NULL ? json_loads(grants, JSON_REJECT_DUPLICATES, NULL) : NULL;
        free(grants);
    }
    jwt_free(jwt);
    free(pem);
    return claims;
}

void oauth_serve_revoke(void *data, h2o_req_t *req)
{
    oauth_server_t *s = data;
    oauth_form_t form;
    const char *client;
    if (oauth_client_request(s, req, &form, &client) != 0)
        return;
    int dup = 0;
    const char *token = oauth_form_get(&form, "token", &dup);
    if (token == NULL) {
        oauth_send_error(req, 400, "invalid_request", dup ? "token appears twice" : "token is missing");
        return;
    }
    aly_err_t err;
    if (strncmp(token, OAUTH_REFRESH_PREFIX, sizeof(OAUTH_REFRESH_PREFIX) - 1) == 0) {
        if (oauth_refresh_revoke(s->store, s->pepper, token, client, &err) != 0) {
            log_error("revoke: %s", err.msg);
            oauth_send_error(req, 503, "temporarily_unavailable", "the revocation cannot be stored now; retry");
            return;
        }
    } else if (strncmp(token, AUTH_OAUTH_PREFIX, sizeof(AUTH_OAUTH_PREFIX) - 1) == 0) {
        /* An access token of ours: its grant goes (RFC 7009 allows it), which also ends its refresh tokens. */
        json_t *claims = signed_claims(s, token + sizeof(AUTH_OAUTH_PREFIX) - 1);
        const char *jti = json_string_value(json_object_get(claims, "jti")),
                   *cid = json_string_value(json_object_get(claims, "client_id"));
        if (jti != NULL && cid != NULL && strcmp(cid, client) == 0 && revoke_access(s, jti, client, &err) != 0)
            log_error("revoke: %s", err.msg);
        json_decref(claims);
    }
    http_add_header(req, "pragma", "no-cache");
    http_send_json(req, 200, "{}", 2);
}

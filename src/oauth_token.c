/*
 * /oauth/token: the authorization_code grant (PKCE S256, single-use codes)
 * and the refresh_token grant (rotation, family revocation on reuse), each
 * answered with an "aly_oauth_" ES256 access token of one hour.  Errors are
 * RFC 6749 §5.2 JSON; every answer carries Cache-Control: no-store.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/http.h"
#include "aly/log.h"
#include "aly/oauth_internal.h"
#include "aly/scope.h"

/* The scope text of a grant's set: the catalogue's names, then offline_access. */
static void scope_text(uint64_t set, int with_offline, char *buf, size_t len)
{
    scope_format((scope_set_t)set, buf, len);
    if (with_offline && (set & OAUTH_SCOPE_OFFLINE)) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "%soffline_access", n ? " " : "");
    }
}

/* Parses a space-separated scope list: catalogue scopes and offline_access; -1 on anything else. */
static int parse_scopes(const char *text, uint64_t *out)
{
    *out = 0;
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, " ");
        if (n == 14 && memcmp(p, "offline_access", 14) == 0)
            *out |= OAUTH_SCOPE_OFFLINE;
        else if (n > 0) {
            scope_set_t b = scope_lookup(p, n);
            if (b == 0)
                return -1;
            *out |= b;
        }
        p += n;
        while (*p == ' ')
            p++;
    }
    return 0;
}

static void send_tokens(oauth_server_t *s, h2o_req_t *req, const oauth_grant_t *g, uint64_t scopes, const char *refresh)
{
    char jti[ALY_ID_MAX + 24], scope[512], claim_scope[512];
    aly_err_t err;
    int n = snprintf(jti, sizeof(jti), "%s.", g->id);
    if (aly_random_b62(jti + n, 16) != 0) {
        oauth_send_error(req, 500, "server_error", "no randomness for a token id");
        return;
    }
    scope_text(scopes, 1, scope, sizeof(scope));
    scope_text(scopes, 0, claim_scope, sizeof(claim_scope));
    json_int_t now = (json_int_t)(aly_wall_ms() / 1000);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "iss", s->cfg->public_url, "aud", s->resource,
                               "sub", g->user, "ws", g->workspace, "scope", claim_scope, "client_id", g->client, "jti", jti, "iat",
                               now, "exp", now + OAUTH_ACCESS_TTL_S);
    char *jwt = NULL;
    if (claims == NULL || oauth_signer_sign(s->signer, claims, &jwt, &err) != 0) {
        json_decref(claims);
        log_error("token: %s", claims != NULL ? err.msg : "cannot build the claims");
        oauth_send_error(req, 500, "server_error", "the access token cannot be signed now");
        return;
    }
    json_decref(claims);
    size_t tl = sizeof(AUTH_OAUTH_PREFIX) - 1 + strlen(jwt) + 1;
    char *token = h2o_mem_alloc_pool(&req->pool, tl);
    snprintf(token, tl, "%s%s", AUTH_OAUTH_PREFIX, jwt);
    free(jwt);
    json_t *out = json_pack("{s:s, s:s, s:i, s:s}", "access_token", token, "token_type", "Bearer", "expires_in", OAUTH_ACCESS_TTL_S,
                            "scope", scope);
    if (refresh != NULL && refresh[0] != '\0')
        json_object_set_new(out, "refresh_token", json_string(refresh));
    http_add_header(req, "pragma", "no-cache");
    http_send_json_object(req, 200, out);
    OPENSSL_cleanse(token, tl);
}

/* The form's single value of name, or NULL after sending invalid_request when it is missing (and required) or repeated. */
static const char *param(h2o_req_t *req, const oauth_form_t *form, const char *name, int required, int *failed)
{
    int dup = 0;
    const char *v = oauth_form_get(form, name, &dup);
    if (*failed)
        return NULL;
    if (dup || (required && (v == NULL || v[0] == '\0'))) {
        oauth_send_error(req, 400, "invalid_request", dup ? "%s appears more than once" : "%s is missing", name);
        *failed = 1;
        return NULL;
    }
    return v;
}

void oauth_serve_token(void *data, h2o_req_t *req)
{
    oauth_server_t *s = data;
    oauth_form_t form;
    const char *client;
    if (oauth_client_request(s, req, &form, &client) != 0)
        return;
    int failed = 0;
    const char *type = param(req, &form, "grant_type", 1, &failed);
    const char *resource = param(req, &form, "resource", 0, &failed);
    if (failed)
        return;
    if (resource != NULL && strcmp(resource, s->resource) != 0) {
        oauth_send_error(req, 400, "invalid_target", "this server issues tokens for %s only", s->resource);
        return;
    }
    oauth_grant_t g;
    char refresh[96] = "";
    aly_err_t why;
    int rc;
    const char *want = NULL; /* refresh_token: the narrower scope asked for, if any */
    uint64_t asked = 0;
    if (strcmp(type, "authorization_code") == 0) {
        /* redirect_uri is required only when the authorization request carried it: the code knows (RFC 6749 4.1.3). */
        const char *code = param(req, &form, "code", 1, &failed), *redirect = param(req, &form, "redirect_uri", 0, &failed),
                   *verifier = param(req, &form, "code_verifier", 1, &failed);
        if (failed)
            return;
        if (redirect != NULL && redirect[0] == '\0') /* a parameter without a value is one omitted (RFC 6749 3.1) */
            redirect = NULL;
        rc = oauth_code_redeem(s->store, s->pepper, code, client, redirect, verifier, &g, refresh, sizeof(refresh), &why);
    } else if (strcmp(type, "refresh_token") == 0) {
        const char *rt = param(req, &form, "refresh_token", 1, &failed);
        want = param(req, &form, "scope", 0, &failed);
        if (failed)
            return;
        if (want != NULL && parse_scopes(want, &asked) != 0) {
            oauth_send_error(req, 400, "invalid_scope", "scope names a scope this server does not know");
            return;
        }
        rc = oauth_refresh_rotate(s->store, s->pepper, rt, client, asked, &g, refresh, sizeof(refresh), &why);
    } else {
        oauth_send_error(req, 400, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token");
        return;
    }
    if (rc == 1 || rc == 2 || rc == 3) {
        oauth_send_error(req, 400, rc == 1 ? "invalid_grant" : rc == 2 ? "invalid_scope" : "invalid_request", "%s", why.msg);
        return;
    }
    if (rc != 0) {
        log_error("token: %s", why.msg);
        oauth_send_error(req, 503, "temporarily_unavailable", "the token cannot be issued now; retry");
        return;
    }
    /* g is the grant only now that the exchange succeeded. */
    uint64_t scopes = want != NULL ? asked | (g.scopes & OAUTH_SCOPE_OFFLINE) : g.scopes;
    send_tokens(s, req, &g, scopes, refresh);
    OPENSSL_cleanse(refresh, sizeof(refresh));
}

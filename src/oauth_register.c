/*
 * /oauth/register: dynamic client registration (RFC 7591), deprecated by MCP
 * 2026-07-28 but what 2025-era clients still do.  Public (none) and
 * confidential (client_secret_post, client_secret_basic) clients, native or
 * web, with redirect URIs that are https or loopback http only; limited per
 * address and in number; a client unused for OAUTH_DCR_IDLE_MS is gone.  The
 * answer describes the stored client, never the request.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "aly/http.h"
#include "aly/log.h"
#include "aly/oauth_internal.h"

#define REGISTER_MAX 30 /* registrations per address per hour */
#define REGISTER_WINDOW_MS (3600 * 1000)

static int str_member_in(json_t *v, const char *const *allowed, size_t n)
{
    if (!json_is_string(v))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(json_string_value(v), allowed[i]) == 0)
            return 1;
    return 0;
}

static int array_within(json_t *a, const char *const *allowed, size_t n)
{
    size_t i;
    json_t *v;
    if (a == NULL)
        return 1;
    if (!json_is_array(a))
        return 0;
    json_array_foreach(a, i, v)
        if (!str_member_in(v, allowed, n))
            return 0;
    return 1;
}

static void too_many(h2o_req_t *req, uint64_t retry)
{
    char ra[24];
    snprintf(ra, sizeof(ra), "%llu", (unsigned long long)retry);
    http_add_header(req, "retry-after", ra);
    oauth_send_error(req, 429, "slow_down", "too many registrations from this address; retry in %llu s", (unsigned long long)retry);
}

void oauth_serve_register(void *data, h2o_req_t *req)
{
    oauth_server_t *s = data;
    if (oauth_server_off(s, req))
        return;
    char peer[OAUTH_PEER_KEY], key[80];
    uint64_t retry;
    oauth_peer_key(req, peer);
    snprintf(key, sizeof(key), "g:%s", peer);
    if (oauth_limit_over(s->store, key, REGISTER_MAX, REGISTER_WINDOW_MS, &retry)) {
        too_many(req, retry);
        return;
    }
    if (!oauth_content_type_is(req, "application/json")) {
        oauth_send_error(req, 400, "invalid_client_metadata", "send the client metadata as application/json");
        return;
    }
    if (req->entity.len > OAUTH_FORM_MAX_BYTES) {
        oauth_send_error(req, 413, "invalid_client_metadata", "the client metadata is larger than %d bytes", OAUTH_FORM_MAX_BYTES);
        return;
    }
    json_error_t jerr;
    json_t *m = json_loadb(req->entity.base != NULL ? req->entity.base : "", req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    static const char *const methods[] = {"none", "client_secret_post", "client_secret_basic"};
    static const char *const grants[] = {"authorization_code", "refresh_token"};
    static const char *const responses[] = {"code"};
    static const char *const apps[] = {"native", "web"};
    json_t *uris = json_object_get(m, "redirect_uris"), *name = json_object_get(m, "client_name"),
           *method = json_object_get(m, "token_endpoint_auth_method"), *app = json_object_get(m, "application_type");
    oauth_client_t c;
    memset(&c, 0, sizeof(c));
    const char *bad = NULL;
    int bad_uri = 0;
    if (!json_is_object(m))
        bad = "the body is not a JSON object";
    else if (!json_is_array(uris) || json_array_size(uris) == 0 || json_array_size(uris) > OAUTH_MAX_REDIRECTS)
        bad = "redirect_uris must be an array of 1 to 8 URIs";
    else if (name != NULL && (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) >= ALY_NAME_MAX))
        bad = "client_name must be a string of 1 to 127 bytes";
    else if (method != NULL && !str_member_in(method, methods, 3))
        bad = "token_endpoint_auth_method must be none, client_secret_post or client_secret_basic";
    else if (!array_within(json_object_get(m, "grant_types"), grants, 2))
        bad = "grant_types may hold authorization_code and refresh_token only";
    else if (!array_within(json_object_get(m, "response_types"), responses, 1))
        bad = "response_types may hold code only";
    else if (app != NULL && !str_member_in(app, apps, 2))
        bad = "application_type must be native or web";
    for (size_t i = 0; bad == NULL && i < json_array_size(uris); i++) {
        const char *u = json_string_value(json_array_get(uris, i));
        if (u == NULL || !oauth_redirect_ok(u)) {
            bad = "every redirect URI must be https, or http on 127.0.0.1, [::1] or localhost, without a fragment";
            bad_uri = 1;
        } else
            snprintf(c.redirects[c.n_redirects++].uri, OAUTH_URI_MAX, "%s", u);
    }
    if (bad != NULL) {
        json_decref(m);
        oauth_send_error(req, 400, bad_uri ? "invalid_redirect_uri" : "invalid_client_metadata", "%s", bad);
        return;
    }
    /* The check above only spares the parse; this one counts and refuses in one write, so parallel requests cannot pass it together. */
    if (oauth_limit_take(s->store, key, REGISTER_MAX, REGISTER_WINDOW_MS, &retry)) {
        json_decref(m);
        too_many(req, retry);
        return;
    }
    const char *mname = method != NULL ? json_string_value(method) : "none"; /* lives as long as m */
    c.auth_method = strcmp(mname, "client_secret_post") == 0 ? 1 : strcmp(mname, "client_secret_basic") == 0 ? 2 : 0;
    c.kind = c.auth_method != 0 ? OAUTH_CLIENT_CONFIDENTIAL : OAUTH_CLIENT_PUBLIC;
    if (name != NULL)
        snprintf(c.name, sizeof(c.name), "%s", json_string_value(name));
    char secret[64] = "";
    aly_err_t err;
    int rc = oauth_client_register(s->store, s->pepper, &c, secret, sizeof(secret), s->cfg->oauth_max_dynamic_clients, &err);
    json_decref(m);
    if (rc != 0) {
        OPENSSL_cleanse(secret, sizeof(secret));
        if (rc == 1) {
            oauth_send_error(req, 400, "invalid_client_metadata",
                             "this server holds as many dynamically registered clients as it keeps (%u, "
                             "oauth_max_dynamic_clients): retry once unused ones expire, or ask its operator to register "
                             "this application (alyctl oauth clients create)",
                             s->cfg->oauth_max_dynamic_clients);
            return;
        }
        log_error("register: %s", err.msg);
        oauth_send_error(req, 503, "temporarily_unavailable", "the client cannot be stored now; retry");
        return;
    }
    /*
     * The answer is the stored client and nothing else (RFC 7591 3.2.1): a
     * field of the request that was not kept (a client_secret or scope of the
     * client's choosing, a registration_access_token) is not echoed as if
     * issued.  Every client may use both grants, whatever it asked.
     */
    json_t *stored = json_array();
    for (size_t i = 0; i < c.n_redirects; i++)
        json_array_append_new(stored, json_string(c.redirects[i].uri));
    json_t *out = json_pack("{s:s, s:I, s:o, s:s, s:[ss], s:[s]}", "client_id", c.id, "client_id_issued_at",
                            (json_int_t)(c.created_ms / 1000), "redirect_uris", stored, "token_endpoint_auth_method",
                            methods[c.auth_method], "grant_types", "authorization_code", "refresh_token", "response_types", "code");
    if (c.name[0] != '\0')
        json_object_set_new(out, "client_name", json_string(c.name));
    if (secret[0] != '\0') {
        json_object_set_new(out, "client_secret", json_string(secret));
        json_object_set_new(out, "client_secret_expires_at", json_integer(0));
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    http_send_json_object(req, 201, out);
}

/*
 * /oauth/authorize: the consent page (GET) and the decision (POST).
 *
 * client_id and redirect_uri are settled first, and a bad one gets an HTML
 * error page, never a redirect: only a redirect URI the client registered
 * (or its metadata document lists) ever receives anything, and a dynamic
 * client's only through a browser signed in here.  The validated
 * request travels to the POST inside the form as a MAC'd blob ("request"),
 * so the decision needs no server-side state and cannot be edited; the CSRF
 * token is a MAC of that blob and a random cookie of this browser, so a form
 * from another request or another browser does not pass.  Sign-in failures
 * are counted per address and per account, and past either limit even the
 * right password is refused until the window ends.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/http.h"
#include "aly/log.h"
#include "aly/oauth_internal.h"
#include "aly/scope.h"

#define REQUEST_TTL_MS (15 * 60000)
#define SESSION_TTL_S (12 * 3600)
#define LOGIN_WINDOW_MS (15 * 60000)
#define LOGIN_MAX_PER_ACCOUNT 5
#define LOGIN_MAX_PER_ADDRESS 20
#define CSRF_COOKIE "__Host-aly_csrf"
#define SESSION_COOKIE "__Host-aly_session"

/* A validated authorization request: what the blob carries from the page to the decision. */
typedef struct authz {
    const char *client, *client_name, *redirect, *state, *challenge;
    uint64_t scopes;
    int redirect_omitted; /* the request named no redirect_uri (the client's only one): the token request need not either */
    int dynamic;          /* the client came from dynamic registration (not sealed: read from the client each time) */
} authz_t;

/* ---- the request blob, cookies ---- */

static const char *mac_b64(oauth_server_t *s, h2o_mem_pool_t *pool, const char *domain, const char *data)
{
    unsigned char mac[32];
    char *out = h2o_mem_alloc_pool(pool, 48);
    aly_err_t err;
    if (oauth_mac(s->pepper, domain, data, strlen(data), mac, &err) != 0)
        return NULL;
    out[aly_b64url_encode(mac, sizeof(mac), out)] = '\0';
    return out;
}

static const char *seal_request(oauth_server_t *s, h2o_req_t *req, const authz_t *a)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:b, s:s?, s:s, s:I, s:I}", "c", a->client, "n", a->client_name, "r", a->redirect, "o",
                          a->redirect_omitted, "s", a->state, "ch", a->challenge, "sc", (json_int_t)a->scopes, "t",
                          (json_int_t)(aly_wall_ms() + REQUEST_TTL_MS));
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL)
        return NULL;
    size_t n = strlen(text);
    char *out = h2o_mem_alloc_pool(&req->pool, n * 4 / 3 + 64);
    size_t el = aly_b64url_encode((const unsigned char *)text, n, out);
    free(text);
    out[el] = '\0';
    const char *mac = mac_b64(s, &req->pool, "authz-request", out);
    if (mac == NULL)
        return NULL;
    snprintf(out + el, n * 4 / 3 + 64 - el, ".%s", mac);
    return out;
}

static int open_request(oauth_server_t *s, h2o_req_t *req, const char *blob, authz_t *a)
{
    const char *dot = strchr(blob, '.');
    if (dot == NULL || strlen(blob) > 8192)
        return -1;
    const char *body = h2o_strdup(&req->pool, blob, (size_t)(dot - blob)).base,
               *mac = mac_b64(s, &req->pool, "authz-request", body);
    if (mac == NULL || strlen(dot + 1) != strlen(mac) || CRYPTO_memcmp(mac, dot + 1, strlen(mac)) != 0)
        return -1;
    unsigned char *buf = h2o_mem_alloc_pool(&req->pool, strlen(body) + 1);
    long n = aly_b64url_decode(body, strlen(body), buf, strlen(body) + 1);
    json_t *j = n > 0 ? json_loadb((const char *)buf, (size_t)n, 0, NULL) : NULL;
    json_int_t t = json_integer_value(json_object_get(j, "t"));
    const char *f[5] = {json_string_value(json_object_get(j, "c")), json_string_value(json_object_get(j, "n")),
                        json_string_value(json_object_get(j, "r")), json_string_value(json_object_get(j, "s")),
                        json_string_value(json_object_get(j, "ch"))};
    int ok = f[0] != NULL && f[1] != NULL && f[2] != NULL && f[4] != NULL && (uint64_t)t > aly_wall_ms();
    if (ok) {
        a->client = h2o_strdup(&req->pool, f[0], SIZE_MAX).base;
        a->client_name = h2o_strdup(&req->pool, f[1], SIZE_MAX).base;
        a->redirect = h2o_strdup(&req->pool, f[2], SIZE_MAX).base;
        a->state = f[3] != NULL ? h2o_strdup(&req->pool, f[3], SIZE_MAX).base : NULL;
        a->challenge = h2o_strdup(&req->pool, f[4], SIZE_MAX).base;
        a->scopes = (uint64_t)json_integer_value(json_object_get(j, "sc"));
        a->redirect_omitted = json_is_true(json_object_get(j, "o"));
        a->dynamic = 0;
    }
    json_decref(j);
    return ok ? 0 : -1;
}

/* The value of cookie name in req (any of its Cookie headers), or NULL. */
static const char *cookie(h2o_req_t *req, const char *name)
{
    size_t nl = strlen(name);
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_COOKIE, i)) != -1;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        for (size_t p = 0; p < v.len;) {
            while (p < v.len && (v.base[p] == ' ' || v.base[p] == ';'))
                p++;
            size_t e = p;
            while (e < v.len && v.base[e] != ';')
                e++;
            if (e - p > nl && memcmp(v.base + p, name, nl) == 0 && v.base[p + nl] == '=')
                return h2o_strdup(&req->pool, v.base + p + nl + 1, e - p - nl - 1).base;
            p = e;
        }
    }
    return NULL;
}

static void set_cookie(h2o_req_t *req, const char *name, const char *value, long max_age)
{
    char buf[1024];
    /* Secure always: browsers keep __Host- cookies only with it, and treat loopback http as a secure context. */
    snprintf(buf, sizeof(buf), "%s=%s; Path=/; Max-Age=%ld; HttpOnly; Secure; SameSite=Lax", name, value, max_age);
    http_add_header(req, "set-cookie", buf);
}

/* The browser's CSRF cookie, set now when it has none (or a malformed one). */
static const char *csrf_cookie(h2o_req_t *req)
{
    const char *c = cookie(req, CSRF_COOKIE);
    int ok = c != NULL && strlen(c) == 32;
    for (size_t i = 0; ok && i < 32; i++)
        ok = aly_b62_char(c[i]);
    if (ok)
        return c;
    char *fresh = h2o_mem_alloc_pool(&req->pool, 33);
    if (aly_random_b62(fresh, 32) != 0)
        return NULL;
    set_cookie(req, CSRF_COOKIE, fresh, 3600);
    return fresh;
}

static const char *csrf_token(oauth_server_t *s, h2o_req_t *req, const char *ck, const char *blob)
{
    size_t n = strlen(ck) + strlen(blob) + 2;
    char *data = h2o_mem_alloc_pool(&req->pool, n);
    snprintf(data, n, "%s|%s", ck, blob);
    return mac_b64(s, &req->pool, "csrf", data);
}

/*
 * The sign-in cookie: b64url(email) "." user id "." expiry "." password
 * generation "." MAC of all that.  The email finds the account; the id must
 * then be that account's, because one removed and added again under the same
 * email is another account whose generation may stand where the old one's did.
 */

/* The user the session cookie names, when its MAC, expiry, account id and password generation hold: 0, else -1. */
static int session_user(oauth_server_t *s, h2o_req_t *req, oauth_user_t *u)
{
    const char *c = cookie(req, SESSION_COOKIE), *last = c != NULL ? strrchr(c, '.') : NULL;
    if (last == NULL)
        return -1;
    const char *body = h2o_strdup(&req->pool, c, (size_t)(last - c)).base, *mac = mac_b64(s, &req->pool, "session", body);
    if (mac == NULL || strlen(last + 1) != strlen(mac) || CRYPTO_memcmp(mac, last + 1, strlen(mac)) != 0)
        return -1;
    char email[OAUTH_EMAIL_MAX + 1];
    unsigned long long exp, gen;
    size_t el = strcspn(body, "."), il = body[el] == '.' ? strcspn(body + el + 1, ".") : 0;
    const char *id = body + el + 1;
    if (il == 0 || il >= ALY_ID_MAX || id[il] != '.' || sscanf(id + il + 1, "%llu.%llu", &exp, &gen) != 2 ||
        exp * 1000 < aly_wall_ms())
        return -1;
    long n = aly_b64url_decode(body, el, (unsigned char *)email, sizeof(email) - 1);
    if (n <= 0)
        return -1;
    email[n] = '\0';
    store_txn_t t;
    aly_err_t err;
    if (store_begin(s->store, 0, &t, &err) != 0)
        return -1;
    int rc = oauth_user_get(&t, email, u, &err);
    store_abort(&t);
    return rc == 0 && u->generation == gen && strlen(u->id) == il && CRYPTO_memcmp(u->id, id, il) == 0 ? 0 : -1;
}

static void start_session(oauth_server_t *s, h2o_req_t *req, const oauth_user_t *u)
{
    char email[400], body[600];
    email[aly_b64url_encode((const unsigned char *)u->email, strlen(u->email), email)] = '\0';
    snprintf(body, sizeof(body), "%s.%s.%llu.%llu", email, u->id, (unsigned long long)(aly_wall_ms() / 1000 + SESSION_TTL_S),
             (unsigned long long)u->generation);
    const char *mac = mac_b64(s, &req->pool, "session", body);
    if (mac == NULL)
        return;
    size_t n = strlen(body) + strlen(mac) + 2;
    char *v = h2o_mem_alloc_pool(&req->pool, n);
    snprintf(v, n, "%s.%s", body, mac);
    set_cookie(req, SESSION_COOKIE, v, SESSION_TTL_S);
}

/* ---- errors once the redirect URI is settled ---- */

/* A denial that is not sent back to the client: said here instead. */
static void denied_page(h2o_req_t *req, const authz_t *a)
{
    oauth_page_t p = {0};
    oauth_page_begin(&p, "Access denied");
    oauth_page_add(&p, "<h1>Access denied</h1>\n<p>%s was given no access to Aly. You can close this page.</p></body></html>\n",
                   oauth_html(&req->pool, a->client_name));
    oauth_page_send(req, 200, NULL, &p);
}

/*
 * An error of a request whose client and redirect URI are settled goes back
 * to that URI (RFC 6749 4.1.2.1), with state and iss.  But anyone may
 * register a dynamic client with a redirect URI of their choosing, and a link
 * to /oauth/authorize that fails at once would then make this server redirect
 * whoever follows it there, under its own name (RFC 9700 4.11.2).  So for a
 * dynamic client an error goes back only to a browser signed in here, and is
 * shown on a page of this server otherwise.  Clients created with alyctl (the
 * operator's) and metadata documents of oauth_cimd_allow hosts are trusted
 * with their redirect URIs.
 */
static void send_error_back(oauth_server_t *s, h2o_req_t *req, const authz_t *a, const char *error, const char *desc)
{
    char params[400];
    snprintf(params, sizeof(params), "error=%s&error_description=%s", error, oauth_urlenc(&req->pool, desc));
    oauth_redirect_back(s, req, a->redirect, params, a->state);
}

static void redirect_error(oauth_server_t *s, h2o_req_t *req, const authz_t *a, const char *error, const char *desc)
{
    oauth_user_t u;
    if (a->dynamic) {
        int signed_in = session_user(s, req, &u) == 0;
        OPENSSL_cleanse(&u, sizeof(u));
        if (!signed_in && strcmp(error, "access_denied") == 0)
            return denied_page(req, a);
        if (!signed_in)
            return oauth_error_page(req, 400, "%s (%s)", desc, error);
    }
    send_error_back(s, req, a, error, desc);
}

/* ---- the consent page ---- */

/* user: the signed-in user (NULL: ask for email and password); chosen: the scopes to show ticked. */
static void consent_page(oauth_server_t *s, h2o_req_t *req, int status, const authz_t *a, const char *blob,
                         const oauth_user_t *user, uint64_t ticked, const char *error)
{
    const char *ck = csrf_cookie(req), *csrf = ck != NULL ? csrf_token(s, req, ck, blob) : NULL;
    if (csrf == NULL) {
        oauth_error_page(req, 500, "the page cannot be made now; try again");
        return;
    }
    h2o_mem_pool_t *pl = &req->pool;
    oauth_page_t p = {0};
    oauth_page_begin(&p, "Authorize access to Aly");
    oauth_page_add(&p, "<h1>Connect %s to Aly</h1>\n", oauth_html(pl, a->client_name));
    oauth_page_add(&p,
                   "<p><strong>%s</strong> asks for access to an Aly workspace. After you decide, you will be sent to "
                   "<strong>%s</strong>.</p>\n",
                   oauth_html(pl, a->client_name), oauth_html(pl, oauth_redirect_host(pl, a->redirect)));
    if (error != NULL)
        oauth_page_add(&p, "<p class=\"err\">%s</p>\n", oauth_html(pl, error));
    oauth_page_add(&p,
                   "<form method=\"post\" action=\"/oauth/authorize\">\n<input type=\"hidden\" name=\"request\" value=\"%s\">\n"
                   "<input type=\"hidden\" name=\"csrf\" value=\"%s\">\n",
                   oauth_html(pl, blob), csrf);
    /* Not "required": Deny must submit without signing in. */
    if (user == NULL) {
        oauth_page_add(&p,
                       "<label>Email <input type=\"email\" name=\"email\" autocomplete=\"username\"></label>\n"
                       "<label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label>\n");
    } else {
        oauth_page_add(&p, "<p>Signed in as %s.</p>\n", oauth_html(pl, user->email));
        oauth_page_workspaces(s, &p, pl, user);
    }
    oauth_page_add(&p, "<fieldset><legend>Allow it to</legend>\n");
    for (size_t i = 0; i <= scope_count; i++) {
        uint64_t bit = i < scope_count ? scope_lookup(scope_catalogue[i].name, strlen(scope_catalogue[i].name))
                                       : OAUTH_SCOPE_OFFLINE;
        if (!(a->scopes & bit))
            continue;
        const char *name = i < scope_count ? scope_catalogue[i].name : "offline_access";
        const char *what = i < scope_count ? scope_catalogue[i].grants : "stay connected (refresh tokens)";
        oauth_page_add(&p, "<label><input type=\"checkbox\" name=\"scope\" value=\"%s\"%s> %s <small>(%s)</small></label>\n", name,
                       (ticked & bit) ? " checked" : "", name, oauth_html(pl, what));
    }
    oauth_page_add(&p, "</fieldset>\n<p><button type=\"submit\" name=\"action\" value=\"approve\">Allow</button>\n"
                       "<button type=\"submit\" name=\"action\" value=\"deny\">Deny</button></p>\n</form>\n</body></html>\n");
    oauth_page_send(req, status, a->redirect, &p);
}

/* ---- GET ---- */

typedef struct pending {
    oauth_server_t *s;
    h2o_req_t *req; /* NULL once the request is gone */
    oauth_form_t q;
} pending_t;

static void continue_get(oauth_server_t *s, h2o_req_t *req, const oauth_form_t *q, const oauth_client_t *c)
{
    int dup = 0;
    const char *redirect = oauth_form_get(q, "redirect_uri", &dup);
    int omitted = redirect == NULL;
    if (dup)
        return oauth_error_page(req, 400, "redirect_uri appears more than once");
    if (redirect == NULL) {
        if (c->n_redirects != 1)
            return oauth_error_page(req, 400, "redirect_uri is missing, and this client registered several");
        redirect = c->redirects[0].uri;
    } else if (!oauth_client_has_redirect(c, redirect)) {
        return oauth_error_page(req, 400, "redirect_uri \"%.300s\" is not one this client registered (they must match exactly)",
                                redirect);
    }
    authz_t a = {.client = c->id,
                 .client_name = c->name[0] ? c->name : c->id,
                 .redirect = redirect,
                 .redirect_omitted = omitted,
                 .dynamic = c->origin == OAUTH_ORIGIN_DCR};
    a.state = oauth_form_get(q, "state", &dup);
    if (dup)
        return redirect_error(s, req, &a, "invalid_request", "state appears more than once");
    const char *rt = oauth_form_get(q, "response_type", &dup), *ch = oauth_form_get(q, "code_challenge", &dup),
               *m = oauth_form_get(q, "code_challenge_method", &dup), *res = oauth_form_get(q, "resource", &dup),
               *scope = oauth_form_get(q, "scope", &dup);
    if (dup)
        return redirect_error(s, req, &a, "invalid_request", "a parameter appears more than once");
    if (a.state != NULL && strlen(a.state) > 1024)
        return redirect_error(s, req, &a, "invalid_request", "state is longer than 1024 bytes");
    if (rt == NULL || strcmp(rt, "code") != 0)
        return redirect_error(s, req, &a, "unsupported_response_type", "response_type must be code");
    if (ch == NULL)
        return redirect_error(s, req, &a, "invalid_request",
                              "PKCE is required: send code_challenge with code_challenge_method=S256");
    if (m == NULL || strcmp(m, "S256") != 0)
        return redirect_error(s, req, &a, "invalid_request", "code_challenge_method must be S256");
    unsigned char d[40];
    if (strlen(ch) != 43 || aly_b64url_decode(ch, 43, d, sizeof(d)) != 32)
        return redirect_error(s, req, &a, "invalid_request",
                              "code_challenge must be base64url of a SHA-256 digest (43 characters)");
    if (res != NULL && strcmp(res, s->resource) != 0)
        return redirect_error(s, req, &a, "invalid_target", "resource must be this server's MCP endpoint");
    a.challenge = ch;
    a.scopes = 0;
    for (const char *p = scope != NULL ? scope : ""; *p;) {
        size_t n = strcspn(p, " ");
        uint64_t b = n == 14 && memcmp(p, "offline_access", 14) == 0 ? OAUTH_SCOPE_OFFLINE : scope_lookup(p, n);
        if (n > 0 && b == 0)
            return redirect_error(s, req, &a, "invalid_scope", "scope names a scope this server does not know");
        a.scopes |= b;
        p += n;
        while (*p == ' ')
            p++;
    }
    if ((a.scopes & ~OAUTH_SCOPE_OFFLINE) == 0)
        a.scopes |= ((uint64_t)1 << scope_count) - 1; /* no scope asked: offer the catalogue, the user unticks */
    const char *blob = seal_request(s, req, &a);
    if (blob == NULL)
        return oauth_error_page(req, 500, "the page cannot be made now; try again");
    oauth_user_t u;
    int signed_in = session_user(s, req, &u) == 0;
    consent_page(s, req, 200, &a, blob, signed_in ? &u : NULL, a.scopes, NULL);
}

/* The client a metadata document describes, when it describes itself at url (client_id exact). */
static int cimd_client(const char *url, const char *doc, size_t len, oauth_client_t *c, const char **why)
{
    json_t *j = json_loadb(doc, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *uris = json_object_get(j, "redirect_uris");
    const char *id = json_string_value(json_object_get(j, "client_id")),
               *name = json_string_value(json_object_get(j, "client_name"));
    memset(c, 0, sizeof(*c));
    *why = !json_is_object(j)                                ? "the client metadata document is not a JSON object"
           : id == NULL || strcmp(id, url) != 0              ? "the client metadata document's client_id is not its own URL"
           : !json_is_array(uris)                            ? "the client metadata document lists no redirect_uris"
           : name != NULL && strlen(name) >= sizeof(c->name) ? "the client metadata document's client_name is too long"
                                                             : NULL;
    for (size_t i = 0; *why == NULL && i < json_array_size(uris) && c->n_redirects < OAUTH_MAX_REDIRECTS; i++) {
        const char *u = json_string_value(json_array_get(uris, i));
        if (u != NULL && oauth_redirect_ok(u))
            snprintf(c->redirects[c->n_redirects++].uri, OAUTH_URI_MAX, "%s", u);
    }
    if (*why == NULL) {
        snprintf(c->id, sizeof(c->id), "%s", url);
        snprintf(c->name, sizeof(c->name), "%s", name != NULL ? name : url);
        c->origin = OAUTH_ORIGIN_CIMD;
    }
    json_decref(j);
    return *why == NULL ? 0 : -1;
}

static void on_cimd(void *ctx, const char *doc, size_t len, const char *err)
{
    pending_t *p = ctx;
    if (p->req != NULL) {
        const char *url = oauth_form_get(&p->q, "client_id", NULL), *why = err;
        oauth_client_t c;
        if (doc != NULL && cimd_client(url, doc, len, &c, &why) == 0)
            continue_get(p->s, p->req, &p->q, &c);
        else
            oauth_error_page(p->req, 400, "the client's metadata document at %.300s cannot be used: %s", url,
                             why != NULL ? why : "it could not be fetched");
    }
    h2o_mem_release_shared(p);
}

/* The request's pool holds this; when the request goes first, the fetch finds p->req NULL. */
static void on_request_gone(void *obj)
{
    pending_t *p = *(pending_t **)obj;
    p->req = NULL;
    h2o_mem_release_shared(p);
}

static void serve_get(oauth_server_t *s, h2o_req_t *req)
{
    oauth_form_t q;
    aly_err_t why;
    const char *qs = req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "";
    size_t ql = req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0;
    if (oauth_form_parse(&req->pool, qs, ql, &q, &why) != 0)
        return oauth_error_page(req, 400, "the authorization request is malformed: %s", why.msg);
    int dup = 0;
    const char *id = oauth_form_get(&q, "client_id", &dup);
    if (id == NULL)
        return oauth_error_page(req, 400, dup ? "client_id appears more than once" : "client_id is missing");
    if (strncmp(id, "https://", 8) == 0) {
        pending_t *p = h2o_mem_alloc_shared(NULL, sizeof(*p), NULL);
        *p = (pending_t){s, req, q};
        pending_t **guard = h2o_mem_alloc_shared(&req->pool, sizeof(*guard), on_request_gone);
        *guard = p;
        h2o_mem_addref_shared(p);
        if (oauth_cimd_fetch(s->loop, s->cfg, id, on_cimd, p) != 0) {
            h2o_mem_release_shared(p);
            if (p->req != NULL)
                oauth_error_page(req, 400, "client_id %.300s is a metadata document this server will not fetch (oauth_cimd_allow)",
                                 id);
        }
        return;
    }
    store_txn_t t;
    oauth_client_t c;
    aly_err_t err;
    int rc = -1;
    if (store_begin(s->store, 0, &t, &err) == 0) {
        rc = oauth_client_get(&t, id, &c, &err);
        store_abort(&t);
    }
    if (rc < 0) {
        log_error("authorize: %s", err.msg);
        return oauth_error_page(req, 503, "the client store cannot be read now; try again");
    }
    if (rc == 1)
        return oauth_error_page(req, 400, "unknown client_id \"%.300s\": the application is not registered here", id);
    continue_get(s, req, &q, &c);
}

/* ---- POST ---- */

/* A sign-in waiting for its password check: what the decision needs afterwards (pointers into the request's pool). */
typedef struct signing {
    oauth_server_t *s;
    h2o_req_t *req; /* NULL once the request is gone */
    oauth_form_t f;
    authz_t a;
    const char *blob;
    uint64_t ticked;
    oauth_user_t u;
    int known;
    char ka[96], ku[300]; /* the failure counters' keys: per address, per account */
} signing_t;

static void decide(oauth_server_t *s, h2o_req_t *req, const oauth_form_t *f, const authz_t *a, const char *blob, uint64_t ticked,
                   const oauth_user_t *u);

static void on_verdict(void *ctx, int ok)
{
    signing_t *g = ctx;
    if (ok && g->known) {
        /* Not a failure: the units sign_in took go back.  A failure's stay taken. */
        oauth_limit_give_back(g->s->store, g->ka, LOGIN_WINDOW_MS);
        oauth_limit_give_back(g->s->store, g->ku, LOGIN_WINDOW_MS);
    }
    if (g->req != NULL) {
        if (!ok || !g->known) {
            consent_page(g->s, g->req, 401, &g->a, g->blob, NULL, g->ticked, "wrong email or password");
        } else {
            start_session(g->s, g->req, &g->u);
            decide(g->s, g->req, &g->f, &g->a, g->blob, g->ticked, &g->u);
        }
    }
    OPENSSL_cleanse(&g->u, sizeof(g->u));
    h2o_mem_release_shared(g);
}

/* The request's pool holds this; when the request goes first, the verdict finds g->req NULL. */
static void on_signing_gone(void *obj)
{
    signing_t *g = *(signing_t **)obj;
    g->req = NULL;
    h2o_mem_release_shared(g);
}

/*
 * Signs in with the form's email and password, then goes on to the decision:
 * the limits and the account are read here, the Argon2id check runs on the
 * verifier thread (oauth_verify.c) and the answer is sent when it is back.
 */
static void sign_in(oauth_server_t *s, h2o_req_t *req, const oauth_form_t *f, const authz_t *a, const char *blob, uint64_t ticked)
{
    const char *email = oauth_form_get(f, "email", NULL), *pw = oauth_form_get(f, "password", NULL);
    char peer[OAUTH_PEER_KEY];
    uint64_t retry = 0;
    if (email == NULL || pw == NULL || email[0] == '\0')
        return consent_page(s, req, 401, a, blob, NULL, ticked, "sign in with your email and password");
    signing_t *g = h2o_mem_alloc_shared(NULL, sizeof(*g), NULL);
    memset(g, 0, sizeof(*g));
    *g = (signing_t){.s = s, .req = req, .f = *f, .a = *a, .blob = blob, .ticked = ticked};
    oauth_peer_key(req, peer);
    snprintf(g->ka, sizeof(g->ka), "l:a:%s", peer);
    snprintf(g->ku, sizeof(g->ku), "l:u:%.254s", email);
    for (char *p = g->ku + 4; *p; p++)
        *p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
    /*
     * Every attempt takes a unit of both budgets before its check starts, so
     * checks in flight at once (up to the verifier's queue, on every worker)
     * cannot all pass under the limit; a successful one gives them back.
     */
    int over = oauth_limit_take(s->store, g->ka, LOGIN_MAX_PER_ADDRESS, LOGIN_WINDOW_MS, &retry);
    if (!over && oauth_limit_take(s->store, g->ku, LOGIN_MAX_PER_ACCOUNT, LOGIN_WINDOW_MS, &retry)) {
        oauth_limit_give_back(s->store, g->ka, LOGIN_WINDOW_MS);
        over = 1;
    }
    if (over) {
        h2o_mem_release_shared(g);
        char ra[24];
        snprintf(ra, sizeof(ra), "%llu", (unsigned long long)retry);
        http_add_header(req, "retry-after", ra);
        return consent_page(s, req, 429, a, blob, NULL, ticked, "too many failed sign-ins: wait a few minutes before trying again");
    }
    store_txn_t t;
    aly_err_t err;
    int found = -1;
    if (store_begin(s->store, 0, &t, &err) == 0) {
        found = oauth_user_get(&t, email, &g->u, &err);
        store_abort(&t);
    }
    if (found < 0) {
        /* Not a failure of the password: nothing was checked, so the units go back, and the user may retry. */
        log_error("sign-in: %s", err.msg);
        oauth_limit_give_back(s->store, g->ka, LOGIN_WINDOW_MS);
        oauth_limit_give_back(s->store, g->ku, LOGIN_WINDOW_MS);
        OPENSSL_cleanse(&g->u, sizeof(g->u));
        h2o_mem_release_shared(g);
        http_add_header(req, "retry-after", STORE_RETRY_AFTER_TEXT);
        return consent_page(s, req, 503, a, blob, NULL, ticked, "the accounts cannot be read now: try again in a moment");
    }
    g->known = found == 0;
    signing_t **guard = h2o_mem_alloc_shared(&req->pool, sizeof(*guard), on_signing_gone);
    *guard = g;
    h2o_mem_addref_shared(g);
    if (oauth_verify_start(s->loop, g->known ? g->u.hash : NULL, pw, strlen(pw), on_verdict, g) != 0) {
        oauth_limit_give_back(s->store, g->ka, LOGIN_WINDOW_MS); /* never checked: no attempt */
        oauth_limit_give_back(s->store, g->ku, LOGIN_WINDOW_MS);
        h2o_mem_release_shared(g);
        http_add_header(req, "retry-after", "1");
        return consent_page(s, req, 503, a, blob, NULL, ticked, "too many sign-ins at once: try again in a moment");
    }
}

static void serve_post(oauth_server_t *s, h2o_req_t *req)
{
    oauth_form_t f;
    if (oauth_body_form(req, &f, 1) != 0)
        return;
    int dup = 0;
    const char *blob = oauth_form_get(&f, "request", &dup), *csrf = oauth_form_get(&f, "csrf", &dup),
               *action = oauth_form_get(&f, "action", &dup);
    authz_t a;
    if (dup)
        return oauth_error_page(req, 400, "request, csrf or action appears more than once");
    if (blob == NULL || open_request(s, req, blob, &a) != 0)
        return oauth_error_page(req, 400,
                                "the authorization request is missing, expired or altered; start again from the application");
    const char *ck = cookie(req, CSRF_COOKIE), *want = ck != NULL ? csrf_token(s, req, ck, blob) : NULL;
    if (csrf == NULL || want == NULL || strlen(csrf) != strlen(want) || CRYPTO_memcmp(csrf, want, strlen(want)) != 0)
        return oauth_error_page(req, 403, "the form's CSRF token does not belong to this request and browser; start again");
    if (strncmp(a.client, "https://", 8) != 0) {
        store_txn_t t;
        oauth_client_t c;
        aly_err_t err;
        int rc = -1;
        if (store_begin(s->store, 0, &t, &err) == 0) {
            rc = oauth_client_get(&t, a.client, &c, &err);
            store_abort(&t);
        }
        if (rc < 0) {
            log_error("authorize: %s", err.msg);
            return oauth_error_page(req, 503, "the client store cannot be read now; try again");
        }
        if (rc != 0 || !oauth_client_has_redirect(&c, a.redirect))
            return oauth_error_page(req, 400, "this client is no longer registered here");
        a.dynamic = c.origin == OAUTH_ORIGIN_DCR;
    }
    if (action == NULL || (strcmp(action, "approve") != 0 && strcmp(action, "deny") != 0))
        return oauth_error_page(req, 400, "action must be approve or deny");
    if (strcmp(action, "deny") == 0) {
        /* A dynamic client hears a denial only through a signed-in browser: a person who typed a password signs in first. */
        const char *email = oauth_form_get(&f, "email", NULL), *pw = oauth_form_get(&f, "password", NULL);
        oauth_user_t u;
        int signed_in = a.dynamic && session_user(s, req, &u) == 0;
        OPENSSL_cleanse(&u, sizeof(u));
        if (a.dynamic && !signed_in && email != NULL && email[0] != '\0' && pw != NULL && pw[0] != '\0')
            return sign_in(s, req, &f, &a, blob, 0);
        return redirect_error(s, req, &a, "access_denied", "the user denied the request");
    }
    uint64_t ticked = 0;
    for (size_t i = 0; i < f.n; i++) {
        if (strcmp(f.f[i].name, "scope") != 0)
            continue;
        const char *v = f.f[i].value;
        ticked |= strcmp(v, "offline_access") == 0 ? OAUTH_SCOPE_OFFLINE : scope_lookup(v, strlen(v));
    }
    ticked &= a.scopes;
    oauth_user_t u;
    if (session_user(s, req, &u) != 0)
        return sign_in(s, req, &f, &a, blob, ticked);
    decide(s, req, &f, &a, blob, ticked, &u);
}

/*
 * The signed-in user's decision on request a: a code back to the client (or
 * access_denied, for Deny), or the consent page again saying why not.
 */
static void decide(oauth_server_t *s, h2o_req_t *req, const oauth_form_t *fp, const authz_t *ap, const char *blob, uint64_t ticked,
                   const oauth_user_t *up)
{
    const oauth_form_t f = *fp;
    const authz_t a = *ap;
    const oauth_user_t u = *up;
    const char *action = oauth_form_get(&f, "action", NULL);
    if (action != NULL && strcmp(action, "deny") == 0)
        return send_error_back(s, req, &a, "access_denied", "the user denied the request");
    const char *ws = oauth_form_get(&f, "workspace", NULL);
    const oauth_membership_t *m = NULL;
    for (size_t i = 0; i < u.n_members; i++)
        if (u.n_members == 1 || (ws != NULL && strcmp(ws, u.members[i].workspace) == 0))
            m = &u.members[i];
    if (m == NULL)
        return consent_page(s, req, 400, &a, blob, &u, ticked,
                            u.n_members == 0 ? "your account belongs to no workspace" : "choose one of your workspaces");
    uint64_t granted = ticked & (m->scopes | OAUTH_SCOPE_OFFLINE);
    if ((granted & ~OAUTH_SCOPE_OFFLINE) == 0)
        return consent_page(s, req, 400, &a, blob, &u, ticked, "tick at least one scope your membership allows");
    oauth_code_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.client, sizeof(c.client), "%s", a.client);
    snprintf(c.redirect, sizeof(c.redirect), "%s", a.redirect);
    c.redirect_omitted = (uint64_t)a.redirect_omitted;
    snprintf(c.challenge, sizeof(c.challenge), "%s", a.challenge);
    snprintf(c.workspace, sizeof(c.workspace), "%s", m->workspace);
    snprintf(c.user, sizeof(c.user), "%s", u.id);
    snprintf(c.email, sizeof(c.email), "%s", u.email);
    snprintf(c.client_name, sizeof(c.client_name), "%s", a.client_name);
    c.scopes = granted;
    char code[64], params[128];
    aly_err_t err;
    if (oauth_code_issue(s->store, s->pepper, &c, code, sizeof(code), &err) != 0) {
        log_error("authorize: %s", err.msg);
        return send_error_back(s, req, &a, "temporarily_unavailable", "the authorization cannot be stored now");
    }
    snprintf(params, sizeof(params), "code=%s", code);
    oauth_redirect_back(s, req, a.redirect, params, a.state);
}

void oauth_serve_authorize(void *data, h2o_req_t *req)
{
    oauth_server_t *s = data;
    if (oauth_server_off(s, req))
        return;
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST")))
        serve_post(s, req);
    else
        serve_get(s, req);
}

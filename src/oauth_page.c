/*
 * The authorization server's HTML: the pieces every page shares (the
 * security headers, the document head, the error page that never
 * redirects), the redirect back to a client with iss, and the workspace part
 * of the consent form.  The consent page itself is built in
 * oauth_authorize.c from these.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/http.h"
#include "aly/oauth_internal.h"

void oauth_page_add(oauth_page_t *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (p->len + (size_t)n + 1 > p->cap) {
        p->cap = (p->len + (size_t)n + 1) * 2;
        if ((p->buf = realloc(p->buf, p->cap)) == NULL)
            abort();
    }
    va_start(ap, fmt);
    vsnprintf(p->buf + p->len, p->cap - p->len, fmt, ap);
    va_end(ap);
    p->len += (size_t)n;
}

/* The origin of a validated redirect URI for CSP form-action (the decision redirects there); "" when it has odd characters. */
static const char *origin_of(h2o_mem_pool_t *pool, const char *uri)
{
    const char *a = strstr(uri, "://");
    size_t n = (size_t)(a + 3 - uri) + strcspn(a + 3, "/?");
    for (size_t i = (size_t)(a + 3 - uri); i < n; i++)
        if (!aly_b62_char(uri[i]) && strchr(".-:[]", uri[i]) == NULL)
            return "";
    return h2o_strdup(pool, uri, n).base;
}

void oauth_page_send(h2o_req_t *req, int status, const char *redirect, oauth_page_t *p)
{
    char csp[700];
    snprintf(csp, sizeof(csp),
             "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'self'%s%s; "
             "frame-ancestors 'none'",
             redirect != NULL ? " " : "", redirect != NULL ? origin_of(&req->pool, redirect) : "");
    req->res.status = status;
    req->res.reason = http_reason(status);
    req->res.content_length = p->len;
    http_add_header(req, "content-type", "text/html; charset=utf-8");
    http_add_header(req, "content-security-policy", csp);
    http_add_header(req, "x-frame-options", "DENY");
    http_add_header(req, "cache-control", "no-store");
    http_add_header(req, "referrer-policy", "no-referrer");
    http_add_header(req, "x-content-type-options", "nosniff");
    h2o_send_inline(req, p->buf, p->len);
    free(p->buf);
}

static const char head[] = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>%s</title>"
                           "<meta name=\"viewport\" content=\"width=device-width\"><style>body{font-family:sans-serif;max-width:"
                           "34em;margin:2em auto;padding:0 1em}label{display:block;margin:.4em 0}.err{color:#a00}</style>"
                           "</head><body>\n";

void oauth_page_begin(oauth_page_t *p, const char *title)
{
    oauth_page_add(p, head, title);
}

/* A readable refusal that stays on this server: the client or its redirect URI cannot be trusted with a redirect. */
void oauth_error_page(h2o_req_t *req, int status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    oauth_page_t p = {0};
    oauth_page_begin(&p, "Authorization error");
    oauth_page_add(&p,
                   "<h1>This authorization request cannot go on</h1>\n<p class=\"err\">%s</p>\n"
                   "<p>Go back to the application and start the connection again.</p></body></html>\n",
                   oauth_html(&req->pool, msg));
    if (status == 503)
        http_add_header(req, "retry-after", STORE_RETRY_AFTER_TEXT);
    oauth_page_send(req, status, NULL, &p);
}

/* 302 to the registered redirect URI with params (already encoded pairs), state and iss. */
void oauth_redirect_back(oauth_server_t *s, h2o_req_t *req, const char *redirect, const char *params, const char *state)
{
    size_t n = strlen(redirect) + strlen(params) + (state ? strlen(state) * 3 : 0) + strlen(s->cfg->public_url) * 3 + 32;
    char *loc = h2o_mem_alloc_pool(&req->pool, n);
    snprintf(loc, n, "%s%c%s%s%s&iss=%s", redirect, strchr(redirect, '?') != NULL ? '&' : '?', params, state ? "&state=" : "",
             state ? oauth_urlenc(&req->pool, state) : "", oauth_urlenc(&req->pool, s->cfg->public_url));
    req->res.status = 302;
    req->res.reason = "Found";
    http_add_header(req, "location", loc);
    http_add_header(req, "cache-control", "no-store");
    http_add_header(req, "referrer-policy", "no-referrer");
    req->res.content_length = 0;
    h2o_send_inline(req, "", 0);
}

const char *oauth_redirect_host(h2o_mem_pool_t *pool, const char *uri)
{
    const char *a = strstr(uri, "://") + 3;
    return h2o_strdup(pool, a, strcspn(a, "/?")).base;
}

/* The workspace the grant is for: named when the user has one, a choice (by name) when several. */
void oauth_page_workspaces(oauth_server_t *s, oauth_page_t *p, h2o_mem_pool_t *pl, const oauth_user_t *u)
{
    store_txn_t t;
    aly_err_t err;
    int open = store_begin(s->store, 0, &t, &err) == 0;
    if (u->n_members > 1)
        oauth_page_add(p, "<label>Workspace <select name=\"workspace\">\n");
    for (size_t i = 0; i < u->n_members; i++) {
        workspace_record_t w;
        const char *id = u->members[i].workspace,
                   *name = open && store_get_record(&t, DB_WORKSPACES, id, strlen(id), &record_workspace, &w, &err) == 0 ? w.name
                                                                                                                         : id;
        if (u->n_members == 1)
            oauth_page_add(p, "<p>Workspace: %s <small>(%s)</small></p>\n", oauth_html(pl, name), oauth_html(pl, id));
        else
            oauth_page_add(p, "<option value=\"%s\">%s (%s)</option>\n", oauth_html(pl, id), oauth_html(pl, name),
                           oauth_html(pl, id));
    }
    if (u->n_members > 1)
        oauth_page_add(p, "</select></label>\n");
    if (open)
        store_abort(&t);
}

/*
 * Between the files of the authorization server's HTTP side (oauth_http.c,
 * oauth_register.c, oauth_page.c, oauth_authorize.c, oauth_token.c).  Not
 * for other modules.
 */
#ifndef ALY_OAUTH_INTERNAL_H
#define ALY_OAUTH_INTERNAL_H

#include <h2o.h>

#include "aly/oauth_cimd.h"
#include "aly/oauth_server.h"

#define OAUTH_FORM_MAX_BYTES (64 * 1024) /* a form or JSON body larger than this is refused unread */
#define OAUTH_FORM_MAX_FIELDS 64

/* A decoded application/x-www-form-urlencoded body or query string; values live in the request's pool. */
typedef struct oauth_form {
    size_t n;
    struct {
        const char *name, *value;
    } f[OAUTH_FORM_MAX_FIELDS];
} oauth_form_t;

/*
 * Decodes text into form: '+' is a space, %XX a byte; a bad escape, a NUL,
 * invalid UTF-8, more than OAUTH_FORM_MAX_FIELDS fields or more than
 * OAUTH_FORM_MAX_BYTES is -1 with why.
 */
int oauth_form_parse(h2o_mem_pool_t *pool, const char *text, size_t len, oauth_form_t *form, aly_err_t *why);
/* The value of name; NULL when absent or when it appears more than once (*dup set then, when dup is not NULL). */
const char *oauth_form_get(const oauth_form_t *form, const char *name, int *dup);

/* s with &, <, >, " and ' escaped for HTML text and attribute values, in the request's pool. */
const char *oauth_html(h2o_mem_pool_t *pool, const char *s);
/* s percent-encoded for a query component (unreserved characters kept), in the pool. */
const char *oauth_urlenc(h2o_mem_pool_t *pool, const char *s);

/* Sends an RFC 6749 error body {"error","error_description"} with Cache-Control: no-store. */
void oauth_send_error(h2o_req_t *req, int status, const char *error, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Fixed-window counters in the volatile store (VDB_OAUTH): the sign-in
 * failures of an address and of an account, the registrations of an address.
 * oauth_limit_over() reads: 1 when key has reached max in the window now
 * running (*retry_s: seconds until it ends).  oauth_limit_take() checks
 * and adds one in one transaction (1: over, nothing added),
 * so attempts in flight at once count each; oauth_limit_give_back() takes
 * one away again (an attempt that turned out not to be a failure).
 */
int oauth_limit_over(store_t *st, const char *key, unsigned max, uint64_t window_ms, uint64_t *retry_s);
int oauth_limit_take(store_t *st, const char *key, unsigned max, uint64_t window_ms, uint64_t *retry_s);
void oauth_limit_give_back(store_t *st, const char *key, uint64_t window_ms);

/*
 * The name of req's peer in the per-address limits above: the grouping of
 * every other address limit of alyd (ratelimit_address(): IPv4 by address,
 * IPv6 by its /64, IPv4-mapped IPv6 as IPv4), in hex after "4:" or "6:", so
 * the addresses of one /64 share one budget; "-" for a peer with no address.
 */
#define OAUTH_PEER_KEY 24
void oauth_peer_key(h2o_req_t *req, char out[OAUTH_PEER_KEY]);

/* The request body as a form: 0, or -1 after sending the refusal (another content type, too large, malformed). */
int oauth_body_form(h2o_req_t *req, oauth_form_t *form, int html);
/* 1 when req's Content-Type is want (case-insensitive, parameters allowed). */
int oauth_content_type_is(h2o_req_t *req, const char *want);
/* 1 (and a 404 sent) when the built-in server is off. */
int oauth_server_off(oauth_server_t *s, h2o_req_t *req);

/*
 * Client authentication at the token and revocation endpoints:
 * client_secret_basic (Authorization: Basic), client_secret_post
 * (client_id + client_secret in the form) or none (client_id alone, public
 * clients).  Sends invalid_client itself and returns -1 on failure; on
 * success *id holds the client_id (pool string).
 */
int oauth_client_authenticate(oauth_server_t *s, h2o_req_t *req, const oauth_form_t *form, const char **id);
/*
 * What the token and revocation endpoints do first: the server on and the
 * Host served, the form read, the client authenticated.  0 with *form and
 * *id; -1 when it has answered the request itself.
 */
int oauth_client_request(oauth_server_t *s, h2o_req_t *req, oauth_form_t *form, const char **id);

/* ---- HTML (oauth_page.c) ---- */

/* A page under construction: malloc'd, grown by oauth_page_add(), freed by oauth_page_send(). */
typedef struct oauth_page {
    char *buf;
    size_t len, cap;
} oauth_page_t;

/* Starts p with the document head up to <body>, titled title. */
void oauth_page_begin(oauth_page_t *p, const char *title);
void oauth_page_add(oauth_page_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Sends p as HTML with the headers of every page: CSP (no script,
 * frame-ancestors 'none', form-action 'self' and the origin of redirect when
 * not NULL), X-Frame-Options DENY, Cache-Control no-store, Referrer-Policy
 * no-referrer.  Frees p's buffer.
 */
void oauth_page_send(h2o_req_t *req, int status, const char *redirect, oauth_page_t *p);
/* A readable refusal that redirects nowhere (a bad client or redirect URI, a forged form). */
void oauth_error_page(h2o_req_t *req, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* 302 to a validated redirect URI with params (encoded pairs), then state (when not NULL) and iss. */
void oauth_redirect_back(oauth_server_t *s, h2o_req_t *req, const char *redirect, const char *params, const char *state);
/* host[:port] of a validated redirect URI, in the pool. */
const char *oauth_redirect_host(h2o_mem_pool_t *pool, const char *uri);
/* The workspace part of the consent form for a signed-in user: the one named, or a select of several (by name). */
void oauth_page_workspaces(oauth_server_t *s, oauth_page_t *p, h2o_mem_pool_t *pl, const oauth_user_t *u);

/*
 * Password checks off the event loop (oauth_verify.c): checks password against
 * hash (NULL: an unknown account, checked against a throw-away hash for the
 * same cost) on the worker's verifier thread, then calls cb(ctx, ok) on the
 * loop.  -1 when the check cannot be queued now (too many waiting): answer busy.
 */
typedef void (*oauth_verify_cb)(void *ctx, int ok);
int oauth_verify_start(h2o_loop_t *loop, const char *hash, const char *password, size_t len, oauth_verify_cb cb, void *ctx);

#endif

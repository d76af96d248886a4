/*
 * Client-ID metadata documents: URL checks, the per-process cache, joined
 * fetches and the HTTPS fetch itself on the caller's h2o loop (the contract and
 * the limits are in aly/oauth_cimd.h).
 *
 * Why h2o's http1client rather than libcurl's multi interface: it already runs
 * on the worker's loop with the loop's own sockets and timers, it adds no
 * library, and a document fetch needs nothing it lacks (one GET, HTTP/1.1, no
 * redirects, no compression).  Its gaps are filled here: a deadline over the
 * whole fetch (its timeouts are per I/O step, so a trickling server would
 * never time out) and a host check done by OpenSSL (see the header).
 */
#include "aly/oauth_cimd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "aly/common.h"
#include "aly/log.h"

typedef void (*cimd_cb)(void *ctx, const char *doc, size_t len, const char *err);

/*
 * The CA certificates of one oauth_cimd_ca_file (NULL: the system's), loaded
 * once and shared by the TLS contexts: parsing the system bundle takes tens of
 * milliseconds, too long to spend on the loop more than once.
 */
typedef struct trust {
    struct trust *next;
    char *ca_file;
    X509_STORE *store;
} trust_t;

/*
 * A TLS context per (host, CA file): the host name the certificate must carry
 * is set in the context's verify parameters, which each connection's SSL
 * object copies when h2o creates it, long after the call that started it.
 */
typedef struct origin {
    struct origin *next;
    char *host;
    char *ca_file;
    SSL_CTX *ssl_ctx;
} origin_t;

typedef struct waiter {
    cimd_cb cb; /* NULL once cancelled */
    void *ctx;
} waiter_t;

typedef struct fetch {
    struct fetch *next;
    char *url;
    origin_t *origin;
    h2o_http1client_ctx_t hctx; /* h2o's client points at it until it is closed */
    uint16_t port;
    h2o_http1client_t *client; /* NULL before the start and once h2o has closed it */
    h2o_timeout_entry_t start;
    h2o_timeout_entry_t deadline;
    h2o_iovec_t request;
    waiter_t *waiters;
    size_t n_waiters, cap_waiters;
    uint64_t ttl_s;
    size_t len;
    char body[OAUTH_CIMD_MAX_DOC + 1];
} fetch_t;

typedef struct cache_entry {
    char *url; /* NULL: free slot */
    char *doc;
    size_t len;
    uint64_t expires_ms; /* aly_now_ms() clock */
} cache_entry_t;

static struct {
    h2o_loop_t *loop;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t getaddr_receiver;
    h2o_timeout_t io_timeout;
    h2o_timeout_t zero_timeout;
    h2o_timeout_t deadline_timeout;
    int timeouts_ready;
    trust_t *trusts;
    origin_t *origins;
    fetch_t *fetches;
    size_t n_fetches;
    fetch_t *delivering; /* the fetch whose waiters are being called, already off the list */
    cache_entry_t cache[OAUTH_CIMD_CACHE_ENTRIES];
} S;

/* ---- URL checks ---- */

typedef struct parsed_url {
    char host[256];
    uint16_t port;
    const char *authority; /* host[:port] inside the URL, for the Host header */
    size_t authority_len;
    const char *path; /* from the first "/" to the end, query included */
} parsed_url_t;

static int host_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

/* A path character of RFC 3986 (unreserved, sub-delims, ":", "@", "/", "?", "%"); no "#", no space, no control. */
static int path_char(int c)
{
    return isalnum(c) || strchr("-._~!$&'()*+,;=:@/?%", c) != NULL;
}

static int parse_url(const char *url, parsed_url_t *u)
{
    size_t n = strnlen(url, OAUTH_CIMD_URL_MAX + 1);
    if (n > OAUTH_CIMD_URL_MAX || strncmp(url, "https://", 8) != 0)
        return -1;
    const char *p = url + 8, *h = p;
    while (host_char((unsigned char)*p))
        p++;
    size_t hlen = (size_t)(p - h);
    if (hlen == 0 || hlen >= sizeof(u->host) || h[0] == '.' || h[hlen - 1] == '.')
        return -1;
    memcpy(u->host, h, hlen);
    u->host[hlen] = '\0';
    u->port = 443;
    if (*p == ':') {
        unsigned long port = 0;
        const char *d = ++p;
        while (*p >= '0' && *p <= '9' && p - d < 5)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (p == d || port == 0 || port > 65535)
            return -1;
        u->port = (uint16_t)port;
    }
    /* Anything else after the host ("@" of user info, "[", "\", another ":") is refused here. */
    if (*p != '/')
        return -1;
    u->authority = h;
    u->authority_len = (size_t)(p - h);
    u->path = p;
    const char *q = strchr(p, '?');
    size_t plen = q != NULL ? (size_t)(q - p) : strlen(p);
    for (const char *c = p; *c != '\0'; c++)
        if (!path_char((unsigned char)*c))
            return -1;
    /* Dot segments would let two URLs name one document, and client_id must equal its URL exactly. */
    for (const char *s = p; s < p + plen; s++) {
        if (*s != '/')
            continue;
        size_t seg = strcspn(s + 1, "/?");
        if ((seg == 1 && s[1] == '.') || (seg == 2 && s[1] == '.' && s[2] == '.'))
            return -1;
    }
    return 0;
}

/* ---- the cache ---- */

static void cache_clear(cache_entry_t *e)
{
    free(e->url);
    free(e->doc);
    memset(e, 0, sizeof(*e));
}

static cache_entry_t *cache_find(const char *url)
{
    uint64_t now = aly_now_ms();
    for (size_t i = 0; i < OAUTH_CIMD_CACHE_ENTRIES; i++) {
        cache_entry_t *e = &S.cache[i];
        if (e->url == NULL || strcmp(e->url, url) != 0)
            continue;
        if (e->expires_ms <= now) {
            cache_clear(e);
            return NULL;
        }
        return e;
    }
    return NULL;
}

static void cache_put(const char *url, const char *doc, size_t len, uint64_t ttl_s)
{
    uint64_t now = aly_now_ms();
    cache_entry_t *slot = NULL;
    /* The same URL, else a free or expired slot, else the entry closest to expiry. */
    for (size_t i = 0; i < OAUTH_CIMD_CACHE_ENTRIES && slot == NULL; i++)
        if (S.cache[i].url != NULL && strcmp(S.cache[i].url, url) == 0)
            slot = &S.cache[i];
    for (size_t i = 0; i < OAUTH_CIMD_CACHE_ENTRIES && slot == NULL; i++)
        if (S.cache[i].url == NULL || S.cache[i].expires_ms <= now)
            slot = &S.cache[i];
    for (size_t i = 0; i < OAUTH_CIMD_CACHE_ENTRIES; i++)
        if (slot == NULL || S.cache[i].expires_ms < slot->expires_ms)
            slot = &S.cache[i];
    cache_clear(slot);
    slot->url = strdup(url);
    slot->doc = malloc(len + 1);
    if (slot->url == NULL || slot->doc == NULL) {
        cache_clear(slot);
        return;
    }
    memcpy(slot->doc, doc, len);
    slot->doc[len] = '\0';
    slot->len = len;
    slot->expires_ms = now + ttl_s * 1000;
}

uint64_t oauth_cimd_cache_ttl(const char *url)
{
    cache_entry_t *e = cache_find(url);
    return e != NULL ? e->expires_ms - aly_now_ms() : 0;
}

/* ---- response header checks ---- */

/* 1 when value is application/json, optionally followed by parameters. */
static int json_type(h2o_iovec_t v)
{
    static const char want[] = "application/json";
    size_t i = 0;
    while (i < v.len && (v.base[i] == ' ' || v.base[i] == '\t'))
        i++;
    if (v.len - i < sizeof(want) - 1 || strncasecmp(v.base + i, want, sizeof(want) - 1) != 0)
        return 0;
    i += sizeof(want) - 1;
    while (i < v.len && (v.base[i] == ' ' || v.base[i] == '\t'))
        i++;
    return i == v.len || v.base[i] == ';';
}

/*
 * How long a document may be kept, from one Cache-Control value: 0 for
 * no-store, no-cache (kept documents are never revalidated) or max-age=0;
 * max-age capped at OAUTH_CIMD_MAX_AGE_S; *ttl_s untouched when neither
 * appears.  Several Cache-Control headers are applied in turn, so any no-store wins.
 */
static void apply_cache_control(h2o_iovec_t v, uint64_t *ttl_s, int *no_store)
{
    const char *p = v.base, *end = v.base + v.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *t = p;
        while (p < end && *p != ',')
            p++;
        size_t tlen = (size_t)(p - t);
        while (tlen > 0 && (t[tlen - 1] == ' ' || t[tlen - 1] == '\t'))
            tlen--;
        if ((tlen == 8 && strncasecmp(t, "no-store", 8) == 0) || (tlen == 8 && strncasecmp(t, "no-cache", 8) == 0)) {
            *no_store = 1;
        } else if (tlen > 8 && strncasecmp(t, "max-age=", 8) == 0) {
            uint64_t age = 0;
            size_t i = 8;
            if (i < tlen && t[i] == '"')
                i++;
            for (; i < tlen && t[i] >= '0' && t[i] <= '9'; i++)
                age = age < OAUTH_CIMD_MAX_AGE_S ? age * 10 + (uint64_t)(t[i] - '0') : age;
            *ttl_s = age < OAUTH_CIMD_MAX_AGE_S ? age : OAUTH_CIMD_MAX_AGE_S;
        }
    }
}

/* ---- fetches ---- */

static void unlink_fetch(fetch_t *f)
{
    for (fetch_t **pp = &S.fetches; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            S.n_fetches--;
            return;
        }
    }
}

static void free_fetch(fetch_t *f)
{
    if (h2o_timeout_is_linked(&f->start))
        h2o_timeout_unlink(&f->start);
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);
    if (f->client != NULL)
        h2o_http1client_cancel(f->client);
    free(f->waiters);
    free(f->request.base);
    free(f->url);
    free(f);
}

/*
 * Ends f: caches a good document, tells every waiter, frees f.  The caller has
 * set f->client to NULL when h2o closes the client itself after the callback
 * we are in returns.
 */
static void finish(fetch_t *f, const char *err)
{
    unlink_fetch(f);
    if (err == NULL && f->ttl_s > 0)
        cache_put(f->url, f->body, f->len, f->ttl_s);
    if (err != NULL)
        log_warn("client metadata document %s: %s", f->url, err);
    f->body[f->len] = '\0';
    fetch_t *outer = S.delivering;
    S.delivering = f;
    for (size_t i = 0; i < f->n_waiters; i++) {
        waiter_t w = f->waiters[i];
        f->waiters[i].cb = NULL;
        if (w.cb == NULL)
            continue;
        if (err != NULL)
            w.cb(w.ctx, NULL, 0, err);
        else
            w.cb(w.ctx, f->body, f->len, NULL);
    }
    S.delivering = outer;
    free_fetch(f);
}

static int on_body(h2o_http1client_t *client, const char *errstr)
{
    fetch_t *f = client->data;
    h2o_buffer_t *in = client->sock != NULL ? client->sock->input : NULL;
    if (in != NULL && in->size != 0) {
        if (in->size > OAUTH_CIMD_MAX_DOC - f->len) {
            f->client = NULL;
            finish(f, "document larger than " H2O_TO_STR(OAUTH_CIMD_MAX_DOC) " bytes");
            return -1;
        }
        memcpy(f->body + f->len, in->bytes, in->size);
        f->len += in->size;
        h2o_buffer_consume(&client->sock->input, in->size);
    }
    if (errstr == NULL)
        return 0;
    f->client = NULL;
    if (errstr != h2o_http1client_error_is_eos)
        finish(f, errstr);
    else if (f->len == 0)
        finish(f, "empty document");
    else
        finish(f, NULL);
    return -1;
}

static h2o_http1client_body_cb on_head(h2o_http1client_t *client, const char *errstr, int minor_version, int status,
                                       h2o_iovec_t msg, h2o_header_t *headers, size_t num_headers, int rlen)
{
    fetch_t *f = client->data;
    char why[64];
    (void)minor_version, (void)msg, (void)rlen;

    if (errstr != NULL && errstr != h2o_http1client_error_is_eos) {
        f->client = NULL;
        finish(f, errstr);
        return NULL;
    }
    if (status != 200) {
        snprintf(why, sizeof(why), status >= 300 && status <= 399 ? "redirect (HTTP %d) not followed" : "HTTP status %d", status);
        f->client = NULL;
        finish(f, why);
        return NULL;
    }
    int json = 0, no_store = 0;
    uint64_t ttl_s = OAUTH_CIMD_DEFAULT_AGE_S;
    for (size_t i = 0; i < num_headers; i++) {
        if (headers[i].name == &H2O_TOKEN_CONTENT_TYPE->buf) {
            json = json_type(headers[i].value);
        } else if (headers[i].name == &H2O_TOKEN_CACHE_CONTROL->buf) {
            apply_cache_control(headers[i].value, &ttl_s, &no_store);
        } else if (headers[i].name == &H2O_TOKEN_CONTENT_LENGTH->buf) {
            size_t cl = h2o_strtosize(headers[i].value.base, headers[i].value.len);
            if (cl != SIZE_MAX && cl > OAUTH_CIMD_MAX_DOC) {
                f->client = NULL;
                finish(f, "document larger than " H2O_TO_STR(OAUTH_CIMD_MAX_DOC) " bytes");
                return NULL;
            }
        }
    }
    if (!json) {
        f->client = NULL;
        finish(f, "Content-Type is not application/json");
        return NULL;
    }
    f->ttl_s = no_store ? 0 : ttl_s;
    if (errstr == h2o_http1client_error_is_eos) {
        f->client = NULL;
        finish(f, "empty document");
        return NULL;
    }
    return on_body;
}

static h2o_http1client_head_cb on_connect(h2o_http1client_t *client, const char *errstr, h2o_iovec_t **reqbufs, size_t *reqbufcnt,
                                          int *method_is_head)
{
    fetch_t *f = client->data;
    if (errstr != NULL) {
        f->client = NULL;
        finish(f, errstr);
        return NULL;
    }
    *reqbufs = &f->request;
    *reqbufcnt = 1;
    *method_is_head = 0;
    return on_head;
}

/* Runs from the loop, so that even a connect failing at once reaches the waiters after oauth_cimd_fetch returned. */
static void on_start(h2o_timeout_entry_t *entry)
{
    fetch_t *f = H2O_STRUCT_FROM_MEMBER(fetch_t, start, entry);
    h2o_http1client_connect(&f->client, f, &f->hctx, h2o_iovec_init(f->origin->host, strlen(f->origin->host)), f->port, 1,
                            on_connect);
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    fetch_t *f = H2O_STRUCT_FROM_MEMBER(fetch_t, deadline, entry);
    finish(f, "no complete answer within " H2O_TO_STR(OAUTH_CIMD_TIMEOUT_MS) " ms");
}

/* ---- per-process state ---- */

static int state_init(h2o_loop_t *loop)
{
    if (S.loop == loop)
        return 0;
    if (S.loop != NULL)
        return -1;
    S.loop = loop;
    if (S.queue == NULL) {
        S.queue = h2o_multithread_create_queue(loop);
        h2o_multithread_register_receiver(S.queue, &S.getaddr_receiver, h2o_hostinfo_getaddr_receiver);
    }
    /* h2o's resolver runs one thread by default: a host whose DNS hangs would hold up every other lookup behind it. */
    if (h2o_hostinfo_max_threads < 4)
        h2o_hostinfo_max_threads = 4;
    if (!S.timeouts_ready) {
        /* The I/O timeout never fires before the deadline: the deadline alone bounds a fetch. */
        h2o_timeout_init(loop, &S.io_timeout, OAUTH_CIMD_TIMEOUT_MS + 1000);
        h2o_timeout_init(loop, &S.zero_timeout, 0);
        h2o_timeout_init(loop, &S.deadline_timeout, OAUTH_CIMD_TIMEOUT_MS);
        S.timeouts_ready = 1;
    }
    return 0;
}

static int is_ip_literal(const char *host)
{
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) == 1;
}

static int same_file(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static X509_STORE *trust_get(const char *ca_file)
{
    for (trust_t *t = S.trusts; t != NULL; t = t->next)
        if (same_file(t->ca_file, ca_file))
            return t->store;
    X509_STORE *store = X509_STORE_new();
    trust_t *t = calloc(1, sizeof(*t));
    int loaded = store != NULL &&
                 (ca_file != NULL ? X509_STORE_load_file(store, ca_file) : X509_STORE_set_default_paths(store)) == 1;
    if (!loaded || t == NULL || (ca_file != NULL && (t->ca_file = strdup(ca_file)) == NULL)) {
        if (!loaded)
            log_error("oauth_cimd_ca_file %s: cannot load CA certificates", ca_file != NULL ? ca_file : "(the system's)");
        if (t != NULL)
            free(t->ca_file);
        free(t);
        X509_STORE_free(store);
        return NULL;
    }
    t->store = store;
    t->next = S.trusts;
    S.trusts = t;
    return store;
}

static origin_t *origin_get(const char *host, const char *ca_file)
{
    for (origin_t *o = S.origins; o != NULL; o = o->next)
        if (strcasecmp(o->host, host) == 0 && same_file(o->ca_file, ca_file))
            return o;

    X509_STORE *store = trust_get(ca_file);
    if (store == NULL)
        return NULL;
    SSL_CTX *ssl = SSL_CTX_new(TLS_client_method());
    origin_t *o = calloc(1, sizeof(*o));
    int ready = 0;
    if (ssl != NULL && o != NULL && (o->host = strdup(host)) != NULL &&
        (ca_file == NULL || (o->ca_file = strdup(ca_file)) != NULL)) {
        SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
        SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set1_cert_store(ssl, store);
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ready = (is_ip_literal(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host) : X509_VERIFY_PARAM_set1_host(param, host, 0)) ==
                1;
    }
    if (!ready) {
        if (o != NULL) {
            free(o->host);
            free(o->ca_file);
        }
        free(o);
        SSL_CTX_free(ssl);
        return NULL;
    }
    o->ssl_ctx = ssl;
    o->next = S.origins;
    S.origins = o;
    return o;
}

int oauth_cimd_prepare(const aly_config_t *cfg)
{
    int rc = 0;
    for (size_t i = 0; i < cfg->oauth_cimd_allow.n; i++)
        if (origin_get(cfg->oauth_cimd_allow.items[i], cfg->oauth_cimd_ca_file) == NULL)
            rc = -1;
    return rc;
}

static int add_waiter(fetch_t *f, cimd_cb cb, void *ctx)
{
    if (f->n_waiters == f->cap_waiters) {
        size_t cap = f->cap_waiters != 0 ? f->cap_waiters * 2 : 4;
        waiter_t *w = realloc(f->waiters, cap * sizeof(*w));
        if (w == NULL)
            return -1;
        f->waiters = w;
        f->cap_waiters = cap;
    }
    f->waiters[f->n_waiters++] = (waiter_t){cb, ctx};
    return 0;
}

int oauth_cimd_fetch(h2o_loop_t *loop, const aly_config_t *cfg, const char *url, cimd_cb cb, void *ctx)
{
    parsed_url_t u;
    if (url == NULL || cb == NULL || parse_url(url, &u) != 0 ||
        !config_strlist_has(&cfg->oauth_cimd_allow, u.host, strlen(u.host)) || state_init(loop) != 0)
        return -1;

    cache_entry_t *e = cache_find(url);
    if (e != NULL) {
        cb(ctx, e->doc, e->len, NULL);
        return 0;
    }
    for (fetch_t *f = S.fetches; f != NULL; f = f->next)
        if (strcmp(f->url, url) == 0)
            return add_waiter(f, cb, ctx);
    if (S.n_fetches >= OAUTH_CIMD_MAX_FETCHES)
        return -1;

    origin_t *o = origin_get(u.host, cfg->oauth_cimd_ca_file);
    if (o == NULL)
        return -1;
    fetch_t *f = malloc(sizeof(*f));
    if (f == NULL)
        return -1;
    *f = (fetch_t){.origin = o, .port = u.port};
    f->hctx = (h2o_http1client_ctx_t){loop, &S.getaddr_receiver, &S.io_timeout, NULL, o->ssl_ctx};
    f->start.cb = on_start;
    f->deadline.cb = on_deadline;
    int n = asprintf(&f->request.base,
                     "GET %s HTTP/1.1\r\nHost: %.*s\r\nAccept: application/json\r\nUser-Agent: alyd\r\nConnection: close\r\n\r\n",
                     u.path, (int)u.authority_len, u.authority);
    if (n < 0) {
        f->request.base = NULL;
        free_fetch(f);
        return -1;
    }
    f->request.len = (size_t)n;
    if ((f->url = strdup(url)) == NULL || add_waiter(f, cb, ctx) != 0) {
        free_fetch(f);
        return -1;
    }
    f->next = S.fetches;
    S.fetches = f;
    S.n_fetches++;
    h2o_timeout_link(loop, &S.zero_timeout, &f->start);
    h2o_timeout_link(loop, &S.deadline_timeout, &f->deadline);
    return 0;
}

static void cancel_in(fetch_t *f, void *ctx)
{
    for (size_t i = 0; i < f->n_waiters; i++)
        if (f->waiters[i].ctx == ctx)
            f->waiters[i].cb = NULL;
}

void oauth_cimd_cancel(void *ctx)
{
    for (fetch_t *f = S.fetches; f != NULL; f = f->next)
        cancel_in(f, ctx);
    if (S.delivering != NULL)
        cancel_in(S.delivering, ctx);
}

void oauth_cimd_dispose(void)
{
    while (S.fetches != NULL) {
        fetch_t *f = S.fetches;
        unlink_fetch(f);
        free_fetch(f);
    }
    for (size_t i = 0; i < OAUTH_CIMD_CACHE_ENTRIES; i++)
        cache_clear(&S.cache[i]);
    while (S.origins != NULL) {
        origin_t *o = S.origins;
        S.origins = o->next;
        SSL_CTX_free(o->ssl_ctx);
        free(o->host);
        free(o->ca_file);
        free(o);
    }
    while (S.trusts != NULL) {
        trust_t *t = S.trusts;
        S.trusts = t->next;
        X509_STORE_free(t->store);
        free(t->ca_file);
        free(t);
    }
}

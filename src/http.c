/*
 * The HTTP layer (aly/http.h): one catch-all h2o handler per host routes over
 * the caller's table; one logger per host counts the request and writes its
 * access log line.  Bodies over max_request_body get a JSON 413 here, before
 * any route runs.  The handler and the logger also keep each connection's
 * abuse budgets, and http_sweep cuts connections that overrun them.
 */
#include "aly/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <linux/tcp.h>

#include "aly/log.h"

typedef struct http_handler {
    h2o_handler_t super;
    http_site_t *site;
    unsigned listener_flag; /* HTTP_PUBLIC or HTTP_ADMIN */
} http_handler_t;

typedef struct http_logger {
    h2o_logger_t super;
    http_site_t *site;
} http_logger_t;

void http_add_header(h2o_req_t *req, const char *name, const char *value)
{
    h2o_iovec_t v = h2o_strdup(&req->pool, value, SIZE_MAX);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL, v.base, v.len);
}

static void add_token_header(h2o_req_t *req, const h2o_token_t *token, const char *value)
{
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, value, strlen(value));
}

int http_host_allowed(const aly_config_t *cfg, h2o_req_t *req)
{
    h2o_iovec_t a = req->input.authority;
    if (a.len == 0 || a.len > 255)
        return 0;
    if (config_strlist_has(&cfg->allowed_hosts, a.base, a.len))
        return 1;
    const char *def = req->scheme == &H2O_URL_SCHEME_HTTPS ? ":443" : ":80";
    char buf[300];
    if (a.len > strlen(def) && memcmp(a.base + a.len - strlen(def), def, strlen(def)) == 0)
        return config_strlist_has(&cfg->allowed_hosts, a.base, a.len - strlen(def));
    snprintf(buf, sizeof(buf), "%.*s%s", (int)a.len, a.base, def);
    return config_strlist_has(&cfg->allowed_hosts, buf, strlen(buf));
}

const char *http_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } known[] = {{200, "OK"},
                 {201, "Created"},
                 {202, "Accepted"},
                 {302, "Found"},
                 {400, "Bad Request"},
                 {401, "Unauthorized"},
                 {403, "Forbidden"},
                 {404, "Not Found"},
                 {405, "Method Not Allowed"},
                 {406, "Not Acceptable"},
                 {413, "Payload Too Large"},
                 {415, "Unsupported Media Type"},
                 {421, "Misdirected Request"},
                 {429, "Too Many Requests"},
                 {500, "Internal Server Error"},
                 {503, "Service Unavailable"}};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (known[i].status == status)
            return known[i].reason;
    return status >= 500 ? "Internal Server Error" : "Bad Request";
}

static void json_head(h2o_req_t *req, int status, size_t len)
{
    req->res.status = status;
    req->res.reason = http_reason(status);
    req->res.content_length = len;
    add_token_header(req, H2O_TOKEN_CONTENT_TYPE, "application/json");
    add_token_header(req, H2O_TOKEN_CACHE_CONTROL, "no-store");
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL, H2O_STRLIT("nosniff"));
}

void http_send_json(h2o_req_t *req, int status, const char *body, size_t len)
{
    json_head(req, status, len);
    h2o_send_inline(req, body, len);
}

void http_send_json_kept(h2o_req_t *req, int status, const char *body, size_t len)
{
    /* h2o_send_inline without its copy into the pool: one final send, so h2o never asks this generator for more. */
    static h2o_generator_t once = {NULL, NULL};
    json_head(req, status, len);
    h2o_iovec_t buf = h2o_iovec_init(body, len);
    h2o_start_response(req, &once);
    h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

void http_send_json_object(h2o_req_t *req, int status, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL) {
        static const char oom[] = "{\"error\":\"internal\",\"message\":\"out of memory\"}";
        http_send_json(req, 500, oom, sizeof(oom) - 1);
        return;
    }
    http_send_json(req, status, text, strlen(text));
    free(text);
}

void http_send_error(h2o_req_t *req, int status, const char *code, const char *fmt, ...)
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
    http_send_json_object(req, status, json_pack("{s:s, s:o}", "error", code, "message", m));
}

void http_send_rpc_error(h2o_req_t *req, int status, int code, const char *message, json_t *data)
{
    json_t *e = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (data != NULL)
        json_object_set_new(e, "data", data);
    http_send_json_object(req, status, json_pack("{s:s, s:n, s:o}", "jsonrpc", "2.0", "id", "error", e));
}

int http_is_loopback(h2o_req_t *req)
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

http_conn_t *http_conn_of(h2o_req_t *req)
{
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    return sock != NULL ? sock->on_close.data : NULL;
}

void http_conn_start(http_site_t *site, http_conn_t *c, h2o_socket_t *sock, guard_addr_t *addr)
{
    c->sock = sock;
    c->addr = addr;
    c->budget = site->cfg->reset_budget;
}

static const char *const cut_names[STATS_N_CUT] = {"reset budget", "body bytes in flight", "request deadline"};

/*
 * Cuts c: its socket is shut down both ways, so h2o reads the end of input,
 * fails its writes and closes the connection through its own path (closing
 * the socket here would free it under h2o's feet).  Requests h2o still hands
 * over get a 429 from on_req.
 */
static void cut(http_site_t *site, http_conn_t *c, unsigned reason, uint64_t now)
{
    if (c->shut)
        return;
    shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
    c->shut = 1;
    stats_add(&site->slot->conn_cuts[reason], 1);
    if (c->addr == NULL)
        return;
    stats_add(&site->slot->address_strikes, 1);
    if (guard_strike(site->guard, c->addr, now)) {
        char a[64];
        guard_format(c->addr, a, sizeof(a));
        stats_add(&site->slot->address_bans, 1);
        log_warn("refusing connections from %s for %llu ms: %u connections cut within strike_window (the last for its %s)", a,
                 (unsigned long long)site->cfg->strike_window_ms, site->cfg->address_strikes, cut_names[reason]);
    }
}

/*
 * From one TCP_INFO read: the bytes the kernel received on c's connection,
 * the bytes of ours the peer acknowledged, and whether any of ours still wait
 * in the socket (sent and unacknowledged, or not sent yet); -1 when it cannot
 * tell.  acked and queued may be NULL.
 */
static int tcp_counts(const http_conn_t *c, uint64_t *bytes, uint64_t *acked, int *queued)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(h2o_socket_get_fd(c->sock), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_notsent_bytes) + sizeof(ti.tcpi_notsent_bytes))
        return -1;
    *bytes = ti.tcpi_bytes_received;
    if (acked != NULL)
        *acked = ti.tcpi_bytes_acked;
    if (queued != NULL)
        *queued = ti.tcpi_unacked != 0 || ti.tcpi_notsent_bytes != 0;
    return 0;
}

static int received(const http_conn_t *c, uint64_t *bytes)
{
    return tcp_counts(c, bytes, NULL, NULL);
}

/*
 * Judged from the last sweep's count, so a connection that made progress
 * since then is not quiet yet: the next sweep, at most HTTP_SWEEP_MS later,
 * settles it.
 */
int http_conn_quiet(const http_conn_t *c)
{
    uint64_t rx;
    return c->inflight == 0 && c->swept && c->progress == c->progress_at_sweep && received(c, &rx) == 0 &&
           rx == c->received_at_progress;
}

/*
 * Two passes: the first brings each connection's counters up to date and
 * sums the body bytes in flight per address, the second cuts.  Cutting an
 * address's connections in list order until its sum fits is arbitrary but
 * bounded: every connection it cuts was holding bytes.
 */
void http_sweep(http_site_t *site, h2o_linklist_t *conns, uint64_t now)
{
    const aly_config_t *cfg = site->cfg;
    for (h2o_linklist_t *l = conns->next; l != conns; l = l->next) {
        http_conn_t *c = H2O_STRUCT_FROM_MEMBER(http_conn_t, link, l);
        if (c->addr != NULL)
            c->addr->pending_body = 0;
    }
    for (h2o_linklist_t *l = conns->next; l != conns; l = l->next) {
        http_conn_t *c = H2O_STRUCT_FROM_MEMBER(http_conn_t, link, l);
        uint64_t rx, acked;
        int queued;
        c->swept = !c->shut && tcp_counts(c, &rx, &acked, &queued) == 0;
        if (!c->swept)
            continue;
        c->received = rx;
        /*
         * A reader that stopped reading: our bytes wait in the socket and none
         * is acknowledged (slow-read).  Whether a request is still in progress
         * does not matter: h2o may have handed every answer to the kernel and
         * be waiting for requests the stalled peer's window holds back.
         */
        if (acked == c->acked && queued) {
            if (c->stalled_since_ms == 0)
                c->stalled_since_ms = now;
        } else {
            c->stalled_since_ms = 0;
        }
        c->acked = acked;
        if (c->consumed > rx)
            c->consumed = rx;
        if (c->addr != NULL)
            c->addr->pending_body += rx - c->consumed;
        if (c->progress != c->progress_at_sweep || c->inflight > 0) {
            c->progress_at_sweep = c->progress;
            c->received_at_progress = rx;
            c->busy_since_ms = 0;
        } else if (rx > c->received_at_progress && c->busy_since_ms == 0) {
            c->busy_since_ms = now;
        }
    }
    for (h2o_linklist_t *l = conns->next; l != conns; l = l->next) {
        http_conn_t *c = H2O_STRUCT_FROM_MEMBER(http_conn_t, link, l);
        if (!c->swept || c->shut)
            continue;
        uint64_t rx = c->received, pending = rx - c->consumed;
        if (pending > cfg->max_inflight_body ||
            (pending > 0 && c->addr != NULL && c->addr->pending_body > cfg->max_inflight_body_per_address)) {
            if (c->addr != NULL)
                c->addr->pending_body -= pending < c->addr->pending_body ? pending : c->addr->pending_body;
            cut(site, c, STATS_CUT_BODY, now);
            continue;
        }
        if (c->busy_since_ms != 0) {
            uint64_t limit = rx - c->received_at_progress > HTTP_HEADER_BYTES ? cfg->body_timeout_ms : cfg->header_timeout_ms;
            if (now - c->busy_since_ms >= limit) {
                cut(site, c, STATS_CUT_DEADLINE, now);
                continue;
            }
        }
        if (c->stalled_since_ms != 0 && now - c->stalled_since_ms >= cfg->send_timeout_ms)
            cut(site, c, STATS_CUT_DEADLINE, now);
    }
}

static unsigned method_bit(h2o_iovec_t m)
{
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")))
        return HTTP_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return HTTP_POST;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("DELETE")))
        return HTTP_DELETE;
    return 0;
}

static void allow_header(h2o_req_t *req, unsigned methods)
{
    char buf[32] = "";
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{HTTP_GET, "GET"}, {HTTP_POST, "POST"}, {HTTP_DELETE, "DELETE"}};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(names); i++) {
        if (methods & names[i].bit) {
            if (buf[0] != '\0')
                strcat(buf, ", ");
            strcat(buf, names[i].name);
        }
    }
    add_token_header(req, H2O_TOKEN_ALLOW, h2o_strdup(&req->pool, buf, SIZE_MAX).base);
}

/*
 * What a request's headers and framing can have cost on the wire: its decoded
 * header block (HPACK and Huffman only shrink it; HTTP/1 adds ": " and CRLF,
 * within the 32 per field) and a slack for the frames and TLS records around
 * it and the connection's own control frames.  Not a flat 16 KiB: a stream of
 * tiny requests would let that much body per request sit in h2o's buffers
 * uncounted.
 */
static uint64_t request_overhead(const h2o_req_t *req)
{
    uint64_t n = HTTP_REQUEST_SLACK + req->method.len + req->path.len + req->authority.len;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 32;
    return n;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_handler_t *h = (http_handler_t *)self;
    http_site_t *site = h->site;
    http_conn_t *conn = http_conn_of(req);
    if (conn != NULL) {
        conn->inflight++;
        conn->progress++;
        /* The body has left h2o's buffers for this request; the allowance covers its headers and framing. */
        conn->consumed += req->entity.len + request_overhead(req);
    }
    stats_add(&site->slot->in_flight, 1);
    if (conn != NULL && conn->shut) {
        static const char body[] =
            "{\"error\":\"connection_cut\",\"message\":\"this connection was cut for abuse; open a new one\"}";
        http_send_json(req, 429, body, sizeof(body) - 1);
        return 0;
    }

    /* path_normalized has no query string and resolved dot segments. */
    h2o_iovec_t path = req->path_normalized;
    const http_route_t *route = NULL;
    for (size_t i = 0; i < site->n_routes; i++) {
        if (h2o_memis(path.base, path.len, site->routes[i].path, strlen(site->routes[i].path))) {
            route = &site->routes[i];
            break;
        }
    }
    if (route == NULL || !(route->flags & h->listener_flag)) {
        http_send_error(req, 404, "not_found", "no such endpoint: %.*s (the MCP endpoint is POST /api/mcp)",
                        (int)(path.len > 200 ? 200 : path.len), path.base);
        return 0;
    }
    if (!(method_bit(req->method) & route->methods)) {
        allow_header(req, route->methods);
        http_send_error(req, 405, "method_not_allowed", "%.*s does not accept %.*s", (int)path.len, path.base,
                        (int)(req->method.len > 16 ? 16 : req->method.len), req->method.base);
        return 0;
    }
    /*
     * h2o's own limit is set above max_request_body (see worker.c) so that the
     * usual oversize body reaches us and gets a JSON 413 on HTTP/1 and HTTP/2
     * alike; only bodies past h2o's limit are refused by h2o itself.
     */
    if (req->entity.base != NULL && req->entity.len > site->cfg->max_request_body) {
        http_send_error(req, 413, "body_too_large", "request body over %zu bytes (max_request_body)", site->cfg->max_request_body);
        return 0;
    }
    route->serve(route->data, req);
    return 0;
}

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

/* An access log line under construction; appends past its end are cut. */
typedef struct line {
    char *p, *end;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    if (n > (size_t)(l->end - l->p))
        n = (size_t)(l->end - l->p);
    memcpy(l->p, s, n);
    l->p += n;
}

/* What put_clean() writes for each byte: printable ASCII but '"' as itself, anything else as '?' (set at registration). */
static char log_byte[256];

static void log_bytes_init(void)
{
    for (int c = 0; c < 256; c++)
        log_byte[c] = (c > 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
}

/* " " then at most max bytes of s, each through log_byte: no log forging. */
static void put_clean(line_t *l, const char *s, size_t len, size_t max)
{
    if (len > max)
        len = max;
    if ((size_t)(l->end - l->p) < len + 1)
        return;
    /* Through a local pointer: a store through l->p could change l->p itself as far as the compiler knows. */
    char *o = l->p;
    *o++ = ' ';
    for (size_t i = 0; i < len; i++)
        o[i] = log_byte[(unsigned char)s[i]];
    l->p = o + len;
}

/* v in decimal, zero-padded to at least width digits. */
static void put_uint(line_t *l, uint64_t v, int width)
{
    char b[20];
    size_t n = aly_fmt_u64(b, v);
    for (; (int)n < width; width--)
        put(l, "0", 1);
    put(l, b, n);
}

static int log_pid; /* this worker's, set at registration: getpid() is a system call */

/* RFC 3339 UTC time with milliseconds of now into out (>= 25 bytes); the part up to the seconds is formatted once a second. */
static void log_time(char *out, const struct timeval *now)
{
    static time_t cached_sec = -1;
    static char cached[20];
    if (now->tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&now->tv_sec, &tm);
        snprintf(cached, sizeof(cached), "%04u-%02u-%02uT%02u:%02u:%02u", (unsigned)(tm.tm_year + 1900) % 10000,
                 (unsigned)(tm.tm_mon + 1) % 100, (unsigned)tm.tm_mday % 100, (unsigned)tm.tm_hour % 100, (unsigned)tm.tm_min % 100,
                 (unsigned)tm.tm_sec % 100);
        cached_sec = now->tv_sec;
    }
    unsigned ms = (unsigned)(now->tv_usec / 1000) % 1000;
    memcpy(out, cached, 19);
    out[19] = '.';
    out[20] = (char)('0' + ms / 100);
    out[21] = (char)('0' + ms / 10 % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

/*
 * A response is delivered when it has a status and its whole announced body
 * was sent.  On HTTP/2, h2o counts bytes_sent only as DATA frames go to the
 * connection's output, so a stream reset before that (by the client, or by
 * h2o after a frame the client sent to make it) shows fewer.  HEAD answers
 * announce a length they never send; streams of unknown length only count
 * when they have no status.
 */
static int delivered(const h2o_req_t *req)
{
    if (req->res.status == 0)
        return 0;
    if (req->res.content_length == SIZE_MAX || h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        return 1;
    return req->bytes_sent >= req->res.content_length;
}

static void charge(http_site_t *site, http_conn_t *conn, h2o_req_t *req)
{
    if (conn->shut)
        return;
    if (delivered(req)) {
        if (conn->budget < site->cfg->reset_budget)
            conn->budget++;
    } else if (conn->budget > 1) {
        conn->budget--;
    } else {
        conn->budget = 0;
        cut(site, conn, STATS_CUT_RESETS, aly_now_ms());
    }
}

void http_client_text(h2o_req_t *req, char out[HTTP_CLIENT_TEXT])
{
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    strcpy(out, "-");
    if (sl != 0) {
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, HTTP_CLIENT_TEXT);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, HTTP_CLIENT_TEXT);
    }
}

static void write_line(h2o_req_t *req, http_conn_t *conn);

static void on_log(h2o_logger_t *self, h2o_req_t *req)
{
    http_site_t *site = ((http_logger_t *)self)->site;
    http_conn_t *conn = http_conn_of(req);
    if (conn != NULL) {
        if (conn->inflight > 0)
            conn->inflight--;
        conn->responses++;
        conn->progress++;
        charge(site, conn, req);
    }
    stats_add(&site->slot->in_flight, -1);
    stats_add(&site->slot->requests[stats_status_index(req->res.status)], 1);
    write_line(req, conn);
}

/*
 * A request h2o answered itself before any path ran (its own 413 for a body
 * over the limit it enforces while reading, a 400 for a request it cannot
 * parse): bound to the host's fallback path, never counted in flight, so
 * only counted by status and logged.
 */
static void on_log_refused(h2o_logger_t *self, h2o_req_t *req)
{
    http_site_t *site = ((http_logger_t *)self)->site;
    stats_add(&site->slot->requests[stats_status_index(req->res.status)], 1);
    write_line(req, http_conn_of(req));
}

static void write_line(h2o_req_t *req, http_conn_t *conn)
{
    if (!log_access_enabled())
        return;

    /* Assembled by hand: this runs once per request, and snprintf of eleven fields was a tenth of a worker's time. */
    char line[1400], own[HTTP_CLIENT_TEXT];
    line_t l = {line, line + sizeof(line)};
    struct timeval now;
    gettimeofday(&now, NULL);
    log_time(l.p, &now);
    l.p += 24;
    /* The peer's address as text, once per connection (inet_ntop prints with sprintf). */
    char *client = conn != NULL ? conn->client : own;
    if (conn == NULL || client[0] == '\0')
        http_client_text(req, client);
    put(&l, " ", 1);
    put(&l, client, strlen(client));
    h2o_iovec_t principal = log_field(req, "principal"), rpc = log_field(req, "rpc");
    put_clean(&l, principal.base, principal.len, 160);
    put_clean(&l, req->method.base, req->method.len, 23);
    put_clean(&l, req->path.base, req->path.len, 511);
    put_clean(&l, rpc.base, rpc.len, 160);
    int64_t usec = (int64_t)(now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1000000 +
                   (now.tv_usec - req->timestamps.request_begin_at.tv_usec);
    if (usec < 0)
        usec = 0;
    put(&l, " ", 1);
    put_uint(&l, (uint64_t)req->res.status, 1);
    put(&l, " ", 1);
    put_uint(&l, req->bytes_sent, 1);
    put(&l, " ", 1);
    put_uint(&l, (uint64_t)usec / 1000, 1);
    put(&l, ".", 1);
    put_uint(&l, (uint64_t)usec % 1000, 3);
    const char *proto = req->version >= 0x200 ? " HTTP/2 " : req->version == 0x101 ? " HTTP/1.1 " : " HTTP/1.0 ";
    put(&l, proto, strlen(proto));
    put_uint(&l, (uint64_t)log_pid, 1);
    log_access_line(line, (size_t)(l.p - line));
}

static h2o_hostconf_t *register_host(h2o_globalconf_t *conf, const char *name, http_site_t *site, unsigned flag)
{
    h2o_hostconf_t *host = h2o_config_register_host(conf, h2o_iovec_init(name, strlen(name)), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    http_handler_t *h = (http_handler_t *)h2o_create_handler(pathconf, sizeof(*h));
    h->super.on_req = on_req;
    h->site = site;
    h->listener_flag = flag;
    http_logger_t *lg = (http_logger_t *)h2o_create_logger(pathconf, sizeof(*lg));
    lg->super.log_access = on_log;
    lg->site = site;
    lg = (http_logger_t *)h2o_create_logger(&host->fallback_path, sizeof(*lg));
    lg->super.log_access = on_log_refused;
    lg->site = site;
    return host;
}

void http_register(h2o_globalconf_t *conf, http_site_t *site, h2o_hostconf_t ***public_hosts, h2o_hostconf_t ***admin_hosts)
{
    static h2o_hostconf_t *pub[2], *adm[2];
    log_pid = (int)getpid();
    log_bytes_init();
    pub[0] = register_host(conf, "default", site, HTTP_PUBLIC);
    adm[0] = register_host(conf, "admin", site, HTTP_ADMIN);
    pub[1] = adm[1] = NULL;
    *public_hosts = pub;
    *admin_hosts = adm;
}

/*
 * The HTTP layer: bytes on the wire and nothing above them.  It routes each
 * request over a table its caller passes in (exact paths, allowed methods,
 * which listeners reach a route), refuses what no route takes (404, 405,
 * 413) with a JSON body, counts requests and connections, writes the access
 * log line of every request, and offers the JSON send helpers the layers
 * above answer with.  It names no endpoint: the worker owns the route table.
 */
#ifndef ALY_HTTP_H
#define ALY_HTTP_H

#include <h2o.h>
#include <jansson.h>

#include "aly/config.h"
#include "aly/guard.h"
#include "aly/stats.h"

/* Methods a route accepts. */
enum {
    HTTP_GET = 1 << 0,
    HTTP_POST = 1 << 1,
    HTTP_DELETE = 1 << 2,
};

/* Where a route is reachable. */
enum {
    HTTP_PUBLIC = 1 << 0, /* on the public listeners */
    HTTP_ADMIN = 1 << 1,  /* on metrics_listen */
};

typedef void (*http_serve_fn)(void *data, h2o_req_t *req);

typedef struct http_route {
    const char *path; /* matched exactly against the normalised path (no query string) */
    unsigned methods;
    unsigned flags;
    http_serve_fn serve;
    void *data;
} http_route_t;

/* One worker's HTTP surface; the caller keeps it (and its routes) alive for the worker's life. */
typedef struct http_site {
    const aly_config_t *cfg;
    stats_slot_t *slot;
    guard_t *guard; /* the worker's per-address table: strikes for the connections cut here */
    const http_route_t *routes;
    size_t n_routes;
} http_site_t;

/*
 * Registers the public host and the admin host on conf.  *public_hosts and
 * *admin_hosts receive NULL-terminated host lists for h2o_accept_ctx_t.hosts.
 */
void http_register(h2o_globalconf_t *conf, http_site_t *site, h2o_hostconf_t ***public_hosts, h2o_hostconf_t ***admin_hosts);

/*
 * A connection as the HTTP layer accounts it.  The acceptor allocates one per
 * socket, keeps it in sock->on_close.data and calls http_conn_start; the HTTP
 * layer counts the requests it hands to a route and the responses it logs,
 * so a draining worker can tell an idle connection from a busy one, and
 * keeps the connection's abuse budgets:
 *
 * - resets: a request that reached a route but whose response was not
 *   delivered (no status, or fewer body bytes sent than announced: the
 *   client reset the stream, or made the server reset it) spends one unit of
 *   reset_budget; a delivered response earns one back, up to reset_budget.
 * - body in flight: bytes read that have not gone into a request handed to a
 *   route (h2o buffers whole bodies before any route runs, for every open
 *   HTTP/2 stream at once), at most max_inflight_body per
 *   connection and max_inflight_body_per_address over an address's
 *   connections on this worker.
 * - deadlines: once a connection with no request in a route sends anything,
 *   a request must reach a route within header_timeout (body_timeout once it
 *   has sent more than a header block, HTTP_HEADER_BYTES).
 *
 * Bytes received are the kernel's count for the TCP connection (TCP_INFO,
 * TLS records included), read by the sweep only: h2o's sock->bytes_read
 * holds the size of the last read, not a total.  A connection over a budget
 * is cut: shutdown(2) of its socket (h2o sees the
 * end of input and closes it through its own path), a 429 for any request
 * h2o still hands over, and a strike for its address (aly/guard.h).
 */
#define HTTP_HEADER_BYTES (16 * 1024)
#define HTTP_REQUEST_SLACK 512 /* per request, beyond its decoded headers and body: framing, TLS records, control frames */
#define HTTP_SWEEP_MS 100      /* how often http_sweep should run */

/* Room for a peer address as text (INET6_ADDRSTRLEN). */
#define HTTP_CLIENT_TEXT 46
/* The request's peer address as text into out ("-" when unknown); inet_ntop prints with sprintf, so not per request. */
void http_client_text(h2o_req_t *req, char out[HTTP_CLIENT_TEXT]);

typedef struct http_conn {
    h2o_linklist_t link; /* the acceptor's list */
    h2o_socket_t *sock;
    unsigned inflight; /* requests handed to a route and not yet logged */
    unsigned responses;
    int shut;
    guard_addr_t *addr;            /* the peer's row in the guard, or NULL (untracked) */
    unsigned budget;               /* undelivered requests still allowed */
    unsigned progress;             /* requests handed to a route plus responses logged */
    unsigned progress_at_sweep;    /* progress at the previous sweep */
    uint64_t consumed;             /* bytes that went into requests handed to a route, at most received */
    uint64_t received_at_progress; /* bytes received when the sweep last saw progress */
    uint64_t busy_since_ms;        /* when the sweep first saw bytes after that (0: none yet) */
    uint64_t received;             /* bytes received, as of the last sweep */
    uint64_t acked;                /* bytes of ours the peer acknowledged, as of the last sweep */
    uint64_t stalled_since_ms;     /* when the sweep first saw our bytes waiting and none acknowledged (0: not stalled) */
    int swept;                     /* received is current (the last sweep could read it) */
    char client[HTTP_CLIENT_TEXT]; /* the peer's address as the access log shows it ("" until the first line) */
} http_conn_t;

/* Sets up c's accounting for sock, accepted now from the row addr (may be NULL). */
void http_conn_start(http_site_t *site, http_conn_t *c, h2o_socket_t *sock, guard_addr_t *addr);
/* The connection of req, or NULL when the socket is gone. */
http_conn_t *http_conn_of(h2o_req_t *req);
/* 1 when no request is in a route and nothing was received since the last request or response. */
int http_conn_quiet(const http_conn_t *c);
/* Applies the body-in-flight and deadline budgets to every connection on conns (linked by http_conn_t.link). */
void http_sweep(http_site_t *site, h2o_linklist_t *conns, uint64_t now);

/* Notes a field for the access log line of req: "principal" or "rpc" (copied into the request's pool). */
void http_log_note(h2o_req_t *req, const char *key, const char *value, size_t len);

/* Adds a response header: name (lower case) must outlive the request; value is copied into its pool. */
void http_add_header(h2o_req_t *req, const char *name, const char *value);

/* 1 when the peer of req is a loopback address. */
int http_is_loopback(h2o_req_t *req);

/* The reason phrase of an HTTP status alyd sends ("Bad Request" for a 4xx it does not name, "Internal Server Error" for a 5xx);
   every sender below takes it from the status. */
const char *http_reason(int status);
/* Sends body (JSON text) with status; the body is copied. */
void http_send_json(h2o_req_t *req, int status, const char *body, size_t len);
/* The same without copying body: it must stay unchanged until the request is disposed. */
void http_send_json_kept(h2o_req_t *req, int status, const char *body, size_t len);
/* Sends obj (stolen) serialised; a 500 when it cannot be serialised. */
void http_send_json_object(h2o_req_t *req, int status, json_t *obj);
/*
 * 1 when the request's Host (authority) is one of allowed_hosts, with or
 * without the scheme's default port: the DNS-rebinding guard of every
 * endpoint a browser reaches (/api/mcp and the OAuth pages).
 */
int http_host_allowed(const aly_config_t *cfg, h2o_req_t *req);
/* Sends {"error":code,"message":msg} with status. */
void http_send_error(h2o_req_t *req, int status, const char *code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Sends a JSON-RPC error response with id null: {"jsonrpc":"2.0","id":null,"error":{code,message[,data]}}; data stolen. */
void http_send_rpc_error(h2o_req_t *req, int status, int code, const char *message, json_t *data);

#endif

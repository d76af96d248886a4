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
 * socket and keeps it in sock->on_close.data; the HTTP layer counts the
 * requests it hands to a route and the responses it logs, so a draining
 * worker can tell an idle connection from a busy one.
 */
typedef struct http_conn {
    h2o_linklist_t link; /* the acceptor's list */
    h2o_socket_t *sock;
    unsigned inflight;   /* requests handed to a route and not yet logged */
    size_t read_at_idle; /* sock->bytes_read when the last response was logged */
    unsigned responses;
    int shut;
} http_conn_t;

/* The connection of req, or NULL when the socket is gone. */
http_conn_t *http_conn_of(h2o_req_t *req);
/* 1 when no request is in a route and nothing was read since the last response. */
int http_conn_quiet(const http_conn_t *c);

/* Notes a field for the access log line of req: "principal" or "rpc" (copied into the request's pool). */
void http_log_note(h2o_req_t *req, const char *key, const char *value, size_t len);

/* Adds a response header: name (lower case) must outlive the request; value is copied into its pool. */
void http_add_header(h2o_req_t *req, const char *name, const char *value);

/* 1 when the peer of req is a loopback address. */
int http_is_loopback(h2o_req_t *req);

/* Sends body (JSON text) with status; the body is copied. */
void http_send_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len);
/* Sends obj (stolen) serialised; a 500 when it cannot be serialised. */
void http_send_json_object(h2o_req_t *req, int status, const char *reason, json_t *obj);
/* Sends {"error":code,"message":msg} with status. */
void http_send_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Sends a JSON-RPC error response with id null: {"jsonrpc":"2.0","id":null,"error":{code,message[,data]}}; data stolen. */
void http_send_rpc_error(h2o_req_t *req, int status, const char *reason, int code, const char *message, json_t *data);

#endif

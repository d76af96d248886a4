/*
 * Client-ID metadata documents (CIMD): an OAuth client_id that is an https
 * URL names a JSON document describing the client.  This module fetches such
 * documents for the authorization server, from the worker's own event loop,
 * and keeps them in a per-process cache.  It never parses the document: the
 * caller checks that its client_id equals the URL and that the redirect URI
 * is one it lists.
 *
 * Transport: h2o's own HTTP/1 client (h2o_http1client_connect over TLS) on the
 * caller's loop.  No thread of ours and no second event library: the fetch is
 * just more sockets and timers on the loop that already serves requests.  Name
 * resolution goes through h2o's resolver threads (h2o_hostinfo_getaddr), whose
 * answers come back to the loop through a multithread queue, so a slow DNS
 * server holds up no request, only the fetches waiting for its answer.
 *
 * Trust: the peer's chain is verified against oauth_cimd_ca_file, or the
 * system's trust store when that directive is not set, and its certificate
 * must name the URL's host (OpenSSL's own host check, set on a TLS context
 * made for that host: h2o 2.2.5 skips its own name check when a TLS 1.3
 * handshake ends with bytes still to send, which is the usual case).
 *
 * Limits, each a refusal rather than a partial document (the URL's at once
 * with -1, the others through the callback's err):
 *   - the URL: https only, lowercase scheme, no user info, no fragment, no "."
 *     or ".." path segment, a path, at most OAUTH_CIMD_URL_MAX bytes, and a
 *     host listed in oauth_cimd_allow (exact, case-insensitive);
 *   - any 3xx answer (redirects are not followed), any status but 200;
 *   - a Content-Type that is not application/json;
 *   - a body over OAUTH_CIMD_MAX_DOC bytes (a Content-Length over it is refused
 *     before the body is read; a chunked or unsized body is cut off the moment
 *     it passes the limit);
 *   - OAUTH_CIMD_TIMEOUT_MS from the call to the last body byte, resolution,
 *     connect and handshake included (a server trickling bytes gets no more).
 *
 * Cache: keyed by the exact URL, one per process (a worker has one loop).  A
 * document lives for its Cache-Control max-age, at most OAUTH_CIMD_MAX_AGE_S,
 * or OAUTH_CIMD_DEFAULT_AGE_S without one; no-store, no-cache and max-age=0
 * keep it out (there is no revalidation).  At most OAUTH_CIMD_CACHE_ENTRIES
 * documents: a new one replaces an expired one, else the one closest to
 * expiry.  Failures are not cached.  Concurrent requests for a URL share one
 * fetch; at most OAUTH_CIMD_MAX_FETCHES different URLs are fetched at once.
 */
#ifndef ALY_OAUTH_CIMD_H
#define ALY_OAUTH_CIMD_H

#include <stddef.h>
#include <stdint.h>

#include <h2o.h>

#include "aly/config.h"

#define OAUTH_CIMD_MAX_DOC 5120
#define OAUTH_CIMD_TIMEOUT_MS 5000
#define OAUTH_CIMD_URL_MAX 1024
#define OAUTH_CIMD_MAX_AGE_S 86400
#define OAUTH_CIMD_DEFAULT_AGE_S 300
#define OAUTH_CIMD_CACHE_ENTRIES 64
#define OAUTH_CIMD_MAX_FETCHES 16

/*
 * Starts (or joins) a fetch of the client-ID metadata document at url on
 * loop; cb(ctx, doc, len, NULL) with the raw JSON document, or
 * cb(ctx, NULL, 0, err) with a short reason, later on the same loop.  A cached
 * valid document calls back synchronously before returning 0.  -1 = refused at
 * once (not https, host not allowed, URL too long or malformed, already
 * OAUTH_CIMD_MAX_FETCHES other URLs in flight, no usable CA file), with cb not
 * called.
 *
 * doc is NUL-terminated (len excludes the NUL) and valid only during the
 * callback: copy what must outlive it.  err is a static or short-lived string,
 * also valid only during the callback.  Waiters of one fetch are called in the
 * order they asked; a callback may call oauth_cimd_fetch and
 * oauth_cimd_cancel.  cfg is read during this call only (oauth_cimd_allow,
 * oauth_cimd_ca_file).  Every call in a process must pass the same loop
 * (a worker's); another loop is refused with -1.
 */
int oauth_cimd_fetch(h2o_loop_t *loop, const aly_config_t *cfg, const char *url,
                     void (*cb)(void *ctx, const char *doc, size_t len, const char *err), void *ctx);

/*
 * Loads the CA certificates and makes the TLS context of every host in
 * oauth_cimd_allow, so that the first fetch does not spend tens of
 * milliseconds of the loop parsing the system's CA bundle: for a worker to
 * call once before it serves.  Optional (the first fetch of a host does it
 * otherwise).  -1 when a CA file cannot be loaded (logged); fetches then
 * refuse those hosts.
 */
int oauth_cimd_prepare(const aly_config_t *cfg);

/* Forget a pending callback (the requester went away); the fetch itself may go on and fill the cache. */
void oauth_cimd_cancel(void *ctx);

/* Milliseconds the cached document for url has left, 0 when there is none (for tests and diagnostics). */
uint64_t oauth_cimd_cache_ttl(const char *url);

/*
 * Stops every fetch without calling its waiters, empties the cache and frees
 * the TLS contexts and CA stores, for a worker's exit and for tests; not from a callback.
 * The loop binding and the resolver queue stay: one of h2o's resolver threads
 * may still be answering a cancelled lookup into that queue.
 */
void oauth_cimd_dispose(void);

#endif

/*
 * The MCP engine: Streamable HTTP on /api/mcp and JSON-RPC dispatch.
 *
 * POST /api/mcp carries one JSON-RPC message (a batch for protocol
 * 2025-03-26).  Requests are dispatched through a method table (mcp_method.c)
 * to the registry; a call completes at once or later, and may emit
 * notifications (progress, log messages) before it completes.  The answer is
 * application/json unless the client accepts text/event-stream and a
 * notification comes before the response, in which case it becomes an SSE
 * stream that ends after the last response.  Sessions live in the durable
 * store, so any worker serves any session.
 *
 * Two protocol eras share the endpoint: the legacy one (initialize,
 * sessions, GET/DELETE, 2025-03-26 batches) and the modern one (2026-07-28:
 * every request carries its own _meta, no session); mcp_modern.c decides per
 * POST.
 *
 * Files: mcp_http.c (the HTTP front: Origin/Host guard, GET/DELETE/POST),
 * mcp_exchange.c (one POST's lifetime and output, the call API of
 * aly/handler.h), mcp_method.c (JSON-RPC checks, the method table,
 * cancellation), mcp_modern.c (the modern era's classification, checks,
 * discover and requestState), mcp_session.c (session records), mcp_client.c
 * (requests to the client and their hand-over between workers; input_required
 * in both eras).
 */
#ifndef ALY_MCP_H
#define ALY_MCP_H

#include <h2o.h>
#include <jansson.h>

#include "aly/config.h"
#include "aly/gate.h"
#include "aly/handler.h"
#include "aly/store.h"

/* Protocol versions, newest first. */
extern const char *const mcp_protocol_versions[];
extern const size_t mcp_protocol_count;

/* What the engine needs of its worker; one per worker, outliving every request. */
typedef struct mcp_ctx {
    const aly_config_t *cfg;
    store_t *store;
    h2o_loop_t *loop;
    gate_t *gate;
} mcp_ctx_t;

/* Serves POST, GET and DELETE /api/mcp (Origin/Host checks, credential, session, dispatch); ctx is an mcp_ctx_t. */
void mcp_serve(void *ctx, h2o_req_t *req);

/* Ends open GET streams so a draining worker can exit. */
void mcp_close_streams(void);

/*
 * Checks one JSON-RPC message as the dispatcher does before calling a method:
 * jsonrpc "2.0", a string method (or a response: result/error with an id), an
 * id that is a string or integer, params an object.  Returns 0 for a request
 * or notification, 1 for a response, or -1 with *code and *why set.  Pure:
 * touches no state (the fuzzers call it).
 */
int mcp_message_check(json_t *msg, int *code, const char **why);

#endif

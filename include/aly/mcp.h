/*
 * The MCP engine: Streamable HTTP transport and JSON-RPC dispatch (SPEC §2).
 *
 * POST /api/mcp carries one JSON-RPC message (a batch for protocol
 * 2025-03-26).  Requests are dispatched through a method table; a request's
 * handler completes it at once or later (a tool may wait on a timer), and may
 * emit notifications (progress, log messages) before it completes.  The
 * answer is application/json unless the client accepts text/event-stream and
 * a notification comes before the response, in which case the answer becomes
 * an SSE stream that ends after the last response.
 *
 * Sessions live in the shared store, so any worker serves any session.
 */
#ifndef ALY_MCP_H
#define ALY_MCP_H

#include <jansson.h>

#include "aly/auth.h"
#include "aly/http.h"

/* Protocol versions, newest first. */
extern const char *const mcp_protocol_versions[];
extern const size_t mcp_protocol_count;

/* Serves POST, GET and DELETE /api/mcp (Origin/Host checks, credential, session, dispatch). */
void mcp_serve(http_ctx_t *hctx, h2o_req_t *req);

/* Ends open GET streams so a draining worker can exit. */
void mcp_close_streams(void);

/* ---- what a tool, resource or prompt handler sees ---- */

typedef struct mcp_call mcp_call_t;

typedef enum { MCP_DONE = 0, MCP_PENDING = 1 } mcp_status_t;

const principal_t *mcp_call_principal(const mcp_call_t *call);
store_t *mcp_call_store(const mcp_call_t *call);
h2o_loop_t *mcp_call_loop(const mcp_call_t *call);
/* The "_meta" object of the request's params, or NULL. */
json_t *mcp_call_meta(const mcp_call_t *call);
/* 1 once notifications/cancelled named this request (the response will be dropped). */
int mcp_call_cancelled(const mcp_call_t *call);

/* Emits notifications/progress when the request carried _meta.progressToken (no-op otherwise). */
void mcp_call_progress(mcp_call_t *call, double progress, double total, const char *message);
/* Emits notifications/message when level is at or above the session's level; data is stolen. */
void mcp_call_log(mcp_call_t *call, const char *level, const char *logger, json_t *data);

/*
 * Sends a request to the client (sampling/createMessage, elicitation/create)
 * on this call's event stream.  cb runs once with the client's result or
 * error, or with an error after REPLY_TIMEOUT; the client may post its reply
 * to any worker.  Returns -1 when the client cannot receive requests (it did
 * not accept text/event-stream).
 */
typedef void (*mcp_reply_fn)(mcp_call_t *call, json_t *result, json_t *error);
int mcp_call_request(mcp_call_t *call, const char *method, json_t *params, mcp_reply_fn cb);

/* Completes the request with a result already serialised as JSON text (not copied beyond the call). */
void mcp_call_result_text(mcp_call_t *call, const char *result, size_t len);

/*
 * While set, mcp_call_result() also hands a malloc'd copy of the serialised
 * result to capture (the registry's response cache).  Clear it before
 * returning if the call is still pending.
 */
typedef struct mcp_capture {
    char *text;
    size_t len;
    int is_error;
} mcp_capture_t;
void mcp_call_capture(mcp_call_t *call, mcp_capture_t *capture);

/* Completes the request with a result (stolen) or a JSON-RPC error (data stolen, may be NULL). */
void mcp_call_result(mcp_call_t *call, json_t *result);
void mcp_call_error(mcp_call_t *call, int code, const char *message, json_t *data);

/* JSON-RPC error codes. */
#define RPC_PARSE_ERROR (-32700)
#define RPC_INVALID_REQUEST (-32600)
#define RPC_METHOD_NOT_FOUND (-32601)
#define RPC_INVALID_PARAMS (-32602)
#define RPC_INTERNAL_ERROR (-32603)
#define RPC_RESOURCE_NOT_FOUND (-32002)

#endif

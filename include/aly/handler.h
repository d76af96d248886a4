/*
 * What a tool, resource or prompt handler sees of an MCP request: the
 * contract between the MCP engine (mcp_*.c, which implements it) and
 * everything that answers a call (registry.c, tools_*.c, the test fixtures).
 * Nothing here names HTTP or h2o: a handler reads its principal and store,
 * may emit progress and log notifications, may ask the client something, and
 * completes the call exactly once with a result or an error.
 *
 * Lifetime: a call stays valid until it is completed (mcp_call_result*,
 * mcp_call_error); after that the pointer must not be used.  A handler that
 * cannot complete at once returns MCP_PENDING and completes later from a
 * callback (mcp_call_request's reply).
 */
#ifndef ALY_HANDLER_H
#define ALY_HANDLER_H

#include <jansson.h>

#include "aly/auth.h"
#include "aly/config.h"
#include "aly/rpc.h"
#include "aly/store.h"

typedef struct mcp_call mcp_call_t;

typedef enum { MCP_DONE = 0, MCP_PENDING = 1 } mcp_status_t;

const principal_t *mcp_call_principal(const mcp_call_t *call);
store_t *mcp_call_store(const mcp_call_t *call);
/* The worker's configuration (limits such as list_scan_budget); valid for the call's lifetime. */
const aly_config_t *mcp_call_config(const mcp_call_t *call);
/* The "_meta" object of the request's params, or NULL. */
json_t *mcp_call_meta(const mcp_call_t *call);
/* 1 once notifications/cancelled named this request or the client went away (the response will be dropped). */
int mcp_call_cancelled(const mcp_call_t *call);

/* Emits notifications/progress when the request carried _meta.progressToken (no-op otherwise). */
void mcp_call_progress(mcp_call_t *call, double progress, double total, const char *message);
/* Emits notifications/message when level is at or above the session's level; data is stolen. */
void mcp_call_log(mcp_call_t *call, const char *level, const char *logger, json_t *data);

/*
 * Sends a request to the client (sampling/createMessage, elicitation/create)
 * on this call's event stream; params is stolen.  cb runs once with the
 * client's result or error, or with an error after the reply timeout (60 s);
 * the client may post its reply to any worker.  Returns -1 when the client
 * cannot receive requests (it did not accept text/event-stream).
 */
typedef void (*mcp_reply_fn)(mcp_call_t *call, json_t *result, json_t *error);
int mcp_call_request(mcp_call_t *call, const char *method, json_t *params, mcp_reply_fn cb);

/*
 * Multi round-trip requests: one handler shape for both protocol eras.  A
 * tool, prompt or resource handler that needs the client's input looks for
 * the answer with mcp_call_input(); when it is missing it completes the call
 * with mcp_call_input_required(), naming each question by a key.  On a modern
 * (2026-07-28) request that becomes an "input_required" result whose
 * requestState (the handler's state, integrity-protected and bound to the
 * principal, the method and its params) comes back on the client's retry; on
 * a legacy session the questions go to the client as real requests on the
 * call's event stream and the handler runs again with the answers.
 */
/* The client's answer to the question named key, or NULL (borrowed). */
json_t *mcp_call_input(const mcp_call_t *call, const char *key);
/* The state the handler passed to the previous mcp_call_input_required of this request, verified; or NULL (borrowed). */
json_t *mcp_call_state(const mcp_call_t *call);
/*
 * 1 when the client declared the capability ("elicitation" meaning its form mode, "sampling", "roots"): modern, in the
 * request; legacy, at initialize.
 */
int mcp_call_client_can(const mcp_call_t *call, const char *capability);
/* 1 when this run of the call carries answers (inputResponses, a requestState, or a legacy round's replies). */
int mcp_call_answering(const mcp_call_t *call);
/*
 * Completes the call asking for input.  requests (stolen) is an object of
 * key -> {"method": "elicitation/create" | "sampling/createMessage" |
 * "roots/list", "params": {...}}; state (stolen, may be NULL) is any JSON the
 * handler wants back.  The handler returns what this returns, and must not
 * use the call afterwards (on a modern request it has completed).
 */
mcp_status_t mcp_call_input_required(mcp_call_t *call, json_t *requests, json_t *state);

/* Completes the call with a result (stolen) or a JSON-RPC error (data stolen, may be NULL). */
void mcp_call_result(mcp_call_t *call, json_t *result);
void mcp_call_error(mcp_call_t *call, int code, const char *message, json_t *data);
/*
 * The call failed because a shared engine is unreachable (the store, in
 * cluster mode): a JSON-RPC internal error with data.retry_after_seconds,
 * and a single JSON answer becomes HTTP 503 with Retry-After.  The client
 * is told only that: the engine's own error (hosts, users) is the log's.
 */
void mcp_call_unavailable(mcp_call_t *call, unsigned retry_after_s);
/* Completes the call with a result already serialised as JSON text (copied). */
void mcp_call_result_text(mcp_call_t *call, const char *result, size_t len);

/*
 * While set, mcp_call_result() also hands a malloc'd copy of the serialised
 * result to capture (the registry's result cache).  Clear it before returning
 * if the call is still pending.
 */
typedef struct mcp_capture {
    char *text;
    size_t len;
    int is_error;
} mcp_capture_t;
void mcp_call_capture(mcp_call_t *call, mcp_capture_t *capture);

/* Result builders. {"content":[{"type":"text","text":text}]} plus isError when is_error. */
json_t *mcp_text_result(const char *text, int is_error);
/* {"content":[{"type":"text","text":<json>}],"structuredContent":structured}; structured is stolen. */
json_t *mcp_structured_result(json_t *structured);

#endif

/*
 * Shared by the files of the MCP engine (mcp_*.c) and nothing else: the
 * exchange (one POST or GET on /api/mcp), the call, and the functions each
 * file offers the others.  See aly/mcp.h for which file owns what.
 */
#ifndef ALY_MCP_INTERNAL_H
#define ALY_MCP_INTERNAL_H

#include "aly/mcp.h"
#include "aly/record.h"
#include "aly/rpc_parse.h"

#define MCP_MAX_BATCH 100

typedef struct mcp_buf {
    char *data;
    size_t len, cap;
    int fixed; /* data is not the heap's (a stack buffer sized in advance): outgrowing it is a bug, never a realloc */
} mcp_buf_t;

void mcp_buf_append(mcp_buf_t *b, const char *s, size_t n);

typedef enum { OUT_UNDECIDED, OUT_JSON, OUT_SSE } mcp_out_mode_t;

/*
 * One POST (or GET stream).  Lives in malloc'd memory with a reference count
 * (one per live call, one for the HTTP request), because a client may go away
 * while a call is pending: h2o tells us through a dispose callback on the
 * request's pool, after which nothing touches the request.
 */
typedef struct mcp_exchange {
    h2o_generator_t gen;
    h2o_req_t *req; /* NULL once h2o disposed the request */
    int client_gone;
    mcp_ctx_t *ctx;
    principal_t principal;
    int has_session;
    session_record_t session;
    int protocol; /* index into mcp_protocol_versions */
    /* A modern (2026-07-28) request: no session, hints on results, logging only at _meta's logLevel. */
    int modern;
    json_t *client_caps; /* modern: the request's clientCapabilities */
    int log_min;         /* modern: index of _meta's logLevel, -1 when it asked for no logs */
    int accepts_sse;
    int batch;
    unsigned pending; /* calls not completed */
    int dispatching;  /* the body's messages are still being dispatched */
    unsigned refs;
    mcp_buf_t answer; /* responses collected while the answer may still be JSON, comma-separated */
    size_t n_answers;
    /* Offset and length of each collected answer (to replay them as SSE events): inline for the common few,
       past that a heap array of MCP_MAX_BATCH + 1 (a batch's). */
    size_t answer_inline[4][2];
    size_t (*answer_at)[2];
    int protocol_error_code;  /* of a message that was not a valid request */
    int status;               /* HTTP status of a JSON answer */
    unsigned retry_after_s;   /* a 503 answer: its Retry-After */
    scope_set_t scope_needed; /* a 403 answer: the scope that was missing */
    mcp_out_mode_t out;
    mcp_buf_t queued, inflight;
    int sending, finishing, final_sent;
    /* GET streams */
    int is_stream;
    int stream_linked;
    h2o_linklist_t stream_link;
    h2o_timeout_entry_t keepalive;
} mcp_exchange_t;

struct mcp_call {
    mcp_exchange_t *x;
    json_t *id;
    json_t *meta;
    mcp_capture_t *capture;
    int done;
    int cancelled;
    h2o_linklist_t link; /* pending calls, for notifications/cancelled */
    /* Multi round-trip requests (aly/handler.h). */
    const char *method;       /* modern: the method, bound into requestState */
    json_t *params;           /* the request's params (digest for requestState; rerun on legacy sessions) */
    json_t *name, *arguments; /* read flat: params' members, from which mcp_call_params() builds params */
    int cache_scope;          /* modern results: 0 no caching hints, else MCP_CACHE_* */
    int input_required;       /* the result is an input_required one */
    json_t *inputs;           /* the client's answers, by key */
    json_t *state;            /* the verified state of the previous round */
    json_t *asking;           /* legacy: questions still to send, by key */
    char *asking_key;
    unsigned rounds;
    /* legacy: runs the method again with the answers (the registry re-checks and re-enters the handler) */
    void (*rerun)(mcp_call_t *call, json_t *params);
};

enum { MCP_CACHE_NONE, MCP_CACHE_PUBLIC, MCP_CACHE_PRIVATE };

/* ---- mcp_exchange.c ---- */
mcp_exchange_t *mcp_exchange_new(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p);
void mcp_exchange_release(mcp_exchange_t *x);
/* Switches the answer to an SSE stream (status, headers, start of the response). */
void mcp_exchange_start_sse(mcp_exchange_t *x);
/* Sends what is queued when the previous send completed. */
void mcp_exchange_flush(mcp_exchange_t *x);
/* Finishes the exchange once no call is pending and dispatch has ended. */
void mcp_exchange_maybe_finish(mcp_exchange_t *x);
/* Emits a message (stolen) or its text: a response, or a notification / server request (may switch to SSE). */
void mcp_emit(mcp_exchange_t *x, json_t *msg, int is_response);
/* A new pending call of x for request id; params and meta (its _meta) are borrowed: the call holds its own references. */
mcp_call_t *mcp_call_new(mcp_exchange_t *x, json_t *id, json_t *params, json_t *meta);
/* The call's params; for a request read flat, built from its name and arguments on first use (NULL when it had neither). */
json_t *mcp_call_params(mcp_call_t *c);
/* The pending call of principal (and session, when x has one) with JSON-RPC id, or NULL. */
mcp_call_t *mcp_call_find(const mcp_exchange_t *x, json_t *id);

/* ---- mcp_modern.c ---- */
/* 1 when an MCP-Protocol-Version value names a modern revision (sorts at or after 2026-07-28). */
int mcp_modern_version(const char *v, size_t len);
/*
 * The request headers /api/mcp reads, found in one pass over the request's
 * headers (the first of each name); base NULL when absent.  method and name
 * are trimmed of spaces and tabs.
 */
typedef struct mcp_headers {
    h2o_iovec_t origin, version, session, method, name, accept;
} mcp_headers_t;
/*
 * Classifies one parsed POST body: returns 0 when it belongs to the legacy
 * era (the caller goes on as before), 1 when it was a modern request (served
 * or refused here).  body is NULL when it was read flat (rpc_parse_flat):
 * an object, v holding all that is read of it.
 */
int mcp_modern_route(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p, json_t *body, const rpc_view_t *v,
                     const mcp_headers_t *h, int accepts_sse);
/* The most bytes mcp_modern_result_head() appends. */
#define MCP_RESULT_HEAD_MAX 256
/* Appends the fields every modern result carries (resultType, caching hints, serverInfo), comma-terminated. */
void mcp_modern_result_head(const mcp_call_t *c, mcp_buf_t *b);
/* The requestState sealing state for c's principal, method and params; malloc'd. */
char *mcp_modern_state_seal(mcp_call_t *c, json_t *state);

/* ---- mcp_method.c ---- */
extern const char mcp_instructions[];
void mcp_dispatch(mcp_exchange_t *x, json_t *msg, const rpc_view_t *view); /* view: msg's, or NULL to find it */
/* mcp_message_check() with msg's members already found; msg NULL: read flat, so an object. */
int mcp_message_check_view(json_t *msg, const rpc_view_t *v, int *code, const char **why);
/* Index of a log level name ("debug" .. "emergency"), -1 when unknown. */
int mcp_log_level(const char *name);

/* ---- mcp_session.c ---- */
/* Creates and stores a session of x's principal for protocol pi and the client's MCP_CAP_* bits; fills x->session. */
int mcp_session_create(mcp_exchange_t *x, int pi, unsigned caps, aly_err_t *err);
int mcp_session_write(store_t *st, const session_record_t *s, aly_err_t *err);
/* 0 found and usable, 1 unknown/expired/another principal's, -1 store error. */
int mcp_session_load(store_t *st, const char *id, size_t len, const principal_t *p, uint64_t asked_ms, session_record_t *out);
void mcp_session_delete(store_t *st, const char *id);

/* ---- mcp_client.c ---- */
/* The MCP_CAP_* bits of a client's declared capabilities (initialize's, or a modern request's _meta). */
unsigned mcp_client_caps(const json_t *declared);

/* A response the client posted to one of our requests (msg has an "aly-" id). */
void mcp_client_reply(mcp_exchange_t *x, json_t *msg);
/* notifications/cancelled for target: abandons its request to the client, if any. */
void mcp_client_abandon(mcp_call_t *target);
/* notifications/cancelled for a request no local call has: tells the worker that waits on it, if any. */
void mcp_client_cancel_remote(mcp_exchange_t *x, json_t *id);

#endif

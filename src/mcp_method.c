/*
 * JSON-RPC dispatch: the checks every message passes, the method table
 * (Redis-style: the table is data, the registry below answers most rows),
 * the methods that belong to the protocol itself (initialize, ping,
 * logging/setLevel, resources/subscribe) and notifications/cancelled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/log.h"
#include "aly/mcp_internal.h"
#include "aly/registry.h"

static const char *const log_levels[] = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"};

int mcp_log_level(const char *name)
{
    for (size_t i = 0; name != NULL && i < ALY_ARRAY_SIZE(log_levels); i++)
        if (strcmp(log_levels[i], name) == 0)
            return (int)i;
    return -1;
}

const char mcp_instructions[] = "Operate an Aly commerce workspace: list sites, read and change products, fulfil orders, "
                                "read analytics. Lists are paged: pass next_cursor back to continue.";

static void do_initialize(mcp_call_t *call, json_t *params)
{
    mcp_exchange_t *x = call->x;
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    if (asked == NULL || !json_is_object(json_object_get(params, "capabilities")) ||
        !json_is_object(json_object_get(params, "clientInfo"))) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "initialize needs protocolVersion, capabilities and clientInfo", NULL);
        return;
    }
    /* An unknown version gets our newest; the client decides whether it can speak it. */
    int pi = 0;
    for (size_t i = 0; i < mcp_protocol_count; i++)
        if (strcmp(mcp_protocol_versions[i], asked) == 0)
            pi = (int)i;
    /* Remembered so a tool can tell whether asking the client (elicitation/create, ...) can work on this session. */
    json_t *declared = json_object_get(params, "capabilities");
    unsigned client = mcp_client_caps(declared);
    aly_err_t err;
    if (mcp_session_create(x, pi, client, &err) != 0) {
        if (err.refused == STORE_UNAVAILABLE) {
            mcp_call_unavailable(call, STORE_RETRY_AFTER_S);
            return;
        }
        if (!err.refused)
            log_error("creating a session: %s", err.msg);
        mcp_call_error(call, RPC_INTERNAL_ERROR, err.refused ? err.msg : "cannot create a session; try again", NULL);
        return;
    }
    json_t *caps = json_pack("{s:{}, s:{}, s:{s:b}, s:{s:b, s:b}, s:{s:b}}", "logging", "completions", "prompts", "listChanged", 0,
                             "resources", "subscribe", 1, "listChanged", 0, "tools", "listChanged", 0);
    mcp_call_result(call, json_pack("{s:s, s:o, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", mcp_protocol_versions[pi],
                                    "capabilities", caps, "serverInfo", "name", "alyd", "title", "Aly", "version", PACKAGE_VERSION,
                                    "instructions", mcp_instructions));
}

static void do_ping(mcp_call_t *call, json_t *params)
{
    (void)params;
    mcp_call_result(call, json_object());
}

static void do_set_level(mcp_call_t *call, json_t *params)
{
    mcp_exchange_t *x = call->x;
    int li = mcp_log_level(json_string_value(json_object_get(params, "level")));
    if (li < 0) {
        mcp_call_error(call, RPC_INVALID_PARAMS,
                       "level must be one of debug, info, notice, warning, error, critical, alert, emergency", NULL);
        return;
    }
    if (x->has_session) {
        aly_err_t err;
        x->session.log_level = (uint64_t)li;
        if (mcp_session_write(x->ctx->store, &x->session, &err) != 0) {
            mcp_call_error(call, RPC_INTERNAL_ERROR, "cannot store the log level; try again", NULL);
            return;
        }
    }
    mcp_call_result(call, json_object());
}

static void do_subscribe(mcp_call_t *call, json_t *params)
{
    if (!json_is_string(json_object_get(params, "uri"))) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "params.uri must name the resource", NULL);
        return;
    }
    /* Our resources change only through tools; updates are not pushed yet, so a subscription has nothing to deliver. */
    mcp_call_result(call, json_object());
}

typedef struct method {
    const char *name;
    void (*handle)(mcp_call_t *call, json_t *params);
} method_t;

static const method_t methods[] = {
    {"initialize", do_initialize},
    {"ping", do_ping},
    {"logging/setLevel", do_set_level},
    {"tools/list", registry_tools_list},
    {"tools/call", registry_tools_call},
    {"resources/list", registry_resources_list},
    {"resources/templates/list", registry_resource_templates_list},
    {"resources/read", registry_resources_read},
    {"resources/subscribe", do_subscribe},
    {"resources/unsubscribe", do_subscribe},
    {"prompts/list", registry_prompts_list},
    {"prompts/get", registry_prompts_get},
    {"completion/complete", registry_complete},
};

/*
 * notifications/cancelled: marks the named pending request of the same
 * principal (and session, when there is one) so its response is dropped, and
 * stops what it waits for: a request to the client is abandoned at once, so
 * the handler finishes and the answer's stream ends.
 */
static void cancel(mcp_exchange_t *x, json_t *params)
{
    json_t *id = json_object_get(params, "requestId");
    mcp_call_t *target = mcp_call_find(x, id);
    if (target == NULL) {
        /* Not here: another worker may wait on the client for that request. */
        mcp_client_cancel_remote(x, id);
        return;
    }
    target->cancelled = 1;
    mcp_client_abandon(target);
}

/* An error response that belongs to no call (invalid message). */
static void protocol_error(mcp_exchange_t *x, json_t *id, int code, const char *message)
{
    x->protocol_error_code = code;
    mcp_emit(x,
             json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", "code", code, "message",
                       message),
             1);
}

static int valid_id(json_t *id)
{
    return json_is_string(id) || json_is_integer(id);
}

int mcp_message_check_view(json_t *msg, const rpc_view_t *v, int *code, const char **why)
{
    *code = RPC_INVALID_REQUEST;
    if (msg != NULL && !json_is_object(msg))
        return *why = "a JSON-RPC message must be an object", -1;
    const char *version = json_string_value(v->jsonrpc);
    if (version == NULL || strcmp(version, "2.0") != 0)
        return *why = "jsonrpc must be \"2.0\"", -1;
    if (json_string_value(v->method) == NULL) {
        if (v->method == NULL && v->id != NULL && (v->result != NULL || v->error != NULL))
            return 1;
        return *why = "a request needs a string method", -1;
    }
    if (v->id != NULL && !valid_id(v->id))
        return *why = "id must be a string or an integer", -1;
    if (v->params != NULL && !json_is_object(v->params)) {
        *code = RPC_INVALID_PARAMS;
        return *why = "params must be an object", -1;
    }
    return 0;
}

int mcp_message_check(json_t *msg, int *code, const char **why)
{
    rpc_view_t v;
    rpc_view_of(msg, &v);
    return mcp_message_check_view(msg, &v, code, why);
}

void mcp_dispatch(mcp_exchange_t *x, json_t *msg, const rpc_view_t *view)
{
    rpc_view_t own;
    if (view == NULL) {
        rpc_view_of(msg, &own);
        view = &own;
    }
    int code;
    const char *why;
    int kind = mcp_message_check_view(msg, view, &code, &why);
    json_t *id = view->id, *params = view->params;
    if (kind < 0) {
        /* The error names the request's id when it has a usable one; a notification's bad params get no answer. */
        if (code == RPC_INVALID_PARAMS) {
            if (id != NULL)
                protocol_error(x, id, code, why);
        } else {
            protocol_error(x, valid_id(id) ? id : NULL, code, why);
        }
        return;
    }
    if (kind == 1) {
        mcp_client_reply(x, msg);
        return;
    }
    const char *method = json_string_value(view->method);
    if (id == NULL) {
        if (strcmp(method, "notifications/cancelled") == 0)
            cancel(x, params);
        return; /* notifications/initialized and unknown notifications need nothing */
    }
    size_t i;
    for (i = 0; i < ALY_ARRAY_SIZE(methods); i++)
        if (strcmp(methods[i].name, method) == 0)
            break;
    if (i == ALY_ARRAY_SIZE(methods)) {
        json_t *data = json_pack("{s:s}", "method", method);
        mcp_emit(x,
                 json_pack("{s:s, s:O, s:{s:i, s:s, s:o}}", "jsonrpc", "2.0", "id", id, "error", "code", RPC_METHOD_NOT_FOUND,
                           "message", "Method not found", "data", data),
                 1);
        return;
    }
    if (x->batch && methods[i].handle == do_initialize) {
        protocol_error(x, id, RPC_INVALID_REQUEST, "initialize must not be part of a batch");
        return;
    }
    mcp_call_t *c = mcp_call_new(x, id, params, view->meta);
    if (methods[i].handle == registry_tools_call || methods[i].handle == registry_prompts_get ||
        methods[i].handle == registry_resources_read)
        c->rerun = methods[i].handle; /* these may ask the client for input, then run again with the answers */
    methods[i].handle(c, params);
}

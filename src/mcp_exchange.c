/*
 * One exchange on /api/mcp and its output, and the call API of aly/handler.h.
 *
 * A POST's messages become calls; each completes synchronously or later and
 * hands its response here.  Responses are collected while the answer can
 * still be one JSON body (an array for a batch); the first notification or
 * server request, when the client accepts text/event-stream, turns the answer
 * into an SSE stream and replays what was collected.  Output goes through
 * h2o's generator protocol: one send in flight, the next queued until
 * proceed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/http.h"
#include "aly/json_ref.h"
#include "aly/log.h"
#include "aly/mcp_internal.h"
#include "aly/scope.h"

static h2o_linklist_t pending_calls = {&pending_calls, &pending_calls};

void mcp_buf_append(mcp_buf_t *b, const char *s, size_t n)
{
    if (b->len + n > b->cap && b->fixed) {
        log_error("a fixed buffer of %zu bytes would have to grow to %zu", b->cap, b->len + n);
        abort();
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            abort();
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* ---- exchange lifetime and output ---- */

void mcp_exchange_release(mcp_exchange_t *x)
{
    if (--x->refs != 0)
        return;
    free(x->answer.data);
    if (x->answer_at != x->answer_inline)
        free(x->answer_at);
    free(x->queued.data);
    free(x->inflight.data);
    json_unref(x->client_caps);
    free(x);
}

static void on_req_disposed(void *p)
{
    mcp_exchange_t *x = *(mcp_exchange_t **)p;
    x->req = NULL;
    if (x->stream_linked) {
        /* Still on the open-streams list: a drain that ran first has already unlinked it. */
        h2o_linklist_unlink(&x->stream_link);
        x->stream_linked = 0;
    }
    if (x->is_stream && h2o_timeout_is_linked(&x->keepalive))
        h2o_timeout_unlink(&x->keepalive);
    mcp_exchange_release(x);
}

mcp_exchange_t *mcp_exchange_new(mcp_ctx_t *ctx, h2o_req_t *req, const principal_t *p)
{
    mcp_exchange_t *x = calloc(1, sizeof(*x));
    if (x == NULL)
        abort();
    x->req = req;
    x->ctx = ctx;
    x->principal = *p;
    x->refs = 1;
    x->status = 200;
    x->answer_at = x->answer_inline;
    mcp_exchange_t **link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_req_disposed);
    *link = x;
    return x;
}

void mcp_exchange_flush(mcp_exchange_t *x)
{
    if (x->req == NULL || x->client_gone || x->sending || x->final_sent)
        return;
    if (x->queued.len == 0 && !x->finishing)
        return;
    mcp_buf_t t = x->inflight;
    x->inflight = x->queued;
    x->queued = t;
    x->queued.len = 0;
    h2o_iovec_t v = h2o_iovec_init(x->inflight.data, x->inflight.len);
    x->sending = 1;
    if (x->finishing)
        x->final_sent = 1;
    h2o_send(x->req, &v, v.len ? 1 : 0, x->finishing ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    mcp_exchange_t *x = (mcp_exchange_t *)gen;
    x->sending = 0;
    x->inflight.len = 0;
    mcp_exchange_flush(x);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    mcp_exchange_t *x = (mcp_exchange_t *)gen;
    x->client_gone = 1;
}

static void add_session_header(mcp_exchange_t *x)
{
    if (x->has_session)
        h2o_add_header_by_str(&x->req->pool, &x->req->res.headers, H2O_STRLIT("mcp-session-id"), 0, NULL, x->session.id,
                              strlen(x->session.id));
}

void mcp_exchange_start_sse(mcp_exchange_t *x)
{
    x->out = OUT_SSE;
    if (x->req == NULL || x->client_gone)
        return;
    h2o_req_t *req = x->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    add_session_header(x);
    x->gen.proceed = on_proceed;
    x->gen.stop = on_stop;
    h2o_start_response(req, &x->gen);
}

static void sse_event(mcp_exchange_t *x, const char *text, size_t len)
{
    mcp_buf_append(&x->queued, "event: message\ndata: ", 21);
    mcp_buf_append(&x->queued, text, len);
    mcp_buf_append(&x->queued, "\n\n", 2);
    mcp_exchange_flush(x);
}

/* Sends the collected JSON answer (or 202 when there is nothing to answer). */
static void send_json_answer(mcp_exchange_t *x)
{
    h2o_req_t *req = x->req;
    if (req == NULL || x->client_gone)
        return;
    if (x->n_answers == 0) {
        req->res.status = 202;
        req->res.reason = "Accepted";
        req->res.content_length = 0;
        h2o_send_inline(req, "", 0);
        return;
    }
    if (x->batch) {
        /* The collected answers are already comma-separated: wrap them into an array. */
        mcp_buf_t b = {NULL, 0, 0, 0};
        mcp_buf_append(&b, "[", 1);
        mcp_buf_append(&b, x->answer.data, x->answer.len);
        mcp_buf_append(&b, "]", 1);
        free(x->answer.data);
        x->answer = b;
    }
    add_session_header(x);
    if (x->scope_needed != 0)
        gate_scope_challenge(x->ctx->gate, req, x->principal.scopes, x->scope_needed);
    if (x->status == 503) {
        char v[24];
        size_t n = aly_fmt_u64(v, x->retry_after_s);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, h2o_strdup(&req->pool, v, n).base, n);
    }
    /* Not copied: x outlives the request (its dispose hook holds the last reference) and emit_text() no longer appends. */
    http_send_json_kept(req, x->status, x->answer.data, x->answer.len);
}

void mcp_call_unavailable(mcp_call_t *call, unsigned retry_after_s)
{
    mcp_exchange_t *x = call->x;
    /* A batch or a stream has other answers to carry: the error alone says it there. */
    if (!x->batch && x->out != OUT_SSE) {
        x->status = 503;
        x->retry_after_s = retry_after_s;
    }
    mcp_call_error(call, RPC_INTERNAL_ERROR, "the store is unavailable; try again shortly",
                   json_pack("{s:I}", "retry_after_seconds", (json_int_t)retry_after_s));
}

void mcp_exchange_maybe_finish(mcp_exchange_t *x)
{
    if (x->pending != 0 || x->finishing || x->dispatching)
        return;
    x->finishing = 1;
    if (x->out == OUT_SSE) {
        mcp_exchange_flush(x);
    } else {
        x->out = OUT_JSON;
        send_json_answer(x);
    }
}

static void emit_text(mcp_exchange_t *x, const char *text, size_t len, int is_response)
{
    if (x->out == OUT_SSE) {
        sse_event(x, text, len);
        return;
    }
    if (!is_response) {
        if (!x->accepts_sse || x->finishing)
            return; /* a JSON answer cannot carry notifications */
        mcp_exchange_start_sse(x);
        for (size_t i = 0; i < x->n_answers; i++)
            sse_event(x, x->answer.data + x->answer_at[i][0], x->answer_at[i][1]);
        x->n_answers = 0;
        x->answer.len = 0;
        sse_event(x, text, len);
        return;
    }
    if (x->out == OUT_JSON)
        return; /* the answer has been sent (and h2o still reads it): nothing more can go with it */
    if (x->n_answers == MCP_MAX_BATCH + 1)
        return; /* cannot happen: a body holds at most MCP_MAX_BATCH messages, each answered once */
    if (x->n_answers == ALY_ARRAY_SIZE(x->answer_inline) && x->answer_at == x->answer_inline) {
        size_t(*more)[2] = malloc((MCP_MAX_BATCH + 1) * sizeof(*more));
        if (more == NULL)
            abort();
        memcpy(more, x->answer_inline, sizeof(x->answer_inline));
        x->answer_at = more;
    }
    if (x->n_answers > 0)
        mcp_buf_append(&x->answer, ",", 1);
    x->answer_at[x->n_answers][0] = x->answer.len;
    x->answer_at[x->n_answers][1] = len;
    x->n_answers++;
    mcp_buf_append(&x->answer, text, len);
}

void mcp_emit(mcp_exchange_t *x, json_t *msg, int is_response)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_unref(msg);
    if (text == NULL)
        return;
    emit_text(x, text, strlen(text), is_response);
    free(text);
}

/* ---- calls ---- */

mcp_call_t *mcp_call_new(mcp_exchange_t *x, json_t *id, json_t *params, json_t *meta)
{
    mcp_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->x = x;
    c->id = json_ref(id);
    c->meta = json_ref(meta);
    c->params = json_ref(params);
    x->refs++;
    x->pending++;
    h2o_linklist_insert(&pending_calls, &c->link);
    return c;
}

json_t *mcp_call_params(mcp_call_t *c)
{
    if (c->params == NULL && (c->name != NULL || c->arguments != NULL)) {
        c->params = json_object();
        if (c->params == NULL)
            abort();
        if (c->name != NULL)
            json_object_set(c->params, "name", c->name);
        if (c->arguments != NULL)
            json_object_set(c->params, "arguments", c->arguments);
    }
    return c->params;
}

mcp_call_t *mcp_call_find(const mcp_exchange_t *x, json_t *id)
{
    for (h2o_linklist_t *l = pending_calls.next; id != NULL && l != &pending_calls; l = l->next) {
        mcp_call_t *c = H2O_STRUCT_FROM_MEMBER(mcp_call_t, link, l);
        /* The same principal, and the same session: none is a scope of its own, which a session's calls are not in. */
        if (json_equal(c->id, id) && strcmp(c->x->principal.id, x->principal.id) == 0 && c->x->has_session == x->has_session &&
            (!x->has_session || strcmp(c->x->session.id, x->session.id) == 0))
            return c;
    }
    return NULL;
}

/* Completes c with its serialised response (a JSON-RPC response object). */
static void call_finish(mcp_call_t *c, const char *response, size_t len)
{
    if (c->done)
        return;
    c->done = 1;
    mcp_exchange_t *x = c->x;
    h2o_linklist_unlink(&c->link);
    if (!c->cancelled) /* notifications/cancelled: the response is suppressed */
        emit_text(x, response, len, 1);
    x->pending--;
    mcp_exchange_maybe_finish(x);
    json_unref(c->id);
    json_unref(c->meta);
    json_unref(c->params);
    json_unref(c->name);
    json_unref(c->arguments);
    json_unref(c->inputs);
    json_unref(c->state);
    json_unref(c->asking);
    free(c->asking_key);
    free(c);
    mcp_exchange_release(x);
}

const principal_t *mcp_call_principal(const mcp_call_t *call)
{
    return &call->x->principal;
}

store_t *mcp_call_store(const mcp_call_t *call)
{
    return call->x->ctx->store;
}

const aly_config_t *mcp_call_config(const mcp_call_t *call)
{
    return call->x->ctx->cfg;
}

json_t *mcp_call_meta(const mcp_call_t *call)
{
    return call->meta;
}

int mcp_call_cancelled(const mcp_call_t *call)
{
    return call->cancelled || call->x->client_gone || call->x->req == NULL;
}

void mcp_call_result_text(mcp_call_t *call, const char *result, size_t len)
{
    /* The envelope is assembled as text: the result may come serialised from a cache. */
    char num[24] = "-", *id = NULL;
    const char *idtext = num;
    if (json_is_integer(call->id)) { /* the common id: no allocation, no printf */
        json_int_t v = json_integer_value(call->id);
        size_t sign = v < 0;
        num[sign + aly_fmt_u64(num + sign, v < 0 ? 0 - (uint64_t)v : (uint64_t)v)] = '\0';
    } else
        idtext = (id = json_dumps(call->id, JSON_COMPACT | JSON_ENCODE_ANY)) != NULL ? id : "null";
    /*
     * The envelope around the result: at most its fixed parts, the id and a modern head (MCP_RESULT_HEAD_MAX)
     * beyond the result, so the buffer never grows; on the stack for the results most calls return.
     */
    char stack[8192];
    size_t need = len + strlen(idtext) + MCP_RESULT_HEAD_MAX + 64;
    mcp_buf_t b = {need <= sizeof(stack) ? stack : malloc(need), 0, need, 1};
    if (b.data == NULL)
        abort();
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":", mid[] = ",\"result\":";
    mcp_buf_append(&b, head, sizeof(head) - 1);
    mcp_buf_append(&b, idtext, strlen(idtext));
    mcp_buf_append(&b, mid, sizeof(mid) - 1);
    if (call->x->modern && len >= 2 && result[0] == '{') {
        /* Modern results open with resultType, their caching hints and serverInfo (never kept in the result cache). */
        mcp_buf_append(&b, "{", 1);
        mcp_modern_result_head(call, &b);
        if (len > 2)
            mcp_buf_append(&b, ",", 1);
        mcp_buf_append(&b, result + 1, len - 1);
    } else {
        mcp_buf_append(&b, result, len);
    }
    mcp_buf_append(&b, "}", 1);
    free(id);
    call_finish(call, b.data, b.len);
    if (b.data != stack)
        free(b.data);
}

void mcp_call_result(mcp_call_t *call, json_t *result)
{
    /* 12 significant digits: 0.0045 stays 0.0045 instead of %.17g's 0.0044999999999999997. */
    char *text = result != NULL ? json_dumps(result, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    if (text == NULL) {
        /* A handler failed to build its result (out of memory, or a bad json_pack format). */
        json_unref(result);
        log_error("a handler produced no result");
        mcp_call_error(call, RPC_INTERNAL_ERROR, "internal error: the result could not be built", NULL);
        return;
    }
    if (call->capture != NULL && !call->input_required) {
        call->capture->is_error = json_is_true(json_object_get(result, "isError"));
        call->capture->text = strdup(text);
        call->capture->len = strlen(text);
    }
    json_unref(result);
    mcp_call_result_text(call, text, strlen(text));
    free(text);
}

void mcp_call_capture(mcp_call_t *call, mcp_capture_t *capture)
{
    call->capture = capture;
}

void mcp_call_error(mcp_call_t *call, int code, const char *message, json_t *data)
{
    mcp_exchange_t *x = call->x;
    if (x->modern && code == RPC_RESOURCE_NOT_FOUND)
        code = RPC_INVALID_PARAMS; /* -32002 is legacy-only; data.uri still names the resource */
    if (code == RPC_MISSING_CAPABILITY && x->modern && x->out != OUT_SSE)
        x->status = 400; /* the modern era's rule; no legacy method asks for a capability */
    if (code == RPC_INSUFFICIENT_SCOPE && !x->batch && x->out != OUT_SSE) {
        /* A missing scope is an HTTP 403 carrying the insufficient_scope challenge, not a 200. */
        json_t *rs = json_object_get(data, "required_scope");
        x->scope_needed = scope_lookup(json_string_value(rs), json_string_length(rs));
        x->status = 403;
    }
    if (code == RPC_INSUFFICIENT_SCOPE && x->modern)
        code = RPC_MODERN_INSUFFICIENT_SCOPE;
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (data != NULL)
        json_object_set_new(err, "data", data);
    json_t *resp = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", call->id, "error", err);
    char *text = json_dumps(resp, JSON_COMPACT);
    json_unref(resp);
    call_finish(call, text ? text : "", text ? strlen(text) : 0);
    free(text);
}

void mcp_call_progress(mcp_call_t *call, double progress, double total, const char *message)
{
    json_t *token = json_object_get(call->meta, "progressToken");
    if (token == NULL || call->done)
        return;
    json_t *params = json_pack("{s:O, s:f}", "progressToken", token, "progress", progress);
    if (total > 0)
        json_object_set_new(params, "total", json_real(total));
    if (message != NULL)
        json_object_set_new(params, "message", json_string(message));
    mcp_emit(call->x, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "notifications/progress", "params", params), 0);
}

void mcp_call_log(mcp_call_t *call, const char *level, const char *logger, json_t *data)
{
    int li = mcp_log_level(level);
    mcp_exchange_t *x = call->x;
    /* A modern request gets log messages only when its _meta asked for them, from that level up. */
    if (li < 0 || call->done || (x->has_session && (uint64_t)li < x->session.log_level) || (x->modern && li < x->log_min) ||
        (x->modern && x->log_min < 0)) {
        json_unref(data);
        return;
    }
    json_t *params = json_pack("{s:s, s:o}", "level", level, "data", data);
    if (logger != NULL)
        json_object_set_new(params, "logger", json_string(logger));
    mcp_emit(x, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "notifications/message", "params", params), 0);
}

json_t *mcp_text_result(const char *text, int is_error)
{
    json_t *r = json_pack("{s:[{s:s, s:s}]}", "content", "type", "text", "text", text);
    if (is_error)
        json_object_set_new(r, "isError", json_true());
    return r;
}

json_t *mcp_structured_result(json_t *structured)
{
    char *text = json_dumps(structured, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_t *r = json_pack("{s:[{s:s, s:s}], s:o}", "content", "type", "text", "text", text != NULL ? text : "", "structuredContent",
                          structured);
    free(text);
    return r;
}

/*
 * The MCP engine (aly/mcp.h): Streamable HTTP on /api/mcp and the JSON-RPC
 * method table.
 *
 * One POST is one "exchange": the messages of its body (one, or a batch for
 * protocol 2025-03-26) become calls dispatched through the method table.  A
 * call completes synchronously or later (timers); notifications it emits
 * before completing switch the exchange to an SSE answer when the client
 * accepts one.  The exchange lives in malloc'd memory with a reference count
 * (one per live call, one for the HTTP request), because a client may go away
 * while a call is pending: h2o tells us through a dispose callback on the
 * request's pool, after which nothing touches the request.
 */
#include "aly/mcp.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aly/log.h"
#include "aly/record.h"
#include "aly/registry.h"
#include "aly/worker.h"

#define MAX_BATCH 100
#define STREAM_KEEPALIVE_MS 20000 /* Node's fetch drops an SSE stream silent for 300 s */

const char *const mcp_protocol_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26"};
const size_t mcp_protocol_count = sizeof(mcp_protocol_versions) / sizeof(mcp_protocol_versions[0]);
#define PROTOCOL_DEFAULT 2 /* a request without MCP-Protocol-Version is 2025-03-26 */

static const char *const log_levels[] = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"};

typedef struct buf {
    char *data;
    size_t len, cap;
} buf_t;

typedef enum { OUT_UNDECIDED, OUT_JSON, OUT_SSE } out_mode_t;

typedef struct exchange {
    h2o_generator_t gen;
    h2o_req_t *req; /* NULL once h2o disposed the request */
    int client_gone;
    http_ctx_t *hctx;
    principal_t principal;
    int has_session;
    session_record_t session;
    int protocol;
    int accepts_sse;
    int batch;
    unsigned pending; /* calls not completed */
    int dispatching;  /* the body's messages are still being dispatched */
    unsigned refs;
    buf_t answer;            /* responses collected while the answer may still be JSON, comma-separated */
    size_t n_answers;
    size_t answer_off[MAX_BATCH + 1], answer_len[MAX_BATCH + 1];
    int protocol_error_code; /* of a message that was not a valid request */
    int status;        /* HTTP status of a JSON answer */
    scope_set_t scope_needed; /* a 403 answer: the scope that was missing */
    out_mode_t out;
    buf_t queued, inflight;
    int sending, finishing, final_sent;
    /* GET streams */
    int is_stream;
    h2o_linklist_t stream_link;
    h2o_timeout_entry_t keepalive;
} exchange_t;

struct mcp_call {
    exchange_t *x;
    json_t *id;
    json_t *meta;
    mcp_capture_t *capture;
    int done;
    int cancelled;
    h2o_linklist_t link; /* pending calls, for notifications/cancelled */
};

static h2o_linklist_t pending_calls = {&pending_calls, &pending_calls};
static h2o_linklist_t open_streams = {&open_streams, &open_streams};
static h2o_timeout_t keepalive_timeout;
static int keepalive_ready;

/* ---- exchange lifetime and output ---- */

static void buf_append(buf_t *b, const char *s, size_t n)
{
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

static void release(exchange_t *x)
{
    if (--x->refs != 0)
        return;
    free(x->answer.data);
    free(x->queued.data);
    free(x->inflight.data);
    free(x);
}

static void on_req_disposed(void *p)
{
    exchange_t *x = *(exchange_t **)p;
    x->req = NULL;
    if (x->is_stream) {
        h2o_linklist_unlink(&x->stream_link);
        h2o_timeout_unlink(&x->keepalive);
    }
    release(x);
}

static void flush(exchange_t *x)
{
    if (x->req == NULL || x->client_gone || x->sending || x->final_sent)
        return;
    if (x->queued.len == 0 && !x->finishing)
        return;
    buf_t t = x->inflight;
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
    exchange_t *x = (exchange_t *)gen;
    x->sending = 0;
    x->inflight.len = 0;
    flush(x);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    exchange_t *x = (exchange_t *)gen;
    x->client_gone = 1;
}

static void start_sse(exchange_t *x)
{
    x->out = OUT_SSE;
    if (x->req == NULL || x->client_gone)
        return;
    h2o_req_t *req = x->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    if (x->has_session)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("mcp-session-id"), 0, NULL, x->session.id,
                              strlen(x->session.id));
    x->gen.proceed = on_proceed;
    x->gen.stop = on_stop;
    h2o_start_response(req, &x->gen);
}

static void sse_event(exchange_t *x, const char *text, size_t len)
{
    buf_append(&x->queued, "event: message\ndata: ", 21);
    buf_append(&x->queued, text, len);
    buf_append(&x->queued, "\n\n", 2);
    flush(x);
}

/* Sends the collected JSON answer (or 202 when there is nothing to answer). */
static void send_json_answer(exchange_t *x)
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
        buf_t b = {NULL, 0, 0};
        buf_append(&b, "[", 1);
        buf_append(&b, x->answer.data, x->answer.len);
        buf_append(&b, "]", 1);
        free(x->answer.data);
        x->answer = b;
    }
    if (x->has_session)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("mcp-session-id"), 0, NULL, x->session.id,
                              strlen(x->session.id));
    if (x->scope_needed != 0)
        http_add_scope_challenge(x->hctx, req, x->principal.scopes, x->scope_needed);
    http_send_json(req, x->status, x->status == 200 ? "OK" : x->status == 400 ? "Bad Request" : "Forbidden", x->answer.data,
                   x->answer.len);
}

/* Called when a call completes and when dispatch ends: finishes the exchange once nothing is pending. */
static void maybe_finish(exchange_t *x)
{
    if (x->pending != 0 || x->finishing || x->dispatching)
        return;
    if (x->out == OUT_SSE) {
        x->finishing = 1;
        flush(x);
    } else {
        x->out = OUT_JSON;
        x->finishing = 1;
        send_json_answer(x);
    }
}

/* Emits a serialised message: a notification or server request (may switch the answer to SSE) or a response. */
static void emit_text(exchange_t *x, const char *text, size_t len, int is_response)
{
    if (x->out == OUT_SSE) {
        sse_event(x, text, len);
        return;
    }
    if (!is_response) {
        if (!x->accepts_sse || x->finishing)
            return; /* a JSON answer cannot carry notifications */
        start_sse(x);
        for (size_t i = 0; i < x->n_answers; i++)
            sse_event(x, x->answer.data + x->answer_off[i], x->answer_len[i]);
        x->n_answers = 0;
        x->answer.len = 0;
        sse_event(x, text, len);
        return;
    }
    if (x->n_answers == ALY_ARRAY_SIZE(x->answer_off))
        return; /* cannot happen: a body holds at most MAX_BATCH messages, each answered once */
    if (x->n_answers > 0)
        buf_append(&x->answer, ",", 1);
    x->answer_off[x->n_answers] = x->answer.len;
    x->answer_len[x->n_answers] = len;
    x->n_answers++;
    buf_append(&x->answer, text, len);
}

static void emit(exchange_t *x, json_t *msg, int is_response)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text == NULL)
        return;
    emit_text(x, text, strlen(text), is_response);
    free(text);
}

/* ---- calls ---- */

static mcp_call_t *call_new(exchange_t *x, json_t *id, json_t *params)
{
    mcp_call_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->x = x;
    c->id = json_incref(id);
    c->meta = json_incref(json_object_get(params, "_meta"));
    x->refs++;
    x->pending++;
    h2o_linklist_insert(&pending_calls, &c->link);
    return c;
}

/* Completes c with its serialised response (a JSON-RPC response object). */
static void call_finish(mcp_call_t *c, const char *response, size_t len)
{
    if (c->done)
        return;
    c->done = 1;
    exchange_t *x = c->x;
    h2o_linklist_unlink(&c->link);
    if (!c->cancelled) /* notifications/cancelled: the response is suppressed */
        emit_text(x, response, len, 1);
    x->pending--;
    maybe_finish(x);
    json_decref(c->id);
    json_decref(c->meta);
    free(c);
    release(x);
}

const principal_t *mcp_call_principal(const mcp_call_t *call)
{
    return &call->x->principal;
}

store_t *mcp_call_store(const mcp_call_t *call)
{
    return call->x->hctx->store;
}

h2o_loop_t *mcp_call_loop(const mcp_call_t *call)
{
    return call->x->hctx->loop;
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
    char *id = json_dumps(call->id, JSON_COMPACT | JSON_ENCODE_ANY);
    buf_t b = {NULL, 0, 0};
    static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":", mid[] = ",\"result\":";
    buf_append(&b, head, sizeof(head) - 1);
    buf_append(&b, id ? id : "null", id ? strlen(id) : 4);
    buf_append(&b, mid, sizeof(mid) - 1);
    buf_append(&b, result, len);
    buf_append(&b, "}", 1);
    free(id);
    call_finish(call, b.data, b.len);
    free(b.data);
}

void mcp_call_result(mcp_call_t *call, json_t *result)
{
    /* 12 significant digits: 0.0045 stays 0.0045 instead of %.17g's 0.0044999999999999997. */
    char *text = result != NULL ? json_dumps(result, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    if (text == NULL) {
        /* A handler failed to build its result (out of memory, or a bad json_pack format). */
        json_decref(result);
        log_error("a handler produced no result");
        mcp_call_error(call, RPC_INTERNAL_ERROR, "internal error: the result could not be built", NULL);
        return;
    }
    if (call->capture != NULL) {
        call->capture->is_error = json_is_true(json_object_get(result, "isError"));
        call->capture->text = strdup(text);
        call->capture->len = strlen(text);
    }
    json_decref(result);
    mcp_call_result_text(call, text, strlen(text));
    free(text);
}

void mcp_call_capture(mcp_call_t *call, mcp_capture_t *capture)
{
    call->capture = capture;
}

void mcp_call_error(mcp_call_t *call, int code, const char *message, json_t *data)
{
    exchange_t *x = call->x;
    if (code == RPC_INSUFFICIENT_SCOPE && !x->batch && x->out != OUT_SSE) {
        /* SPEC §3: a missing scope is an HTTP 403 with the insufficient_scope challenge. */
        json_t *rs = json_object_get(data, "required_scope");
        x->scope_needed = scope_lookup(json_string_value(rs), json_string_length(rs));
        x->status = 403;
    }
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);
    if (data != NULL)
        json_object_set_new(err, "data", data);
    json_t *resp = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", call->id, "error", err);
    char *text = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
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
    emit(call->x, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "notifications/progress", "params", params), 0);
}

static int level_index(const char *name)
{
    for (size_t i = 0; name != NULL && i < ALY_ARRAY_SIZE(log_levels); i++)
        if (strcmp(log_levels[i], name) == 0)
            return (int)i;
    return -1;
}

void mcp_call_log(mcp_call_t *call, const char *level, const char *logger, json_t *data)
{
    int li = level_index(level);
    exchange_t *x = call->x;
    if (li < 0 || call->done || (x->has_session && (uint64_t)li < x->session.log_level)) {
        json_decref(data);
        return;
    }
    json_t *params = json_pack("{s:s, s:o}", "level", level, "data", data);
    if (logger != NULL)
        json_object_set_new(params, "logger", json_string(logger));
    emit(x, json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "notifications/message", "params", params), 0);
}

static void random_b62(char *out, size_t n)
{
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char rnd[64];
    size_t o = 0;
    while (o < n) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            abort();
        for (size_t i = 0; i < sizeof(rnd) && o < n; i++)
            if (rnd[i] < 248)
                out[o++] = b62[rnd[i] % 62];
    }
    out[n] = '\0';
}

/* ---- requests to the client ----
 *
 * The client answers a server request with a POST that any worker may get.
 * The issuing worker records "p:<id>" -> principal in the volatile store; a
 * worker that receives the reply and has no local waiter stores it under
 * "r:<id>" (only when that pending record exists and names the same
 * principal, so clients cannot fill the store with replies nobody awaits);
 * the issuing worker polls for it every REPLY_POLL_MS.
 */

#define REPLY_POLL_MS 20
#define REPLY_TIMEOUT_MS 60000

typedef struct waiter {
    h2o_linklist_t link;
    char id[48];
    mcp_call_t *call;
    mcp_reply_fn cb;
    uint64_t deadline;
    char owner[80]; /* "q:" + hex SHA-256 of principal, session and request id: lets another worker cancel */
} waiter_t;

static h2o_linklist_t waiters = {&waiters, &waiters};
static h2o_timeout_t reply_poll;
static h2o_timeout_entry_t reply_poll_entry;
static int reply_poll_ready;
static h2o_loop_t *reply_loop;

static void replies_write(store_t *st, const char *prefix, const char *id, const void *val, size_t vlen, int del)
{
    char k[96];
    int kl = snprintf(k, sizeof(k), "%s%s", prefix, id);
    store_txn_t t;
    aly_err_t err;
    if (store_begin(st, STORE_WRITE | STORE_VOLATILE, &t, &err) != 0)
        return;
    int rc = del ? store_del(&t, VDB_REPLIES, k, (size_t)kl, &err) : store_put(&t, VDB_REPLIES, k, (size_t)kl, val, vlen, 0, &err);
    if (rc < 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        log_warn("client reply store: %s", err.msg);
    }
}

/* "q:" + hex SHA-256 of who asked what: principal, session (or none) and the JSON-RPC id of the request. */
static void owner_key(const exchange_t *x, json_t *id, char out[80])
{
    char *idtext = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
    buf_t b = {NULL, 0, 0};
    unsigned char d[32];
    buf_append(&b, x->principal.id, strlen(x->principal.id) + 1);
    buf_append(&b, x->has_session ? x->session.id : "", x->has_session ? strlen(x->session.id) + 1 : 1);
    buf_append(&b, idtext ? idtext : "", idtext ? strlen(idtext) : 0);
    SHA256((const unsigned char *)b.data, b.len, d);
    free(b.data);
    free(idtext);
    memcpy(out, "q:", 2);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", d[i]);
}

static void deliver(waiter_t *wt, json_t *reply)
{
    h2o_linklist_unlink(&wt->link);
    store_t *st = wt->call->x->hctx->store;
    replies_write(st, "p:", wt->id, NULL, 0, 1);
    replies_write(st, "", wt->owner, NULL, 0, 1);
    json_t *result = json_object_get(reply, "result"), *error = json_object_get(reply, "error");
    if (reply == NULL)
        error = json_pack("{s:i, s:s}", "code", RPC_INTERNAL_ERROR, "message", "the client did not answer in time");
    else
        json_incref(error);
    wt->cb(wt->call, result, error);
    json_decref(error);
    free(wt);
}

static void poll_replies(h2o_timeout_entry_t *entry)
{
    (void)entry;
    uint64_t now = aly_now_ms();
    h2o_linklist_t *l = waiters.next;
    while (l != &waiters) {
        waiter_t *wt = H2O_STRUCT_FROM_MEMBER(waiter_t, link, l);
        l = l->next;
        store_t *st = wt->call->x->hctx->store;
        char k[64];
        int kl = snprintf(k, sizeof(k), "r:%s", wt->id);
        store_txn_t t;
        store_val_t v;
        aly_err_t err;
        json_t *reply = NULL;
        int cancelled = 0;
        if (store_begin(st, STORE_VOLATILE, &t, &err) == 0) {
            if (store_get(&t, VDB_REPLIES, k, (size_t)kl, &v, &err) == 0)
                reply = json_loadb(v.data, v.len, 0, NULL);
            k[0] = 'c'; /* "c:<id>": another worker got notifications/cancelled for this request */
            cancelled = store_get(&t, VDB_REPLIES, k, (size_t)kl, &v, &err) == 0;
            store_abort(&t);
        }
        if (cancelled) {
            json_decref(reply);
            replies_write(st, "c:", wt->id, NULL, 0, 1);
            replies_write(st, "r:", wt->id, NULL, 0, 1);
            wt->call->cancelled = 1;
            deliver(wt, NULL);
        } else if (reply != NULL) {
            replies_write(st, "r:", wt->id, NULL, 0, 1);
            deliver(wt, reply);
            json_decref(reply);
        } else if (now >= wt->deadline) {
            deliver(wt, NULL);
        }
    }
    if (!h2o_linklist_is_empty(&waiters))
        h2o_timeout_link(reply_loop, &reply_poll, &reply_poll_entry);
}

int mcp_call_request(mcp_call_t *call, const char *method, json_t *params, mcp_reply_fn cb)
{
    exchange_t *x = call->x;
    if (!x->accepts_sse || x->finishing) {
        json_decref(params);
        return -1;
    }
    waiter_t *wt = calloc(1, sizeof(*wt));
    if (wt == NULL)
        abort();
    memcpy(wt->id, "aly-", 4);
    random_b62(wt->id + 4, 24);
    wt->call = call;
    wt->cb = cb;
    wt->deadline = aly_now_ms() + REPLY_TIMEOUT_MS;
    h2o_linklist_insert(&waiters, &wt->link);
    owner_key(x, call->id, wt->owner);
    replies_write(x->hctx->store, "p:", wt->id, x->principal.id, strlen(x->principal.id), 0);
    replies_write(x->hctx->store, "", wt->owner, wt->id, strlen(wt->id), 0);
    if (!reply_poll_ready) {
        reply_loop = x->hctx->loop;
        h2o_timeout_init(x->hctx->loop, &reply_poll, REPLY_POLL_MS);
        reply_poll_entry.cb = poll_replies;
        reply_poll_ready = 1;
    }
    if (!h2o_timeout_is_linked(&reply_poll_entry))
        h2o_timeout_link(x->hctx->loop, &reply_poll, &reply_poll_entry);
    emit(x, json_pack("{s:s, s:s, s:s, s:o}", "jsonrpc", "2.0", "id", wt->id, "method", method, "params", params), 0);
    return 0;
}

/* A response posted by the client: hand it to our waiter, or park it for the worker that waits. */
static void client_reply(exchange_t *x, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    if (id == NULL || strncmp(id, "aly-", 4) != 0 || strlen(id) >= sizeof(((waiter_t *)0)->id))
        return;
    for (h2o_linklist_t *l = waiters.next; l != &waiters; l = l->next) {
        waiter_t *wt = H2O_STRUCT_FROM_MEMBER(waiter_t, link, l);
        if (strcmp(wt->id, id) == 0) {
            if (strcmp(wt->call->x->principal.id, x->principal.id) == 0)
                deliver(wt, msg);
            return;
        }
    }
    char *text = json_dumps(msg, JSON_COMPACT);
    char pk[64], rk[64];
    int pl = snprintf(pk, sizeof(pk), "p:%s", id), rl = snprintf(rk, sizeof(rk), "r:%s", id);
    store_txn_t t;
    store_val_t v;
    aly_err_t err;
    if (text != NULL && store_begin(x->hctx->store, STORE_WRITE | STORE_VOLATILE, &t, &err) == 0) {
        if (store_get(&t, VDB_REPLIES, pk, (size_t)pl, &v, &err) == 0 && v.len == strlen(x->principal.id) &&
            memcmp(v.data, x->principal.id, v.len) == 0 && store_put(&t, VDB_REPLIES, rk, (size_t)rl, text, strlen(text), 0, &err) == 0)
            store_commit(&t, &err);
        else
            store_abort(&t);
    }
    free(text);
}

/* ---- sessions ---- */

static int session_write(store_t *st, const session_record_t *s, aly_err_t *err)
{
    char *val;
    size_t vlen;
    store_txn_t t;
    if (record_encode(&record_session, s, &val, &vlen, err) != 0)
        return -1;
    int rc = store_begin(st, STORE_WRITE, &t, err);
    if (rc == 0) {
        rc = store_put(&t, DB_SESSIONS, s->id, strlen(s->id), val, vlen, 0, err) == 0 ? store_commit(&t, err) : -1;
        if (rc != 0)
            store_abort(&t);
    }
    free(val);
    return rc;
}

#define SESSION_SWEEP_EVERY 64  /* initializes per worker between sweeps */
#define SESSION_SWEEP_SCAN 1000 /* sessions looked at per sweep */

typedef struct sweep_ctx {
    uint64_t now;
    unsigned seen, n;
    char ids[SESSION_SWEEP_SCAN][sizeof(((session_record_t *)0)->id)];
} sweep_ctx_t;

/* Collects expired (or undecodable) session ids; they are deleted after the scan, not under its cursor. */
static int sweep_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    sweep_ctx_t *c = vctx;
    session_record_t s;
    aly_err_t err;
    if (++c->seen > SESSION_SWEEP_SCAN)
        return 1;
    if ((record_decode(&record_session, val->data, val->len, &s, &err) != 0 || s.expires_ms <= c->now) &&
        key->len < sizeof(c->ids[0])) {
        memcpy(c->ids[c->n], key->data, key->len);
        c->ids[c->n++][key->len] = '\0';
    }
    return 0;
}

/*
 * Expired sessions are removed lazily: every SESSION_SWEEP_EVERY initializes a
 * worker looks at up to SESSION_SWEEP_SCAN sessions and deletes the expired
 * (and undecodable) ones, so clients that never send DELETE cannot make the
 * store grow without bound.
 */
static void session_sweep(store_t *st)
{
    static unsigned count;
    if (++count % SESSION_SWEEP_EVERY != 0)
        return;
    store_txn_t t;
    aly_err_t err;
    sweep_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL || store_begin(st, STORE_WRITE, &t, &err) != 0) {
        free(c);
        return;
    }
    c->now = aly_wall_ms();
    int rc = store_scan(&t, DB_SESSIONS, "", 0, NULL, 0, sweep_cb, c, &err);
    for (unsigned i = 0; rc == 0 && i < c->n; i++)
        rc = store_del(&t, DB_SESSIONS, c->ids[i], strlen(c->ids[i]), &err) < 0 ? -1 : 0;
    if (rc != 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        log_warn("session sweep: %s", err.msg);
    }
    free(c);
}

/* 0 found and usable, 1 unknown/expired/another principal's, -1 store error. */
static int session_load(http_ctx_t *hctx, const char *id, size_t len, const principal_t *p, session_record_t *out)
{
    store_txn_t t;
    store_val_t v;
    aly_err_t err;
    if (len == 0 || len >= sizeof(out->id))
        return 1;
    if (store_begin(hctx->store, 0, &t, &err) != 0)
        return -1;
    int rc = store_get(&t, DB_SESSIONS, id, len, &v, &err);
    if (rc == 0 && record_decode(&record_session, v.data, v.len, out, &err) != 0)
        rc = -1;
    store_abort(&t);
    if (rc != 0)
        return rc;
    if (strcmp(out->principal, p->id) != 0 || aly_wall_ms() >= out->expires_ms)
        return 1;
    return 0;
}

static void session_delete(http_ctx_t *hctx, const char *id)
{
    store_txn_t t;
    aly_err_t err;
    if (store_begin(hctx->store, STORE_WRITE, &t, &err) != 0)
        return;
    if (store_del(&t, DB_SESSIONS, id, strlen(id), &err) < 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        log_error("ending session: %s", err.msg);
    }
}

/* ---- methods ---- */

static void do_initialize(mcp_call_t *call, json_t *params)
{
    exchange_t *x = call->x;
    const char *asked = json_string_value(json_object_get(params, "protocolVersion"));
    if (asked == NULL || !json_is_object(json_object_get(params, "capabilities")) ||
        !json_is_object(json_object_get(params, "clientInfo"))) {
        mcp_call_error(call, RPC_INVALID_PARAMS, "initialize needs protocolVersion, capabilities and clientInfo", NULL);
        return;
    }
    int pi = 0;
    for (size_t i = 0; i < mcp_protocol_count; i++)
        if (strcmp(mcp_protocol_versions[i], asked) == 0)
            pi = (int)i;
    session_record_t *s = &x->session;
    memset(s, 0, sizeof(*s));
    memcpy(s->id, "mcp_", 4);
    random_b62(s->id + 4, 32);
    snprintf(s->principal, sizeof(s->principal), "%s", x->principal.id);
    snprintf(s->protocol, sizeof(s->protocol), "%s", mcp_protocol_versions[pi]);
    s->created_ms = aly_wall_ms();
    s->expires_ms = s->created_ms + x->hctx->cfg->session_ttl_ms;
    aly_err_t err;
    if (session_write(x->hctx->store, s, &err) != 0) {
        log_error("creating a session: %s", err.msg);
        mcp_call_error(call, RPC_INTERNAL_ERROR, "cannot create a session; try again", NULL);
        return;
    }
    x->has_session = 1;
    x->protocol = pi;
    session_sweep(x->hctx->store);
    json_t *caps = json_pack("{s:{}, s:{}, s:{s:b}, s:{s:b, s:b}, s:{s:b}}", "logging", "completions", "prompts", "listChanged", 0,
                             "resources", "subscribe", 1, "listChanged", 0, "tools", "listChanged", 0);
    mcp_call_result(call, json_pack("{s:s, s:o, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", mcp_protocol_versions[pi],
                                    "capabilities", caps, "serverInfo", "name", "alyd", "title", "Aly", "version", PACKAGE_VERSION,
                                    "instructions",
                                    "Operate an Aly commerce workspace: list sites, read and change products, fulfil orders, "
                                    "read analytics. Lists are paged: pass next_cursor back to continue."));
}

static void do_ping(mcp_call_t *call, json_t *params)
{
    (void)params;
    mcp_call_result(call, json_object());
}

static void do_set_level(mcp_call_t *call, json_t *params)
{
    exchange_t *x = call->x;
    int li = level_index(json_string_value(json_object_get(params, "level")));
    if (li < 0) {
        mcp_call_error(call, RPC_INVALID_PARAMS,
                       "level must be one of debug, info, notice, warning, error, critical, alert, emergency", NULL);
        return;
    }
    if (x->has_session) {
        aly_err_t err;
        x->session.log_level = (uint64_t)li;
        if (session_write(x->hctx->store, &x->session, &err) != 0) {
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
static void cancel(exchange_t *x, json_t *params)
{
    json_t *id = json_object_get(params, "requestId");
    mcp_call_t *target = NULL;
    for (h2o_linklist_t *l = pending_calls.next; id != NULL && l != &pending_calls && target == NULL; l = l->next) {
        mcp_call_t *c = H2O_STRUCT_FROM_MEMBER(mcp_call_t, link, l);
        if (json_equal(c->id, id) && strcmp(c->x->principal.id, x->principal.id) == 0 &&
            (!x->has_session || (c->x->has_session && strcmp(c->x->session.id, x->session.id) == 0)))
            target = c;
    }
    if (target == NULL) {
        /* Not here: if another worker waits on the client for that request, tell it through the store. */
        char owner[80], wid[48];
        store_txn_t t;
        store_val_t v;
        aly_err_t err;
        int found = 0;
        if (id == NULL)
            return;
        owner_key(x, id, owner);
        if (store_begin(x->hctx->store, STORE_VOLATILE, &t, &err) == 0) {
            if (store_get(&t, VDB_REPLIES, owner, strlen(owner), &v, &err) == 0 && v.len < sizeof(wid)) {
                memcpy(wid, v.data, v.len);
                wid[v.len] = '\0';
                found = 1;
            }
            store_abort(&t);
        }
        if (found)
            replies_write(x->hctx->store, "c:", wid, "", 0, 0);
        return;
    }
    target->cancelled = 1;
    for (h2o_linklist_t *l = waiters.next; l != &waiters;) {
        waiter_t *wt = H2O_STRUCT_FROM_MEMBER(waiter_t, link, l);
        l = l->next;
        if (wt->call == target) {
            deliver(wt, NULL); /* completes (and frees) target */
            break;
        }
    }
}

/* An error response that belongs to no call (invalid message). */
static void protocol_error(exchange_t *x, json_t *id, int code, const char *message)
{
    x->protocol_error_code = code;
    emit(x, json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", "code", code, "message",
                      message),
         1);
}

static int valid_id(json_t *id)
{
    return json_is_string(id) || json_is_integer(id);
}

/* Handles one message of the body; invalid ones get an error response with the id when there is one. */
static void dispatch(exchange_t *x, json_t *msg)
{
    if (!json_is_object(msg)) {
        protocol_error(x, NULL, RPC_INVALID_REQUEST, "a JSON-RPC message must be an object");
        return;
    }
    json_t *id = json_object_get(msg, "id"), *params = json_object_get(msg, "params");
    const char *version = json_string_value(json_object_get(msg, "jsonrpc"));
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (version == NULL || strcmp(version, "2.0") != 0) {
        protocol_error(x, valid_id(id) ? id : NULL, RPC_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
        return;
    }
    if (method == NULL) {
        if (json_object_get(msg, "method") == NULL && id != NULL &&
            (json_object_get(msg, "result") != NULL || json_object_get(msg, "error") != NULL)) {
            client_reply(x, msg);
            return;
        }
        protocol_error(x, valid_id(id) ? id : NULL, RPC_INVALID_REQUEST, "a request needs a string method");
        return;
    }
    if (id != NULL && !valid_id(id)) {
        protocol_error(x, NULL, RPC_INVALID_REQUEST, "id must be a string or an integer");
        return;
    }
    if (params != NULL && !json_is_object(params)) {
        if (id != NULL)
            protocol_error(x, id, RPC_INVALID_PARAMS, "params must be an object");
        return;
    }
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
        emit(x, json_pack("{s:s, s:O, s:{s:i, s:s, s:o}}", "jsonrpc", "2.0", "id", id, "error", "code", RPC_METHOD_NOT_FOUND, "message",
                          "Method not found", "data", data),
             1);
        return;
    }
    if (x->batch && methods[i].handle == do_initialize) {
        protocol_error(x, id, RPC_INVALID_REQUEST, "initialize must not be part of a batch");
        return;
    }
    mcp_call_t *c = call_new(x, id, params);
    methods[i].handle(c, params);
}

/* ---- HTTP ---- */

static h2o_iovec_t header(h2o_req_t *req, const char *lcname)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, lcname, strlen(lcname), -1);
    return i >= 0 ? req->headers.entries[i].value : h2o_iovec_init(NULL, 0);
}

static int list_has(const aly_strlist_t *l, const char *s, size_t n)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->items[i]) == n && strncasecmp(l->items[i], s, n) == 0)
            return 1;
    return 0;
}

/* Host against allowed_hosts; a port equal to the scheme's default may be left out on either side. */
static int host_allowed(http_ctx_t *hctx, h2o_req_t *req)
{
    h2o_iovec_t a = req->input.authority;
    if (a.len == 0 || a.len > 255)
        return 0;
    if (list_has(&hctx->cfg->allowed_hosts, a.base, a.len))
        return 1;
    const char *def = req->scheme == &H2O_URL_SCHEME_HTTPS ? ":443" : ":80";
    char buf[300];
    if (a.len > strlen(def) && memcmp(a.base + a.len - strlen(def), def, strlen(def)) == 0)
        return list_has(&hctx->cfg->allowed_hosts, a.base, a.len - strlen(def));
    snprintf(buf, sizeof(buf), "%.*s%s", (int)a.len, a.base, def);
    return list_has(&hctx->cfg->allowed_hosts, buf, strlen(buf));
}

static void send_http_error(h2o_req_t *req, int status, const char *reason, int code, const char *message)
{
    json_t *body = json_pack("{s:s, s:n, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", "error", "code", code, "message", message);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    http_send_json(req, status, reason, text, strlen(text));
    free(text);
}

static int accepts(h2o_iovec_t accept, const char *type)
{
    return accept.base != NULL && h2o_strstr(accept.base, accept.len, type, strlen(type)) != SIZE_MAX;
}

static exchange_t *exchange_new(http_ctx_t *hctx, h2o_req_t *req, const principal_t *p)
{
    exchange_t *x = calloc(1, sizeof(*x));
    if (x == NULL)
        abort();
    x->req = req;
    x->hctx = hctx;
    x->principal = *p;
    x->refs = 1;
    x->status = 200;
    exchange_t **link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), on_req_disposed);
    *link = x;
    return x;
}

static void on_keepalive(h2o_timeout_entry_t *entry)
{
    exchange_t *x = H2O_STRUCT_FROM_MEMBER(exchange_t, keepalive, entry);
    buf_append(&x->queued, ": keep-alive\n\n", 14);
    flush(x);
    h2o_timeout_link(x->hctx->loop, &keepalive_timeout, &x->keepalive);
}

void mcp_close_streams(void)
{
    while (!h2o_linklist_is_empty(&open_streams)) {
        exchange_t *x = H2O_STRUCT_FROM_MEMBER(exchange_t, stream_link, open_streams.next);
        h2o_linklist_unlink(&x->stream_link);
        h2o_timeout_unlink(&x->keepalive);
        x->finishing = 1;
        flush(x);
    }
}

static void serve_get(http_ctx_t *hctx, h2o_req_t *req, const principal_t *p, h2o_iovec_t sid)
{
    if (sid.base == NULL) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("POST, DELETE"));
        send_http_error(req, 405, "Method Not Allowed", RPC_INVALID_REQUEST,
                        "GET opens the event stream of a session: send Mcp-Session-Id (from initialize)");
        return;
    }
    if (!accepts(header(req, "accept"), "text/event-stream")) {
        send_http_error(req, 406, "Not Acceptable", RPC_INVALID_REQUEST, "the event stream needs Accept: text/event-stream");
        return;
    }
    session_record_t s;
    int rc = session_load(hctx, sid.base, sid.len, p, &s);
    if (rc != 0) {
        send_http_error(req, rc < 0 ? 503 : 404, rc < 0 ? "Service Unavailable" : "Not Found", RPC_INVALID_REQUEST,
                        rc < 0 ? "the session store cannot be read" : "unknown or expired session: initialize again");
        return;
    }
    exchange_t *x = exchange_new(hctx, req, p);
    x->is_stream = 1;
    x->has_session = 1;
    x->session = s;
    if (!keepalive_ready) {
        h2o_timeout_init(hctx->loop, &keepalive_timeout, STREAM_KEEPALIVE_MS);
        keepalive_ready = 1;
    }
    x->keepalive.cb = on_keepalive;
    h2o_timeout_link(hctx->loop, &keepalive_timeout, &x->keepalive);
    h2o_linklist_insert(&open_streams, &x->stream_link);
    start_sse(x);
    buf_append(&x->queued, ": stream open\n\n", 15);
    flush(x);
}

static void serve_delete(http_ctx_t *hctx, h2o_req_t *req, const principal_t *p, h2o_iovec_t sid)
{
    session_record_t s;
    if (sid.base == NULL) {
        send_http_error(req, 400, "Bad Request", RPC_INVALID_REQUEST, "DELETE ends a session: send its Mcp-Session-Id");
        return;
    }
    int rc = session_load(hctx, sid.base, sid.len, p, &s);
    if (rc != 0) {
        send_http_error(req, rc < 0 ? 503 : 404, rc < 0 ? "Service Unavailable" : "Not Found", RPC_INVALID_REQUEST,
                        rc < 0 ? "the session store cannot be read" : "unknown or expired session");
        return;
    }
    session_delete(hctx, s.id);
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_send_inline(req, "", 0);
}

/* The access log's rpc field: the method, "tools/call:NAME" for a tool, or "batch:N". */
static void log_rpc(h2o_req_t *req, json_t *body)
{
    char buf[160];
    if (json_is_array(body)) {
        snprintf(buf, sizeof(buf), "batch:%zu", json_array_size(body));
    } else {
        const char *m = json_string_value(json_object_get(body, "method"));
        const char *tool = json_string_value(json_object_get(json_object_get(body, "params"), "name"));
        if (m == NULL)
            snprintf(buf, sizeof(buf), "%s", json_object_get(body, "id") != NULL ? "response" : "-");
        else if (tool != NULL && strcmp(m, "tools/call") == 0)
            snprintf(buf, sizeof(buf), "tools/call:%.100s", tool);
        else
            snprintf(buf, sizeof(buf), "%.150s", m);
    }
    http_log_note(req, "rpc", buf, strlen(buf));
}

static int is_initialize(json_t *msg)
{
    const char *m = json_string_value(json_object_get(msg, "method"));
    return m != NULL && strcmp(m, "initialize") == 0;
}

void mcp_serve(http_ctx_t *hctx, h2o_req_t *req)
{
    /* DNS-rebinding guard first: a browser page must not reach us through a name it controls. */
    h2o_iovec_t origin = header(req, "origin");
    if (origin.base != NULL && !list_has(&hctx->cfg->allowed_origins, origin.base, origin.len)) {
        send_http_error(req, 403, "Forbidden", RPC_INVALID_REQUEST, "Origin not allowed (allowed_origins)");
        return;
    }
    if (!host_allowed(hctx, req)) {
        send_http_error(req, 421, "Misdirected Request", RPC_INVALID_REQUEST, "Host not served here (allowed_hosts)");
        return;
    }
    h2o_iovec_t pv = header(req, "mcp-protocol-version");
    int protocol = PROTOCOL_DEFAULT;
    if (pv.base != NULL) {
        size_t i;
        for (i = 0; i < mcp_protocol_count; i++)
            if (h2o_memis(pv.base, pv.len, mcp_protocol_versions[i], strlen(mcp_protocol_versions[i])))
                break;
        if (i == mcp_protocol_count) {
            send_http_error(req, 400, "Bad Request", RPC_INVALID_REQUEST,
                            "unsupported MCP-Protocol-Version (supported: 2025-11-25, 2025-06-18, 2025-03-26)");
            return;
        }
        protocol = (int)i;
    }
    principal_t p;
    if (http_authenticate(hctx, req, &p) != 0)
        return;
    h2o_iovec_t sid = header(req, "mcp-session-id");
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        serve_get(hctx, req, &p, sid);
        return;
    }
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"))) {
        serve_delete(hctx, req, &p, sid);
        return;
    }

    h2o_iovec_t accept = header(req, "accept");
    int sse = accepts(accept, "text/event-stream"), json = accepts(accept, "application/json") || accepts(accept, "*/*");
    if (accept.base != NULL && !sse && !json) {
        send_http_error(req, 406, "Not Acceptable", RPC_INVALID_REQUEST,
                        "Accept must include application/json and text/event-stream");
        return;
    }
    ssize_t ct = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (ct < 0 || !accepts(req->headers.entries[ct].value, "application/json")) {
        send_http_error(req, 415, "Unsupported Media Type", RPC_INVALID_REQUEST, "POST a JSON-RPC message as application/json");
        return;
    }
    json_error_t jerr;
    json_t *body = json_loadb(req->entity.base, req->entity.len, JSON_DECODE_ANY, &jerr);
    if (body == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Parse error: %s (at byte %d)", jerr.text, jerr.position);
        send_http_error(req, 400, "Bad Request", RPC_PARSE_ERROR, msg);
        return;
    }
    int batch = json_is_array(body);
    log_rpc(req, body);
    if (!batch && !json_is_object(body)) {
        json_decref(body);
        send_http_error(req, 400, "Bad Request", RPC_INVALID_REQUEST, "the body must be a JSON-RPC message (an object)");
        return;
    }
    session_record_t s;
    int has_session = 0;
    if (sid.base != NULL && !(!batch && is_initialize(body))) {
        int rc = session_load(hctx, sid.base, sid.len, &p, &s);
        if (rc != 0) {
            json_decref(body);
            send_http_error(req, rc < 0 ? 503 : 404, rc < 0 ? "Service Unavailable" : "Not Found", RPC_INVALID_REQUEST,
                            rc < 0 ? "the session store cannot be read" : "unknown or expired session: initialize again");
            return;
        }
        has_session = 1;
        if (pv.base == NULL)
            for (size_t i = 0; i < mcp_protocol_count; i++)
                if (strcmp(s.protocol, mcp_protocol_versions[i]) == 0)
                    protocol = (int)i;
    }
    if (batch) {
        const char *why = NULL;
        if (strcmp(mcp_protocol_versions[protocol], "2025-03-26") != 0)
            why = "batches are only part of protocol 2025-03-26: send one message per POST";
        else if (json_array_size(body) == 0)
            why = "an empty batch";
        else if (json_array_size(body) > MAX_BATCH)
            why = "a batch holds at most 100 messages";
        if (why != NULL) {
            json_decref(body);
            send_http_error(req, 400, "Bad Request", RPC_INVALID_REQUEST, why);
            return;
        }
    }

    exchange_t *x = exchange_new(hctx, req, &p);
    x->batch = batch;
    x->accepts_sse = sse;
    x->protocol = protocol;
    x->has_session = has_session;
    if (has_session)
        x->session = s;
    x->refs++; /* held while dispatching, so nothing can free x under us */
    x->dispatching = 1;
    if (batch) {
        size_t i;
        json_t *m;
        json_array_foreach(body, i, m) dispatch(x, m);
    } else {
        dispatch(x, body);
        /* A single invalid message: HTTP 400 with its JSON-RPC error (no call was made). */
        if (x->pending == 0 && x->n_answers == 1 &&
            (x->protocol_error_code == RPC_INVALID_REQUEST || x->protocol_error_code == RPC_PARSE_ERROR))
            x->status = 400;
    }
    json_decref(body);
    x->dispatching = 0;
    maybe_finish(x);
    release(x);
}

/*
 * Requests from the server to the client (sampling/createMessage,
 * elicitation/create) and the hand-over of their replies between workers.
 *
 * The client answers a server request with a POST that any worker may get.
 * The issuing worker records "p:<id>" -> principal in the volatile store; a
 * worker that receives the reply and has no local waiter stores it under
 * "r:<id>" (only when that pending record exists and names the same
 * principal, so clients cannot fill the store with replies nobody awaits);
 * the issuing worker polls for it every REPLY_POLL_MS.  A cancellation that
 * lands on another worker travels the same way ("c:<id>"), found through the
 * owner record "q:<digest of principal, session, request id>" -> "<id>".
 * With "volatile redis://" the same records are Redis keys (aly:{<id>}:p,
 * :r, :c and aly:{q:<digest>}:q, each expiring after REPLY_TTL_MS), so the
 * reply may land on another host; the issuing worker still polls (one MGET
 * of :r and :c per waiter and tick) rather than subscribing: a subscribed
 * connection can send no other command, and a poll needs no second one.
 *
 * Also the multi round-trip call API of aly/handler.h: on a modern request a
 * handler's questions become an input_required result; on a legacy session
 * they go out one by one as real requests, and once all are answered the
 * method runs again with the answers (at most MAX_ROUNDS times).
 */
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/log.h"
#include "aly/mcp_internal.h"
#include "aly/volatile_redis.h"

#define REPLY_POLL_MS 20
#define REPLY_TIMEOUT_MS 60000
#define REPLY_TTL_MS (2 * REPLY_TIMEOUT_MS) /* Redis records outlive their waiter, then vanish */
#define OWNER_KEY_LEN 67
#define MAX_ROUNDS 8 /* "q:" + 64 hex digits */

typedef struct waiter {
    h2o_linklist_t link;
    char id[48];
    mcp_call_t *call;
    mcp_reply_fn cb;
    uint64_t deadline;
    unsigned polled; /* the poll_replies round that last looked at it */
    char owner[OWNER_KEY_LEN + 1];
} waiter_t;

static h2o_linklist_t waiters = {&waiters, &waiters};
static h2o_timeout_t reply_poll;
static h2o_timeout_entry_t reply_poll_entry;
static int reply_poll_ready;
static h2o_loop_t *reply_loop;

/* The Redis key of a record: "p:"/"r:"/"c:" + id -> aly:{id}:p..., and an owner key "q:..." (prefix "") -> aly:{q:...}:q. */
static void redis_key(const char *prefix, const char *id, char out[128])
{
    char kind[2] = {prefix[0] != '\0' ? prefix[0] : 'q', '\0'};
    volatile_redis_key(out, 128, id, strlen(id), kind);
}

/* One Redis record into *val (malloc'd, NUL-terminated): 0 found, 1 absent or unreadable. */
static int redis_read(volatile_redis_t *vr, const char *prefix, const char *id, char **val, size_t *len)
{
    char k[128];
    const char *keys[] = {k};
    aly_err_t err;
    redis_key(prefix, id, k);
    if (volatile_redis_mget(vr, keys, 1, val, len, &err) != 0)
        log_warn("client reply store: %s", err.msg);
    return *val != NULL ? 0 : 1;
}

static void replies_write(store_t *st, const char *prefix, const char *id, const void *val, size_t vlen, int del)
{
    volatile_redis_t *vr = volatile_redis();
    if (vr != NULL) {
        char rk[128];
        aly_err_t err;
        redis_key(prefix, id, rk);
        if ((del ? volatile_redis_del(vr, rk, &err) : volatile_redis_set(vr, rk, val, vlen, REPLY_TTL_MS, 0, &err)) < 0)
            log_warn("client reply store: %s", err.msg);
        return;
    }
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
static void owner_key(const mcp_exchange_t *x, json_t *id, char out[OWNER_KEY_LEN + 1])
{
    char *idtext = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
    mcp_buf_t b = {NULL, 0, 0, 0};
    unsigned char d[32];
    mcp_buf_append(&b, x->principal.id, strlen(x->principal.id) + 1);
    mcp_buf_append(&b, x->has_session ? x->session.id : "", x->has_session ? strlen(x->session.id) + 1 : 1);
    mcp_buf_append(&b, idtext ? idtext : "", idtext ? strlen(idtext) : 0);
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
    store_t *st = wt->call->x->ctx->store;
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
    static unsigned round;
    uint64_t now = aly_now_ms();
    round++;
    h2o_linklist_t *l = waiters.next;
    while (l != &waiters) {
        waiter_t *wt = H2O_STRUCT_FROM_MEMBER(waiter_t, link, l);
        l = l->next;
        if (wt->polled == round)
            continue;
        wt->polled = round;
        /*
         * A delivery runs the call's callback, which may end its exchange and so give up other waiters of it
         * (freed): after one, the walk starts again from the head, skipping those this round already read.
         */
        store_t *st = wt->call->x->ctx->store;
        char k[64];
        int kl = snprintf(k, sizeof(k), "r:%s", wt->id);
        store_txn_t t;
        store_val_t v;
        aly_err_t err;
        json_t *reply = NULL;
        int cancelled = 0;
        volatile_redis_t *vr = volatile_redis();
        if (vr != NULL) {
            char rk[128], ck[128], *vals[2];
            size_t lens[2];
            const char *keys[] = {rk, ck};
            redis_key("r:", wt->id, rk);
            redis_key("c:", wt->id, ck);
            if (volatile_redis_mget(vr, keys, 2, vals, lens, &err) == 0) {
                reply = vals[0] != NULL ? json_loadb(vals[0], lens[0], 0, NULL) : NULL;
                cancelled = vals[1] != NULL;
                free(vals[0]);
                free(vals[1]);
            }
        } else if (store_begin(st, STORE_VOLATILE, &t, &err) == 0) {
            if (store_get(&t, VDB_REPLIES, k, (size_t)kl, &v, &err) == 0)
                reply = json_loadb(v.data, v.len, 0, NULL);
            k[0] = 'c';
            cancelled = store_get(&t, VDB_REPLIES, k, (size_t)kl, &v, &err) == 0;
            store_abort(&t);
        }
        if (cancelled) {
            json_decref(reply);
            replies_write(st, "c:", wt->id, NULL, 0, 1);
            replies_write(st, "r:", wt->id, NULL, 0, 1);
            wt->call->cancelled = 1;
            deliver(wt, NULL);
            l = waiters.next;
        } else if (reply != NULL) {
            replies_write(st, "r:", wt->id, NULL, 0, 1);
            deliver(wt, reply);
            json_decref(reply);
            l = waiters.next;
        } else if (now >= wt->deadline) {
            deliver(wt, NULL);
            l = waiters.next;
        }
    }
    if (!h2o_linklist_is_empty(&waiters))
        h2o_timeout_link(reply_loop, &reply_poll, &reply_poll_entry);
}

int mcp_call_request(mcp_call_t *call, const char *method, json_t *params, mcp_reply_fn cb)
{
    mcp_exchange_t *x = call->x;
    /* A modern request never gets requests from us: its handlers ask through input_required instead. */
    if (x->modern || !x->accepts_sse || x->finishing) {
        json_decref(params);
        return -1;
    }
    waiter_t *wt = calloc(1, sizeof(*wt));
    if (wt == NULL)
        abort();
    memcpy(wt->id, "aly-", 4);
    if (aly_random_b62(wt->id + 4, 24) != 0)
        abort();
    wt->call = call;
    wt->cb = cb;
    wt->deadline = aly_now_ms() + REPLY_TIMEOUT_MS;
    h2o_linklist_insert(&waiters, &wt->link);
    owner_key(x, call->id, wt->owner);
    replies_write(x->ctx->store, "p:", wt->id, x->principal.id, strlen(x->principal.id), 0);
    replies_write(x->ctx->store, "", wt->owner, wt->id, strlen(wt->id), 0);
    if (!reply_poll_ready) {
        reply_loop = x->ctx->loop;
        h2o_timeout_init(x->ctx->loop, &reply_poll, REPLY_POLL_MS);
        reply_poll_entry.cb = poll_replies;
        reply_poll_ready = 1;
    }
    if (!h2o_timeout_is_linked(&reply_poll_entry))
        h2o_timeout_link(x->ctx->loop, &reply_poll, &reply_poll_entry);
    mcp_emit(x, json_pack("{s:s, s:s, s:s, s:o}", "jsonrpc", "2.0", "id", wt->id, "method", method, "params", params), 0);
    return 0;
}

void mcp_client_reply(mcp_exchange_t *x, json_t *msg)
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
    volatile_redis_t *vr = volatile_redis();
    if (vr != NULL) {
        char *owner = NULL;
        size_t olen = 0;
        if (text != NULL && redis_read(vr, "p:", id, &owner, &olen) == 0 && strcmp(owner, x->principal.id) == 0)
            replies_write(x->ctx->store, "r:", id, text, strlen(text), 0);
        free(owner);
        free(text);
        return;
    }
    char pk[64], rk[64];
    int pl = snprintf(pk, sizeof(pk), "p:%s", id), rl = snprintf(rk, sizeof(rk), "r:%s", id);
    store_txn_t t;
    store_val_t v;
    aly_err_t err;
    if (text != NULL && store_begin(x->ctx->store, STORE_WRITE | STORE_VOLATILE, &t, &err) == 0) {
        if (store_get(&t, VDB_REPLIES, pk, (size_t)pl, &v, &err) == 0 && v.len == strlen(x->principal.id) &&
            memcmp(v.data, x->principal.id, v.len) == 0 &&
            store_put(&t, VDB_REPLIES, rk, (size_t)rl, text, strlen(text), 0, &err) == 0)
            store_commit(&t, &err);
        else
            store_abort(&t);
    }
    free(text);
}

void mcp_client_abandon(mcp_call_t *target)
{
    for (h2o_linklist_t *l = waiters.next; l != &waiters; l = l->next) {
        waiter_t *wt = H2O_STRUCT_FROM_MEMBER(waiter_t, link, l);
        if (wt->call == target) {
            deliver(wt, NULL); /* completes (and frees) target */
            return;
        }
    }
}

void mcp_client_cancel_remote(mcp_exchange_t *x, json_t *id)
{
    char owner[OWNER_KEY_LEN + 1], wid[48];
    store_txn_t t;
    store_val_t v;
    aly_err_t err;
    int found = 0;
    if (id == NULL)
        return;
    owner_key(x, id, owner);
    volatile_redis_t *vr = volatile_redis();
    char *rid = NULL;
    size_t rlen = 0;
    if (vr != NULL) {
        if (redis_read(vr, "", owner, &rid, &rlen) == 0 && rlen < sizeof(wid)) {
            memcpy(wid, rid, rlen + 1);
            found = 1;
        }
        free(rid);
    } else if (store_begin(x->ctx->store, STORE_VOLATILE, &t, &err) == 0) {
        if (store_get(&t, VDB_REPLIES, owner, strlen(owner), &v, &err) == 0 && v.len < sizeof(wid)) {
            memcpy(wid, v.data, v.len);
            wid[v.len] = '\0';
            found = 1;
        }
        store_abort(&t);
    }
    if (found)
        replies_write(x->ctx->store, "c:", wid, "", 0, 0);
}

/* ---- multi round-trip requests ---- */

json_t *mcp_call_input(const mcp_call_t *call, const char *key)
{
    return json_object_get(call->inputs, key);
}

json_t *mcp_call_state(const mcp_call_t *call)
{
    return call->state;
}

unsigned mcp_client_caps(const json_t *declared)
{
    /* A capability is declared as an object; elicitation counts when it covers form mode (an empty object predates modes). */
    json_t *e = json_object_get(declared, "elicitation"), *s = json_object_get(declared, "sampling"),
           *r = json_object_get(declared, "roots");
    int form = json_is_object(e) && (json_object_size(e) == 0 || json_is_object(json_object_get(e, "form")));
    return (form ? MCP_CAP_ELICITATION : 0) | (json_is_object(s) ? MCP_CAP_SAMPLING : 0) | (json_is_object(r) ? MCP_CAP_ROOTS : 0);
}

int mcp_call_client_can(const mcp_call_t *call, const char *capability)
{
    unsigned bit = strcmp(capability, "elicitation") == 0 ? MCP_CAP_ELICITATION
                   : strcmp(capability, "sampling") == 0  ? MCP_CAP_SAMPLING
                   : strcmp(capability, "roots") == 0     ? MCP_CAP_ROOTS
                                                          : 0;
    if (call->x->modern)
        return (mcp_client_caps(call->x->client_caps) & bit) != 0;
    return call->x->has_session && (call->x->session.client_caps & bit) != 0;
}

int mcp_call_answering(const mcp_call_t *call)
{
    return call->inputs != NULL || call->state != NULL;
}

/* Asks the next question, or runs the method again once all are answered; 1 when that completed the call. */
static int ask_next(mcp_call_t *call);

static void asked(mcp_call_t *call, json_t *result, json_t *error)
{
    if (result == NULL) {
        const char *m = json_string_value(json_object_get(error, "message"));
        char msg[400];
        snprintf(msg, sizeof(msg), "this needs your input, and the client did not give it (%s)", m != NULL ? m : "no answer");
        mcp_call_result(call, mcp_text_result(msg, 1));
        return;
    }
    json_object_set(call->inputs, call->asking_key, result);
    json_object_del(call->asking, call->asking_key);
    ask_next(call);
}

static int ask_next(mcp_call_t *call)
{
    void *it = json_object_iter(call->asking);
    if (it == NULL) {
        json_decref(call->asking);
        call->asking = NULL;
        call->rerun(call, mcp_call_params(call));
        return 0;
    }
    json_t *q = json_object_iter_value(it);
    const char *method = json_string_value(json_object_get(q, "method"));
    json_t *params = json_object_get(q, "params");
    free(call->asking_key);
    call->asking_key = strdup(json_object_iter_key(it));
    if (call->asking_key == NULL)
        abort();
    if (method != NULL && mcp_call_request(call, method, params != NULL ? json_incref(params) : json_object(), asked) == 0)
        return 0;
    mcp_call_result(call,
                    mcp_text_result("this needs your input: use a client that accepts text/event-stream, so it can be asked", 1));
    return 1;
}

mcp_status_t mcp_call_input_required(mcp_call_t *call, json_t *requests, json_t *state)
{
    if (call->x->modern) {
        char *token = mcp_modern_state_seal(call, state);
        json_decref(state);
        if (token == NULL) {
            json_decref(requests);
            mcp_call_error(call, RPC_INTERNAL_ERROR, "cannot protect the request state; try again", NULL);
            return MCP_DONE;
        }
        call->input_required = 1;
        mcp_call_result(call, json_pack("{s:o, s:s}", "inputRequests", requests, "requestState", token));
        free(token);
        return MCP_DONE;
    }
    if (call->rerun == NULL || ++call->rounds > MAX_ROUNDS || !json_is_object(requests) || json_object_size(requests) == 0) {
        json_decref(requests);
        json_decref(state);
        mcp_call_result(call, mcp_text_result("this needs input the server could not ask for here", 1));
        return MCP_DONE;
    }
    json_decref(call->state);
    call->state = state;
    json_decref(call->inputs);
    call->inputs = json_object();
    json_decref(call->asking);
    call->asking = requests;
    return ask_next(call) ? MCP_DONE : MCP_PENDING;
}

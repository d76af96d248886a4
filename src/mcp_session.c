/*
 * MCP sessions of the legacy protocol revisions: created by initialize,
 * named by Mcp-Session-Id, kept in the durable store so any worker serves any
 * session, ended by DELETE or by expiry.
 *
 * Expired sessions are removed lazily: every SWEEP_EVERY initializes a worker
 * looks at up to SWEEP_SCAN sessions after where its previous sweep stopped
 * (going on from the first key when it reaches the last) and deletes the
 * expired and undecodable ones; the same id may be seen twice when fewer than
 * SWEEP_SCAN exist, which costs a "not found" delete.  Resuming matters: a sweep that always started at the
 * first key would look at the same live sessions for ever once more than
 * SWEEP_SCAN exist, and expired ones behind them would fill the store.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/log.h"
#include "aly/mcp_internal.h"

#define SWEEP_EVERY 64  /* initializes per worker between sweeps */
#define SWEEP_SCAN 1000 /* sessions looked at per sweep */

#define SESSION_ID_MAX sizeof(((session_record_t *)0)->id)

int mcp_session_write(store_t *st, const session_record_t *s, aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    if (store_put_record(&t, DB_SESSIONS, s->id, strlen(s->id), &record_session, s, 0, err) != 0 || store_commit(&t, err) != 0) {
        store_abort(&t);
        return -1;
    }
    return 0;
}

typedef struct sweep_ctx {
    uint64_t now;
    unsigned seen, n;
    char last[SESSION_ID_MAX];
    char ids[SWEEP_SCAN][SESSION_ID_MAX];
} sweep_ctx_t;

/* Collects expired (or undecodable) session ids; they are deleted after the scan, not under its cursor. */
static int sweep_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    sweep_ctx_t *c = vctx;
    session_record_t s;
    aly_err_t err;
    if (c->seen == SWEEP_SCAN)
        return 1;
    c->seen++;
    if (key->len >= SESSION_ID_MAX) {
        /* Not one of ours (ids are shorter); remember it only to step past it. */
        c->last[0] = '\0';
        return 0;
    }
    memcpy(c->last, key->data, key->len);
    c->last[key->len] = '\0';
    if (record_decode(&record_session, val->data, val->len, &s, &err) != 0 || s.expires_ms <= c->now)
        memcpy(c->ids[c->n++], c->last, key->len + 1);
    return 0;
}

static void session_sweep(store_t *st)
{
    static unsigned count;
    static char resume[SESSION_ID_MAX]; /* "" : from the first key */
    if (++count % SWEEP_EVERY != 0)
        return;
    store_txn_t t;
    aly_err_t err;
    sweep_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL || store_begin(st, STORE_WRITE | STORE_RESERVE, &t, &err) != 0) {
        free(c);
        return;
    }
    c->now = aly_wall_ms();
    size_t rl = strlen(resume);
    int rc = store_scan(&t, DB_SESSIONS, "", 0, rl ? resume : NULL, rl, sweep_cb, c, &err);
    int wrapped = rc == 0 && rl != 0 && c->seen < SWEEP_SCAN;
    if (wrapped) /* the end came first: go on from the first key with what is left of the budget */
        rc = store_scan(&t, DB_SESSIONS, "", 0, NULL, 0, sweep_cb, c, &err);
    for (unsigned i = 0; rc == 0 && i < c->n; i++)
        rc = store_del(&t, DB_SESSIONS, c->ids[i], strlen(c->ids[i]), &err) < 0 ? -1 : 0;
    if (rc != 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        log_warn("session sweep: %s", err.msg);
    } else {
        /* The next sweep resumes after the last key looked at; after a sweep that saw every key, at the first. */
        int all = c->seen < SWEEP_SCAN;
        memcpy(resume, all ? "" : c->last, all ? 1 : strlen(c->last) + 1);
    }
    free(c);
}

int mcp_session_create(mcp_exchange_t *x, int pi, unsigned caps, aly_err_t *err)
{
    session_record_t *s = &x->session;
    memset(s, 0, sizeof(*s));
    memcpy(s->id, "mcp_", 4);
    if (aly_random_b62(s->id + 4, 32) != 0)
        return aly_errf(err, "the random number generator failed");
    snprintf(s->principal, sizeof(s->principal), "%s", x->principal.id);
    snprintf(s->protocol, sizeof(s->protocol), "%s", mcp_protocol_versions[pi]);
    s->created_ms = aly_wall_ms();
    s->expires_ms = s->created_ms + x->ctx->cfg->session_ttl_ms;
    s->client_caps = caps;
    if (mcp_session_write(x->ctx->store, s, err) != 0)
        return -1;
    x->has_session = 1;
    x->protocol = pi;
    session_sweep(x->ctx->store);
    return 0;
}

int mcp_session_load(store_t *st, const char *id, size_t len, const principal_t *p, uint64_t asked_ms, session_record_t *out)
{
    store_txn_t t;
    aly_err_t err;
    if (len == 0 || len >= sizeof(out->id))
        return 1;
    if (store_begin(st, 0, &t, &err) != 0)
        return -1;
    t.asked_ms = asked_ms; /* a session made on another host before this request began is looked for in PostgreSQL */
    int rc = store_get_record(&t, DB_SESSIONS, id, len, &record_session, out, &err);
    store_abort(&t);
    if (rc != 0)
        return rc;
    if (strcmp(out->principal, p->id) != 0 || aly_wall_ms() >= out->expires_ms)
        return 1;
    return 0;
}

void mcp_session_delete(store_t *st, const char *id)
{
    store_txn_t t;
    aly_err_t err;
    if (store_begin(st, STORE_WRITE | STORE_RESERVE, &t, &err) != 0)
        return;
    if (store_del(&t, DB_SESSIONS, id, strlen(id), &err) < 0 || store_commit(&t, &err) != 0) {
        store_abort(&t);
        log_error("ending session: %s", err.msg);
    }
}

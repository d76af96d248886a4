/*
 * The local replica of cluster mode (aly/store.h): the durable LMDB
 * environment kept equal to PostgreSQL's kv table by applying the change log
 * in seq order.  A durable write catches up inside its own LMDB write
 * transaction while it holds the cluster's write lock, so what it reads is
 * current; each worker's timer applies the rest (store_replicate()).  The
 * last applied seq lives in DB_META under STORE_APPLIED_KEY, written in the
 * same LMDB transaction as the changes, so two workers of a host never apply
 * a change twice and a crash loses nothing that is not re-read.  Also here:
 * pruning the change log, copying kv whole, and alyctl migrate.
 *
 * Ordering: the log is read before the horizon (replica_horizon.upto, the
 * last pruned seq) in the same round trip, so a prune that lands in between
 * raises the horizon this replica sees and sends it to a whole copy rather
 * than past the rows it deleted.  Writers commit one at a time under the
 * advisory lock and take their seqs inside it, so seqs become visible in
 * order (rolled-back ones leave gaps, which are harmless).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/log.h"
#include "aly/store_internal.h"

#define PAGE 2000          /* change-log rows per round trip */
#define MIGRATE_ROWS 500   /* records per INSERT of migrate */
#define PRUNE_MIN_MS 1000  /* prune at most this often ... */
#define PRUNE_MAX_MS 60000 /* ... and at least this often */

static int applied_of(store_t *st, MDB_txn *txn, uint64_t *seq, aly_err_t *err)
{
    MDB_val k = {sizeof(STORE_APPLIED_KEY) - 1, (void *)STORE_APPLIED_KEY}, v;
    int rc = mdb_get(txn, st->dbi[DB_META], &k, &v);
    *seq = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0 || v.mv_size != sizeof(*seq))
        return aly_errf(err, "cannot read the replica's position: %s", rc ? mdb_strerror(rc) : "bad record");
    memcpy(seq, v.mv_data, sizeof(*seq));
    return 0;
}

static int set_applied(store_t *st, MDB_txn *txn, uint64_t seq, aly_err_t *err)
{
    MDB_val k = {sizeof(STORE_APPLIED_KEY) - 1, (void *)STORE_APPLIED_KEY}, v = {sizeof(seq), &seq};
    int rc = mdb_put(txn, st->dbi[DB_META], &k, &v, 0);
    if (rc != 0)
        return aly_errf(err, "cannot record the replica's position: %s", mdb_strerror(rc));
    return 0;
}

/* Decodes a bytea column of row i into a malloc'd buffer. */
static unsigned char *column(PGresult *r, int i, int col, size_t *len)
{
    size_t tl = (size_t)PQgetlength(r, i, col);
    unsigned char *out = malloc(tl / 2 + 1);
    long n = out != NULL ? store_pg_bytea(PQgetvalue(r, i, col), tl, out) : -1;
    if (n < 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

/* One record into txn: put (v) or delete (v NULL; absent is fine). */
static int apply_one(store_t *st, MDB_txn *txn, long db, const void *k, size_t klen, const void *v, size_t vlen, aly_err_t *err)
{
    if (db < 0 || db >= DB_N || klen == 0 || klen > STORE_MAX_KEY)
        return aly_errf(err, "PostgreSQL holds a record this replica cannot take (db %ld, key of %zu bytes)", db, klen);
    MDB_val mk = {klen, (void *)k}, mv = {vlen, (void *)v};
    int rc = v != NULL ? mdb_put(txn, st->dbi[db], &mk, &mv, 0) : mdb_del(txn, st->dbi[db], &mk, NULL);
    if (rc != 0 && !(rc == MDB_NOTFOUND && v == NULL))
        return aly_errf(err, "cannot apply a change to the replica: %s", mdb_strerror(rc));
    return 0;
}

/* Rows (seq, db, k, v) of r with seq > *applied, in order; *applied follows. */
static long apply_rows(store_t *st, MDB_txn *txn, PGresult *r, uint64_t *applied, aly_err_t *err)
{
    long n = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        uint64_t seq = strtoull(PQgetvalue(r, i, 0), NULL, 10);
        if (seq <= *applied)
            continue;
        size_t kl, vl = 0;
        unsigned char *k = column(r, i, 2, &kl), *v = PQgetisnull(r, i, 3) ? NULL : column(r, i, 3, &vl);
        int rc = k == NULL || (v == NULL && !PQgetisnull(r, i, 3))
                     ? aly_errf(err, "PostgreSQL sent a change that is not bytea")
                     : apply_one(st, txn, strtol(PQgetvalue(r, i, 1), NULL, 10), k, kl, v, vl, err);
        free(k);
        free(v);
        if (rc != 0)
            return -1;
        *applied = seq;
        n++;
    }
    return n;
}

/* Empties the replica's databases, keeping DB_META's own records (the schema record, the position). */
static int clear_replica(store_t *st, MDB_txn *txn, aly_err_t *err)
{
    for (int db = 0; db < DB_N; db++) {
        if (db != DB_META) {
            int rc = mdb_drop(txn, st->dbi[db], 0);
            if (rc != 0)
                return aly_errf(err, "cannot empty the replica: %s", mdb_strerror(rc));
            continue;
        }
        MDB_cursor *cur;
        MDB_val k, v;
        int rc = mdb_cursor_open(txn, st->dbi[DB_META], &cur);
        if (rc != 0)
            return aly_errf(err, "cannot empty the replica: %s", mdb_strerror(rc));
        while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
            int keep = (k.mv_size == 6 && memcmp(k.mv_data, "schema", 6) == 0) ||
                       (k.mv_size >= 3 && memcmp(k.mv_data, "pg/", 3) == 0);
            if (!keep && (rc = mdb_cursor_del(cur, 0)) != 0)
                break;
        }
        mdb_cursor_close(cur);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return aly_errf(err, "cannot empty the replica: %s", mdb_strerror(rc));
    }
    return 0;
}

/*
 * Copies kv whole into txn: a replica behind the horizon (or new beside a
 * migrated table).  Under the write lock the table cannot move; from the
 * timer a repeatable-read transaction gives the table and its seq as of one
 * instant.
 */
static long recopy(store_t *st, MDB_txn *txn, int locked, uint64_t *applied, aly_err_t *err)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "%sSET LOCAL statement_timeout = %llu; SELECT greatest((SELECT coalesce(max(seq), 0) FROM changes),"
             " (SELECT upto FROM replica_horizon)); SELECT db, k, v FROM kv%s",
             locked ? "" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ",
             (unsigned long long)st->pg->timeout_ms * STORE_PG_COPY_SLACK, locked ? "" : "; COMMIT");
    PGresult *res[5];
    int n = store_pg_run_slack(st->pg, locked ? STORE_RT_TXN : STORE_RT_POLL, sql, STORE_PG_COPY_SLACK, res, 5, err);
    if (n < 0)
        return -1;
    int base = locked ? 1 : 2;
    long count = -1;
    if (n < base + 2) {
        aly_errf(err, "PostgreSQL did not send the table");
    } else if (clear_replica(st, txn, err) == 0) {
        PGresult *kv = res[base + 1];
        int bad = 0;
        for (int i = 0; i < PQntuples(kv) && !bad; i++) {
            size_t kl, vl;
            unsigned char *k = column(kv, i, 1, &kl), *v = column(kv, i, 2, &vl);
            if (k == NULL || v == NULL)
                bad = aly_errf(err, "PostgreSQL sent a record that is not bytea");
            else
                bad = apply_one(st, txn, strtol(PQgetvalue(kv, i, 0), NULL, 10), k, kl, v, vl, err);
            free(k);
            free(v);
        }
        if (!bad) {
            count = PQntuples(kv);
            *applied = strtoull(PQgetvalue(res[base], 0, 0), NULL, 10);
            log_info("the replica was behind the change log's horizon: copied %ld records whole", count);
        }
    }
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    return count;
}

/* The log after seq, then the horizon: "SELECT ...; SELECT upto ..." (res[first], res[first + 1]). */
static void log_query(char *sql, size_t len, const char *before, uint64_t seq)
{
    snprintf(sql, len,
             "%sSELECT seq, db, k, v FROM changes WHERE seq > %llu ORDER BY seq LIMIT %d; SELECT upto FROM replica_horizon", before,
             (unsigned long long)seq, PAGE);
}

static uint64_t horizon_of(PGresult *r)
{
    return PQntuples(r) == 1 ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
}

int store_replica_begin(store_txn_t *t, aly_err_t *err)
{
    store_t *st = t->st;
    store_pg_t *pg = st->pg;
    uint64_t applied, start;
    /* A connection that died while idle (PostgreSQL restarted) is found out by this write's first statement: one fresh try. */
    int stale = pg->conn != NULL;
    if (store_pg_connect(pg, STORE_RT_TXN, 1, err) != 0 || applied_of(st, t->txn, &applied, err) != 0)
        return -1;
    start = applied;
    char sql[512], before[96];
    snprintf(before, sizeof(before), "BEGIN; SELECT pg_advisory_xact_lock(%d); ", STORE_PG_LOCK);
    pg->in_txn = 1;
    for (int first = 1;; first = 0) {
        PGresult *res[4];
        log_query(sql, sizeof(sql), first ? before : "", applied);
        int n = store_pg_run(pg, STORE_RT_TXN, sql, res, 4, err), at = first ? 2 : 0;
        if (n < 0 && first && stale && pg->conn == NULL && !pg->timed_out) {
            stale = 0;
            pg->next_try_ms = 0;
            if (store_pg_connect(pg, STORE_RT_TXN, 1, err) != 0)
                goto fail;
            pg->in_txn = 1;
            n = store_pg_run(pg, STORE_RT_TXN, sql, res, 4, err);
        }
        if (n < 0)
            goto fail;
        long got = -1, rows = n == at + 2 ? PQntuples(res[at]) : -1;
        uint64_t upto = rows >= 0 ? horizon_of(res[at + 1]) : 0;
        if (rows >= 0 && applied < upto)
            got = recopy(st, t->txn, 1, &applied, err);
        else if (rows >= 0)
            got = apply_rows(st, t->txn, res[at], &applied, err);
        else
            aly_errf(err, "PostgreSQL did not answer the catch-up");
        for (int i = 0; i < n; i++)
            PQclear(res[i]);
        if (got < 0)
            goto fail;
        if (rows < PAGE || applied < upto)
            break;
    }
    if (applied != start && set_applied(st, t->txn, applied, err) != 0)
        goto fail;
    pg->current_ms = aly_now_ms();
    return 0;
fail:
    store_pg_rollback(pg);
    return -1;
}

int store_replica_commit(store_txn_t *t, aly_err_t *err)
{
    uint64_t seq;
    if (store_pg_commit(t->st->pg, &seq, err) != 0)
        return -1;
    t->st->pg->current_ms = aly_now_ms();
    /*
     * PostgreSQL has the write: from here it happened, whatever this replica
     * manages.  A position not recorded only means the next catch-up applies
     * this write again (its own puts, idempotent).
     */
    aly_err_t why;
    if (seq != 0 && set_applied(t->st, t->txn, seq, &why) != 0)
        log_error("a write committed to PostgreSQL (seq %llu), but this replica could not record it: %s", (unsigned long long)seq,
                  why.msg);
    return 0;
}

/* Deletes change-log rows older than store_changes_keep and raises the horizon past them, in one statement. */
static void prune(store_pg_t *pg)
{
    uint64_t every = pg->keep_ms / 4, now = aly_now_ms();
    every = every < PRUNE_MIN_MS ? PRUNE_MIN_MS : every > PRUNE_MAX_MS ? PRUNE_MAX_MS : every;
    if (now - pg->pruned_ms < every)
        return;
    pg->pruned_ms = now;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "WITH d AS (DELETE FROM changes WHERE at < now() - interval '%llu milliseconds' RETURNING seq)"
             " UPDATE replica_horizon SET upto = greatest(upto, (SELECT max(seq) FROM d))",
             (unsigned long long)pg->keep_ms);
    aly_err_t err;
    if (store_pg_exec(pg, STORE_RT_POLL, sql, &err) != 0)
        log_warn("pruning the change log: %s", err.msg);
}

static long replicate(store_t *st, int purpose, aly_err_t *err)
{
    store_pg_t *pg = st->pg;
    if (pg == NULL)
        return 0;
    if (store_pg_connect(pg, purpose, 1, err) != 0)
        return -1;
    if (purpose == STORE_RT_POLL)
        prune(pg);
    MDB_txn *txn;
    uint64_t applied;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return aly_errf(err, "cannot begin a read transaction: %s", mdb_strerror(rc));
    rc = applied_of(st, txn, &applied, err);
    mdb_txn_abort(txn);
    if (rc != 0)
        return -1;
    char sql[512];
    PGresult *res[2];
    log_query(sql, sizeof(sql), "", applied);
    int n = store_pg_run(pg, purpose, sql, res, 2, err);
    if (n < 0)
        return -1;
    long got = -1, rows = n == 2 ? PQntuples(res[0]) : -1;
    uint64_t upto = rows >= 0 ? horizon_of(res[1]) : 0, start;
    uint64_t asked = aly_now_ms();
    if (rows < 0) {
        aly_errf(err, "PostgreSQL did not answer the poll");
    } else if (rows == 0 && applied >= upto) {
        got = 0;
    } else if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0) {
        aly_errf(err, "cannot begin a write transaction: %s", mdb_strerror(rc));
    } else if (applied_of(st, txn, &applied, err) == 0) {
        /* Read again inside the write transaction: another worker of this host may have applied some already. */
        start = applied;
        got = applied < upto ? recopy(st, txn, 0, &applied, err) : apply_rows(st, txn, res[0], &applied, err);
        if (got >= 0 && applied != start && set_applied(st, txn, applied, err) != 0)
            got = -1;
        if (got >= 0 && (rc = mdb_txn_commit(txn)) != 0)
            got = aly_errf(err, "cannot commit the replica: %s", mdb_strerror(rc));
        else if (got < 0)
            mdb_txn_abort(txn);
    } else {
        mdb_txn_abort(txn);
    }
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    if (got >= 0 && rows < PAGE)
        pg->current_ms = asked;
    return got;
}

long store_replicate(store_t *st, aly_err_t *err)
{
    return replicate(st, STORE_RT_POLL, err);
}

int store_sync(store_t *st, uint64_t asked_ms)
{
    uint64_t now = aly_now_ms();
    if (st->pg == NULL || (now - st->pg->synced_ms < STORE_SYNC_MIN_MS && !(asked_ms != 0 && st->pg->synced_ms <= asked_ms)))
        return 0;
    st->pg->synced_ms = now;
    aly_err_t err;
    return replicate(st, STORE_RT_SYNC, &err) > 0;
}

void store_count_into(store_t *st, uint64_t *counters)
{
    if (st->pg != NULL)
        st->pg->counters = counters;
}

uint64_t store_poll_ms(const store_t *st)
{
    return st->pg != NULL ? st->pg->poll_ms : 0;
}

void store_pg_status(store_t *st, store_pg_status_t *out)
{
    memset(out, 0, sizeof(*out));
    if (st->pg == NULL)
        return;
    out->configured = 1;
    out->up = st->pg->conn != NULL && st->pg->error[0] == '\0';
    snprintf(out->error, sizeof(out->error), "%s", st->pg->error);
    uint64_t now = aly_now_ms();
    out->lag_ms = st->pg->current_ms != 0 && now > st->pg->current_ms ? now - st->pg->current_ms : 0;
    MDB_txn *txn;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) == 0) {
        applied_of(st, txn, &out->applied_seq, NULL);
        mdb_txn_abort(txn);
    }
}

const char *store_db_name(int db)
{
    return db >= 0 && db < DB_N ? store_durable_dbs[db] : "?";
}

/* Sends the INSERT being built (rows of it so far) when it has any. */
static int flush_rows(store_pg_t *pg, size_t *rows, aly_err_t *err)
{
    if (*rows == 0)
        return 0;
    store_pg_append(pg, " ON CONFLICT (db, k) DO UPDATE SET v = EXCLUDED.v");
    int rc = store_pg_exec(pg, STORE_RT_TXN, pg->buf, err);
    store_pg_reset(pg);
    *rows = 0;
    return rc;
}

static int copy_db(store_t *st, store_pg_t *pg, MDB_txn *txn, int db, size_t *count, aly_err_t *err)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t rows = 0;
    int failed = 0, rc = mdb_cursor_open(txn, st->dbi[db], &cur);
    if (rc != 0)
        return aly_errf(err, "cannot read %s: %s", store_durable_dbs[db], mdb_strerror(rc));
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        if (db == DB_META && k.mv_size >= 3 && memcmp(k.mv_data, "pg/", 3) == 0)
            continue;
        char head[48];
        snprintf(head, sizeof(head), "%s(%d,", rows == 0 ? "INSERT INTO kv VALUES " : ",", db);
        store_pg_append(pg, head);
        store_pg_append_bytea(pg, k.mv_data, k.mv_size);
        store_pg_append(pg, ",");
        store_pg_append_bytea(pg, v.mv_data, v.mv_size);
        store_pg_append(pg, ")");
        (*count)++;
        if (++rows == MIGRATE_ROWS && (failed = flush_rows(pg, &rows, err)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (failed)
        return -1;
    if (rc != MDB_NOTFOUND)
        return aly_errf(err, "cannot read %s: %s", store_durable_dbs[db], mdb_strerror(rc));
    return flush_rows(pg, &rows, err);
}

int store_migrate(store_t *st, const aly_config_t *cfg, const char *url, int force, size_t counts[DB_N], aly_err_t *err)
{
    store_pg_t *pg = store_pg_new(cfg, url);
    if (pg == NULL)
        return aly_errf(err, "out of memory");
    memset(counts, 0, sizeof(size_t) * DB_N);
    int rc = store_pg_schema(pg, err);
    char sql[160];
    PGresult *res[3];
    snprintf(sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(%d); SELECT count(*) FROM kv", STORE_PG_LOCK);
    int n = rc == 0 ? store_pg_run(pg, STORE_RT_TXN, sql, res, 3, err) : -1;
    if (n < 0) {
        store_pg_free(pg);
        return -1;
    }
    pg->in_txn = 1;
    long held = n == 3 ? strtol(PQgetvalue(res[2], 0, 0), NULL, 10) : -1;
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    MDB_txn *txn = NULL;
    if (held < 0)
        rc = aly_errf(err, "cannot count the target's records");
    else if (held > 0 && !force)
        rc = aly_errf(err, "the target already holds %ld records: migrate copies into an empty store (--force replaces them)",
                      held);
    else if (held > 0)
        rc = store_pg_exec(pg, STORE_RT_TXN, "DELETE FROM kv", err);
    if (rc == 0 && (rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)) != 0)
        rc = aly_errf(err, "cannot begin a read transaction: %s", mdb_strerror(rc));
    for (int db = 0; rc == 0 && db < DB_N; db++)
        rc = copy_db(st, pg, txn, db, &counts[db], err);
    if (txn != NULL)
        mdb_txn_abort(txn);
    /* Every replica, this data_dir's included, then copies the table whole once. */
    if (rc == 0 &&
        (rc = store_pg_exec(pg, STORE_RT_TXN, "UPDATE replica_horizon SET upto = nextval('changes_seq_seq'); COMMIT", err)) == 0)
        pg->in_txn = 0;
    if (rc != 0)
        store_pg_rollback(pg);
    store_pg_free(pg);
    return rc;
}

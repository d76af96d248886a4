/*
 * Transactions on the store's environments and the raw get/put/del/scan,
 * with the checks that tie a database id to its environment and a key to
 * LMDB's size limit; the reserve that keeps a full store deletable, and the
 * per-workspace quota charged by every durable write of workspace data.
 */
#include "aly/log.h"
#include "aly/store_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A quarter of a small map (up to 4 MiB), an eighth of a large one, never
 * more than 64 MiB.  Deletes copy the pages they touch and LMDB reuses a
 * freed page only once no reader can still see it, so a map close to its end
 * needs room for a few transactions' worth of copies beyond what is "in use".
 */
size_t store_reserve(size_t map_size)
{
    size_t r = map_size / 8, small = map_size / 4 < RESERVE_SMALL ? map_size / 4 : RESERVE_SMALL;
    if (r < small)
        r = small;
    return r < RESERVE_MAX ? r : RESERVE_MAX;
}

/* Pages on the free list as txn sees it: freed by deletes, reused before the map grows. */
static int free_pages(MDB_txn *txn, size_t *pages)
{
    MDB_cursor *cur;
    MDB_val k, v;
    *pages = 0;
    int rc = mdb_cursor_open(txn, 0, &cur);
    if (rc != 0)
        return rc;
    /* Each value is an ID list whose first element is its length. */
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0)
        if (v.mv_size >= sizeof(size_t))
            *pages += *(const size_t *)v.mv_data;
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* LMDB reads its free list only in a read transaction: a write transaction asks this before it begins. */
int store_usage(store_t *st, store_usage_t *u, aly_err_t *err)
{
    MDB_envinfo info;
    MDB_stat ms;
    MDB_txn *txn;
    size_t freed;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0) {
        rc = mdb_env_info(st->env, &info);
        if (rc == 0)
            rc = mdb_env_stat(st->env, &ms);
        if (rc == 0)
            rc = free_pages(txn, &freed);
        mdb_txn_abort(txn);
    }
    if (rc != 0)
        return aly_errf(err, "cannot read how full the store is: %s", mdb_strerror(rc));
    size_t pages = info.me_last_pgno + 1;
    u->map_size = info.me_mapsize;
    u->used_bytes = (pages > freed ? pages - freed : 0) * (size_t)ms.ms_psize;
    u->limit_bytes = u->map_size - st->reserve;
    u->full = u->used_bytes > u->limit_bytes;
    return 0;
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* The store's state goes to the error log at most every 10 s per process: a full store must not flood it. */
static int log_now(void)
{
    static uint64_t logged_ms;
    uint64_t now = aly_now_ms();
    if (logged_ms != 0 && now - logged_ms < FULL_LOG_EVERY_MS)
        return 0;
    logged_ms = now;
    return 1;
}

/*
 * The refusal of a full store, u where it stands: the plain sentence when
 * the store is full as it is (store_begin) or LMDB's map is (MDB_MAP_FULL);
 * with "with this write" when one transaction would take it past the line.
 */
static int full_refusal(const store_usage_t *u, int this_write, aly_err_t *err)
{
    if (this_write)
        return aly_refusef(err,
                           "the store is full (%.1f of %.1f MiB with this write; ordinary writes stop at %.1f MiB): "
                           "raise map_size or delete data",
                           mib(u->used_bytes), mib(u->map_size), mib(u->limit_bytes));
    return aly_refusef(err, "the store is full (%.1f of %.1f MiB): raise map_size or delete data", mib(u->used_bytes),
                       mib(u->map_size));
}

/* An ordinary write on a full durable store: refused with what to do, and logged. */
static int refuse_full(const store_usage_t *u, aly_err_t *err)
{
    if (log_now())
        log_error("the store is full (%.1f of %.1f MiB in use; ordinary writes stop at %.1f MiB): raise map_size and reload "
                  "(HUP), or delete data; deletes and revocations still work",
                  mib(u->used_bytes), mib(u->map_size), mib(u->limit_bytes));
    return full_refusal(u, 0, err);
}

/* Where the durable store stands once used bytes are in use (map size from the environment, which a reload may change). */
static void usage_at(const store_t *st, size_t used, store_usage_t *u)
{
    MDB_envinfo info;
    u->map_size = mdb_env_info(st->env, &info) == 0 ? info.me_mapsize : 0;
    u->used_bytes = used;
    u->limit_bytes = u->map_size > st->reserve ? u->map_size - st->reserve : 0;
    u->full = used > u->limit_bytes;
}

/* Why a write was refused, for the operator: u is where it would have taken the store (throttled like refuse_full()). */
static void log_refused(const store_usage_t *u)
{
    if (!log_now())
        return;
    if (u->used_bytes >= u->map_size)
        log_error("a write was refused: LMDB's map (%.1f MiB) is full; nothing of it was written: raise map_size and reload "
                  "(HUP), or delete data",
                  mib(u->map_size));
    else
        log_error("a write was refused: it would take the store to %.1f of %.1f MiB, past where ordinary writes stop (%.1f MiB); "
                  "nothing of it was written: raise map_size and reload (HUP), or delete data",
                  mib(u->used_bytes), mib(u->map_size), mib(u->limit_bytes));
}

/*
 * A write of t refused because it would take the store to used bytes (the
 * whole map: LMDB's MDB_MAP_FULL).  Kept in t, so a caller can tell the
 * cause under any rewording (store_refused_full()).
 */
static int refuse_txn(store_txn_t *t, size_t used, aly_err_t *err)
{
    store_usage_t u;
    usage_at(t->st, used, &u);
    if (used >= u.map_size)
        u.used_bytes = u.map_size;
    t->full_bytes = u.used_bytes;
    log_refused(&u);
    return full_refusal(&u, u.used_bytes < u.map_size, err);
}

/* LMDB ran out of map (MDB_MAP_FULL), in any transaction: refused like a full store, since raising map_size is the remedy. */
static int map_full(store_txn_t *t, aly_err_t *err)
{
    if (t->flags & STORE_VOLATILE)
        return aly_errf(err, "the volatile store is full: raise volatile_map_size and reload");
    return refuse_txn(t, SIZE_MAX, err);
}

int store_refused_full(const store_txn_t *t, aly_err_t *err)
{
    if (t->full_bytes == 0)
        return 0;
    store_usage_t u;
    usage_at(t->st, t->full_bytes, &u);
    full_refusal(&u, t->full_bytes < u.map_size, err);
    return 1;
}

/* An ordinary durable write: held to the write limit, where the reserve begins. */
static int is_ordinary(const store_txn_t *t)
{
    return (t->flags & (STORE_WRITE | STORE_VOLATILE | STORE_RESERVE)) == STORE_WRITE;
}

/*
 * Bytes in use as t sees them, its own writes included: the pages of every
 * tree (the named databases, the main one that lists them, the free list)
 * and the two meta pages, which is what store_usage() counts once t has
 * committed (the high-water mark minus the free list).  LMDB tells a write
 * transaction its trees' sizes, not its high-water mark.
 */
static int txn_used(store_txn_t *t, size_t *used, aly_err_t *err)
{
    MDB_stat ms;
    size_t pages = 2;
    for (int i = -2; i < DB_N; i++) {
        /* -2 and -1: LMDB's free list (dbi 0) and main database (dbi 1); then ours. */
        int rc = mdb_stat(t->txn, i < 0 ? (MDB_dbi)(i + 2) : t->st->dbi[i], &ms);
        if (rc != 0)
            return aly_errf(err, "cannot read how full the store is: %s", mdb_strerror(rc));
        pages += ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
    }
    *used = pages * (size_t)ms.ms_psize;
    return 0;
}

/*
 * store_begin() refuses an ordinary write once the store is past the write
 * limit, but one transaction can write a lot: a demo seed or an import is a
 * single one.  Each of its puts, and its commit, checks what it has grown
 * the store to, and it is refused (to be aborted: nothing of it is written)
 * once that passes the limit by more than an eighth of the reserve.  A
 * small write that begins under the limit ends a few pages past it at most,
 * so the store still fills up to the line as before; a large one no longer
 * eats into the reserve that deletes and revocations need.
 */
static int check_room(store_txn_t *t, aly_err_t *err)
{
    size_t used = 0; /* set by txn_used(); gcc -O2 cannot see that on its error path */
    store_usage_t u;
    if (!is_ordinary(t))
        return 0;
    if (txn_used(t, &used, err) != 0)
        return -1;
    usage_at(t->st, used, &u);
    return used > u.limit_bytes + t->st->reserve / OVERSHOOT_SHARE ? refuse_txn(t, used, err) : 0;
}

/* A durable write in cluster mode: it also goes to PostgreSQL (store_replica.c). */
static int in_cluster(const store_txn_t *t)
{
    return t->st->pg != NULL && (t->flags & (STORE_WRITE | STORE_VOLATILE)) == STORE_WRITE;
}

int store_begin(store_t *st, int flags, store_txn_t *t, aly_err_t *err)
{
    int vol = (flags & STORE_VOLATILE) != 0;
    MDB_env *env = vol ? st->vol : st->env;
    MDB_txn *txn = NULL;
    int rc;
    t->st = st;
    t->flags = flags;
    t->quota_ws[0] = '\0';
    t->quota_net = 0;
    t->reads = 0;
    t->asked_ms = 0;
    t->full_bytes = 0;
    if ((flags & (STORE_WRITE | STORE_VOLATILE | STORE_RESERVE)) == STORE_WRITE) {
        store_usage_t u;
        if (store_usage(st, &u, err) != 0 || (u.full && refuse_full(&u, err) != 0))
            return -1;
    }
    if (!(flags & STORE_WRITE) && !st->reader_busy[vol]) {
        if (st->reader[vol] != NULL) {
            rc = mdb_txn_renew(st->reader[vol]);
            if (rc != 0) {
                mdb_txn_abort(st->reader[vol]);
                st->reader[vol] = NULL;
            }
        }
        if (st->reader[vol] == NULL && (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &st->reader[vol])) != 0)
            return aly_errf(err, "cannot begin a read transaction: %s", mdb_strerror(rc));
        st->reader_busy[vol] = 1;
        t->txn = st->reader[vol];
        return 0;
    }
    rc = mdb_txn_begin(env, NULL, (flags & STORE_WRITE) ? 0 : MDB_RDONLY, &txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process grew the map: adopt its size and retry. */
        mdb_env_set_mapsize(env, 0);
        rc = mdb_txn_begin(env, NULL, (flags & STORE_WRITE) ? 0 : MDB_RDONLY, &txn);
    }
    if (rc != 0)
        return aly_errf(err, "cannot begin a transaction: %s", mdb_strerror(rc));
    t->txn = txn;
    if (in_cluster(t) && store_replica_begin(t, err) != 0) {
        mdb_txn_abort(txn);
        t->txn = NULL;
        return -1;
    }
    return 0;
}

static int is_cached_reader(store_txn_t *t)
{
    int vol = (t->flags & STORE_VOLATILE) != 0;
    return !(t->flags & STORE_WRITE) && t->txn == t->st->reader[vol] && t->st->reader_busy[vol];
}

int store_finish(store_txn_t *t, int rc, aly_err_t *err)
{
    if (rc == 0 && store_commit(t, err) == 0)
        return 0;
    store_abort(t);
    return rc != 0 ? rc : -1;
}

void store_abort(store_txn_t *t)
{
    if (t->txn == NULL)
        return;
    if (is_cached_reader(t)) {
        mdb_txn_reset(t->txn);
        t->st->reader_busy[(t->flags & STORE_VOLATILE) != 0] = 0;
    } else {
        mdb_txn_abort(t->txn);
        if (in_cluster(t))
            store_pg_rollback(t->st->pg);
    }
    t->txn = NULL;
}

int store_commit(store_txn_t *t, aly_err_t *err)
{
    if (!(t->flags & STORE_WRITE)) {
        store_abort(t);
        return 0;
    }
    if (check_room(t, err) != 0) {
        store_abort(t);
        return -1;
    }
    if (in_cluster(t) && store_replica_commit(t, err) != 0) {
        mdb_txn_abort(t->txn);
        t->txn = NULL;
        return -1;
    }
    int rc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    if (rc != 0 && in_cluster(t)) {
        /* PostgreSQL has it: the write happened, and the replication timer brings it into this replica. */
        log_error("a write committed to PostgreSQL could not be committed to the local replica (%s): it arrives with the next poll",
                  mdb_strerror(rc));
        return 0;
    }
    if (rc == MDB_MAP_FULL)
        return map_full(t, err);
    if (rc != 0)
        return aly_errf(err, "cannot commit: %s", mdb_strerror(rc));
    return 0;
}

/* The handle of db in t's environment; -1 when db belongs to the other environment or to none. */
static int dbi_of(store_txn_t *t, int db, MDB_dbi *dbi, aly_err_t *err)
{
    int vol = (t->flags & STORE_VOLATILE) != 0;
    if (vol && db >= STORE_VDB_BASE && db < VDB_END) {
        *dbi = t->st->vdbi[db - STORE_VDB_BASE];
        return 0;
    }
    if (!vol && db >= 0 && db < DB_N) {
        *dbi = t->st->dbi[db];
        return 0;
    }
    if ((db >= 0 && db < DB_N) || (db >= STORE_VDB_BASE && db < VDB_END))
        return aly_errf(err, "store database \"%s\" is in the %s environment, this transaction is on the %s one",
                        db < DB_N ? store_durable_dbs[db] : store_volatile_dbs[db - STORE_VDB_BASE], vol ? "durable" : "volatile",
                        vol ? "volatile" : "durable");
    return aly_errf(err, "no store database %d", db);
}

/*
 * Resolves db for a call with a key of klen bytes: 0 with *dbi set, 1 when
 * the key is empty (nothing is stored under it), -1 when the key is over
 * LMDB's limit or db is not in t's environment.
 */
static int target(store_txn_t *t, int db, size_t klen, MDB_dbi *dbi, aly_err_t *err)
{
    if (klen == 0)
        return 1;
    if (klen > STORE_MAX_KEY)
        return aly_errf(err, "store key of %zu bytes is over the limit of %d", klen, STORE_MAX_KEY);
    return dbi_of(t, db, dbi, err);
}

/* Bytes of ws's data counted from its records (a store made before usage was kept). */
static int count_usage(store_txn_t *t, const char *prefix, size_t plen, uint64_t *bytes, aly_err_t *err)
{
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix}, v;
    *bytes = 0;
    int rc = mdb_cursor_open(t->txn, t->st->dbi[DB_DATA], &cur);
    if (rc != 0)
        return aly_errf(err, "cannot open a cursor: %s", mdb_strerror(rc));
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        *bytes += k.mv_size + v.mv_size;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return aly_errf(err, "cannot count a workspace's data: %s", mdb_strerror(rc));
    return 0;
}

/* The usage record's key "usage/<ws>" and the data prefix "<ws>/" of a DB_DATA key; 0 when the key names no workspace. */
static size_t workspace_of(const void *key, size_t klen, char *ukey, size_t ulen, char *prefix, size_t plen)
{
    const char *slash = memchr(key, '/', klen);
    size_t wl = slash != NULL ? (size_t)(slash - (const char *)key) : 0;
    if (wl == 0 || wl + 1 > plen || sizeof(USAGE_PREFIX) + wl > ulen)
        return 0;
    memcpy(prefix, key, wl + 1);
    memcpy(ukey, USAGE_PREFIX, sizeof(USAGE_PREFIX) - 1);
    memcpy(ukey + sizeof(USAGE_PREFIX) - 1, key, wl);
    return wl;
}

static int read_usage(store_txn_t *t, const char *ukey, size_t ulen, const char *prefix, size_t plen, uint64_t *bytes,
                      aly_err_t *err)
{
    MDB_val k = {ulen, (void *)ukey}, v;
    int rc = mdb_get(t->txn, t->st->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND)
        return count_usage(t, prefix, plen, bytes, err);
    if (rc != 0 || v.mv_size != sizeof(*bytes))
        return aly_errf(err, "cannot read a workspace's usage: %s", rc != 0 ? mdb_strerror(rc) : "bad record");
    memcpy(bytes, v.mv_data, sizeof(*bytes));
    return 0;
}

/*
 * Charges delta bytes of a DB_DATA write at key to its workspace, before the
 * write: a growth that takes the workspace over its quota is refused unless
 * this transaction freed at least as much there first.
 */
static int charge_quota(store_txn_t *t, const void *key, size_t klen, int64_t delta, aly_err_t *err)
{
    char ukey[sizeof(USAGE_PREFIX) + sizeof(t->quota_ws)], prefix[sizeof(t->quota_ws) + 1];
    size_t wl = workspace_of(key, klen, ukey, sizeof(ukey), prefix, sizeof(prefix));
    if (wl == 0 || delta == 0)
        return 0;
    size_t ul = sizeof(USAGE_PREFIX) - 1 + wl;
    uint64_t used;
    if (read_usage(t, ukey, ul, prefix, wl + 1, &used, err) != 0)
        return -1;
    if (strlen(t->quota_ws) != wl || memcmp(t->quota_ws, key, wl) != 0) {
        memcpy(t->quota_ws, key, wl);
        t->quota_ws[wl] = '\0';
        t->quota_net = 0;
    }
    t->quota_net += delta;
    uint64_t after = delta < 0 && (uint64_t)-delta > used ? 0 : used + (uint64_t)delta;
    if (delta > 0 && t->quota_net > 0 && after > t->st->quota)
        return aly_refusef(err, "workspace %s is over its storage quota (%.1f of %.1f MiB): delete data or raise workspace_quota",
                           t->quota_ws, mib((size_t)after), mib(t->st->quota));
    MDB_val k = {ul, ukey}, v = {sizeof(after), &after};
    int rc = mdb_put(t->txn, t->st->dbi[DB_META], &k, &v, 0);
    if (rc == MDB_MAP_FULL)
        return map_full(t, err);
    if (rc != 0)
        return aly_errf(err, "cannot record a workspace's usage: %s", mdb_strerror(rc));
    if (in_cluster(t))
        store_pg_note(t->st->pg, DB_META, ukey, ul, &after, sizeof(after));
    return 0;
}

int store_workspace_usage(store_t *st, const char *ws, uint64_t *bytes, aly_err_t *err)
{
    char ukey[sizeof(USAGE_PREFIX) + 64], prefix[66];
    size_t wl = strlen(ws);
    if (wl == 0 || wl > 63)
        return aly_errf(err, "no workspace id \"%s\"", ws);
    snprintf(ukey, sizeof(ukey), "%s%s", USAGE_PREFIX, ws);
    snprintf(prefix, sizeof(prefix), "%s/", ws);
    store_txn_t t;
    if (store_begin(st, 0, &t, err) != 0)
        return -1;
    int rc = read_usage(&t, ukey, strlen(ukey), prefix, wl + 1, bytes, err);
    store_abort(&t);
    return rc;
}

/*
 * Cluster mode: a session created on another host a moment ago is not in
 * this replica until the next poll, and a client balanced to this host must
 * not be told it does not exist.  A read transaction whose first operation
 * misses in DB_SESSIONS catches the replica up (store_sync(), throttled) and
 * moves to the new snapshot when the replica is newer than the one it read:
 * nothing was read from the old one, so nothing the caller holds goes stale.
 * Newer by this sync's rows or by anyone else's: another worker's poll may
 * have applied the session after this transaction began, and then the sync
 * finds nothing left to apply.  1 when the lookup should be tried again.
 */
static int read_through(store_txn_t *t, int db)
{
    if (db != DB_SESSIONS || t->reads != 0 || t->st->pg == NULL || (t->flags & (STORE_WRITE | STORE_VOLATILE)))
        return 0;
    store_sync(t->st, t->asked_ms);
    MDB_envinfo info;
    if (mdb_env_info(t->st->env, &info) != 0 || info.me_last_txnid == mdb_txn_id(t->txn))
        return 0;
    mdb_txn_reset(t->txn);
    return mdb_txn_renew(t->txn) == 0;
}

uint64_t store_txn_snapshot(const store_txn_t *t)
{
    return (t->flags & (STORE_WRITE | STORE_VOLATILE)) ? 0 : (uint64_t)mdb_txn_id(t->txn);
}

int store_get(store_txn_t *t, int db, const void *key, size_t klen, store_val_t *val, aly_err_t *err)
{
    MDB_dbi dbi;
    int rc = target(t, db, klen, &dbi, err);
    if (rc != 0)
        return rc;
    MDB_val k = {klen, (void *)key}, v;
    rc = mdb_get(t->txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND && read_through(t, db))
        rc = mdb_get(t->txn, dbi, &k, &v);
    t->reads++;
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return aly_errf(err, "store read failed: %s", mdb_strerror(rc));
    val->data = v.mv_data;
    val->len = v.mv_size;
    return 0;
}

int store_put(store_txn_t *t, int db, const void *key, size_t klen, const void *val, size_t vlen, int noclobber, aly_err_t *err)
{
    MDB_dbi dbi;
    int rc = target(t, db, klen, &dbi, err);
    if (rc != 0)
        return rc == 1 ? aly_errf(err, "store key is empty") : -1;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val}, old;
    if (db == DB_DATA && !(t->flags & STORE_VOLATILE)) {
        rc = mdb_get(t->txn, dbi, &k, &old);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return aly_errf(err, "store read failed: %s", mdb_strerror(rc));
        if (rc == 0 && noclobber)
            return 1;
        int64_t delta = (int64_t)(klen + vlen) - (rc == 0 ? (int64_t)(klen + old.mv_size) : 0);
        if (charge_quota(t, key, klen, delta, err) != 0)
            return -1;
    }
    rc = mdb_put(t->txn, dbi, &k, &v, noclobber ? MDB_NOOVERWRITE : 0);
    if (rc == MDB_KEYEXIST)
        return 1;
    if (rc == MDB_MAP_FULL)
        return map_full(t, err);
    if (rc != 0)
        return aly_errf(err, "store write failed: %s", mdb_strerror(rc));
    if (in_cluster(t))
        store_pg_note(t->st->pg, db, key, klen, val, vlen);
    return check_room(t, err);
}

int store_del(store_txn_t *t, int db, const void *key, size_t klen, aly_err_t *err)
{
    MDB_dbi dbi;
    int rc = target(t, db, klen, &dbi, err);
    if (rc != 0)
        return rc;
    MDB_val k = {klen, (void *)key}, old;
    if (db == DB_DATA && !(t->flags & STORE_VOLATILE)) {
        rc = mdb_get(t->txn, dbi, &k, &old);
        if (rc == MDB_NOTFOUND)
            return 1;
        if (rc != 0)
            return aly_errf(err, "store read failed: %s", mdb_strerror(rc));
        if (charge_quota(t, key, klen, -(int64_t)(klen + old.mv_size), err) != 0)
            return -1;
    }
    rc = mdb_del(t->txn, dbi, &k, NULL);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc == MDB_MAP_FULL)
        return map_full(t, err);
    if (rc != 0)
        return aly_errf(err, "store delete failed: %s", mdb_strerror(rc));
    if (in_cluster(t))
        store_pg_note(t->st->pg, db, key, klen, NULL, 0);
    return 0;
}

int store_scan(store_txn_t *t, int db, const void *prefix, size_t plen, const void *after, size_t alen, store_scan_cb cb, void *ctx,
               aly_err_t *err)
{
    MDB_dbi dbi;
    MDB_cursor *cur;
    if (plen > STORE_MAX_KEY || alen > STORE_MAX_KEY)
        return aly_errf(err, "store scan key of %zu bytes is over the limit of %d", plen > alen ? plen : alen, STORE_MAX_KEY);
    if (dbi_of(t, db, &dbi, err) != 0)
        return -1;
    t->reads++;
    int rc = mdb_cursor_open(t->txn, dbi, &cur);
    if (rc != 0)
        return aly_errf(err, "cannot open a cursor: %s", mdb_strerror(rc));
    MDB_val k, v;
    if (after != NULL && alen > 0) {
        k = (MDB_val){alen, (void *)after};
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == alen && memcmp(k.mv_data, after, alen) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else if (plen > 0) {
        k = (MDB_val){plen, (void *)prefix};
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    int ret = 0;
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        store_val_t sk = {k.mv_data, k.mv_size}, sv = {v.mv_data, v.mv_size};
        int r = cb(ctx, &sk, &sv);
        if (r < 0) {
            ret = aly_errf(err, "store scan stopped on a bad record");
            break;
        }
        if (r > 0)
            break;
    }
    if (rc != 0 && rc != MDB_NOTFOUND && ret == 0)
        ret = aly_errf(err, "store scan failed: %s", mdb_strerror(rc));
    mdb_cursor_close(cur);
    return ret;
}

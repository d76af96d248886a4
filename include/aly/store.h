/*
 * The LMDB store shared by all workers and alyctl.
 *
 * Two environments under data_dir:
 *   store/     durable, synced on commit: workspaces, keys, revocations,
 *              sessions, workspace data.  Writes are rare next to reads.
 *   volatile/  opened MDB_NOSYNC: per-request state (rate-limit buckets,
 *              last-used stamps).  A crash may lose the last few updates,
 *              never the environment's consistency.
 * Records are msgpack maps carrying a record type "t" and a version "v".
 *
 * A full store is a state to operate in, not an outage.  Ordinary write
 * transactions on the durable environment are refused (store_begin, a
 * refusal naming the cause: "the store is full (N of M MiB): raise map_size
 * or delete data") once the pages in use pass map_size minus a reserve
 * (store_reserve(): a quarter of a small map, an eighth of a large one, at
 * most 64 MiB).  One that began under that write limit is refused as well
 * (store_put, store_commit: the same sentence) once it has grown the store
 * more than an eighth of the reserve past it, so a bulk write (a demo seed,
 * an import) cannot use up the reserve.  Transactions begun with
 * STORE_RESERVE (deletes, revocations, session ends: they free space or
 * barely grow) may use the reserve, so space can always be freed through
 * the API and a key can always be revoked.  Pages freed by deletes count as
 * free again.  LMDB's own MDB_MAP_FULL is the same refusal.
 *
 * Storage quota: the keys and values of DB_DATA under "<ws>/" count against
 * workspace_quota.  Each workspace's usage is kept in DB_META under
 * "usage/<ws>" (counted from its records the first time it is missing), and
 * a put that grows a workspace over its quota, in a transaction that has not
 * freed as much in that workspace, is refused ("workspace ... is over its
 * storage quota"); deletes always pass.
 *
 * Caveats (lmdb.h): an MDB_env must be opened by the process that uses it, so
 * workers call store_open() after fork and the master only ever opens an
 * environment briefly, for store_reader_check(), with nothing open at fork.
 *
 * Cluster mode ("store postgresql://..."): PostgreSQL holds the durable data
 * (table kv: one row per LMDB record, same db ids and msgpack bytes) and a
 * change log (table changes, ordered by seq); the durable environment stays,
 * as this host's replica.  Read transactions never leave LMDB.  A durable
 * write transaction begins a PostgreSQL transaction holding one advisory lock
 * (every write of the cluster is serialised), applies the changes this
 * replica has not seen inside its LMDB write transaction, and buffers its
 * puts and deletes; store_commit() sends them with the change-log rows and
 * commits PostgreSQL first, then LMDB.  Each worker applies other hosts'
 * changes every store_poll (store_replicate()).  PostgreSQL unreachable:
 * durable writes fail with err->refused = STORE_UNAVAILABLE and "the store is
 * unavailable ..."; reads go on from the replica.  Every wait on PostgreSQL
 * is bounded by store_timeout (store_pg.c, store_replica.c).  One read is
 * not served from the replica alone: a read transaction whose first
 * operation is a store_get() in DB_SESSIONS that misses catches the replica
 * up (store_sync()) and looks again, so a legacy session works on any host
 * at once; the transaction then reads a newer snapshot.
 */
#ifndef ALY_STORE_H
#define ALY_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aly/common.h"
#include "aly/config.h"

#define STORE_SCHEMA_VERSION 1
/* Versions of the PostgreSQL schema: alyctl init creates the latest or upgrades an older one step by step. */
#define STORE_PG_SCHEMA_VERSION 2
/* err->refused of a durable write refused because PostgreSQL cannot be reached: HTTP 503 with Retry-After. */
#define STORE_UNAVAILABLE 2
#define STORE_RETRY_AFTER_S 1
#define STORE_RETRY_AFTER_TEXT ALY_STR(STORE_RETRY_AFTER_S) /* the same, as a Retry-After value */

typedef struct store store_t;

/*
 * Named databases.  A database id names its environment: durable ids run from
 * 0 to DB_N - 1, volatile ids from STORE_VDB_BASE on, so no id is valid in
 * both.  store_get/put/del/scan on a transaction of the other environment (or
 * with an id of neither) fail with -1 and a message naming the mistake; they
 * never read another environment's table.  Keys of workspace data start with
 * the workspace id.
 */
typedef enum {
    DB_META,          /* "schema" -> meta record; "revocations" -> revocation generation; "usage/" ws -> bytes (uint64) */
    DB_WORKSPACES,    /* ws id -> workspace record */
    DB_KEYS,          /* ws id "/" key id -> key record */
    DB_KEY_HASH,      /* HMAC-SHA256(pepper, key) (32 bytes) -> ws id "/" key id */
    DB_REVOKED_JTI,   /* jti -> revocation record */
    DB_REVOKED_SUB,   /* sub -> revocation record */
    DB_DATA,          /* ws id "/" ... -> workspace data (tools) */
    DB_SESSIONS,      /* MCP session id -> session record */
    DB_OAUTH_USERS,   /* email -> workspace user (aly/oauth.h) */
    DB_OAUTH_CLIENTS, /* client_id -> OAuth client */
    DB_OAUTH_GRANTS,  /* "g/" grant, "r/" refresh-token HMAC, "c/" code HMAC */
    DB_OAUTH_KEYS,    /* kid -> signing key */
    DB_N
} store_db_t;

#define STORE_VDB_BASE 64

/* Named databases of the volatile environment: use them with STORE_VOLATILE transactions only. */
typedef enum {
    VDB_META = STORE_VDB_BASE,
    VDB_LAST_USED, /* key id -> uint64 ms, little endian */
    VDB_RATE,      /* principal id -> limiter state */
    VDB_REPLIES,   /* "p:" request id -> principal (awaiting); "r:" request id -> the client's reply (JSON);
                      "s:" requestState MAC -> its expiry (used once) */
    VDB_OAUTH,     /* "l:a:" address / "l:u:" email / "g:" address -> failed sign-ins or registrations in a window */
    VDB_END
} store_vdb_t;

#define VDB_N (VDB_END - STORE_VDB_BASE)

/* LMDB's compile-time limit on key length (mdb_env_get_maxkeysize() of the default build). */
#define STORE_MAX_KEY 511

#define STORE_WRITE 1
#define STORE_VOLATILE 2
#define STORE_RESERVE 4 /* with STORE_WRITE: a write that frees space or barely grows, allowed into the reserve */

/*
 * A transaction on one environment: the durable one, or the volatile one with
 * STORE_VOLATILE.  One thread at a time.  Read transactions reuse one reset
 * handle per environment and store_t, so at most one read transaction per
 * environment should be open at once for the reuse to apply (a second one is
 * simply a fresh LMDB transaction).  Every successful store_begin() is ended
 * by exactly one store_commit() or store_abort(); store_abort() on an ended
 * transaction is a no-op.
 */
typedef struct store_txn {
    store_t *st;
    void *txn; /* MDB_txn */
    int flags;
    /* Net bytes this transaction added to one workspace's data (the last one it wrote): deletes make room for their audit. */
    char quota_ws[64];
    int64_t quota_net;
    unsigned reads;    /* gets and scans so far: cluster mode's read-through of a missed session applies to the first only */
    uint64_t asked_ms; /* aly_now_ms() when the request this read serves began, for that read-through (0: unknown) */
    size_t full_bytes; /* not 0: a write was refused because the store is full (bytes in use then); see store_refused_full() */
} store_txn_t;

/* A key or value inside the map: valid until the transaction ends or writes to that key; never written through. */
typedef struct store_val {
    const void *data;
    size_t len;
} store_val_t;

/*
 * flags: STORE_WRITE, STORE_VOLATILE, STORE_RESERVE.  -1 with err when LMDB
 * refuses (reader table full, map resized twice), or with a refusal
 * (err->refused) for an ordinary durable write when the store is full.
 */
int store_begin(store_t *st, int flags, store_txn_t *t, aly_err_t *err);
/*
 * Commits a write transaction (ends a read one).  The transaction is over
 * either way.  An ordinary durable write that has grown the store past the
 * write limit (see store_put()) is refused here too, and aborted.
 */
int store_commit(store_txn_t *t, aly_err_t *err);
void store_abort(store_txn_t *t);
/* Ends t by what came before: rc 0 commits (-1 when the commit fails), anything else aborts; returns rc. */
int store_finish(store_txn_t *t, int rc, aly_err_t *err);
/*
 * 1 when a write of t was refused because the store is full (past the write
 * limit, or LMDB's MDB_MAP_FULL), with that refusal put back into err: a
 * caller whose layers reworded the error ("cannot index ...") still tells
 * the client the cause.  0 otherwise (err untouched).  Valid after t ended.
 */
int store_refused_full(const store_txn_t *t, aly_err_t *err);
/*
 * Which committed state a durable read transaction sees: the id of the last
 * write transaction in its snapshot, so two reads under the same id see the
 * same data (ids only grow while the environment is open).  Unlike
 * store_snapshot(), what t itself reads, however old.  0 for a write or
 * volatile transaction, whose content is not a committed state.
 */
uint64_t store_txn_snapshot(const store_txn_t *t);

/*
 * Keys are 1 to STORE_MAX_KEY bytes.  A longer key is an error (-1) in every
 * call, never a silent "not found"; an empty key is "not found" for get and
 * del (no record has one) and an error for put.
 */

/* 0 found (val set), 1 not found, -1 error. */
int store_get(store_txn_t *t, int db, const void *key, size_t klen, store_val_t *val, aly_err_t *err);
/*
 * noclobber: fail with 1 when the key exists.  0 stored, 1 exists, -1 error
 * (also: read transaction; a refusal over the workspace quota, or for a full
 * store: LMDB's map is full, or an ordinary durable write has taken the
 * store more than an eighth of the reserve past the write limit, after
 * which the transaction can only be aborted).
 */
int store_put(store_txn_t *t, int db, const void *key, size_t klen, const void *val, size_t vlen, int noclobber, aly_err_t *err);
/* 0 deleted, 1 not found, -1 error. */
int store_del(store_txn_t *t, int db, const void *key, size_t klen, aly_err_t *err);

/*
 * Calls cb for every record whose key starts with prefix (plen 0: every
 * record), in key order, starting after the key "after" when not NULL (which
 * need not exist).  key and val are valid during the call only.  cb returns 0
 * to go on, 1 to stop, -1 to fail.  Returns 0, or -1 with err (a failing cb
 * gives "store scan stopped on a bad record").  cb must not write to db.
 */
typedef int (*store_scan_cb)(void *ctx, const store_val_t *key, const store_val_t *val);
int store_scan(store_txn_t *t, int db, const void *prefix, size_t plen, const void *after, size_t alen, store_scan_cb cb, void *ctx,
               aly_err_t *err);

/* ---- typed records (store_record.c) ----
 *
 * Get, put and scan of msgpack records described by a record_type_t
 * (aly/record.h): the record layer every module uses instead of pairing
 * record_encode/record_decode with store_get/store_put by hand.  Decoded
 * records own their data (fixed arrays), so they outlive the transaction.
 *
 *     workspace_record_t ws;
 *     rc = store_get_record(&t, DB_WORKSPACES, id, strlen(id), &record_workspace, &ws, &err);   // 0, 1, -1
 *     rc = store_put_record(&t, DB_WORKSPACES, ws.id, strlen(ws.id), &record_workspace, &ws, 1, &err);
 *
 *     static int each(void *ctx, const store_val_t *key, void *rec) { site_record_t *s = rec; ...; return 0; }
 *     site_record_t s;
 *     store_records_t r = {&record_site, &s, each, NULL, ctx};
 *     rc = store_scan_records(&t, DB_DATA, prefix, plen, NULL, 0, &r, &err);
 */
struct record_type;

/* 0 found and decoded into rec (the type's struct), 1 not found, -1 error (store, or a record that is not a type). */
int store_get_record(store_txn_t *t, int db, const void *key, size_t klen, const struct record_type *type, void *rec,
                     aly_err_t *err);
/* Encodes rec as type and stores it: 0 stored, 1 exists (with noclobber), -1 error. */
int store_put_record(store_txn_t *t, int db, const void *key, size_t klen, const struct record_type *type, const void *rec,
                     int noclobber, aly_err_t *err);

typedef struct store_records {
    const struct record_type *type;
    void *rec; /* the caller's struct of type, overwritten for each record */
    /* Each record that decodes: 0 go on, 1 stop, -1 fail. */
    int (*each)(void *ctx, const store_val_t *key, void *rec);
    /* Each record under the prefix that is not a type (why says what is wrong): 0 go on, 1 stop, -1 fail.  NULL: skip it. */
    int (*bad)(void *ctx, const store_val_t *key, const char *why);
    void *ctx;
} store_records_t;

/* store_scan() that decodes each record as r->type and hands it to r->each (or r->bad). */
int store_scan_records(store_txn_t *t, int db, const void *prefix, size_t plen, const void *after, size_t alen,
                       const store_records_t *r, aly_err_t *err);

/*
 * The id of the durable environment's latest committed write transaction:
 * it changes with every write, so data read under the same id is the same.
 * 0 when it cannot be read.
 */
uint64_t store_snapshot(store_t *st);

/*
 * Hot copy of the durable environment into dir/data.mdb (dir must exist and
 * hold none), compacted; written under a temporary name and renamed once
 * synced, so a failed copy leaves nothing behind.
 */
int store_backup(store_t *st, const char *dir, aly_err_t *err);

/* A random id: prefix + 20 characters of aly_random_b62() into out (len >= strlen(prefix) + 21). */
int store_new_id(const char *prefix, char *out, size_t len, aly_err_t *err);

/*
 * alyctl init: creates data_dir (0750), both environments, the named databases
 * and the pepper file (32 random bytes, 0600) when it does not exist yet.
 * Idempotent.  When uid/gid are not -1 everything created is handed to them.
 */
int store_init(const aly_config_t *cfg, uid_t uid, gid_t gid, aly_err_t *err);

/* Opens both environments of an initialised data_dir.  NULL with err on failure. */
store_t *store_open(const aly_config_t *cfg, aly_err_t *err);
void store_close(store_t *st);

/* A read transaction on the durable environment that finds the schema record: /healthz. */
int store_check(store_t *st, aly_err_t *err);

/*
 * Clears reader slots left by dead processes in both environments of data_dir
 * (mdb_reader_check).  Opens and closes the environments; safe in the master.
 * *cleared receives the number of slots freed.
 */
int store_reader_check(const aly_config_t *cfg, int *cleared, aly_err_t *err);

/* One named database's figures, for alyctl stats. */
typedef struct store_db_stat {
    const char *env; /* "store" or "volatile" */
    const char *name;
    size_t entries;
} store_db_stat_t;

typedef struct store_env_stat {
    const char *env;
    size_t map_size;
    size_t used_bytes;
    unsigned readers;
    unsigned max_readers;
} store_env_stat_t;

/*
 * How full the durable environment is: used_bytes counts the pages in use
 * (the high-water mark minus the free list); ordinary writes are refused
 * while used_bytes > limit_bytes (map_size minus the reserve).
 */
typedef struct store_usage {
    size_t map_size;
    size_t used_bytes;
    size_t limit_bytes;
    int full;
} store_usage_t;
int store_usage(store_t *st, store_usage_t *out, aly_err_t *err);

/* Bytes of a durable map of map_size that only STORE_RESERVE transactions may use. */
size_t store_reserve(size_t map_size);

/* Bytes of workspace ws's data as the quota counts them; 0 or -1. */
int store_workspace_usage(store_t *st, const char *ws, uint64_t *bytes, aly_err_t *err);

/* Fills up to max db stats and the two env stats; returns the number of db stats or -1. */
int store_stats(store_t *st, store_db_stat_t *dbs, size_t max, store_env_stat_t envs[2], aly_err_t *err);

/* ---- cluster mode (store_pg.c, store_replica.c) ---- */

/*
 * Round trips to PostgreSQL by purpose: on behalf of a store transaction (a
 * write), the replication timer (poll, prune), or store_sync() (a lookup
 * that missed).
 */
enum { STORE_RT_TXN, STORE_RT_POLL, STORE_RT_SYNC, STORE_RT_N };

/* Where st counts its round trips and failures from now on: counters[STORE_RT_N + 1] (the last one: failures). */
void store_count_into(store_t *st, uint64_t *counters);

/* The replication period in ms (store_poll), or 0 when st has no PostgreSQL (nothing to arm a timer for). */
uint64_t store_poll_ms(const store_t *st);

/*
 * Applies the changes other hosts committed since this replica's last one, in
 * one LMDB write transaction (a replica behind the change log's horizon is
 * copied whole), reconnects when the connection was lost, and now and then
 * prunes the change log.  Returns the number of changes applied, or -1 with
 * err (PostgreSQL unreachable: err->refused is STORE_UNAVAILABLE).
 */
long store_replicate(store_t *st, aly_err_t *err);

/*
 * A lookup missed a record another host may have written a moment ago (a
 * session created there, a key minted there): applies what PostgreSQL has
 * committed since the last poll, at once.  1 when this call changed the
 * replica; 0 otherwise: LMDB alone, nothing new, PostgreSQL unreachable, or
 * another sync less than STORE_SYNC_MIN_MS ago in this process (so a stream
 * of lookups of records that do not exist costs PostgreSQL at most one
 * round trip per that many ms per process) -- unless that sync began no
 * later than asked_ms (aly_now_ms() when the request that looks began; 0:
 * none): a record committed before the request was sent may then be
 * missing from it, so this syncs again.  0 does not mean the replica is as
 * old as a reader's snapshot: another worker's poll may have moved it on.
 */
#define STORE_SYNC_MIN_MS 20
int store_sync(store_t *st, uint64_t asked_ms);

typedef struct store_pg_status {
    int configured;       /* 0: LMDB alone, the rest is zero */
    int up;               /* the last contact worked */
    uint64_t applied_seq; /* the last change in the replica */
    uint64_t lag_ms;      /* since the replica was last seen to hold every committed change */
    char error[256];      /* why it is down */
} store_pg_status_t;
void store_pg_status(store_t *st, store_pg_status_t *out);

/*
 * alyctl migrate: copies every durable database of st (an LMDB store) into
 * the PostgreSQL at url (its schema created or upgraded first), in one
 * transaction.  A target that holds records is refused unless force (then
 * they are replaced).  counts[db] receives the records copied per database.
 * Every replica then copies the whole table once.
 */
int store_migrate(store_t *st, const aly_config_t *cfg, const char *url, int force, size_t counts[DB_N], aly_err_t *err);

/* The names of the durable databases, for reports. */
const char *store_db_name(int db);

#endif

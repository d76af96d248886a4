/*
 * Shared by the files of the store and nothing else: store.c (the
 * environments: create, open, check, statistics), store_txn.c
 * (transactions, the raw data operations, the reserve and the quota),
 * store_pg.c (the PostgreSQL connection, its schema, the write batch) and
 * store_replica.c (the local replica: catching up, polling, migrate).
 */
#ifndef ALY_STORE_INTERNAL_H
#define ALY_STORE_INTERNAL_H

#include <libpq-fe.h>
#include <lmdb.h>

#include "aly/resolve.h"
#include "aly/store.h"

/*
 * The volatile environment takes a write per request (rate limits), so it
 * skips fsync (MDB_NOSYNC: a system crash may lose the last updates, which
 * only resets some budgets) and writes pages in place (MDB_WRITEMAP: no
 * malloc'd copies and write(2) per commit; measured about 8x faster per
 * decision).  Copy-on-write still protects the last committed state from a
 * writer killed mid-transaction.  LMDB requires every process to open an
 * environment with the same MDB_WRITEMAP setting, hence one constant.
 */
#define VOLATILE_FLAGS (MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP)
#define DURABLE_FLAGS 0

#define MAX_READERS 1022 /* workers x concurrent read txns, plus alyctl; LMDB's default is 126 */
#define RESERVE_MAX ((size_t)64 << 20)
#define RESERVE_SMALL ((size_t)4 << 20)
/* An ordinary transaction may end at most reserve / OVERSHOOT_SHARE past the write limit (store_txn.c, check_room). */
#define OVERSHOOT_SHARE 8
#define FULL_LOG_EVERY_MS 10000
#define USAGE_PREFIX "usage/"

/* The named databases of each environment (store.c), opened once per process. */
extern const char *const store_durable_dbs[DB_N];
extern const char *const store_volatile_dbs[VDB_N];

struct store {
    MDB_env *env;
    MDB_env *vol;
    MDB_dbi dbi[DB_N];
    MDB_dbi vdbi[VDB_N];
    MDB_txn *reader[2]; /* reset read transactions kept for reuse: durable, volatile */
    int reader_busy[2];
    size_t reserve;      /* bytes of the durable map only STORE_RESERVE transactions may use */
    size_t quota;        /* workspace_quota */
    struct store_pg *pg; /* NULL: LMDB alone */
};

/* ---- store_pg.c ---- */

/* The one advisory lock every cluster write holds: writes serialise cluster-wide. */
#define STORE_PG_LOCK 1634497892
/* DB_META keys of the replica itself, never sent to PostgreSQL. */
#define STORE_APPLIED_KEY "pg/applied"

/* A host list longer than this (host=a,b,...) is left to libpq, which resolves the names itself, blocking. */
#define STORE_PG_HOSTS_MAX 8

typedef struct store_pg {
    char *url;
    /*
     * The URL's hosts when one of them is a name, looked up for each
     * connection (hostaddr); n_hosts 0: libpq asks no resolver.  ports: the
     * URL's port list when it has one per host, else NULL.
     */
    char *hosts[STORE_PG_HOSTS_MAX], *ports[STORE_PG_HOSTS_MAX];
    size_t n_hosts;
    aly_lookup_t *lookups[STORE_PG_HOSTS_MAX]; /* each name's lookup, in flight since an attempt it missed; NULL when none */
    int lookup_logged;                         /* an unanswered lookup was logged in this outage */
    uint64_t timeout_ms;                       /* store_timeout: connect (the lookup included), and each round trip */
    uint64_t poll_ms;                          /* store_poll */
    uint64_t keep_ms;                          /* store_changes_keep */
    PGconn *conn;                              /* NULL while disconnected */
    int in_txn;                                /* a BEGIN was sent and neither COMMIT nor ROLLBACK yet */
    int timed_out;                             /* the last lost connection missed the deadline (rather than failing at once) */
    uint64_t next_try_ms;                      /* while down: no connection attempt before this */
    uint64_t current_ms;                       /* when the replica last held every committed change */
    uint64_t pruned_ms;                        /* when this process last pruned the change log */
    uint64_t synced_ms;                        /* when this process last ran store_sync() */
    char error[256];                           /* the last failure; "" while up */
    uint64_t own_counters[STORE_RT_N + 1];
    uint64_t *counters; /* [STORE_RT_N]: round trips by purpose, then failures */
    char *buf;          /* the write batch (SQL), or a statement being built */
    size_t len, cap;
    char *log; /* the change-log rows of the batch: "(db,k,v),..." */
    size_t log_len, log_cap;
} store_pg_t;

store_pg_t *store_pg_new(const aly_config_t *cfg, const char *url);
void store_pg_free(store_pg_t *pg);
/* Connects when not connected (at most once per second while down); check: verify the schema version. */
int store_pg_connect(store_pg_t *pg, int purpose, int check, aly_err_t *err);
/*
 * Sends sql (one or more statements, no parameters) and collects its results
 * into res[0..max-1] (the caller PQclear()s them; extra ones are dropped).
 * Returns how many, or -1 with err: an SQL error (the connection stays), or a
 * lost connection or a missed deadline (the connection is dropped and err is
 * STORE_UNAVAILABLE).
 */
int store_pg_run(store_pg_t *pg, int purpose, const char *sql, PGresult **res, int max, aly_err_t *err);
/* store_pg_run() with slack times the deadline (a whole-table copy). */
#define STORE_PG_COPY_SLACK 30
int store_pg_run_slack(store_pg_t *pg, int purpose, const char *sql, unsigned slack, PGresult **res, int max, aly_err_t *err);
/* store_pg_run() for statements whose results are not needed. */
int store_pg_exec(store_pg_t *pg, int purpose, const char *sql, aly_err_t *err);
/* Ends an open PostgreSQL transaction without committing (a failed one too); drops the connection when that fails. */
void store_pg_rollback(store_pg_t *pg);
/* The write batch: a put (val) or a delete (val NULL) to kv and the change log, sent by store_pg_commit(). */
void store_pg_note(store_pg_t *pg, int db, const void *key, size_t klen, const void *val, size_t vlen);
/* Sends the batch and COMMIT; *seq: the last change-log seq written (0 when none). */
int store_pg_commit(store_pg_t *pg, uint64_t *seq, aly_err_t *err);
/* Creates or upgrades the schema (alyctl init, migrate). */
int store_pg_schema(store_pg_t *pg, aly_err_t *err);
/* Appends text, or a bytea literal '\x<hex>', to the batch buffer (store_migrate builds its statements there too). */
void store_pg_append(store_pg_t *pg, const char *text);
void store_pg_append_bytea(store_pg_t *pg, const void *data, size_t len);
/* Empties the batch. */
void store_pg_reset(store_pg_t *pg);
/* Decodes a bytea text value ("\x...") into out (len/2 bytes); -1 when it is not one. */
long store_pg_bytea(const char *text, size_t len, unsigned char *out);
/* Fills err with "the store is unavailable" and the last failure, marked STORE_UNAVAILABLE; returns -1. */
int store_pg_unavailable(store_pg_t *pg, aly_err_t *err);

/* ---- store_replica.c ---- */

/* Inside t's fresh LMDB write transaction: BEGIN, the advisory lock, catch up.  -1 with err (PostgreSQL rolled back). */
int store_replica_begin(store_txn_t *t, aly_err_t *err);
/* PostgreSQL COMMIT of t's batch, then records the applied seq in t's LMDB transaction (not yet committed). */
int store_replica_commit(store_txn_t *t, aly_err_t *err);

#endif

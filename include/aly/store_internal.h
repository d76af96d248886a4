/*
 * Shared by the two files of the store and nothing else: store.c (the
 * environments: create, open, check, statistics) and store_txn.c
 * (transactions, the raw data operations, the reserve and the quota).
 */
#ifndef ALY_STORE_INTERNAL_H
#define ALY_STORE_INTERNAL_H

#include <lmdb.h>

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
    size_t reserve; /* bytes of the durable map only STORE_RESERVE transactions may use */
    size_t quota;   /* workspace_quota */
};

#endif

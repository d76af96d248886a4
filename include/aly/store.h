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
 * Caveats (lmdb.h): an MDB_env must be opened by the process that uses it, so
 * workers call store_open() after fork and the master only ever opens an
 * environment briefly, for store_reader_check(), with nothing open at fork.
 */
#ifndef ALY_STORE_H
#define ALY_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "aly/common.h"
#include "aly/config.h"

#define STORE_SCHEMA_VERSION 1

typedef struct store store_t;

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

/* Fills up to max db stats and the two env stats; returns the number of db stats or -1. */
int store_stats(store_t *st, store_db_stat_t *dbs, size_t max, store_env_stat_t envs[2], aly_err_t *err);

#endif

/*
 * The store API in cluster mode, on a real PostgreSQL (t/143-pg-store.t
 * starts it and initialises the data directories): two stores on one
 * database, as two hosts would be, and one on LMDB alone.  Puts, deletes,
 * noclobber and aborts reach the other replica exactly as they happened in
 * the first; workspace usage rides along; store_sync() brings a record
 * written elsewhere at once, throttled, and is a no-op without PostgreSQL;
 * a session lookup that misses reads through; reads cost no round trip, a
 * write two.
 *
 *   t/unit-store-pg CONF_A CONF_B CONF_LMDB
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/store.h"
#include "tap.h"

static store_t *open_conf(const char *path)
{
    aly_err_t err;
    aly_config_t *cfg = config_load(path, &err);
    store_t *st = cfg != NULL ? store_open(cfg, &err) : NULL;
    if (st == NULL) {
        printf("Bail out! %s\n", err.msg);
        exit(1);
    }
    /* The store keeps no pointer into cfg past store_open except what it copied. */
    config_free(cfg);
    return st;
}

/* 0 found with value want, 1 not found, -1 error or another value. */
static int lookup(store_t *st, int db, const char *key, const char *want)
{
    store_txn_t t;
    store_val_t v;
    aly_err_t err;
    if (store_begin(st, 0, &t, &err) != 0)
        return -1;
    int rc = store_get(&t, db, key, strlen(key), &v, &err);
    if (rc == 0 && (v.len != strlen(want) || memcmp(v.data, want, v.len) != 0))
        rc = -1;
    store_abort(&t);
    return rc;
}

static int put(store_t *st, int db, const char *key, const char *val, int noclobber, int commit)
{
    store_txn_t t;
    aly_err_t err;
    if (store_begin(st, STORE_WRITE, &t, &err) != 0) {
        printf("# %s\n", err.msg);
        return -1;
    }
    int rc = val != NULL ? store_put(&t, db, key, strlen(key), val, strlen(val), noclobber, &err)
                         : store_del(&t, db, key, strlen(key), &err);
    if (rc < 0 || !commit) {
        store_abort(&t);
        return rc;
    }
    return store_commit(&t, &err) == 0 ? rc : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        printf("1..0 # SKIP run by t/143-pg-store.t\n");
        return 0;
    }
    store_t *a = open_conf(argv[1]), *b = open_conf(argv[2]), *l = open_conf(argv[3]);
    uint64_t ca[STORE_RT_N + 1] = {0}, cb[STORE_RT_N + 1] = {0};
    store_count_into(a, ca);
    store_count_into(b, cb);

    is_int(store_poll_ms(l), 0, "LMDB alone: no replication timer");
    is_int(store_sync(l, 0), 0, "LMDB alone: store_sync is a no-op");
    ok(store_poll_ms(a) > 0, "PostgreSQL: the replication timer's period");

    is_int(put(a, DB_DATA, "ws_x/a", "one", 0, 1), 0, "host A: a put commits");
    is_int(ca[STORE_RT_TXN], 2, "a write: two round trips");
    is_int(put(a, DB_SESSIONS, "mcp_s1", "session", 0, 1), 0, "host A: a session");
    is_int(lookup(a, DB_SESSIONS, "mcp_s1", "session"), 0, "host A reads its own write at once");
    is_int(ca[STORE_RT_TXN], 4, "the read: no round trip");
    is_int(lookup(b, DB_DATA, "ws_x/a", "one"), 1, "host B has not polled yet (no timer here)");
    uint64_t before_sync = aly_now_ms() - 1; /* a request that began before the sync below */
    is_int(store_sync(b, 0), 1, "store_sync on host B: the replica changed");
    is_int(cb[STORE_RT_SYNC], 1, "one round trip, counted as a lookup miss");
    is_int(lookup(b, DB_SESSIONS, "mcp_s1", "session"), 0, "host B now has the session");
    is_int(lookup(b, DB_DATA, "ws_x/a", "one"), 0, "and the data");
    is_int(store_sync(b, 0), 0, "a second store_sync at once is throttled");
    is_int(cb[STORE_RT_SYNC], 1, "without a round trip");
    /*
     * A lookup for a request that began after that sync is not throttled: what the client had committed
     * elsewhere before sending it (a session right after initialize) may be newer than the sync.
     */
    is_int(put(a, DB_SESSIONS, "mcp_s7", "later", 0, 1), 0, "host A: a session after B's sync");
    uint64_t asked = aly_now_ms();
    int within = asked - before_sync < STORE_SYNC_MIN_MS;
    is_int(store_sync(b, before_sync), within ? 0 : 1,
           within ? "a request that began before the last sync: throttled" : "(the throttle window had passed: synced)");
    is_int(store_sync(b, asked), within ? 1 : 0,
           within ? "a request that began after the last sync: synced at once, throttle or not" : "(already synced)");
    is_int(lookup(b, DB_SESSIONS, "mcp_s7", "later"), 0, "host B has that session");
    usleep((STORE_SYNC_MIN_MS + 10) * 1000);
    usleep((STORE_SYNC_MIN_MS + 10) * 1000);
    is_int(store_sync(b, 0), 0, "store_sync with nothing new: 0");

    is_int(put(a, DB_SESSIONS, "mcp_s1", "other", 1, 1), 1, "noclobber on an existing key: 1");
    is_int(put(a, DB_DATA, "ws_x/a", NULL, 0, 1), 0, "host A deletes");
    is_int(put(a, DB_DATA, "ws_x/b", "two", 0, 0), 0, "host A puts and aborts");
    is_int(lookup(a, DB_DATA, "ws_x/b", "two"), 1, "the aborted put is not in A's replica");
    usleep((STORE_SYNC_MIN_MS + 10) * 1000);
    is_int(store_sync(b, 0), 1, "host B syncs");
    is_int(lookup(b, DB_DATA, "ws_x/a", "one"), 1, "the delete reached B");
    is_int(lookup(b, DB_SESSIONS, "mcp_s1", "session"), 0, "the noclobber put did not");
    is_int(lookup(b, DB_DATA, "ws_x/b", "two"), 1, "nor the aborted one");

    /* A session made on A is found on B at once: the first get of a read transaction reads through on a miss. */
    is_int(put(a, DB_SESSIONS, "mcp_s2", "fresh", 0, 1), 0, "host A: another session");
    is_int(put(a, DB_DATA, "ws_x/d", "four", 0, 1), 0, "and data");
    usleep((STORE_SYNC_MIN_MS + 10) * 1000);
    {
        store_txn_t t;
        store_val_t v;
        aly_err_t e;
        uint64_t before = cb[STORE_RT_SYNC];
        ok(store_begin(b, 0, &t, &e) == 0, "host B: a read transaction");
        is_int(store_get(&t, DB_DATA, "ws_x/d", 6, &v, &e), 1, "a miss outside DB_SESSIONS does not read through");
        is_int(store_get(&t, DB_SESSIONS, "mcp_s2", 6, &v, &e), 1, "nor a session lookup that is not the first read");
        store_abort(&t);
        is_int(cb[STORE_RT_SYNC], before, "no round trip for either");
        ok(store_begin(b, 0, &t, &e) == 0 && store_get(&t, DB_SESSIONS, "mcp_s2", 6, &v, &e) == 0 && v.len == 5 &&
               memcmp(v.data, "fresh", 5) == 0,
           "the first read of a transaction, a session miss: read through, found");
        is_int(store_get(&t, DB_DATA, "ws_x/d", 6, &v, &e), 0, "the transaction now reads the newer snapshot");
        store_abort(&t);
        is_int(cb[STORE_RT_SYNC], before + 1, "one round trip");
        ok(store_begin(b, 0, &t, &e) == 0 && store_get(&t, DB_SESSIONS, "mcp_nope", 8, &v, &e) == 1, "an unknown session: 1");
        store_abort(&t);
        is_int(cb[STORE_RT_SYNC], before + 1, "within STORE_SYNC_MIN_MS of the last sync: no round trip");
    }

    /*
     * Another worker of host B polls between this worker's read transaction and its lookup: the sync the
     * miss makes then finds nothing left to apply, yet the transaction's snapshot is older than the replica.
     * (Here host B's own poll stands for the other worker's: the transaction was begun before it.)
     */
    is_int(put(a, DB_SESSIONS, "mcp_s3", "polled", 0, 1), 0, "host A: a session that B's other worker will poll in");
    usleep((STORE_SYNC_MIN_MS + 10) * 1000);
    {
        store_txn_t t;
        store_val_t v;
        aly_err_t e;
        ok(store_begin(b, 0, &t, &e) == 0, "host B: a read transaction, begun before the poll");
        ok(store_replicate(b, &e) > 0, "host B's poll applies the session");
        uint64_t before = cb[STORE_RT_SYNC];
        ok(store_get(&t, DB_SESSIONS, "mcp_s3", 6, &v, &e) == 0 && v.len == 6 && memcmp(v.data, "polled", 6) == 0,
           "the transaction's session miss reads through to the polled replica: found");
        store_abort(&t);
        is_int(cb[STORE_RT_SYNC], before + 1, "after one round trip, which had nothing new to apply");
        ok(store_begin(b, 0, &t, &e) == 0 && store_get(&t, DB_SESSIONS, "mcp_s3", 6, &v, &e) == 0,
           "and a new transaction finds it");
        store_abort(&t);
    }

    is_int(put(b, DB_DATA, "ws_x/c", "three", 0, 1), 0, "host B writes too");
    uint64_t ua = 1, ub = 2;
    aly_err_t err;
    store_sync(a, 0);
    ok(store_workspace_usage(a, "ws_x", &ua, &err) == 0 && store_workspace_usage(b, "ws_x", &ub, &err) == 0 && ua == ub &&
           ua == strlen("ws_x/c") + strlen("three") + strlen("ws_x/d") + strlen("four"),
       "workspace usage rides the log: %llu on A, %llu on B", (unsigned long long)ua, (unsigned long long)ub);
    store_pg_status_t sa, sb;
    store_pg_status(a, &sa);
    store_pg_status(b, &sb);
    ok(sa.configured && sa.up && sa.applied_seq > 0 && sa.applied_seq == sb.applied_seq, "both replicas at seq %llu",
       (unsigned long long)sa.applied_seq);
    /* A write of more records than a batch keeps results for: its change-log seq still comes back. */
    {
        store_txn_t t;
        aly_err_t e;
        uint64_t before = sa.applied_seq;
        int rc = store_begin(a, STORE_WRITE, &t, &e);
        for (int i = 0; rc == 0 && i < 100; i++) {
            char k[32];
            int n = snprintf(k, sizeof(k), "ws_y/%03d", i);
            rc = store_put(&t, DB_DATA, k, (size_t)n, "v", 1, 0, &e);
        }
        ok(rc == 0 && store_commit(&t, &e) == 0, "host A: 100 records in one write");
        store_pg_status(a, &sa);
        ok(sa.applied_seq > before, "A's replica records that write's seq itself (%llu after %llu)",
           (unsigned long long)sa.applied_seq, (unsigned long long)before);
        usleep((STORE_SYNC_MIN_MS + 10) * 1000);
        store_sync(b, 0);
        store_pg_status(b, &sb);
        is_int((long long)sb.applied_seq, (long long)sa.applied_seq, "and B reaches the same seq");
        is_int(lookup(b, DB_DATA, "ws_y/099", "v"), 0, "with the last record");
    }
    store_pg_status(l, &sa);
    is_int(sa.configured, 0, "LMDB alone: no PostgreSQL status");

    store_close(a);
    store_close(b);
    store_close(l);
    return done_testing();
}

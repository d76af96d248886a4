/*
 * Micro-benchmark of the durable store's write path and of cluster mode's
 * replication poll: what one small write transaction (begin, one put into
 * DB_DATA, commit) costs on the configuration's store, what a read
 * transaction costs beside it, and, with "store postgresql://...", what
 * store_replicate() costs when there is nothing new (the price of each
 * worker's timer) and how many PostgreSQL round trips a write takes.
 *
 *   scripts/bench-store CONF [N]
 *
 * CONF names an initialised data_dir (and, for cluster mode, the database).
 * Prints medians of 5 rounds of N (default 500) in microseconds per call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aly/store.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median5(double v[5])
{
    qsort(v, 5, sizeof(double), cmp);
    return v[2];
}

static int write_one(store_t *st, int i, aly_err_t *err)
{
    store_txn_t t;
    char key[64], val[100];
    snprintf(key, sizeof(key), "ws_bench/bench/%08d", i);
    memset(val, 'v', sizeof(val));
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    if (store_put(&t, DB_DATA, key, strlen(key), val, sizeof(val), 0, err) != 0) {
        store_abort(&t);
        return -1;
    }
    return store_commit(&t, err);
}

static int read_one(store_t *st, int i, aly_err_t *err)
{
    store_txn_t t;
    store_val_t v;
    char key[64];
    snprintf(key, sizeof(key), "ws_bench/bench/%08d", i);
    if (store_begin(st, 0, &t, err) != 0)
        return -1;
    int rc = store_get(&t, DB_DATA, key, strlen(key), &v, err);
    store_abort(&t);
    return rc < 0 ? -1 : 0;
}

static int poll_one(store_t *st, int i, aly_err_t *err)
{
    (void)i;
    return store_replicate(st, err) < 0 ? -1 : 0;
}

static double run(store_t *st, int (*op)(store_t *, int, aly_err_t *), int n, const char *name)
{
    double r[5];
    aly_err_t err;
    for (int round = 0; round < 5; round++) {
        double t0 = now_us();
        for (int i = 0; i < n; i++) {
            if (op(st, round * n + i, &err) != 0) {
                fprintf(stderr, "bench-store: %s: %s\n", name, err.msg);
                exit(1);
            }
        }
        r[round] = (now_us() - t0) / n;
    }
    return median5(r);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench-store CONF [N]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 500;
    aly_err_t err;
    aly_config_t *cfg = config_load(argv[1], &err);
    store_t *st = cfg != NULL ? store_open(cfg, &err) : NULL;
    if (st == NULL) {
        fprintf(stderr, "bench-store: %s\n", err.msg);
        return 1;
    }
    uint64_t c[STORE_RT_N + 1] = {0};
    store_count_into(st, c);
    double w = run(st, write_one, n, "write");
    uint64_t trips = c[STORE_RT_TXN];
    double r = run(st, read_one, n, "read");
    printf("store %s: write txn (1 put, commit) %.1f us; read txn (1 get) %.2f us", cfg->store != NULL ? "postgresql" : "lmdb", w,
           r);
    if (cfg->store != NULL) {
        uint64_t before = c[STORE_RT_TXN];
        double p = run(st, poll_one, n, "poll");
        printf(
            "; PostgreSQL round trips per write %.2f, per read %.2f; replication poll with nothing new %.1f us (%.2f round trips)",
            (double)trips / (5.0 * n), (double)(before - trips) / (5.0 * n), p, (double)c[STORE_RT_POLL] / (5.0 * n));
    }
    putchar('\n');
    store_close(st);
    config_free(cfg);
    return 0;
}

/*
 * Micro-benchmark of rate-limit decisions across processes: decisions per
 * second with 1, 2, 4 and 8 processes, each deciding for its own principal
 * (distinct) or all for one (shared), for the shared-memory table of
 * src/ratelimit.c and, as the reference in the same run, for the LMDB
 * limiter it replaced (one write transaction per decision in the volatile
 * environment: get the cell, GCRA, put, commit; without its periodic sweep,
 * which only made it slower).
 *
 *   scripts/bench-ratelimit-shm [SECONDS [ROUNDS]]   (default 0.5 s, 3 rounds)
 *
 * Each process opens its own store and limiter after fork, as a worker does,
 * then all start together and decide until told to stop; the policy never
 * refuses, so every decision writes.  Rounds interleave every configuration
 * (the machine's load drifts); the first table prints medians and the
 * ratios shared-memory / LMDB.  The second prints the CPU time the deciding
 * processes used per decision (their rusage): on a machine busy with other
 * work the wall-clock rate cannot grow with processes, but a lock or a
 * contended cache line still shows here as a cost per decision that grows.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aly/ratelimit.h"

#define MAX_PROCS 8
#define MAX_ROUNDS 15
#define CELL_LEN 9 /* the LMDB limiter's cell: version 1, TAT little endian */

static const int procs[] = {1, 2, 4, 8};
enum { SHM, LMDB, KINDS };
enum { DISTINCT, SHARED, SHARINGS };

typedef struct board {
    _Atomic int ready;
    _Atomic int go;
    _Atomic int stop;
    _Atomic unsigned long long decisions;
    _Atomic int errors;
} board_t;

static char dir[] = "/tmp/bench-ratelimit-XXXXXX";
static const aly_rate_t never = {1000000000, 1, 1000000000};

static aly_config_t *bench_config(void)
{
    aly_err_t err;
    aly_config_t *cfg = config_defaults(&err);
    char pepper[128];
    if (cfg == NULL)
        return NULL;
    free(cfg->data_dir);
    cfg->data_dir = strdup(dir);
    free(cfg->key_pepper_file);
    snprintf(pepper, sizeof(pepper), "%s/pepper", dir);
    cfg->key_pepper_file = strdup(pepper);
    cfg->volatile_map_size = (size_t)64 << 20;
    return cfg;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The replaced limiter's decision, as it was: one write transaction on the cell "p:" id. */
static int lmdb_decide(store_t *st, const char *id, ratelimit_decision_t *d, aly_err_t *err)
{
    unsigned char key[64], cell[CELL_LEN];
    size_t klen = (size_t)snprintf((char *)key, sizeof(key), "p:%s", id);
    uint64_t tat = 0, now = ratelimit_now_ns();
    store_txn_t t;
    store_val_t v;
    if (store_begin(st, STORE_WRITE | STORE_VOLATILE, &t, err) != 0)
        return -1;
    int rc = store_get(&t, VDB_RATE, key, klen, &v, err);
    if (rc == 0 && v.len == CELL_LEN)
        for (int i = 8; i >= 1; i--)
            tat = tat << 8 | ((const unsigned char *)v.data)[i];
    if (rc < 0 || !ratelimit_gcra(&tat, &never, now, 1, d)) {
        store_abort(&t);
        return rc < 0 ? -1 : 0;
    }
    cell[0] = 1;
    for (int i = 1; i <= 8; i++, tat >>= 8)
        cell[i] = (unsigned char)tat;
    if (store_put(&t, VDB_RATE, key, klen, cell, sizeof(cell), 0, err) != 0) {
        store_abort(&t);
        return -1;
    }
    return store_commit(&t, err);
}

static void child(board_t *b, int kind, int sharing, int index)
{
    aly_err_t err;
    aly_config_t *cfg = bench_config();
    store_t *st = cfg != NULL ? store_open(cfg, &err) : NULL;
    ratelimit_t *rl = st != NULL && kind == SHM ? ratelimit_new(st, RATELIMIT_MAX_ADDRESSES, &err) : NULL;
    if (st == NULL || (kind == SHM && rl == NULL)) {
        fprintf(stderr, "bench-ratelimit-shm: %s\n", err.msg);
        atomic_fetch_add(&b->errors, 1);
    }
    char id[32];
    snprintf(id, sizeof(id), sharing == SHARED ? "key_shared" : "key_proc_%d", index);
    atomic_fetch_add(&b->ready, 1);
    while (!atomic_load(&b->go))
        ;
    unsigned long long n = 0;
    int errors = 0;
    while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
        ratelimit_decision_t d;
        int rc = kind == SHM ? ratelimit_principal(rl, id, &never, ratelimit_now_ns(), &d, &err) : lmdb_decide(st, id, &d, &err);
        if (rc != 0 || !d.allowed)
            errors++;
        n++;
    }
    atomic_fetch_add(&b->decisions, n);
    atomic_fetch_add(&b->errors, errors);
    _exit(0);
}

/* One run: nproc processes for seconds; decisions per second, or -1; *cpu_ns: CPU ns per decision. */
static double run(int kind, int sharing, int nproc, double seconds, double *cpu_ns)
{
    board_t *b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pids[MAX_PROCS];
    if (b == MAP_FAILED)
        return -1;
    for (int p = 0; p < nproc; p++)
        if ((pids[p] = fork()) == 0)
            child(b, kind, sharing, p);
    while (atomic_load(&b->ready) < nproc)
        usleep(1000);
    double t0 = now_s();
    atomic_store(&b->go, 1);
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&b->stop, 1);
    double elapsed = now_s() - t0;
    double cpu = 0;
    for (int p = 0; p < nproc; p++) {
        struct rusage ru;
        int status;
        if (wait4(pids[p], &status, 0, &ru) == pids[p])
            cpu += (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }
    unsigned long long n = atomic_load(&b->decisions);
    *cpu_ns = n > 0 ? cpu * 1e9 / (double)n : 0;
    double rate = atomic_load(&b->errors) == 0 ? (double)n / elapsed : -1;
    munmap(b, sizeof(*b));
    return rate;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    double s[MAX_ROUNDS];
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp);
    return s[n / 2];
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0.5;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    if (seconds <= 0 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: bench-ratelimit-shm [SECONDS [ROUNDS (1-%d)]]\n", MAX_ROUNDS);
        return 2;
    }
    aly_err_t err;
    aly_config_t *cfg = mkdtemp(dir) != NULL ? bench_config() : NULL;
    if (cfg == NULL || store_init(cfg, (uid_t)-1, (gid_t)-1, &err) != 0) {
        fprintf(stderr, "bench-ratelimit-shm: cannot make a store in %s\n", dir);
        return 1;
    }
    config_free(cfg);
    const int nprocs = (int)(sizeof(procs) / sizeof(procs[0]));
    static double v[KINDS][SHARINGS][4][MAX_ROUNDS], c[KINDS][SHARINGS][4][MAX_ROUNDS];
    int failed = 0;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < nprocs; i++)
            for (int s = 0; s < SHARINGS; s++)
                for (int k = 0; k < KINDS; k++)
                    failed |= (v[k][s][i][r] = run(k, s, procs[i], seconds, &c[k][s][i][r])) < 0;
    printf("rate-limit decisions per second, all processes together (median of %d rounds of %.2f s; %ld cores online)\n", rounds,
           seconds, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-9s %14s %14s %14s %14s %10s %10s\n", "processes", "shm distinct", "lmdb distinct", "shm shared", "lmdb shared",
           "x distinct", "x shared");
    for (int i = 0; i < nprocs; i++) {
        double m[KINDS][SHARINGS];
        for (int k = 0; k < KINDS; k++)
            for (int s = 0; s < SHARINGS; s++)
                m[k][s] = median(v[k][s][i], rounds);
        printf("%-9d %14.0f %14.0f %14.0f %14.0f %9.1fx %9.1fx\n", procs[i], m[SHM][DISTINCT], m[LMDB][DISTINCT], m[SHM][SHARED],
               m[LMDB][SHARED], m[SHM][DISTINCT] / m[LMDB][DISTINCT], m[SHM][SHARED] / m[LMDB][SHARED]);
    }
    printf("\nCPU time of the deciding processes per decision, ns (median; includes starting and stopping)\n");
    printf("%-9s %14s %14s %14s %14s\n", "processes", "shm distinct", "lmdb distinct", "shm shared", "lmdb shared");
    for (int i = 0; i < nprocs; i++)
        printf("%-9d %14.0f %14.0f %14.0f %14.0f\n", procs[i], median(c[SHM][DISTINCT][i], rounds),
               median(c[LMDB][DISTINCT][i], rounds), median(c[SHM][SHARED][i], rounds), median(c[LMDB][SHARED][i], rounds));
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench-ratelimit-shm: could not remove %s\n", dir);
    if (failed)
        fprintf(stderr, "bench-ratelimit-shm: some decisions failed or were refused; their runs print as negative\n");
    return failed;
}

/*
 * Micro-benchmark of rate-limit decisions through Redis (src/ratelimit_redis.c):
 * one row per process count, each process with its own connection (as a
 * worker has) deciding for its own principals in a closed loop; decisions per
 * second, the mean and 99th percentile time of one decision, and Redis round
 * trips per decision.  The policy never refuses, so every decision writes.
 *
 *   scripts/bench-ratelimit-redis redis://127.0.0.1:PORT/DB [SECONDS [PROCS...]]
 *
 * scripts/bench-redis starts a throw-away redis-server and runs this.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aly/ratelimit_redis.h"
#include "aly/volatile_redis.h"

#define MAX_SAMPLES 2000000

typedef struct result {
    unsigned long long decisions, errors, round_trips;
    double p99_us;
} result_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_one(aly_config_t *cfg, int proc, double seconds, result_t *out)
{
    aly_err_t err;
    volatile_redis_t *r = volatile_redis_open(cfg, &err);
    if (r == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        _exit(1);
    }
    aly_rate_t rate = {1000000000, 1, 1000000000};
    ratelimit_decision_t d;
    double *lat = malloc(sizeof(double) * MAX_SAMPLES), end = now_s() + seconds;
    if (lat == NULL)
        _exit(1);
    size_t n = 0;
    uint64_t rt0 = volatile_redis_round_trips();
    char id[64];
    for (unsigned long long i = 0;; i++) {
        double t0 = now_s();
        if (t0 >= end)
            break;
        snprintf(id, sizeof(id), "bench-%d-%llu", proc, i % 1000);
        if (ratelimit_redis_principal(r, id, &rate, &d, &err) != 0 || !d.allowed)
            out->errors++;
        if (n < MAX_SAMPLES)
            lat[n++] = (now_s() - t0) * 1e6;
        out->decisions++;
    }
    out->round_trips = volatile_redis_round_trips() - rt0;
    qsort(lat, n, sizeof(double), cmp_double);
    out->p99_us = n ? lat[n * 99 / 100] : 0;
    free(lat);
    volatile_redis_close(r);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s redis://HOST:PORT/DB [SECONDS [PROCS...]]\n", argv[0]);
        return 2;
    }
    aly_err_t err;
    aly_config_t *cfg = config_defaults(&err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    cfg->volatile_url = strdup(argv[1]);
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    int default_procs[] = {1, 2}, nprocs = argc > 3 ? argc - 3 : 2;
    printf("%-6s %14s %12s %12s %14s %7s\n", "procs", "decisions/s", "mean us", "p99 us", "round trips/d", "errors");
    for (int k = 0; k < nprocs; k++) {
        int procs = argc > 3 ? atoi(argv[3 + k]) : default_procs[k];
        if (procs < 1 || procs > 64)
            continue;
        result_t *res = mmap(NULL, sizeof(result_t) * (size_t)procs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (res == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        memset(res, 0, sizeof(result_t) * (size_t)procs);
        for (int p = 0; p < procs; p++) {
            pid_t pid = fork();
            if (pid == 0) {
                run_one(cfg, p, seconds, &res[p]);
                _exit(0);
            }
        }
        while (wait(NULL) > 0)
            ;
        result_t sum = {0};
        double p99 = 0;
        for (int p = 0; p < procs; p++) {
            sum.decisions += res[p].decisions;
            sum.errors += res[p].errors;
            sum.round_trips += res[p].round_trips;
            p99 = res[p].p99_us > p99 ? res[p].p99_us : p99;
        }
        double rate = (double)sum.decisions / seconds;
        printf("%-6d %14.0f %12.1f %12.1f %14.2f %7llu\n", procs, rate,
               sum.decisions ? seconds * 1e6 * procs / (double)sum.decisions : 0, p99,
               sum.decisions ? (double)sum.round_trips / (double)sum.decisions : 0, sum.errors);
        munmap(res, sizeof(result_t) * (size_t)procs);
    }
    config_free(cfg);
    return 0;
}

/*
 * Unit tests of the GCRA limiter (src/ratelimit.c): the arithmetic against a
 * brute-force token bucket, the B + N*t/period bound, exact Retry-After,
 * clamping after a clock step; on a temporary store the shared cells, idle
 * cells carrying no state, the size of the address table and its evictions;
 * processes racing on one cell and on fresh cells (never more than the burst,
 * never two cells for one key), a budget outliving the process that spent
 * it, and a damaged table file (cells and header) recovered from.
 * The cost of a decision: scripts/bench-ratelimit-shm.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aly/ratelimit.h"
#include "aly/ratelimit_internal.h"
#include "tap.h"

#define S 1000000000ull
#define T0 (1700000000ull * S)

static void basics(void)
{
    aly_rate_t r = {60, 60, 10}; /* T = 1 s, capacity 10 */
    ratelimit_decision_t d;
    uint64_t tat = 0;
    int admitted = 0;
    for (int i = 0; i < 15; i++)
        admitted += ratelimit_gcra(&tat, &r, T0, 1, &d);
    is_int(admitted, 10, "a fresh cell admits the burst at once, and no more");
    is_int(d.allowed, 0, "the 11th is refused");
    is_int(d.retry_after_s, 1, "Retry-After: one emission interval");
    is_int(d.remaining, 0, "nothing remains");
    is_int(tat, T0 + 10 * S, "refusals leave the TAT alone");
    ok(!ratelimit_gcra(&tat, &r, T0 + S - 1, 1, &d), "one nanosecond before Retry-After: refused");
    ok(ratelimit_gcra(&tat, &r, T0 + S, 1, &d), "at Retry-After: admitted");
    is_int(d.remaining, 0, "and that used the one request restored");

    tat = 0;
    ratelimit_gcra(&tat, &r, T0, 1, &d);
    is_int(d.remaining, 9, "after one request of a fresh cell, burst - 1 remain");
    is_int(d.reset_s, 1, "the next one comes back within T");
    ok(ratelimit_gcra(&tat, &r, T0 + 100 * S, 0, &d) && d.remaining == 10, "idle past its TAT: a full bucket again");

    aly_rate_t slow = {1, 3600, 1}; /* 1/hour burst=1 */
    tat = 0;
    ratelimit_gcra(&tat, &slow, T0, 1, &d);
    ratelimit_gcra(&tat, &slow, T0 + 1500000000ull, 1, &d);
    is_int(d.retry_after_s, 3599, "Retry-After rounds up to whole seconds (3598.5 s -> 3599)");
    is_int(d.reset_s, d.retry_after_s, "reset equals Retry-After when refused");
    ratelimit_gcra(&tat, &slow, T0 + 3600 * S - 1, 1, &d);
    is_int(d.retry_after_s, 1, "never 0 when refusing");

    /* The wall clock stepped back an hour: the cell must not lock the principal out for an hour. */
    tat = T0 + 10 * S;
    ok(!ratelimit_gcra(&tat, &r, T0 - 3600 * S, 1, &d) && d.retry_after_s == 1,
       "a TAT far ahead (clock stepped back) is clamped to now + B*T: one emission interval, not an hour");

    aly_rate_t huge = {1000000000, 1, 1000000000};
    tat = 0;
    ok(ratelimit_gcra(&tat, &huge, T0, 1, &d) && d.remaining == 999999999, "the largest policy does not overflow");
    aly_rate_t day = {1, 86400, 1000000000};
    tat = 0;
    ok(ratelimit_gcra(&tat, &day, T0, 1, &d) && d.remaining > 0, "a capacity beyond the clock saturates");
}

/* A reference token bucket (capacity B, refilled at N per period) on random arrivals: GCRA must agree. */
static void against_bucket(void)
{
    aly_rate_t r = {7, 60, 3};
    uint64_t tat = 0;
    double tokens = r.burst, last = 0;
    int mismatches = 0, n = 0, admitted = 0;
    uint64_t seed = 42;
    double t = 0;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t += (double)(seed >> 40) / (double)(1ull << 24) * 8.0; /* 0..8 s apart */
        tokens += (t - last) * r.count / r.period_s;
        if (tokens > r.burst)
            tokens = r.burst;
        last = t;
        int want = tokens >= 1.0 - 1e-9;
        if (want)
            tokens -= 1.0;
        ratelimit_decision_t d;
        int got = ratelimit_gcra(&tat, &r, T0 + (uint64_t)(t * 1e9), 1, &d);
        admitted += got;
        mismatches += got != want;
        n++;
    }
    ok(mismatches <= 2, "GCRA agrees with a token bucket on %d random arrivals (%d rounding mismatches, %d admitted)", n,
       mismatches, admitted);
}

/* Greedy arrivals every 37 ms for 100 s: at most B + N*t/period in every window, and exactly that over the whole run. */
static void bound(void)
{
    aly_rate_t r = {600, 60, 60}; /* 10/s, capacity 60 */
    uint64_t tat = 0;
    static uint64_t admits[4000];
    size_t n = 0;
    for (uint64_t t = 0; t <= 100 * S; t += 37000000ull) {
        ratelimit_decision_t d;
        if (ratelimit_gcra(&tat, &r, T0 + t, 1, &d))
            admits[n++] = t;
    }
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i; j < n; j++) {
            double span = (double)(admits[j] - admits[i]) / 1e9;
            if ((double)(j - i + 1) > r.burst + r.count * span / r.period_s + 1e-6)
                worst++;
        }
    }
    is_int(worst, 0, "no interval of length t admits more than B + N*t/period (%zu admitted)", n);
    ok(n >= 60 + 999 && n <= 60 + 1001, "a greedy client gets the burst plus the sustained rate: %zu", n);
}

static char dir[] = "/tmp/unit-ratelimit-XXXXXX";

static aly_config_t *temp_config(void)
{
    aly_err_t err;
    aly_config_t *cfg = config_defaults(&err);
    if (cfg == NULL)
        return NULL;
    free(cfg->data_dir);
    cfg->data_dir = strdup(dir);
    free(cfg->key_pepper_file);
    char pepper[128];
    snprintf(pepper, sizeof(pepper), "%s/pepper", dir);
    cfg->key_pepper_file = strdup(pepper);
    cfg->volatile_map_size = (size_t)64 << 20;
    return cfg;
}

static store_t *temp_store(void)
{
    if (mkdtemp(dir) == NULL)
        return NULL;
    aly_err_t err;
    aly_config_t *cfg = temp_config();
    if (cfg == NULL)
        return NULL;
    store_t *st = NULL;
    if (store_init(cfg, (uid_t)-1, (gid_t)-1, &err) == 0)
        st = store_open(cfg, &err);
    if (st == NULL)
        fprintf(stderr, "# temp store: %s\n", err.msg);
    config_free(cfg);
    return st;
}

static void remove_store(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "# could not remove %s\n", dir);
}

static void addr4(const char *text, ratelimit_addr_t *a)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, text, &sin.sin_addr);
    ratelimit_address((struct sockaddr *)&sin, a);
}

static void addr6(const char *text, ratelimit_addr_t *a)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, text, &sin6.sin6_addr);
    ratelimit_address((struct sockaddr *)&sin6, a);
}

static void addresses(void)
{
    ratelimit_addr_t a, b;
    addr6("2001:db8:1:2::1", &a);
    addr6("2001:db8:1:2:ffff::9", &b);
    ok(a.len == b.len && memcmp(a.key, b.key, a.len) == 0, "IPv6 addresses of one /64 share a cell");
    addr6("2001:db8:1:3::1", &b);
    ok(memcmp(a.key, b.key, a.len) != 0, "another /64 does not");
    addr4("192.0.2.7", &a);
    addr6("::ffff:192.0.2.7", &b);
    ok(a.len == b.len && memcmp(a.key, b.key, a.len) == 0, "an IPv4-mapped IPv6 address is its IPv4 address");
    ratelimit_address(NULL, &a);
    is_int(a.len, 0, "no peer address: no cell");
}

static void with_store(store_t *st)
{
    aly_err_t err;
    ratelimit_t *rl = ratelimit_new(st, 50, &err);
    aly_rate_t r = {60, 60, 10};
    ratelimit_decision_t d;
    int admitted = 0;
    for (int i = 0; i < 12; i++) {
        if (ratelimit_principal(rl, "key_a", &r, T0, &d, &err) != 0)
            break;
        admitted += d.allowed;
    }
    is_int(admitted, 10, "stored cell: the burst, then refusals");
    ratelimit_principal(rl, "key_b", &r, T0, &d, &err);
    ok(d.allowed && d.remaining == 9, "another principal has its own budget");
    ratelimit_principal(rl, "oauth:key_a", &r, T0, &d, &err);
    ok(d.allowed && d.remaining == 9, "an OAuth principal does not share a key's budget");
    ratelimit_principal(rl, "key_a", &r, T0 + S, &d, &err);
    ok(d.allowed, "after Retry-After the principal passes again");

    /* A second limiter on the same store (another worker) sees the same cell. */
    ratelimit_t *other = ratelimit_new(st, 50, &err);
    ratelimit_principal(other, "key_a", &r, T0 + S, &d, &err);
    ok(!d.allowed && d.retry_after_s == 1, "a second limiter (another worker) sees the spent budget");
    ratelimit_free(other);

    /* Failures per address: the check reads, the failure charges. */
    aly_rate_t f = {30, 60, 3};
    ratelimit_addr_t a;
    addr4("198.51.100.1", &a);
    for (int i = 0; i < 3; i++)
        ratelimit_address_failure(rl, &a, &f, T0, &d, &err);
    ratelimit_address_check(rl, &a, &f, T0, &d, &err);
    ok(!d.allowed && d.retry_after_s == 2, "three failures at burst=3: the address is refused for 2 s");
    ratelimit_address_check(rl, &a, &f, T0 + 2 * S, &d, &err);
    ok(d.allowed, "and checks pass again after Retry-After");
    ratelimit_addr_t other_addr;
    addr4("198.51.100.2", &other_addr);
    ratelimit_address_check(rl, &other_addr, &f, T0, &d, &err);
    ok(d.allowed && d.remaining == 3, "another address is untouched");

    /*
     * The address table holds 50 cells: 1000 addresses, each live (TAT 2 s
     * ahead), fill it and then evict a live budget per insert; every insert
     * either took an empty cell or evicted one.
     */
    ratelimit_counts_t c0, c;
    ratelimit_count(rl, T0, &c0, &err);
    for (int i = 0; i < 1000; i++) {
        char text[32];
        snprintf(text, sizeof(text), "10.%d.%d.1", i / 256, i % 256);
        addr4(text, &a);
        if (ratelimit_address_failure(rl, &a, &f, T0 + (uint64_t)i * 1000, &d, &err) != 0) {
            ok(0, "address failure: %s", err.msg);
            break;
        }
    }
    is_int(ratelimit_count(rl, T0 + S, &c, &err), 0, "count cells");
    is_int(c.address_capacity, 50, "the address table has the size asked for");
    ok(c.address_used <= 50 && c.addresses <= 50, "address cells stay under the cap: %zu used, %zu live", c.address_used,
       c.addresses);
    is_int(c.address_evictions - c0.address_evictions, 1000 - (c.address_used - c0.address_used),
           "an insert into a full window evicts one live budget, counted (%llu)",
           (unsigned long long)(c.address_evictions - c0.address_evictions));
    is_int(c.principal_evictions, 0, "a flood of addresses evicts no principal");
    is_int(c.duplicates, 0, "no key holds two cells");
    ratelimit_principal(rl, "key_a", &r, T0 + S, &d, &err);
    ok(!d.allowed, "key_a's spent budget survived the address flood");

    /* An hour later every cell is idle: no state, though the cells stay until reused. */
    uint64_t later = T0 + 3600 * S;
    ratelimit_count(rl, later, &c, &err);
    ok(c.principals == 0 && c.addresses == 0 && c.principal_used >= 3, "an hour later: %zu principal cells, none live",
       c.principal_used);
    for (int i = 0; i < 40; i++)
        ratelimit_principal(rl, "key_sweeper", &r, later + (uint64_t)i, &d, &err);
    ratelimit_count(rl, later + 40, &c, &err);
    is_int(c.principals, 1, "the active principal is the one live cell");
    ok(!d.allowed && d.retry_after_s == 1, "and it spent its burst: refused, 1 s");

    /* Idle cells are reused before any live budget: five new addresses in a full table evict nothing. */
    ratelimit_count(rl, later, &c0, &err);
    int fresh = 0;
    for (int i = 0; i < 5; i++) {
        char text[32];
        snprintf(text, sizeof(text), "203.0.113.%d", i);
        addr4(text, &a);
        ratelimit_address_failure(rl, &a, &f, later, &d, &err);
        ratelimit_address_failure(rl, &a, &f, later, &d, &err);
        fresh += d.allowed && d.remaining == 1;
    }
    ratelimit_count(rl, later, &c, &err);
    is_int(fresh, 5, "five new addresses, two failures each: one unit left each");
    is_int(c.address_evictions, c0.address_evictions, "taking idle cells evicts no live budget");
    is_int(c.addresses, 5, "five live address cells");
    ratelimit_free(rl);
}

/* ---- processes sharing the table ---- */

static ratelimit_t *open_limiter(store_t *st)
{
    aly_err_t err;
    ratelimit_t *rl = ratelimit_new(st, 50, &err);
    if (rl == NULL)
        fprintf(stderr, "# limiter: %s\n", err.msg);
    return rl;
}

/* In a forked child, as a worker does: its own store, then its own mapping of the table. */
static ratelimit_t *child_limiter(void)
{
    aly_err_t err;
    aly_config_t *cfg = temp_config();
    store_t *st = cfg != NULL ? store_open(cfg, &err) : NULL;
    return st != NULL ? open_limiter(st) : NULL;
}

/* Counters the children of a race write into: an anonymous shared mapping. */
typedef struct race {
    _Atomic int ready;
    _Atomic int round_arrived[400];
    _Atomic int round_left[400];
    _Atomic int admitted[400];
    _Atomic int errors;
} race_t;

/* A zeroed mapping the forked processes of one test share, or NULL. */
static void *shared_zeroed(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static race_t *race_map(void)
{
    return shared_zeroed(sizeof(race_t));
}

/* One charged decision for address a at now, counted: admitted into *admitted, an error into *errors. */
static void counted(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now, _Atomic int *admitted,
                    _Atomic int *errors)
{
    ratelimit_decision_t d;
    aly_err_t err;
    if (ratelimit_address_failure(rl, a, rate, now, &d, &err) != 0)
        atomic_fetch_add(errors, 1);
    else if (d.allowed)
        atomic_fetch_add(admitted, 1);
}

/* count fillers "10.PREFIX.i/200.i%200" into the address table, the i-th at start + i * step. */
static void fill_addresses(ratelimit_t *rl, int prefix, int count, const aly_rate_t *rate, uint64_t start, uint64_t step)
{
    for (int i = 0; i < count; i++) {
        char text[32];
        ratelimit_addr_t a;
        ratelimit_decision_t d;
        aly_err_t err;
        snprintf(text, sizeof(text), "10.%d.%d.%d", prefix, i / 200, i % 200);
        addr4(text, &a);
        ratelimit_address_failure(rl, &a, rate, start + (uint64_t)i * step, &d, &err);
    }
}

/* Waits until all n processes reached the counter: the race then starts at once. */
static void barrier(_Atomic int *counter, int n)
{
    atomic_fetch_add(counter, 1);
    while (atomic_load(counter) < n)
        sched_yield();
}

static int wait_children(pid_t *pids, int n)
{
    int clean = 0;
    for (int i = 0; i < n; i++) {
        int status;
        if (waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            clean++;
    }
    return clean;
}

/*
 * N processes, each with its own mapping (as workers open theirs after fork),
 * hammer one principal whose budget is 100 and does not refill within the
 * test: exactly 100 admitted, whatever the interleaving.
 */
#define RACERS 4
static void race_one_cell(void)
{
    race_t *rc = race_map();
    aly_rate_t slow = {1, 3600, 100};
    pid_t pids[RACERS];
    for (int p = 0; p < RACERS; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            barrier(&rc->ready, RACERS);
            for (int i = 0; rl != NULL && i < 5000; i++) {
                ratelimit_decision_t d;
                aly_err_t err;
                if (ratelimit_principal(rl, "key_race", &slow, ratelimit_now_ns(), &d, &err) != 0)
                    atomic_fetch_add(&rc->errors, 1);
                else if (d.allowed)
                    atomic_fetch_add(&rc->admitted[0], 1);
            }
            _exit(rl != NULL ? 0 : 1);
        }
    }
    is_int(wait_children(pids, RACERS), RACERS, "%d racing processes finished", RACERS);
    is_int(atomic_load(&rc->admitted[0]), 100, "%d processes x 5000 decisions on one principal of burst 100: exactly 100 admitted",
           RACERS);
    is_int(atomic_load(&rc->errors), 0, "no decision failed");
    munmap(rc, sizeof(*rc));
}

/*
 * The insert race: for each of 400 new principals all processes meet at a
 * barrier, then each tries 3 times at once; burst 2 must admit exactly 2 per
 * principal, which fails if two processes each make a cell for one key.
 */
static void race_fresh_cells(store_t *st)
{
    race_t *rc = race_map();
    aly_rate_t slow = {1, 3600, 2};
    pid_t pids[RACERS];
    for (int p = 0; p < RACERS; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            for (int k = 0; rl != NULL && k < 400; k++) {
                char id[32];
                snprintf(id, sizeof(id), "key_fresh_%d", k);
                barrier(&rc->round_arrived[k], RACERS);
                for (int i = 0; i < 3; i++) {
                    ratelimit_decision_t d;
                    aly_err_t err;
                    if (ratelimit_principal(rl, id, &slow, ratelimit_now_ns(), &d, &err) != 0)
                        atomic_fetch_add(&rc->errors, 1);
                    else if (d.allowed)
                        atomic_fetch_add(&rc->admitted[k], 1);
                }
            }
            _exit(rl != NULL ? 0 : 1);
        }
    }
    is_int(wait_children(pids, RACERS), RACERS, "%d inserting processes finished", RACERS);
    int exact = 0;
    for (int k = 0; k < 400; k++)
        exact += atomic_load(&rc->admitted[k]) == 2;
    is_int(exact, 400, "400 new principals raced by %d processes: each admitted exactly its burst of 2", RACERS);
    is_int(atomic_load(&rc->errors), 0, "no decision failed");
    ratelimit_t *rl = open_limiter(st);
    ratelimit_counts_t c;
    aly_err_t err;
    ratelimit_count(rl, ratelimit_now_ns(), &c, &err);
    is_int(c.duplicates, 0, "and no key holds two cells");
    ok(c.principals >= 401, "each has its live cell (%zu)", c.principals);
    ratelimit_free(rl);
    munmap(rc, sizeof(*rc));
}

static void pause_insert(void)
{
    usleep(50);
}

/* An inserter asleep past STALE_MS between its checks and going live, once. */
static void sleep_before_live(void)
{
    static int slept;
    if (!slept++)
        usleep((STALE_MS + 1000) * 1000);
}

/*
 * The inserter that sleeps past STALE_MS just before its copy goes live: its
 * claim looks abandoned, so another process inserts the same key meanwhile.
 * When it wakes, its claim must be gone (reaped, not merely looked past), so
 * it starts again and meets the other copy: a key of burst 1 is admitted
 * once.  (A fresh principal: empty cells beside its home, so the second
 * inserter takes one of those rather than the stale claim itself.)
 */
static void race_stalled_insert(void)
{
    race_t *rc = race_map();
    aly_rate_t one = {1, 3600, 1};
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            ratelimit_decision_t d;
            aly_err_t err;
            barrier(&rc->ready, 2); /* both mapped: the first claims now */
            if (p == 0)
                ratelimit_test_hook[RL_AT_LIVE] = sleep_before_live;
            else
                usleep((STALE_MS + 500) * 1000); /* inserts while the first sleeps, its claim now stale */
            if (rl == NULL || ratelimit_principal(rl, "key_stalled_inserter", &one, T0, &d, &err) != 0)
                atomic_fetch_add(&rc->errors, 1);
            else if (d.allowed)
                atomic_fetch_add(&rc->admitted[0], 1);
            _exit(rl != NULL ? 0 : 1);
        }
    }
    is_int(wait_children(pids, 2), 2, "an inserter stalled past STALE_MS and another: both finished");
    is_int(atomic_load(&rc->admitted[0]), 1, "a key of burst 1 inserted by both: admitted once");
    is_int(atomic_load(&rc->errors), 0, "no decision failed");
    munmap(rc, sizeof(*rc));
}

/*
 * The insert race where two processes choose different cells for one key.
 * Each round, racer 0 fills the 50-cell address table with filler addresses
 * whose TATs fall between the racers' clocks (racer p decides at base + p ms),
 * so a cell is idle for one racer and a live budget for another and their
 * scans pick different cells; the pause between choosing and claiming lets
 * both choose before either claims.  A new address of burst 2 raced by all
 * must still be admitted exactly twice: only the check after claiming (a
 * live or nearer pending copy wins) prevents a second cell.
 */
#define ROUNDS 150
static void race_diverging_inserts(void)
{
    race_t *rc = race_map();
    aly_rate_t slow = {1, 3600, 2}, filler = {1, 1, 1};
    const uint64_t ms = 1000000ull, round_span = 3 * 3600 * S;
    pid_t pids[RACERS];
    for (int p = 0; p < RACERS; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            ratelimit_test_hook[RL_AT_CHOSEN] = pause_insert;
            for (int round = 0; rl != NULL && round < ROUNDS; round++) {
                uint64_t base = T0 + (uint64_t)round * round_span;
                ratelimit_addr_t a;
                ratelimit_decision_t d;
                aly_err_t err;
                char text[32];
                for (int i = 0; p == 0 && i < 60; i++) {
                    snprintf(text, sizeof(text), "10.77.%d.%d", round % 200, i);
                    addr4(text, &a);
                    ratelimit_address_failure(rl, &a, &filler, base - S + (uint64_t)i * RACERS * ms / 60, &d, &err);
                }
                barrier(&rc->round_arrived[round], RACERS);
                snprintf(text, sizeof(text), "172.16.%d.%d", round / 200, round % 200);
                addr4(text, &a);
                for (int i = 0; i < 3; i++) {
                    counted(rl, &a, &slow, base + (uint64_t)p * ms, &rc->admitted[round], &rc->errors);
                }
                barrier(&rc->round_left[round], RACERS); /* the next fill may evict this round's cell */
            }
            _exit(rl != NULL ? 0 : 1);
        }
    }
    is_int(wait_children(pids, RACERS), RACERS, "%d racers on diverging cells finished", RACERS);
    int exact = 0;
    for (int r = 0; r < ROUNDS; r++) {
        exact += atomic_load(&rc->admitted[r]) == 2;
        if (atomic_load(&rc->admitted[r]) != 2)
            printf("# round %d admitted %d\n", r, (int)atomic_load(&rc->admitted[r]));
    }
    is_int(exact, ROUNDS, "%d new addresses raced where racers see different idle cells: each admitted exactly its burst of 2",
           ROUNDS);
    is_int(atomic_load(&rc->errors), 0, "no decision failed");
    munmap(rc, sizeof(*rc));
}

/* Waits (at most 10 s: a step that never comes must not hang the test, and is counted in *late) until *flag is set. */
static void await_step(_Atomic int *flag, _Atomic int *late)
{
    for (int i = 0; i < 100000 && !atomic_load(flag); i++)
        usleep(100);
    if (!atomic_load(flag))
        atomic_fetch_add(late, 1);
}

/*
 * A copy going live between an inserter's two reads of it.  Its owner turns
 * the head from pending to live, then the TAT from its busy mark to the
 * budget; a reader that saw the pending head and then the finished TAT must
 * not take the cell for a torn page and look past it.  The steps are forced
 * in order, each round: p1 (whose clock makes every filler idle, so it takes
 * the first cell of the window) claims, publishes and checks before p0 has
 * published; p0 (for which the fillers are live budgets, so it evicts the
 * one of smallest TAT, another cell when that is not the first) publishes,
 * reads p1's pending head, and only then, with p1 live meanwhile, reads the
 * TAT.  A key of burst 1 must be admitted once, and no key may hold two cells.
 */
#define STEP_ROUNDS 24
typedef struct steps {
    _Atomic int chose0[STEP_ROUNDS], scanned1[STEP_ROUNDS], read0[STEP_ROUNDS], live1[STEP_ROUNDS], claimed0[STEP_ROUNDS];
    _Atomic int admitted[STEP_ROUNDS], errors, late, exercised;
} steps_t;
static steps_t *steps;
static int step_round;

static void p0_before_claim(void)
{
    atomic_store(&steps->chose0[step_round], 1);
    await_step(&steps->scanned1[step_round], &steps->late);
}

static void p1_before_claim(void)
{
    await_step(&steps->chose0[step_round], &steps->late);
}

static void p1_before_live(void)
{
    if (atomic_exchange(&steps->scanned1[step_round], 1))
        return;
    await_step(&steps->read0[step_round], &steps->late);
}

static void p0_claimed(void)
{
    atomic_store(&steps->claimed0[step_round], 1);
}

static void p0_between_reads(void)
{
    if (atomic_exchange(&steps->read0[step_round], 1))
        return;
    /* Read after p0 claimed and published its own cell: the round is the interleaving (else both chose one cell). */
    if (atomic_load(&steps->claimed0[step_round]))
        atomic_fetch_add(&steps->exercised, 1);
    await_step(&steps->live1[step_round], &steps->late);
}

static void race_going_live(void)
{
    steps = shared_zeroed(sizeof(*steps));
    if (steps == NULL) {
        ok(0, "shared steps");
        return;
    }
    race_t *rc = race_map();
    aly_rate_t one = {1, 3600, 1}, filler = {1, 1, 1};
    const uint64_t ms = 1000000ull, round_span = 3 * 3600 * S, later = 10 * S;
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            for (step_round = 0; rl != NULL && step_round < STEP_ROUNDS; step_round++) {
                uint64_t base = T0 + 1000 * round_span + (uint64_t)step_round * round_span;
                ratelimit_addr_t a;
                char text[32];
                /* Fillers live from base + 1 ms to base + 200 ms: live budgets at base, idle at base + 10 s. */
                if (p == 0)
                    fill_addresses(rl, 78 + step_round % 100, 200, &filler, base - S + ms, ms);
                barrier(&rc->round_arrived[step_round], 2);
                ratelimit_test_hook[RL_AT_CHOSEN] = p == 0 ? p0_before_claim : p1_before_claim;
                ratelimit_test_hook[RL_AT_LIVE] = p == 1 ? p1_before_live : NULL;
                ratelimit_test_hook[RL_AT_COPY] = p == 0 ? p0_between_reads : NULL;
                ratelimit_test_hook[RL_AT_CLAIMED] = p == 0 ? p0_claimed : NULL;
                snprintf(text, sizeof(text), "172.17.%d.%d", step_round / 200, step_round % 200);
                addr4(text, &a);
                counted(rl, &a, &one, base + (p == 1 ? later : 0), &steps->admitted[step_round], &steps->errors);
                if (p == 1)
                    atomic_store(&steps->live1[step_round], 1);
                memset(ratelimit_test_hook, 0, sizeof(ratelimit_test_hook));
                /* Each asks once more: a budget of 1 is spent, whichever cell holds it. */
                counted(rl, &a, &one, base + later, &steps->admitted[step_round], &steps->errors);
                barrier(&rc->round_left[step_round], 2);
            }
            _exit(rl != NULL ? 0 : 1);
        }
    }
    is_int(wait_children(pids, 2), 2, "two inserters stepped through a copy going live finished");
    int exact = 0;
    for (int r = 0; r < STEP_ROUNDS; r++) {
        exact += atomic_load(&steps->admitted[r]) == 1;
        if (atomic_load(&steps->admitted[r]) != 1)
            printf("# round %d admitted %d\n", r, (int)atomic_load(&steps->admitted[r]));
    }
    is_int(exact, STEP_ROUNDS, "%d keys of burst 1, each inserted by a process that read its copy half-way live: admitted once",
           STEP_ROUNDS);
    ok(atomic_load(&steps->exercised) > 0,
       "in %d rounds of %d the reader had published its own cell first (the others chose one cell)",
       (int)atomic_load(&steps->exercised), STEP_ROUNDS);
    is_int(atomic_load(&steps->errors), 0, "no decision failed");
    ok(atomic_load(&steps->late) == 0, "every forced step came (%d waits ran out)", (int)atomic_load(&steps->late));
    munmap(rc, sizeof(*rc));
    munmap(steps, sizeof(*steps));
}

/*
 * An inserter stopped past STALE_MS after claiming its cell and before
 * writing its key there (a stopped process, a paused VM).  Its claim then
 * looks abandoned, and another key's insert takes the cell over and spends
 * its budget there.  When the first wakes its claim is gone: it must not
 * write its key over what is now another key's cell (that key would lose its
 * spent budget and the first inherit it), but start again.  The table is
 * full of fillers that are idle at the time of the test, so the sleeper
 * claims its home cell, and the other key is one whose home is that same
 * cell (found with the table's hash key): there the abandoned claim outranks
 * every idle cell.  Each key of burst 1 is asked twice: admitted once.
 */
typedef struct stopped {
    _Atomic int claimed, inserted, woke, late, found;
    _Atomic int admitted[2], errors;
} stopped_t;
static stopped_t *stopped;

static void stop_after_claim(void)
{
    static int once;
    if (once++)
        return;
    atomic_store(&stopped->claimed, 1);
    await_step(&stopped->inserted, &stopped->late);
}

/* The home cell of an address in rl's address table (ratelimit.c's key_of). */
static uint64_t address_home(const ratelimit_t *rl, const ratelimit_addr_t *a)
{
    uint64_t d[2];
    aly_siphash128(rl->k0, rl->k1, a->key, a->len, d);
    return (uint64_t)(((unsigned __int128)d[1] * rl->n[ADDRESSES]) >> 64);
}

static void ask_twice(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now, int who)
{
    for (int i = 0; i < 2; i++) {
        counted(rl, a, rate, now, &stopped->admitted[who], &stopped->errors);
        ratelimit_test_hook[RL_AT_CLAIMED] = NULL;
        if (who == 1 && i == 0) {
            atomic_store(&stopped->inserted, 1);
            await_step(&stopped->woke, &stopped->late);
        }
    }
}

static void race_stopped_claimer(void)
{
    stopped = shared_zeroed(sizeof(*stopped));
    if (stopped == NULL) {
        ok(0, "shared flags");
        return;
    }
    aly_rate_t one = {1, 3600, 1}, filler = {1, 1, 1};
    const uint64_t base = T0 + 5000 * 3600 * S;
    ratelimit_addr_t sleeper, other;
    addr4("172.18.0.1", &sleeper);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            if (rl == NULL)
                _exit(1);
            if (p == 0) {
                /* 200 fillers, each live while the next is inserted (no cell left empty), all idle at base. */
                fill_addresses(rl, 179, 200, &filler, base - 10 * S, 1000);
                ratelimit_test_hook[RL_AT_CLAIMED] = stop_after_claim;
                ask_twice(rl, &sleeper, &one, base, 0);
                atomic_store(&stopped->woke, 1);
            } else {
                int found = 0;
                for (int i = 0; i < 100000 && !found; i++) {
                    char text[32];
                    snprintf(text, sizeof(text), "172.19.%d.%d", i / 250, i % 250);
                    addr4(text, &other);
                    found = address_home(rl, &other) == address_home(rl, &sleeper);
                }
                atomic_store(&stopped->found, found);
                await_step(&stopped->claimed, &stopped->late);
                usleep((STALE_MS + 300) * 1000); /* the claim is abandoned now */
                if (found)
                    ask_twice(rl, &other, &one, base, 1);
                else
                    atomic_store(&stopped->inserted, 1);
            }
            _exit(0);
        }
    }
    is_int(wait_children(pids, 2), 2,
           "an inserter stopped after claiming its cell, and another key inserted there meanwhile: both finished");
    ok(atomic_load(&stopped->found), "an address whose home is the sleeper's home cell");
    is_int(atomic_load(&stopped->admitted[1]), 1,
           "the key inserted into the abandoned claim, asked twice after the sleeper woke: admitted once");
    is_int(atomic_load(&stopped->admitted[0]), 1, "the sleeper's key, asked twice: admitted once");
    is_int(atomic_load(&stopped->errors), 0, "no decision failed");
    is_int(atomic_load(&stopped->late), 0, "every forced step came");
    munmap(stopped, sizeof(*stopped));
}

/*
 * An inserter stopped past STALE_MS just before giving its cell back (it met
 * a live copy of its key), while another key takes that abandoned claim over
 * and spends its budget there: when it wakes, the cell is not its to empty.
 * p1's clock makes every filler idle, so it takes its key's home cell; p0's
 * makes them live budgets, and the key is chosen (from the table itself) so
 * that p0 evicts another cell of the window, publishes there, meets p1's live
 * copy and stops.  p1 then inserts a second key of the same home, which takes
 * p0's abandoned claim.  Each key of burst 1: admitted once.
 */
typedef struct giveback {
    _Atomic int ready, chose0, live1, withdrawing0, taken, done0, late, errors, found;
    _Atomic int admitted[2];
    ratelimit_addr_t k, k2;
} giveback_t;
static giveback_t *gb;

static void gb_before_claim(void)
{
    if (atomic_exchange(&gb->chose0, 1))
        return;
    await_step(&gb->live1, &gb->late);
}

static void gb_before_withdraw(void)
{
    if (atomic_exchange(&gb->withdrawing0, 1))
        return;
    await_step(&gb->taken, &gb->late);
}

/* An address whose window, at now, is all live budgets and whose earliest-TAT budget is not its home cell. */
static int pick_diverging(const ratelimit_t *rl, uint64_t now, ratelimit_addr_t *out)
{
    for (int i = 0; i < 20000; i++) {
        char text[32];
        snprintf(text, sizeof(text), "172.21.%d.%d", i / 250, i % 250);
        addr4(text, out);
        uint64_t home = address_home(rl, out), least = UINT64_MAX;
        unsigned at = 0, live = 0;
        for (unsigned j = 0; j < rl->window[ADDRESSES]; j++) {
            uint64_t x = home + j < rl->n[ADDRESSES] ? home + j : home + j - rl->n[ADDRESSES];
            cell_t *c = &rl->cells[ADDRESSES][x];
            uint64_t t = atomic_load(&c->tat);
            live += (atomic_load(&c->head) & HEAD_STATE) == HEAD_LIVE && !(t & BUSY) && t > now;
            if (t < least)
                least = t, at = j;
        }
        if (live == rl->window[ADDRESSES] && at != 0)
            return 1;
    }
    return 0;
}

static void race_stopped_withdrawer(void)
{
    gb = shared_zeroed(sizeof(*gb));
    if (gb == NULL) {
        ok(0, "shared flags");
        return;
    }
    aly_rate_t one = {1, 3600, 1}, filler = {1, 1, 1};
    const uint64_t ms = 1000000ull, base = T0 + 13000 * 3600 * S, later = 10 * S;
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            if (rl == NULL)
                _exit(1);
            if (p == 0) {
                /* Fillers live from base + 1 ms to base + 200 ms: live budgets at base, idle at base + 10 s. */
                fill_addresses(rl, 181, 200, &filler, base - S + ms, ms);
                int found = pick_diverging(rl, base, &gb->k);
                for (int i = 0; found && i < 100000; i++) {
                    char text[32];
                    snprintf(text, sizeof(text), "172.22.%d.%d", i / 250, i % 250);
                    addr4(text, &gb->k2);
                    if (address_home(rl, &gb->k2) == address_home(rl, &gb->k))
                        break;
                }
                atomic_store(&gb->found, found && address_home(rl, &gb->k2) == address_home(rl, &gb->k));
                atomic_store(&gb->ready, 1);
                if (!atomic_load(&gb->found))
                    _exit(0);
                ratelimit_test_hook[RL_AT_CHOSEN] = gb_before_claim;
                ratelimit_test_hook[RL_AT_WITHDRAW] = gb_before_withdraw;
                counted(rl, &gb->k, &one, base, &gb->admitted[0], &gb->errors);
                atomic_store(&gb->done0, 1);
            } else {
                await_step(&gb->ready, &gb->late);
                if (!atomic_load(&gb->found))
                    _exit(0);
                await_step(&gb->chose0, &gb->late);
                counted(rl, &gb->k, &one, base + later, &gb->admitted[0], &gb->errors);
                atomic_store(&gb->live1, 1);
                await_step(&gb->withdrawing0, &gb->late);
                usleep((STALE_MS + 300) * 1000); /* p0's claim is abandoned now */
                for (int i = 0; i < 2; i++) {
                    counted(rl, &gb->k2, &one, base + later, &gb->admitted[1], &gb->errors);
                    if (i == 0) {
                        atomic_store(&gb->taken, 1);
                        await_step(&gb->done0, &gb->late); /* p0 wakes and gives back what is no longer its */
                    }
                }
            }
            _exit(0);
        }
    }
    is_int(wait_children(pids, 2), 2,
           "an inserter stopped before giving its cell back, and another key inserted there meanwhile: both finished");
    ok(atomic_load(&gb->found), "a key whose inserters take different cells, and a second key of its home");
    is_int(atomic_load(&gb->admitted[0]), 1, "the first key of burst 1, asked by both: admitted once");
    is_int(atomic_load(&gb->admitted[1]), 1,
           "the second key, in the cell given up while its holder slept, asked twice: admitted once");
    is_int(atomic_load(&gb->errors), 0, "no decision failed");
    is_int(atomic_load(&gb->late), 0, "every forced step came");
    munmap(gb, sizeof(*gb));
}

/*
 * An inserter that asked whether a cell holds its key (it held another), and
 * then, before reading the cell to rank it, finds there its own key just made
 * live by another process.  The table is full of live budgets of one TAT, so
 * that new copy, with the earliest TAT, is the victim the inserter would
 * evict: it must take the copy for its key's and decide on it instead.  A
 * key of burst 1 asked twice by each of two processes: admitted once.
 */
typedef struct own {
    _Atomic int read, live, admitted, errors, late;
} own_t;
static own_t *own;

static void read_then_wait(void)
{
    if (atomic_exchange(&own->read, 1))
        return;
    await_step(&own->live, &own->late);
}

static void race_own_copy_ranked(void)
{
    own = shared_zeroed(sizeof(*own));
    if (own == NULL) {
        ok(0, "shared flags");
        return;
    }
    aly_rate_t one = {1, 3600, 1}, filler = {1, 7200, 1};
    const uint64_t t0 = T0 + 9000 * 3600 * S;
    ratelimit_addr_t k;
    addr4("172.20.0.1", &k);
    pid_t pids[2];
    for (int p = 0; p < 2; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            if (rl == NULL)
                _exit(1);
            if (p == 0) {
                /* 200 fillers at t0, each live for two hours: every cell a live budget, all of one TAT. */
                fill_addresses(rl, 180, 200, &filler, t0, 0);
                ratelimit_test_hook[RL_AT_RANK] = read_then_wait;
            } else {
                await_step(&own->read, &own->late);
            }
            for (int i = 0; i < 2; i++) {
                counted(rl, &k, &one, t0, &own->admitted, &own->errors);
                if (p == 1 && i == 0)
                    atomic_store(&own->live, 1);
                ratelimit_test_hook[RL_AT_RANK] = NULL;
            }
            _exit(0);
        }
    }
    is_int(wait_children(pids, 2), 2,
           "an inserter ranking a cell its key just went live in, and that key's inserter: both finished");
    is_int(atomic_load(&own->admitted), 1,
           "a key of burst 1 asked twice by each: admitted once (its new copy not evicted by its own insert)");
    is_int(atomic_load(&own->errors), 0, "no decision failed");
    is_int(atomic_load(&own->late), 0, "every forced step came");
    munmap(own, sizeof(*own));
}

/* Evictions racing with inserts on a 50-cell address table: the table stays consistent. */
static void race_evictions(store_t *st)
{
    race_t *rc = race_map();
    aly_rate_t f = {30, 60, 3};
    pid_t pids[RACERS];
    for (int p = 0; p < RACERS; p++) {
        if ((pids[p] = fork()) == 0) {
            ratelimit_t *rl = child_limiter();
            barrier(&rc->ready, RACERS);
            for (int i = 0; rl != NULL && i < 3000; i++) {
                char text[32];
                ratelimit_addr_t a;
                ratelimit_decision_t d;
                aly_err_t err;
                snprintf(text, sizeof(text), "10.9.%d.%d", (i * 7 + p) % 200, p);
                addr4(text, &a);
                if (ratelimit_address_failure(rl, &a, &f, ratelimit_now_ns(), &d, &err) != 0 ||
                    ratelimit_address_check(rl, &a, &f, ratelimit_now_ns(), &d, &err) != 0)
                    atomic_fetch_add(&rc->errors, 1);
            }
            _exit(rl != NULL ? 0 : 1);
        }
    }
    is_int(wait_children(pids, RACERS), RACERS, "%d evicting processes finished", RACERS);
    is_int(atomic_load(&rc->errors), 0, "no decision failed");
    ratelimit_t *rl = open_limiter(st);
    ratelimit_counts_t c;
    aly_err_t err;
    ratelimit_count(rl, ratelimit_now_ns(), &c, &err);
    ok(c.address_used <= 50 && c.duplicates == 0, "50 cells, %zu used, no duplicate after the churn", c.address_used);
    ok(c.address_evictions > 0, "live budgets were evicted for room (%llu)", (unsigned long long)c.address_evictions);
    ratelimit_free(rl);
    munmap(rc, sizeof(*rc));
}

/* A budget spent by a process that then died (as a worker may) is still spent for the next one. */
static void outlives_process(store_t *st)
{
    aly_rate_t r = {60, 60, 10};
    pid_t pid = fork();
    if (pid == 0) {
        ratelimit_t *rl = child_limiter();
        for (int i = 0; rl != NULL && i < 10; i++) {
            ratelimit_decision_t d;
            aly_err_t err;
            ratelimit_principal(rl, "key_dead", &r, T0 + 7200 * S, &d, &err);
        }
        kill(getpid(), SIGKILL);
        _exit(1);
    }
    int status;
    waitpid(pid, &status, 0);
    ok(WIFSIGNALED(status), "the spending process was killed");
    ratelimit_t *rl = open_limiter(st);
    ratelimit_decision_t d;
    aly_err_t err;
    ratelimit_principal(rl, "key_dead", &r, T0 + 7200 * S, &d, &err);
    ok(!d.allowed && d.retry_after_s == 1, "its spent budget outlives it");
    ratelimit_free(rl);
}

static void table_path(char *buf, size_t len)
{
    snprintf(buf, len, "%s/volatile/%s", dir, RATELIMIT_FILE);
}

/* Overwrites the file from offset on with 0xff bytes (a torn page, or a process that died mid-insert everywhere). */
static int damage(off_t offset)
{
    char path[256];
    table_path(path, sizeof(path));
    int fd = open(path, O_RDWR);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0)
        return -1;
    static unsigned char junk[65536];
    memset(junk, 0xff, sizeof(junk));
    for (off_t at = offset; at < sb.st_size; at += (off_t)sizeof(junk))
        if (pwrite(fd, junk, sizeof(junk), at) < 0)
            return close(fd), -1;
    return close(fd);
}

static void damaged_file(store_t *st)
{
    aly_rate_t r = {60, 60, 10};
    aly_err_t err;
    ratelimit_decision_t d;
    ratelimit_t *rl = open_limiter(st);
    is_int(damage(4096), 0, "every cell overwritten with 0xff: busy marks of a dead claimer, torn keys");
    int admitted = 0, failed = 0;
    for (int i = 0; i < 12; i++) {
        if (ratelimit_principal(rl, "key_after_damage", &r, T0, &d, &err) != 0)
            failed++;
        else
            admitted += d.allowed;
    }
    ok(failed == 0 && admitted == 10, "a principal on the damaged table: its burst exactly (%d admitted, %d errors)", admitted,
       failed);
    ratelimit_addr_t a;
    addr4("192.0.2.99", &a);
    ok(ratelimit_address_check(rl, &a, &r, T0, &d, &err) == 0 && d.allowed && d.remaining == 10,
       "an address never seen: a full budget");

    struct stat before, after;
    char path[256];
    table_path(path, sizeof(path));
    stat(path, &before);
    is_int(damage(0), 0, "the header overwritten too");
    ratelimit_t *fresh = open_limiter(st);
    stat(path, &after);
    ok(fresh != NULL && before.st_ino != after.st_ino, "the next limiter replaces the file under the same name");
    ok(fresh != NULL && ratelimit_principal(fresh, "key_after_damage", &r, T0, &d, &err) == 0 && d.allowed && d.remaining == 9,
       "and starts from empty cells");
    ratelimit_free(fresh);
    ratelimit_free(rl);
}

int main(void)
{
    basics();
    against_bucket();
    bound();
    addresses();
    store_t *st = temp_store();
    ok(st != NULL, "temporary store");
    if (st != NULL) {
        with_store(st);
        race_one_cell();
        race_fresh_cells(st);
        race_diverging_inserts();
        race_stalled_insert();
        race_going_live();
        race_stopped_claimer();
        race_own_copy_ranked();
        race_stopped_withdrawer();
        race_evictions(st);
        outlives_process(st);
        damaged_file(st);
    }
    store_close(st);
    remove_store();
    return done_testing();
}

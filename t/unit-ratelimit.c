/*
 * Unit tests of the GCRA limiter (src/ratelimit.c): the arithmetic against a
 * brute-force token bucket, the B + N*t/period bound, exact Retry-After,
 * clamping after a clock step, and on a temporary store the cells, the sweep
 * of idle cells and the cap on address cells.
 *
 *   t/unit-ratelimit             the tests (TAP)
 *   t/unit-ratelimit --bench [N] cost of one decision on a temporary store:
 *                                median of 5 rounds of N calls, in microseconds
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aly/ratelimit.h"
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

static store_t *temp_store(void)
{
    if (mkdtemp(dir) == NULL)
        return NULL;
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

    /* The cap: 1000 addresses through a limiter capped at 50 leave at most 50 cells, counted exactly. */
    for (int i = 0; i < 1000; i++) {
        char text[32];
        snprintf(text, sizeof(text), "10.%d.%d.1", i / 256, i % 256);
        addr4(text, &a);
        if (ratelimit_address_failure(rl, &a, &f, T0 + (uint64_t)i * 1000, &d, &err) != 0) {
            ok(0, "address failure: %s", err.msg);
            break;
        }
    }
    ratelimit_counts_t c;
    is_int(ratelimit_count(rl, &c, &err), 0, "count cells");
    ok(c.addresses <= 50, "address cells stay under the cap: %zu", c.addresses);
    is_int(c.address_counter, c.addresses, "the address counter matches the cells");

    /* The sweep: an hour later every cell is idle; decisions delete them a batch at a time. */
    uint64_t later = T0 + 3600 * S;
    for (int i = 0; i < 40; i++)
        ratelimit_principal(rl, "key_sweeper", &r, later + (uint64_t)i, &d, &err);
    is_int(ratelimit_count(rl, &c, &err), 0, "count cells after the sweep");
    is_int(c.addresses, 0, "idle address cells are swept");
    is_int(c.principals, 1, "idle principal cells are swept; the active one stays");
    is_int(c.address_counter, 0, "and the counter follows");
    ratelimit_free(rl);
}

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

/* Median of 5 rounds of n decisions, µs per call; also a bare write transaction and a read check for reference. */
static int bench(store_t *st, int n)
{
    aly_err_t err;
    ratelimit_t *rl = ratelimit_new(st, RATELIMIT_MAX_ADDRESSES, &err);
    aly_rate_t huge = {1000000000, 1, 1000000000}, fail = {30, 60, 30};
    ratelimit_decision_t d;
    ratelimit_addr_t a;
    addr4("192.0.2.1", &a);
    double txn[5], dec[5], check[5], gcra[5];
    for (int round = 0; round < 5; round++) {
        double t0 = now_us();
        for (int i = 0; i < n; i++) {
            store_txn_t t;
            store_begin(st, STORE_WRITE | STORE_VOLATILE, &t, &err);
            store_abort(&t);
        }
        double t1 = now_us();
        for (int i = 0; i < n; i++)
            if (ratelimit_principal(rl, "key_bench", &huge, ratelimit_now_ns(), &d, &err) != 0)
                return fprintf(stderr, "bench: %s\n", err.msg), 1;
        double t2 = now_us();
        for (int i = 0; i < n; i++)
            ratelimit_address_check(rl, &a, &fail, ratelimit_now_ns(), &d, &err);
        double t3 = now_us();
        uint64_t tat = 0;
        for (int i = 0; i < n; i++)
            ratelimit_gcra(&tat, &huge, ratelimit_now_ns(), 1, &d);
        double t4 = now_us();
        txn[round] = (t1 - t0) / n;
        dec[round] = (t2 - t1) / n;
        check[round] = (t3 - t2) / n;
        gcra[round] = (t4 - t3) / n;
    }
    qsort(txn, 5, sizeof(double), cmp);
    qsort(dec, 5, sizeof(double), cmp);
    qsort(check, 5, sizeof(double), cmp);
    qsort(gcra, 5, sizeof(double), cmp);
    printf("median of 5 rounds x %d calls, microseconds per call:\n", n);
    printf("  principal decision (write txn, get, put, commit)  %.3f\n", dec[2]);
    printf("  address check (read txn, get)                     %.3f\n", check[2]);
    printf("  empty write txn begin+abort (reference)           %.3f\n", txn[2]);
    printf("  GCRA arithmetic + clock read alone                %.3f\n", gcra[2]);
    printf("  one process: at most %.0f decisions/s\n", 1e6 / dec[2]);
    ratelimit_free(rl);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        store_t *st = temp_store();
        int rc = st != NULL ? bench(st, argc > 2 ? atoi(argv[2]) : 100000) : 1;
        store_close(st);
        remove_store();
        return rc;
    }
    basics();
    against_bucket();
    bound();
    addresses();
    store_t *st = temp_store();
    ok(st != NULL, "temporary store");
    if (st != NULL)
        with_store(st);
    store_close(st);
    remove_store();
    return done_testing();
}

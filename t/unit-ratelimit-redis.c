/*
 * Unit tests of the Redis rate limiter's arithmetic (src/ratelimit_redis.c),
 * its table of suspect addresses, and the Redis URL and key grammar
 * (src/volatile_redis.c), no server needed: the parameters handed to the script (T rounded up, B*T saturated),
 * and the decisions made from the script's answer against ratelimit_gcra(),
 * the shared-memory path's GCRA, step by step over random request times, so
 * the two backends answer alike (admitted, remaining, reset, Retry-After).
 * The script's own steps are modelled here in C, line for line; the real
 * script runs against a real redis-server in t/140-redis-ratelimit.t.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/ratelimit_redis.h"
#include "aly/volatile_redis.h"
#include "tap.h"

#define US 1000000ull
#define T0_US (1700000000ull * US)

/* The Lua script of ratelimit_redis.c on a stored TAT (0: no key): admitted or not, and the TAT it answers in *answer. */
static int script(uint64_t *stored, uint64_t now, uint64_t t, uint64_t cap, int charge, uint64_t *answer)
{
    uint64_t horizon = now + cap, tat = *stored ? *stored : now;
    if (tat < now)
        tat = now;
    if (tat > horizon)
        tat = horizon;
    if (tat + t > horizon) {
        *answer = tat;
        return 0;
    }
    if (charge) {
        tat += t;
        *stored = tat;
    }
    *answer = tat;
    return 1;
}

static void params(void)
{
    uint64_t t, cap;
    ratelimit_redis_params(&(aly_rate_t){60, 60, 10}, &t, &cap);
    ok(t == US && cap == 10 * US, "60/minute burst=10: T 1 s, capacity 10 s");
    ratelimit_redis_params(&(aly_rate_t){7, 1, 7}, &t, &cap);
    ok(t == 142858 && 7 * t >= US, "7/second: T rounded up, so no more than 7 a second");
    ratelimit_redis_params(&(aly_rate_t){1, 86400, 4000000000u}, &t, &cap);
    ok(cap == (uint64_t)1 << 50, "a huge burst saturates at 2^50 us, exact in the script's doubles");
    ratelimit_redis_params(&(aly_rate_t){0, 0, 0}, &t, &cap);
    ok(t == US && cap == US, "zero fields are read as 1, as ratelimit_gcra does");
}

/* Random request times against both implementations, for policies whose T is a whole number of microseconds. */
static void same_as_gcra(void)
{
    static const aly_rate_t rates[] = {{60, 60, 10}, {600, 60, 60}, {1, 3600, 3}, {1000, 1, 50}, {30, 60, 30}, {5, 1, 1}};
    srand(14);
    int mismatches = 0, steps = 0, refused = 0;
    for (size_t k = 0; k < sizeof(rates) / sizeof(rates[0]); k++) {
        const aly_rate_t *r = &rates[k];
        uint64_t t, cap, stored = 0, answer, tat_ns = 0, now = T0_US;
        ratelimit_redis_params(r, &t, &cap);
        for (int i = 0; i < 5000; i++) {
            now += (uint64_t)rand() % (2 * t / (1 + (uint64_t)(rand() % 8)) + 1);
            int charge = rand() % 5 != 0;
            ratelimit_decision_t a, b;
            int admitted = script(&stored, now, t, cap, charge, &answer);
            ratelimit_redis_decision(admitted, answer, now, r, &a);
            ratelimit_gcra(&tat_ns, r, now * 1000, charge, &b);
            steps++;
            refused += !b.allowed;
            if (a.allowed != b.allowed || a.remaining != b.remaining || a.reset_s != b.reset_s ||
                a.retry_after_s != b.retry_after_s) {
                if (mismatches++ < 3)
                    printf("# policy %zu step %d: redis %d/%llu/%llu/%llu, gcra %d/%llu/%llu/%llu\n", k, i, a.allowed,
                           (unsigned long long)a.remaining, (unsigned long long)a.reset_s, (unsigned long long)a.retry_after_s,
                           b.allowed, (unsigned long long)b.remaining, (unsigned long long)b.reset_s,
                           (unsigned long long)b.retry_after_s);
            }
        }
    }
    is_int(mismatches, 0, "the Redis decisions equal ratelimit_gcra's over %d random steps", steps);
    ok(refused > steps / 20, "and the steps include refusals (%d)", refused);
}

static void keys(void)
{
    char buf[64];
    ok(ratelimit_redis_principal_key("key_abc", buf, sizeof(buf)) > 0 && strcmp(buf, "aly:{key_abc}:rl") == 0,
       "a principal's cell: aly:{ID}:rl, the id as the Redis Cluster hash tag");
    ok(ratelimit_redis_principal_key("", buf, sizeof(buf)) < 0, "an empty principal has no cell");
    char big[100];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ok(ratelimit_redis_principal_key(big, buf, sizeof(buf)) < 0, "a key that does not fit is an error, not a truncated name");
}

static void suspects(void)
{
    ratelimit_addr_t a = {.key = "a:4\x7f\0\0\x05", .len = 7}, other = {.key = "a:4\x7f\0\0\x06", .len = 7}, none = {.len = 0};
    aly_rate_t fail = {30, 60, 30}; /* T 2 s, capacity 60 s: suspect for 62 s */
    uint64_t now = 1000000;
    ok(!ratelimit_redis_suspect(&a, now), "an address never seen failing is not suspect");
    ratelimit_redis_suspect_mark(&a, &fail, now);
    ok(ratelimit_redis_suspect(&a, now + 61000), "after a failure it is suspect for the failure policy's capacity");
    ok(!ratelimit_redis_suspect(&a, now + 62000), "and no longer after it");
    ok(!ratelimit_redis_suspect(&other, now + 1000), "another address is not");
    ratelimit_redis_suspect_mark(&none, &fail, now);
    ok(!ratelimit_redis_suspect(&none, now + 1000), "a peer without an address never is");
}

static void urls(void)
{
    volatile_redis_url_t u;
    aly_err_t err;
    ok(volatile_redis_parse_url("redis://cache.internal", &u, &err) == 0 && strcmp(u.host, "cache.internal") == 0 &&
           u.port == 6379 && u.db == 0,
       "redis://host: port 6379, database 0");
    ok(volatile_redis_parse_url("redis://[::1]:7001/9", &u, &err) == 0 && strcmp(u.host, "::1") == 0 && u.port == 7001 && u.db == 9,
       "an IPv6 host in brackets, a port and a database");
    const char *bad[] = {"http://h",     "redis://",     "redis://h:",    "redis://h:70000",
                         "redis://h/1x", "redis://[::1", "redis://a:b@h", "redis://h?x=1"};
    int refused = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        if (volatile_redis_parse_url(bad[i], &u, &err) != 0 && strstr(err.msg, bad[i]) != NULL)
            refused++;
        else
            printf("# accepted, or no message naming it: %s\n", bad[i]);
    }
    is_int(refused, (int)(sizeof(bad) / sizeof(bad[0])), "malformed URLs are refused with a message naming them");
}

int main(void)
{
    params();
    same_as_gcra();
    keys();
    suspects();
    urls();
    return done_testing();
}

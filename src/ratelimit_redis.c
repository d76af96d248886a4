/*
 * The GCRA cells on Redis (aly/ratelimit_redis.h): the script, its
 * parameters, and the decisions the gate asks for when "volatile redis://"
 * is configured.  The shared-memory table of ratelimit.c is then not used.
 */
#include "aly/ratelimit_redis.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

#define US_PER_S 1000000ull
#define MAX_CAP_US ((uint64_t)1 << 50)

/*
 * KEYS[1] the cell; ARGV: T, B*T (microseconds), 1 to charge or 0 to check.
 * Numbers stay below 2^53, so Lua's doubles hold them exactly; %.0f writes
 * them back without the exponent tostring() would use.
 */
static volatile_redis_script_t gcra_script = {
    .source =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
        "local T = tonumber(ARGV[1])\n"
        "local horizon = now + tonumber(ARGV[2])\n"
        "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
        "if tat < now then tat = now end\n"
        "if tat > horizon then tat = horizon end\n"
        "if tat + T > horizon then return {0, tat, now} end\n"
        "if ARGV[3] == '1' then\n"
        "  tat = tat + T\n"
        "  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))\n"
        "end\n"
        "return {1, tat, now}\n",
};

void ratelimit_redis_params(const aly_rate_t *rate, uint64_t *t_us, uint64_t *cap_us)
{
    uint64_t period = (uint64_t)(rate->period_s ? rate->period_s : 1) * US_PER_S, n = rate->count ? rate->count : 1;
    uint64_t b = rate->burst ? rate->burst : 1;
    *t_us = (period + n - 1) / n; /* rounded up: rounding never admits more than N per period */
    *cap_us = b > MAX_CAP_US / *t_us ? MAX_CAP_US : b * *t_us;
}

static uint64_t ceil_s(uint64_t us)
{
    uint64_t s = (us + US_PER_S - 1) / US_PER_S;
    return s > 0 ? s : 1;
}

void ratelimit_redis_decision(int admitted, uint64_t tat_us, uint64_t now_us, const aly_rate_t *rate, ratelimit_decision_t *d)
{
    uint64_t t, cap;
    ratelimit_redis_params(rate, &t, &cap);
    uint64_t horizon = now_us + cap;
    if (tat_us > horizon)
        tat_us = horizon; /* the script clamps already: this only guards the subtraction */
    if (!admitted) {
        d->allowed = 0;
        d->remaining = 0;
        d->retry_after_s = ceil_s(tat_us + t > horizon ? tat_us + t - horizon : 0);
        d->reset_s = d->retry_after_s;
        return;
    }
    uint64_t credit = horizon - tat_us;
    d->allowed = 1;
    d->remaining = credit / t;
    d->reset_s = ceil_s(t - credit % t);
    d->retry_after_s = 0;
}

static int decide(volatile_redis_t *r, const char *key, const aly_rate_t *rate, int charge, ratelimit_decision_t *d, aly_err_t *err)
{
    uint64_t t, cap;
    char ts[24], caps[24];
    ratelimit_redis_params(rate, &t, &cap);
    snprintf(ts, sizeof(ts), "%llu", (unsigned long long)t);
    snprintf(caps, sizeof(caps), "%llu", (unsigned long long)cap);
    const char *keys[] = {key}, *args[] = {ts, caps, charge ? "1" : "0"};
    redisReply *rep = volatile_redis_eval(r, &gcra_script, 1, keys, 3, args, err);
    if (rep == NULL)
        return -1;
    int ok = rep->type == REDIS_REPLY_ARRAY && rep->elements == 3;
    for (size_t i = 0; ok && i < 3; i++)
        ok = rep->element[i]->type == REDIS_REPLY_INTEGER && rep->element[i]->integer >= 0;
    if (!ok) {
        freeReplyObject(rep);
        return aly_errf(err, "redis rate-limit script: unexpected reply");
    }
    ratelimit_redis_decision(rep->element[0]->integer != 0, (uint64_t)rep->element[1]->integer, (uint64_t)rep->element[2]->integer,
                             rate, d);
    freeReplyObject(rep);
    return 0;
}

int ratelimit_redis_principal_key(const char *id, char *buf, size_t len)
{
    size_t n = strlen(id);
    if (n == 0)
        return -1;
    return volatile_redis_key(buf, len, id, n, "rl");
}

int ratelimit_redis_principal(volatile_redis_t *r, const char *id, const aly_rate_t *rate, ratelimit_decision_t *d, aly_err_t *err)
{
    char key[320];
    if (ratelimit_redis_principal_key(id, key, sizeof(key)) < 0)
        return aly_errf(err, "principal id empty or too long for a rate-limit key");
    return decide(r, key, rate, 1, d, err);
}

static int address_decision(volatile_redis_t *r, const ratelimit_addr_t *a, const aly_rate_t *rate, int charge,
                            ratelimit_decision_t *d, aly_err_t *err)
{
    if (a->len <= 2) {
        uint64_t tat = 0;
        ratelimit_gcra(&tat, rate, 0, charge, d); /* no address (a Unix socket): a fresh budget every time */
        return 0;
    }
    char tag[2 + 2 * sizeof(a->key) + 1], key[64];
    memcpy(tag, "a:", 2);
    for (size_t i = 2; i < a->len; i++)
        snprintf(tag + 2 * i - 2, 3, "%02x", a->key[i]);
    if (volatile_redis_key(key, sizeof(key), tag, strlen(tag), "af") < 0)
        return aly_errf(err, "address key too long");
    return decide(r, key, rate, charge, d, err);
}

int ratelimit_redis_address_check(volatile_redis_t *r, const ratelimit_addr_t *a, const aly_rate_t *rate, ratelimit_decision_t *d,
                                  aly_err_t *err)
{
    return address_decision(r, a, rate, 0, d, err);
}

int ratelimit_redis_address_failure(volatile_redis_t *r, const ratelimit_addr_t *a, const aly_rate_t *rate, ratelimit_decision_t *d,
                                    aly_err_t *err)
{
    return address_decision(r, a, rate, 1, d, err);
}

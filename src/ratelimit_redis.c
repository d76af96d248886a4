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

/* The script's arguments for one cell: T, B*T and the charge flag, as strings in a. */
typedef struct cell_args {
    char t[24], cap[24];
    const char *keys[1], *args[3];
} cell_args_t;

static void cell_call(cell_args_t *a, const char *key, const aly_rate_t *rate, int charge, volatile_redis_call_t *call)
{
    uint64_t t, cap;
    ratelimit_redis_params(rate, &t, &cap);
    snprintf(a->t, sizeof(a->t), "%llu", (unsigned long long)t);
    snprintf(a->cap, sizeof(a->cap), "%llu", (unsigned long long)cap);
    a->keys[0] = key;
    a->args[0] = a->t;
    a->args[1] = a->cap;
    a->args[2] = charge ? "1" : "0";
    *call = (volatile_redis_call_t){&gcra_script, 1, a->keys, 3, a->args};
}

/* The decision from the script's reply {admitted, tat, now}; frees the reply. */
static int cell_decision(redisReply *rep, const aly_rate_t *rate, ratelimit_decision_t *d, aly_err_t *err)
{
    int ok = rep->type == REDIS_REPLY_ARRAY && rep->elements == 3;
    for (size_t i = 0; ok && i < 3; i++)
        ok = rep->element[i]->type == REDIS_REPLY_INTEGER && rep->element[i]->integer >= 0;
    if (ok)
        ratelimit_redis_decision(rep->element[0]->integer != 0, (uint64_t)rep->element[1]->integer,
                                 (uint64_t)rep->element[2]->integer, rate, d);
    freeReplyObject(rep);
    return ok ? 0 : aly_errf(err, "redis rate-limit script: unexpected reply");
}

/*
 * A read-only check from a GET of the cell, on this host's clock instead of
 * Redis' (no script run): only where a credential has already been verified
 * (ratelimit_redis_admit), so a few seconds of clock skew can at worst let a
 * good credential through from an address near its failure budget.  The
 * check before any credential work runs the script.  Frees the reply.
 */
static int check_decision(redisReply *rep, const aly_rate_t *rate, ratelimit_decision_t *d, aly_err_t *err)
{
    uint64_t t, cap, tat = 0, now = ratelimit_now_ns() / 1000;
    int ok = rep->type == REDIS_REPLY_NIL || (rep->type == REDIS_REPLY_STRING && config_parse_uint(rep->str, &tat) == 0);
    freeReplyObject(rep);
    if (!ok)
        return aly_errf(err, "redis rate-limit cell: not a number");
    ratelimit_redis_params(rate, &t, &cap);
    if (tat < now)
        tat = now;
    if (tat > now + cap)
        tat = now + cap;
    ratelimit_redis_decision(tat + t <= now + cap, tat, now, rate, d);
    return 0;
}

static int decide(volatile_redis_t *r, const char *key, const aly_rate_t *rate, int charge, ratelimit_decision_t *d, aly_err_t *err)
{
    cell_args_t a;
    volatile_redis_call_t call;
    redisReply *rep;
    /*
     * A check runs the script too (charging nothing): its arithmetic on Redis' clock, as the charge's is.  On this
     * host's clock, a host a few seconds fast read every failure cell as already earned back.
     */
    cell_call(&a, key, rate, charge, &call);
    if (volatile_redis_eval_batch(r, &call, 1, &rep, err) != 0)
        return -1;
    return cell_decision(rep, rate, d, err);
}

/* An address's cell key into key (64 bytes); 0, or 1 for no address (a Unix socket: never limited). */
static int address_key(const ratelimit_addr_t *a, char key[64])
{
    if (a->len <= 2)
        return 1;
    char tag[2 + 2 * sizeof(a->key) + 1];
    memcpy(tag, "a:", 2);
    for (size_t i = 2; i < a->len; i++)
        snprintf(tag + 2 * i - 2, 3, "%02x", a->key[i]);
    return volatile_redis_key(key, 64, tag, strlen(tag), "af") < 0;
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
    char key[64];
    if (address_key(a, key) != 0) {
        uint64_t tat = 0;
        ratelimit_gcra(&tat, rate, 0, charge, d); /* no address (a Unix socket): a fresh budget every time */
        return 0;
    }
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

int ratelimit_redis_admit(volatile_redis_t *r, const ratelimit_addr_t *a, const aly_rate_t *fail_rate, const char *id,
                          const aly_rate_t *rate, ratelimit_decision_t *ad, ratelimit_decision_t *d, aly_err_t *err)
{
    char akey[64], pkey[320];
    cell_args_t args[2];
    volatile_redis_call_t calls[2];
    redisReply *reps[2];
    if (ratelimit_redis_principal_key(id, pkey, sizeof(pkey)) < 0)
        return aly_errf(err, "principal id empty or too long for a rate-limit key");
    if (address_key(a, akey) != 0) {
        uint64_t tat = 0;
        ratelimit_gcra(&tat, fail_rate, 0, 0, ad);
        return decide(r, pkey, rate, 1, d, err);
    }
    cell_call(&args[0], akey, fail_rate, 0, &calls[0]);
    calls[0].script = NULL;
    cell_call(&args[1], pkey, rate, 1, &calls[1]);
    if (volatile_redis_eval_batch(r, calls, 2, reps, err) != 0)
        return -1;
    int rc = check_decision(reps[0], fail_rate, ad, err);
    if (cell_decision(reps[1], rate, d, err) != 0)
        rc = -1;
    return rc;
}

/*
 * The suspects: a small per-process table of address digests and the time
 * until which each counts as suspect.  A collision either makes an innocent
 * address suspect (one more round trip per request for a while) or evicts a
 * suspect (which then gets one more credential check before it is marked
 * again); neither changes what the shared budget admits.
 */
#define SUSPECTS 4096

static struct suspect {
    uint64_t digest;
    uint64_t until_ms;
} suspects[SUSPECTS];

static uint64_t address_digest(const ratelimit_addr_t *a)
{
    return aly_fnv1a(a->key, a->len) | 1; /* spreading our own table: no adversary gains by colliding */
}

int ratelimit_redis_suspect(const ratelimit_addr_t *a, uint64_t now_ms)
{
    if (a->len == 0)
        return 0;
    uint64_t h = address_digest(a);
    const struct suspect *s = &suspects[h % SUSPECTS];
    return s->digest == h && s->until_ms > now_ms;
}

void ratelimit_redis_suspect_mark(const ratelimit_addr_t *a, const aly_rate_t *fail_rate, uint64_t now_ms)
{
    if (a->len == 0)
        return;
    uint64_t t, cap, h = address_digest(a);
    ratelimit_redis_params(fail_rate, &t, &cap);
    suspects[h % SUSPECTS] = (struct suspect){h, now_ms + (cap + t) / 1000};
}

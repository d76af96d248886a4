/*
 * The GCRA limiter of aly/ratelimit.h: the lock-free cells (lookup,
 * compare-and-swap decisions, insertion without duplicates, eviction), the
 * decisions the gate asks for, and the rate-limit header values.  The table
 * file they live in is ratelimit_table.c's.  The gate (gate.c) decides when
 * to ask; this file only counts.
 */
#include "aly/ratelimit.h"

#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aly/ratelimit_internal.h"

uint64_t ratelimit_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* ---- GCRA ---- */

/* T = period / N, rounded up to a nanosecond so that rounding never admits more than N per period. */
static uint64_t emission_ns(const aly_rate_t *r)
{
    uint64_t period = (uint64_t)(r->period_s ? r->period_s : 1) * NS_PER_S, n = r->count ? r->count : 1;
    return (period + n - 1) / n;
}

static uint64_t capacity_ns(const aly_rate_t *r, uint64_t t)
{
    uint64_t b = r->burst ? r->burst : 1;
    return b > MAX_SPAN_NS / t ? MAX_SPAN_NS : b * t;
}

static uint64_t ceil_s(uint64_t ns)
{
    uint64_t s = (ns + NS_PER_S - 1) / NS_PER_S;
    return s > 0 ? s : 1;
}

int ratelimit_gcra(uint64_t *tat, const aly_rate_t *rate, uint64_t now_ns, int charge, ratelimit_decision_t *d)
{
    uint64_t t = emission_ns(rate), horizon = now_ns + capacity_ns(rate, t), cell = *tat;
    if (cell < now_ns)
        cell = now_ns; /* idle: the bucket is full, past credit is not kept */
    if (cell > horizon)
        cell = horizon; /* clock stepped back, or the policy shrank */
    uint64_t next = cell + t;
    if (next > horizon) {
        d->allowed = 0;
        d->remaining = 0;
        d->retry_after_s = ceil_s(next - horizon);
        d->reset_s = d->retry_after_s;
        *tat = cell;
        return 0;
    }
    if (charge)
        cell = next;
    uint64_t credit = horizon - cell;
    d->allowed = 1;
    d->remaining = credit / t;
    d->reset_s = ceil_s(t - credit % t);
    d->retry_after_s = 0;
    *tat = cell;
    return 1;
}

/* ---- cells ---- */

static void key_of(const ratelimit_t *rl, int table, const void *data, size_t len, cell_key_t *k)
{
    uint64_t d[2];
    aly_siphash128(rl->k0, rl->k1, data, len, d);
    k->head = d[0] & ~HEAD_STATE;
    k->lo = d[1];
    k->home = (uint64_t)(((unsigned __int128)d[1] * rl->n[table]) >> 64);
}

static cell_t *window_cell(const ratelimit_t *rl, int table, const cell_key_t *k, unsigned i)
{
    uint64_t j = k->home + i;
    return &rl->cells[table][j >= rl->n[table] ? j - rl->n[table] : j];
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t busy_mark(void)
{
    return BUSY | (mono_ms() & BUSY_MS_MASK) << BUSY_PID_BITS | ((uint64_t)getpid() & (((uint64_t)1 << BUSY_PID_BITS) - 1));
}

/* A claim older than STALE_MS, or stamped in another boot's clock (then it looks older, modulo 2^40). */
static int abandoned(uint64_t tat)
{
    uint64_t then = tat >> BUSY_PID_BITS & BUSY_MS_MASK;
    return (tat & BUSY) && ((mono_ms() - then) & BUSY_MS_MASK) > STALE_MS;
}

void (*ratelimit_test_hook[RL_TEST_POINTS])(void);

static inline void test_point(enum ratelimit_test_point at)
{
    if (ratelimit_test_hook[at] != NULL)
        ratelimit_test_hook[at]();
}

/*
 * Renews this process's claim on c: the busy mark again, stamped now.  Only a
 * claim's holder writes the head and the digest, and it renews first, so each
 * such write lands a few instructions after a mark younger than STALE_MS,
 * which nobody takes over.  0 when the claim was taken over: its holder slept
 * past STALE_MS (a stopped process, a paused VM) and the cell may be another
 * key's by now, which the holder must not write over.
 */
static int renew(cell_t *c, uint64_t *mark)
{
    const uint64_t pid_bits = ((uint64_t)1 << BUSY_PID_BITS) - 1;
    uint64_t held = *mark, fresh = BUSY | (mono_ms() & BUSY_MS_MASK) << BUSY_PID_BITS | (held & pid_bits); /* no getpid() */
    if (!atomic_compare_exchange_strong(&c->tat, &held, fresh))
        return 0;
    *mark = fresh;
    return 1;
}

/* Gives a claimed cell back, empty (an evicted owner's state was idle or is lost either way), unless the claim was taken over. */
static void withdraw(cell_t *c, uint64_t mark)
{
    if (!renew(c, &mark))
        return;
    atomic_store(&c->head, HEAD_EMPTY);
    atomic_store(&c->lo, 0);
    atomic_compare_exchange_strong(&c->tat, &mark, 0);
}

/*
 * Empties a cell under the abandoned claim stale: takes the claim over first
 * (a compare-and-swap on the TAT, where its owner's last step also lands), so
 * an owner that was only stalled, and wakes, finds its claim gone and starts
 * again, rather than going live beside a copy made while it slept.  0 when the
 * claim moved meanwhile (its owner finished, or another process reaped it).
 */
static int reap(cell_t *c, uint64_t stale)
{
    uint64_t mark = busy_mark();
    if (!atomic_compare_exchange_strong(&c->tat, &stale, mark))
        return 0;
    withdraw(c, mark);
    return 1;
}

/*
 * Is c a copy of k that counts: live, or pending under a claim that is not
 * abandoned?  Returns HEAD_LIVE, HEAD_PENDING, or HEAD_EMPTY for anything
 * else (a pending head without a claim can only come from a torn page).  A
 * copy under an abandoned claim is reaped before it is looked past.  The
 * verdict comes from one consistent reading, left in *head and *tat for the
 * caller to rank the cell by: the head is read again after the TAT (a copy
 * going live turns its head, then its TAT; a pending head with a finished TAT
 * is that, not a torn page), so nothing is decided on a cell that changed
 * between two looks at it.
 */
static uint64_t copy_of(cell_t *c, const cell_key_t *k, uint64_t *head, uint64_t *tat)
{
    for (;;) {
        uint64_t h = atomic_load(&c->head), state = h & HEAD_STATE;
        int ours = (h & ~HEAD_STATE) == k->head && (state == HEAD_LIVE || state == HEAD_PENDING) && atomic_load(&c->lo) == k->lo;
        if (ours)
            test_point(RL_AT_COPY);
        uint64_t t = atomic_load(&c->tat);
        if (atomic_load(&c->head) != h)
            continue; /* it moved on between the two reads: read both again */
        *head = h;
        *tat = t;
        if (!ours)
            return HEAD_EMPTY;
        if (!(t & BUSY))
            return state == HEAD_LIVE ? HEAD_LIVE : HEAD_EMPTY;
        if (!abandoned(t))
            return state;
        reap(c, t); /* emptied, or moved on meanwhile: read again */
    }
}

static cell_t *find_live(const ratelimit_t *rl, int table, const cell_key_t *k)
{
    for (unsigned i = 0; i < rl->window[table]; i++) {
        cell_t *c = window_cell(rl, table, k, i);
        if (atomic_load(&c->head) == (k->head | HEAD_LIVE) && atomic_load(&c->lo) == k->lo)
            return c;
    }
    return NULL;
}

enum { DONE, AGAIN };

/*
 * One decision on the live cell c of k: the compare-and-swap loop.  AGAIN when
 * c stopped being k's (evicted, or abandoned mid-claim): look it up again.
 */
static int step(cell_t *c, const cell_key_t *k, const aly_rate_t *rate, uint64_t now, int charge, ratelimit_decision_t *d)
{
    uint64_t cur = atomic_load(&c->tat);
    for (;;) {
        if (cur & BUSY) {
            if (abandoned(cur)) {
                reap(c, cur); /* its inserter is gone or asleep: the key is inserted again */
                return AGAIN;
            }
            sched_yield(); /* changing hands, or still being confirmed by its inserter */
            if (atomic_load(&c->head) != (k->head | HEAD_LIVE))
                return AGAIN;
            cur = atomic_load(&c->tat);
            continue;
        }
        /* The owner can change only under a busy mark, so a TAT read before this check is k's. */
        if (atomic_load(&c->head) != (k->head | HEAD_LIVE) || atomic_load(&c->lo) != k->lo)
            return AGAIN;
        uint64_t tat = cur;
        if (!ratelimit_gcra(&tat, rate, now, charge, d) || !charge)
            return DONE; /* a refusal, or a check, writes nothing */
        if (atomic_compare_exchange_weak(&c->tat, &cur, tat))
            return DONE;
    }
}

/*
 * Inserts k, charged with one request: claims the best cell of the window,
 * publishes k as pending, makes sure no other copy of k wins, then goes live.
 * AGAIN when another process got there first (the caller looks up again).
 */
static int insert(ratelimit_t *rl, int table, const cell_key_t *k, const aly_rate_t *rate, uint64_t now, ratelimit_decision_t *d)
{
    enum { NONE, VICTIM, IDLE, ABANDONED, EMPTY };
    cell_t *pick = NULL;
    unsigned pick_i = 0;
    int rank = NONE;
    uint64_t pick_head = 0, pick_tat = 0;
    for (unsigned i = 0; i < rl->window[table] && rank != EMPTY; i++) {
        cell_t *c = window_cell(rl, table, k, i);
        uint64_t h, t;
        if (copy_of(c, k, &h, &t) != HEAD_EMPTY)
            return AGAIN; /* k is live here, or someone is inserting it: wait for that */
        test_point(RL_AT_RANK);
        /* Ranked by what copy_of read: if the cell has moved on since (even to k, live), the claim below fails. */
        int r;
        if (t & BUSY)
            r = abandoned(t) ? ABANDONED : NONE;
        else if (h == HEAD_EMPTY)
            r = EMPTY;
        else if ((h & HEAD_STATE) != HEAD_LIVE || t <= now)
            r = IDLE; /* idle, or a state no protocol step leaves without a busy mark: a torn page */
        else
            r = VICTIM;
        if (r > rank || (r == VICTIM && rank == VICTIM && t < pick_tat)) {
            pick = c;
            pick_i = i;
            rank = r;
            pick_head = h;
            pick_tat = t;
        }
    }
    if (pick == NULL)
        return AGAIN; /* every cell is changing hands right now */
    test_point(RL_AT_CHOSEN);
    uint64_t mark = busy_mark();
    if (!atomic_compare_exchange_strong(&pick->tat, &pick_tat, mark))
        return AGAIN;
    if (atomic_load(&pick->head) != pick_head) {
        atomic_compare_exchange_strong(&pick->tat, &mark, pick_tat); /* it changed hands and back meanwhile: leave it as it was */
        return AGAIN;
    }
    if (rank == VICTIM)
        atomic_fetch_add(&rl->hdr->evictions[table], 1);
    test_point(RL_AT_CLAIMED);
    if (!renew(pick, &mark))
        return AGAIN;
    atomic_store(&pick->lo, k->lo);
    atomic_store(&pick->head, k->head | HEAD_PENDING);

    /*
     * Another process may have claimed another cell for k since our scan.  Of
     * two pending copies the one nearer home wins; a live copy always wins.
     * Each side publishes before it looks, so at least one sees the other,
     * and a pending copy further away is waited for rather than ignored:
     * exactly one copy goes live.
     */
    for (unsigned i = 0; i < rl->window[table]; i++) {
        cell_t *c = window_cell(rl, table, k, i);
        if (c == pick)
            continue;
        uint64_t state, h, t;
        while ((state = copy_of(c, k, &h, &t)) != HEAD_EMPTY) {
            if (state == HEAD_LIVE || i < pick_i) {
                test_point(RL_AT_WITHDRAW);
                withdraw(pick, mark);
                return AGAIN;
            }
            sched_yield();
            if (!renew(pick, &mark)) /* waiting is not abandoning: the claim stays young */
                return AGAIN;
        }
    }
    test_point(RL_AT_LIVE);
    uint64_t tat = 0, pending = k->head | HEAD_PENDING;
    ratelimit_gcra(&tat, rate, now, 1, d); /* a new cell: a full bucket, always admitted */
    if (!renew(pick, &mark))
        return AGAIN; /* we stalled past STALE_MS and someone took the cell */
    if (!atomic_compare_exchange_strong(&pick->head, &pending, k->head | HEAD_LIVE)) {
        withdraw(pick, mark); /* not left busy for STALE_MS */
        return AGAIN;
    }
    if (!atomic_compare_exchange_strong(&pick->tat, &mark, tat))
        return AGAIN;
    return DONE;
}

/* The decision for the key data/len of a table: lookup, then compare-and-swap, or insert when absent and charged. */
static int decide(ratelimit_t *rl, int table, const void *data, size_t len, const aly_rate_t *rate, uint64_t now, int charge,
                  ratelimit_decision_t *d, aly_err_t *err)
{
    cell_key_t k;
    uint64_t started = 0;
    key_of(rl, table, data, len, &k);
    for (unsigned round = 0;; round++) {
        cell_t *c = find_live(rl, table, &k);
        if (c != NULL && step(c, &k, rate, now, charge, d) == DONE)
            return 0;
        if (c == NULL && !charge) {
            uint64_t tat = 0; /* no cell: a full bucket */
            ratelimit_gcra(&tat, rate, now, 0, d);
            return 0;
        }
        if (c == NULL && insert(rl, table, &k, rate, now, d) == DONE)
            return 0;
        if (round >= 4)
            sched_yield();
        if (round == 64)
            started = mono_ms();
        if (round > 64 && mono_ms() - started > GIVE_UP_MS)
            return aly_errf(err, "rate-limit cell still busy after %d ms", GIVE_UP_MS);
    }
}

/* ---- decisions ---- */

int ratelimit_principal(ratelimit_t *rl, const char *id, const aly_rate_t *rate, uint64_t now_ns, ratelimit_decision_t *d,
                        aly_err_t *err)
{
    size_t n = strlen(id);
    if (n == 0)
        return aly_errf(err, "an empty principal id cannot be rate limited");
    return decide(rl, PRINCIPALS, id, n, rate, now_ns, 1, d, err);
}

void ratelimit_address(const struct sockaddr *sa, ratelimit_addr_t *out)
{
    out->len = 0;
    if (sa == NULL)
        return;
    const unsigned char *bytes = NULL;
    size_t n = 0;
    if (sa->sa_family == AF_INET) {
        bytes = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        n = 4;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            bytes = a6->s6_addr + 12;
            n = 4;
        } else {
            bytes = a6->s6_addr;
            n = 8; /* the /64 */
        }
    } else {
        return;
    }
    memcpy(out->key, "a:", 2);
    out->key[2] = n == 4 ? '4' : '6';
    memcpy(out->key + 3, bytes, n);
    out->len = 3 + n;
}

/* An address decision; a peer with no address (a Unix socket) gets a fresh budget every time. */
static int address_decision(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns, int charge,
                            ratelimit_decision_t *d, aly_err_t *err)
{
    if (a->len == 0) {
        uint64_t tat = 0;
        ratelimit_gcra(&tat, rate, now_ns, charge, d);
        return 0;
    }
    return decide(rl, ADDRESSES, a->key, a->len, rate, now_ns, charge, d, err);
}

int ratelimit_address_check(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                            ratelimit_decision_t *d, aly_err_t *err)
{
    return address_decision(rl, a, rate, now_ns, 0, d, err);
}

int ratelimit_address_failure(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                              ratelimit_decision_t *d, aly_err_t *err)
{
    return address_decision(rl, a, rate, now_ns, 1, d, err);
}

/* ---- inspection and headers ---- */

int ratelimit_count(ratelimit_t *rl, uint64_t now_ns, ratelimit_counts_t *out, aly_err_t *err)
{
    size_t *live[TABLES] = {&out->principals, &out->addresses}, *used[TABLES] = {&out->principal_used, &out->address_used};
    (void)err;
    memset(out, 0, sizeof(*out));
    for (int t = 0; t < TABLES; t++) {
        for (uint64_t i = 0; i < rl->n[t]; i++) {
            cell_t *c = &rl->cells[t][i];
            uint64_t h = atomic_load(&c->head), tat = atomic_load(&c->tat);
            if (h == HEAD_EMPTY)
                continue;
            (*used[t])++;
            if ((h & HEAD_STATE) != HEAD_LIVE || (tat & BUSY) || tat <= now_ns)
                continue;
            (*live[t])++;
            /* A copy of one key is always within a window of the other. */
            uint64_t lo = atomic_load(&c->lo);
            for (uint64_t j = 1; j < rl->window[t]; j++) {
                cell_t *o = &rl->cells[t][i + j < rl->n[t] ? i + j : i + j - rl->n[t]];
                if (atomic_load(&o->head) == h && atomic_load(&o->lo) == lo)
                    out->duplicates++;
            }
        }
    }
    out->principal_capacity = rl->n[PRINCIPALS];
    out->address_capacity = rl->n[ADDRESSES];
    out->principal_evictions = atomic_load(&rl->hdr->evictions[PRINCIPALS]);
    out->address_evictions = atomic_load(&rl->hdr->evictions[ADDRESSES]);
    return 0;
}

void ratelimit_policy_header(const char *name, const aly_rate_t *rate, char *buf, size_t len)
{
    snprintf(buf, len, "\"%s\";q=%u;w=%u;aly-burst=%u", name, rate->count, rate->period_s, rate->burst);
}

void ratelimit_header(const char *name, const ratelimit_decision_t *d, char *buf, size_t len)
{
    /* Every response carries it: assembled by hand, printf-free, truncated like snprintf would. */
    char tmp[64 + 64];
    size_t nl = strnlen(name, 64), n = 0;
    tmp[n++] = '"';
    memcpy(tmp + n, name, nl);
    n += nl;
    memcpy(tmp + n, "\";r=", 4);
    n += 4;
    n += aly_fmt_u64(tmp + n, d->remaining);
    memcpy(tmp + n, ";t=", 3);
    n += 3;
    n += aly_fmt_u64(tmp + n, d->reset_s);
    if (len == 0)
        return;
    n = n < len - 1 ? n : len - 1;
    memcpy(buf, tmp, n);
    buf[n] = '\0';
}

/*
 * The GCRA limiter of aly/ratelimit.h: cells in VDB_RATE, the amortised sweep
 * of idle cells, the cap on address cells, and the rate-limit header values.
 * The HTTP gate (http_authenticate) decides when to ask; this file only counts.
 */
#include "aly/ratelimit.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_S 1000000000ull
#define CELL_VERSION 1
#define CELL_LEN 9
#define MAX_SPAN_NS ((uint64_t)1 << 62) /* B*T saturates here (146 years): no overflow with now added */
#define KEY_MAX 200                     /* "p:" + a principal id (< 160) fits */

#define EVICT_ROUNDS 4 /* evictions at most per inserted address cell: a lowered cap converges without a long transaction */

_Static_assert(RATELIMIT_EVICT_SAMPLE <= RATELIMIT_SWEEP_BATCH, "an eviction sample fits the pick buffer");

static const char address_counter_key[] = "n:addresses";

struct ratelimit {
    store_t *st;
    size_t max_addresses;
    uint64_t writes; /* write decisions of this process, for the sweep cadence */
    char cursor[KEY_MAX];
    size_t cursor_len;
    char acursor[KEY_MAX]; /* eviction sample position among address cells */
    size_t acursor_len;
};

ratelimit_t *ratelimit_new(store_t *st, size_t max_addresses, aly_err_t *err)
{
    ratelimit_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        aly_errf(err, "out of memory");
        return NULL;
    }
    rl->st = st;
    rl->max_addresses = max_addresses > 0 ? max_addresses : 1;
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    free(rl);
}

store_t *ratelimit_store(const ratelimit_t *rl)
{
    return rl->st;
}

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

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

/* The TAT of a stored cell; a cell of another version or length reads as none (0). */
static uint64_t cell_tat(const store_val_t *v)
{
    const unsigned char *p = v->data;
    return v->len == CELL_LEN && p[0] == CELL_VERSION ? get_le64(p + 1) : 0;
}

/* 0 with *tat (0 when absent) and *found, or -1. */
static int cell_get(store_txn_t *t, const void *key, size_t klen, uint64_t *tat, int *found, aly_err_t *err)
{
    store_val_t v;
    int rc = store_get(t, VDB_RATE, key, klen, &v, err);
    if (rc < 0)
        return -1;
    *found = rc == 0;
    *tat = rc == 0 ? cell_tat(&v) : 0;
    return 0;
}

static int cell_put(store_txn_t *t, const void *key, size_t klen, uint64_t tat, aly_err_t *err)
{
    unsigned char v[CELL_LEN];
    v[0] = CELL_VERSION;
    put_le64(v + 1, tat);
    return store_put(t, VDB_RATE, key, klen, v, sizeof(v), 0, err) == 0 ? 0 : -1;
}

static int is_address_key(const void *key, size_t len)
{
    return len > 2 && memcmp(key, "a:", 2) == 0;
}

static int is_cell_key(const void *key, size_t len)
{
    return len > 2 && (memcmp(key, "a:", 2) == 0 || memcmp(key, "p:", 2) == 0);
}

static int counter_get(store_txn_t *t, uint64_t *n, aly_err_t *err)
{
    store_val_t v;
    int rc = store_get(t, VDB_RATE, address_counter_key, sizeof(address_counter_key) - 1, &v, err);
    if (rc < 0)
        return -1;
    *n = rc == 0 && v.len == 8 ? get_le64(v.data) : 0;
    return 0;
}

static int counter_put(store_txn_t *t, uint64_t n, aly_err_t *err)
{
    unsigned char v[8];
    put_le64(v, n);
    int rc = store_put(t, VDB_RATE, address_counter_key, sizeof(address_counter_key) - 1, v, sizeof(v), 0, err);
    return rc == 0 ? 0 : -1;
}

/* ---- sweeping and eviction ---- */

/* Keys a scan picked for deletion (copied: a scan's keys point into pages a delete may reuse). */
typedef struct pick {
    uint64_t now;
    size_t budget; /* cells still to examine */
    size_t seen;   /* cells examined */
    int addresses; /* eviction: only address cells, and remember the earliest TAT */
    char keys[RATELIMIT_SWEEP_BATCH][KEY_MAX];
    size_t lens[RATELIMIT_SWEEP_BATCH];
    size_t n;
    char last[KEY_MAX]; /* the last key examined: the next scan starts after it */
    size_t last_len;
    char oldest[KEY_MAX]; /* eviction: the live cell with the earliest TAT */
    size_t oldest_len;
    uint64_t oldest_tat;
} pick_t;

static int pick_cb(void *ctx, const store_val_t *key, const store_val_t *val)
{
    pick_t *p = ctx;
    if (p->budget == 0)
        return 1;
    if (key->len >= KEY_MAX)
        return 0;
    p->budget--;
    p->seen++;
    memcpy(p->last, key->data, key->len);
    p->last_len = key->len;
    if (!is_cell_key(key->data, key->len))
        return 0;
    uint64_t tat = cell_tat(val);
    if (tat <= p->now && p->n < RATELIMIT_SWEEP_BATCH) {
        memcpy(p->keys[p->n], key->data, key->len);
        p->lens[p->n++] = key->len;
    } else if (p->addresses && (p->oldest_len == 0 || tat < p->oldest_tat)) {
        memcpy(p->oldest, key->data, key->len);
        p->oldest_len = key->len;
        p->oldest_tat = tat;
    }
    return 0;
}

/*
 * Examines up to budget cells after the cursor (within prefix), going on from
 * the first key once when the end comes first.  Fills p; moves the cursor.
 */
static int pick_scan(store_txn_t *t, const char *prefix, size_t plen, char *cursor, size_t *cursor_len, size_t budget, pick_t *p,
                     aly_err_t *err)
{
    p->budget = budget;
    for (int pass = 0; pass < 2; pass++) {
        if (store_scan(t, VDB_RATE, prefix, plen, *cursor_len ? cursor : NULL, *cursor_len, pick_cb, p, err) != 0)
            return -1;
        if (p->budget == 0) {
            memcpy(cursor, p->last, p->last_len);
            *cursor_len = p->last_len;
            return 0;
        }
        *cursor_len = 0; /* the end: the next scan starts from the first key */
        if (p->seen == 0 && pass == 1)
            break;
    }
    return 0;
}

/* Deletes the picked keys; *addresses_deleted counts the address cells among them. */
static int delete_picked(store_txn_t *t, const pick_t *p, uint64_t *addresses_deleted, aly_err_t *err)
{
    for (size_t i = 0; i < p->n; i++) {
        int rc = store_del(t, VDB_RATE, p->keys[i], p->lens[i], err);
        if (rc < 0)
            return -1;
        if (rc == 0 && is_address_key(p->keys[i], p->lens[i]))
            (*addresses_deleted)++;
    }
    return 0;
}

/*
 * The amortised sweep: deletes idle cells among the next RATELIMIT_SWEEP_BATCH
 * after this process's cursor.  Returns the number of cells picked, or -1.
 */
static int sweep(ratelimit_t *rl, store_txn_t *t, uint64_t now, aly_err_t *err)
{
    pick_t p = {.now = now};
    uint64_t gone = 0, n;
    int rc = pick_scan(t, "", 0, rl->cursor, &rl->cursor_len, RATELIMIT_SWEEP_BATCH, &p, err);
    if (rc == 0)
        rc = delete_picked(t, &p, &gone, err);
    if (rc == 0 && gone > 0 && (rc = counter_get(t, &n, err)) == 0)
        rc = counter_put(t, n > gone ? n - gone : 0, err);
    return rc == 0 ? (int)p.n : -1;
}

/* Makes room for one more address cell: deletes the expired cells of a sample, else its earliest one. */
static int evict_address(ratelimit_t *rl, store_txn_t *t, uint64_t now, uint64_t *count, aly_err_t *err)
{
    pick_t p = {.now = now, .addresses = 1};
    uint64_t gone = 0;
    int rc = pick_scan(t, "a:", 2, rl->acursor, &rl->acursor_len, RATELIMIT_EVICT_SAMPLE, &p, err);
    if (rc == 0 && p.n == 0 && p.oldest_len > 0) {
        memcpy(p.keys[0], p.oldest, p.oldest_len);
        p.lens[0] = p.oldest_len;
        p.n = 1;
    }
    if (rc == 0)
        rc = delete_picked(t, &p, &gone, err);
    if (rc == 0 && p.seen == 0)
        *count = 0; /* no address cell at all: the counter had drifted */
    *count = *count > gone ? *count - gone : 0;
    return rc;
}

/* ---- decisions ---- */

/*
 * The read-modify-write of one cell in one write transaction.  address: the
 * cell is an address cell (counted and capped).  Sweeps every
 * RATELIMIT_SWEEP_EVERY calls.
 */
static int decide(ratelimit_t *rl, const void *key, size_t klen, int address, const aly_rate_t *rate, uint64_t now,
                  ratelimit_decision_t *d, aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(rl->st, STORE_WRITE | STORE_VOLATILE, &t, err) != 0)
        return -1;
    uint64_t tat;
    int found, dirty = 0;
    if (cell_get(&t, key, klen, &tat, &found, err) != 0)
        goto fail;
    if (ratelimit_gcra(&tat, rate, now, 1, d)) {
        if (address && !found) {
            uint64_t count;
            if (counter_get(&t, &count, err) != 0)
                goto fail;
            for (int round = 0; round < EVICT_ROUNDS && count >= rl->max_addresses; round++) {
                uint64_t before = count;
                if (evict_address(rl, &t, now, &count, err) != 0)
                    goto fail;
                if (count == before)
                    break; /* nothing evictable in the sample: do not spin */
            }
            if (counter_put(&t, count + 1, err) != 0)
                goto fail;
        }
        if (cell_put(&t, key, klen, tat, err) != 0)
            goto fail;
        dirty = 1;
    }
    if (++rl->writes % RATELIMIT_SWEEP_EVERY == 0) {
        int swept = sweep(rl, &t, now, err);
        if (swept < 0)
            goto fail;
        dirty |= swept > 0;
    }
    if (!dirty) {
        store_abort(&t);
        return 0;
    }
    return store_commit(&t, err);
fail:
    store_abort(&t);
    return -1;
}

int ratelimit_principal(ratelimit_t *rl, const char *id, const aly_rate_t *rate, uint64_t now_ns, ratelimit_decision_t *d,
                        aly_err_t *err)
{
    char key[KEY_MAX];
    size_t n = strlen(id);
    if (n == 0 || n + 2 > sizeof(key))
        return aly_errf(err, "principal id of %zu bytes cannot be rate limited", n);
    memcpy(key, "p:", 2);
    memcpy(key + 2, id, n);
    return decide(rl, key, n + 2, 0, rate, now_ns, d, err);
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

int ratelimit_address_check(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                            ratelimit_decision_t *d, aly_err_t *err)
{
    uint64_t tat = 0;
    int found = 0;
    if (a->len > 0) {
        store_txn_t t;
        if (store_begin(rl->st, STORE_VOLATILE, &t, err) != 0)
            return -1;
        int rc = cell_get(&t, a->key, a->len, &tat, &found, err);
        store_abort(&t);
        if (rc != 0)
            return -1;
    }
    ratelimit_gcra(&tat, rate, now_ns, 0, d);
    return 0;
}

int ratelimit_address_failure(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                              ratelimit_decision_t *d, aly_err_t *err)
{
    if (a->len == 0) {
        uint64_t tat = 0;
        ratelimit_gcra(&tat, rate, now_ns, 1, d);
        return 0;
    }
    return decide(rl, a->key, a->len, 1, rate, now_ns, d, err);
}

/* ---- inspection and headers ---- */

static int count_cb(void *ctx, const store_val_t *key, const store_val_t *val)
{
    ratelimit_counts_t *c = ctx;
    (void)val;
    if (is_address_key(key->data, key->len))
        c->addresses++;
    else if (key->len > 2 && memcmp(key->data, "p:", 2) == 0)
        c->principals++;
    return 0;
}

int ratelimit_count(ratelimit_t *rl, ratelimit_counts_t *out, aly_err_t *err)
{
    memset(out, 0, sizeof(*out));
    store_txn_t t;
    if (store_begin(rl->st, STORE_VOLATILE, &t, err) != 0)
        return -1;
    int rc = store_scan(&t, VDB_RATE, "", 0, NULL, 0, count_cb, out, err);
    if (rc == 0)
        rc = counter_get(&t, &out->address_counter, err);
    store_abort(&t);
    return rc;
}

void ratelimit_policy_header(const char *name, const aly_rate_t *rate, char *buf, size_t len)
{
    snprintf(buf, len, "\"%s\";q=%u;w=%u;aly-burst=%u", name, rate->count, rate->period_s, rate->burst);
}

void ratelimit_header(const char *name, const ratelimit_decision_t *d, char *buf, size_t len)
{
    snprintf(buf, len, "\"%s\";r=%llu;t=%llu", name, (unsigned long long)d->remaining, (unsigned long long)d->reset_s);
}

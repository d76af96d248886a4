/*
 * The GCRA limiter of aly/ratelimit.h: the shared table file (creation,
 * validation, replacement), the lock-free cells (lookup, compare-and-swap
 * decisions, insertion without duplicates, eviction), and the rate-limit
 * header values.  The HTTP gate (http_authenticate) decides when to ask; this
 * file only counts.
 */
#include "aly/ratelimit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull
#define MAX_SPAN_NS ((uint64_t)1 << 62) /* B*T saturates here (146 years): no overflow with now added */

#define FILE_MAGIC "alyrate"
#define FILE_VERSION 1
#define HEADER_SIZE 4096

/* The head word: 62 bits of the digest and a state in the low two. */
#define HEAD_EMPTY 0
#define HEAD_PENDING 1 /* claimed by an insert that has not yet checked for a copy of its key */
#define HEAD_LIVE 2
#define HEAD_STATE 3ull

/*
 * The TAT word while a cell changes hands: the flag, the claimer's
 * CLOCK_MONOTONIC milliseconds (40 bits, 34 years) and its pid (23 bits, to
 * tell two claimers of one millisecond apart).  A TAT in nanoseconds since
 * 1970 never sets the flag before 2262.
 */
#define BUSY ((uint64_t)1 << 63)
#define BUSY_MS_BITS 40
#define BUSY_PID_BITS 23
#define BUSY_MS_MASK (((uint64_t)1 << BUSY_MS_BITS) - 1)
#define STALE_MS 1000             /* a claim this old was abandoned: inserts take a few microseconds */
#define GIVE_UP_MS (3 * STALE_MS) /* a decision that cannot settle for this long reports an error */

enum { PRINCIPALS, ADDRESSES, TABLES };

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics are lock-free, hence usable across processes");

typedef struct cell {
    _Atomic uint64_t head;
    _Atomic uint64_t lo; /* the digest's other 64 bits */
    _Atomic uint64_t tat;
    uint64_t spare;
} cell_t;

_Static_assert(sizeof(cell_t) == 32, "two cells per cache line");

typedef struct file_header {
    char magic[8];
    uint32_t version;
    uint32_t cell_size;
    uint64_t window;
    uint64_t cells[TABLES];
    uint64_t hash_key[2];
    _Atomic uint64_t evictions[TABLES];
} file_header_t;

_Static_assert(sizeof(file_header_t) <= HEADER_SIZE, "the header fits its page");

struct ratelimit {
    store_t *st;
    void *map;
    size_t map_len;
    file_header_t *hdr;
    cell_t *cells[TABLES];
    uint64_t n[TABLES];
    unsigned window[TABLES];
    uint64_t k0, k1; /* the hash key, copied out of the shared page */
};

/* A key as the tables see it. */
typedef struct cell_key {
    uint64_t head; /* digest bits, state bits clear */
    uint64_t lo;
    uint64_t home; /* index of the first cell of its window */
} cell_key_t;

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

/* ---- the hash: SipHash-2-4, 128-bit output ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_rounds(uint64_t v[4], int n)
{
    while (n-- > 0) {
        v[0] += v[1];
        v[1] = ROTL(v[1], 13);
        v[1] ^= v[0];
        v[0] = ROTL(v[0], 32);
        v[2] += v[3];
        v[3] = ROTL(v[3], 16);
        v[3] ^= v[2];
        v[0] += v[3];
        v[3] = ROTL(v[3], 21);
        v[3] ^= v[0];
        v[2] += v[1];
        v[1] = ROTL(v[1], 17);
        v[1] ^= v[2];
        v[2] = ROTL(v[2], 32);
    }
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void siphash128(uint64_t k0, uint64_t k1, const void *data, size_t len, uint64_t out[2])
{
    const unsigned char *p = data;
    uint64_t v[4] = {0x736f6d6570736575ull ^ k0, 0x646f72616e646f6dull ^ k1 ^ 0xee, 0x6c7967656e657261ull ^ k0,
                     0x7465646279746573ull ^ k1};
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = get_le64(p + i);
        v[3] ^= m;
        sip_rounds(v, 2);
        v[0] ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = whole; i < len; i++)
        last |= (uint64_t)p[i] << (8 * (i - whole));
    v[3] ^= last;
    sip_rounds(v, 2);
    v[0] ^= last;
    v[2] ^= 0xee;
    sip_rounds(v, 4);
    out[0] = v[0] ^ v[1] ^ v[2] ^ v[3];
    v[1] ^= 0xdd;
    sip_rounds(v, 4);
    out[1] = v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---- the table file ---- */

static void header_for(file_header_t *h, const uint64_t cells[TABLES])
{
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, FILE_MAGIC, sizeof(FILE_MAGIC));
    h->version = FILE_VERSION;
    h->cell_size = sizeof(cell_t);
    h->window = RATELIMIT_WINDOW;
    for (int t = 0; t < TABLES; t++)
        h->cells[t] = cells[t];
}

static size_t file_len(const uint64_t cells[TABLES])
{
    return HEADER_SIZE + (size_t)(cells[PRINCIPALS] + cells[ADDRESSES]) * sizeof(cell_t);
}

/* Sizes an empty file and writes its header with a new hash key (the cells are the file's zeros: empty). */
static int format(int fd, const char *path, const uint64_t cells[TABLES], aly_err_t *err)
{
    file_header_t h;
    header_for(&h, cells);
    if (getrandom(h.hash_key, sizeof(h.hash_key), 0) != (ssize_t)sizeof(h.hash_key))
        return aly_errf(err, "%s: no random bytes for the hash key: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)file_len(cells)) != 0 || pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || fdatasync(fd) != 0)
        return aly_errf(err, "%s: %s", path, strerror(errno));
    return 0;
}

/* Does the open file hold a table of this version and geometry? */
static int usable(int fd, off_t size, const uint64_t cells[TABLES])
{
    file_header_t want, have;
    header_for(&want, cells);
    if (size != (off_t)file_len(cells) || pread(fd, &have, sizeof(have), 0) != (ssize_t)sizeof(have))
        return 0;
    return memcmp(have.magic, want.magic, sizeof(want.magic)) == 0 && have.version == want.version &&
           have.cell_size == want.cell_size && have.window == want.window && have.cells[PRINCIPALS] == cells[PRINCIPALS] &&
           have.cells[ADDRESSES] == cells[ADDRESSES];
}

/* A fresh table takes the name; whoever still maps the old one keeps it until they reopen. */
static int replace(const char *path, const uint64_t cells[TABLES], aly_err_t *err)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new.%ld", path, (long)getpid()) >= sizeof(tmp))
        return aly_errf(err, "%s: path too long", path);
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0)
        return aly_errf(err, "%s: %s", tmp, strerror(errno));
    int rc = format(fd, tmp, cells, err);
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = aly_errf(err, "rename %s: %s", tmp, strerror(errno));
    if (rc != 0)
        unlink(tmp);
    return rc;
}

/*
 * Opens, creates or replaces the file and maps it.  The flock serialises only
 * this: two processes starting together must not both format one file, and a
 * process that waited must see that the name now points to another file.
 */
static int table_open(ratelimit_t *rl, const char *path, const uint64_t cells[TABLES], aly_err_t *err)
{
    size_t len = file_len(cells);
    for (int attempt = 0; attempt < 8; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0)
            return aly_errf(err, "%s: %s", path, strerror(errno));
        struct stat fs, ps;
        if (flock(fd, LOCK_EX) != 0 || fstat(fd, &fs) != 0) {
            aly_errf(err, "%s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (stat(path, &ps) != 0 || ps.st_ino != fs.st_ino || ps.st_dev != fs.st_dev) {
            close(fd); /* replaced while we waited for the lock: open the new one */
            continue;
        }
        int rc = 0;
        if (fs.st_size == 0)
            rc = format(fd, path, cells, err);
        else if (!usable(fd, fs.st_size, cells)) {
            rc = replace(path, cells, err);
            close(fd); /* nothing maps it: this drops the lock */
            if (rc != 0)
                return -1;
            continue;
        }
        void *map = rc == 0 ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
        if (rc == 0 && map == MAP_FAILED)
            rc = aly_errf(err, "mmap %s: %s", path, strerror(errno));
        flock(fd, LOCK_UN); /* the mapping holds the open file, and with it the lock, until unmapped */
        close(fd);
        if (rc != 0)
            return -1;
        rl->map = map;
        rl->map_len = len;
        return 0;
    }
    return aly_errf(err, "%s: replaced again and again while opening", path);
}

/* The directory of the volatile environment, which store.h does not name: LMDB knows it. */
static int volatile_dir(store_t *st, char *buf, size_t len, aly_err_t *err)
{
    store_txn_t t;
    const char *dir = NULL;
    if (store_begin(st, STORE_VOLATILE, &t, err) != 0)
        return -1;
    int rc = mdb_env_get_path(mdb_txn_env((MDB_txn *)t.txn), &dir);
    if (rc == 0 && (size_t)snprintf(buf, len, "%s", dir) >= len)
        rc = ENAMETOOLONG;
    store_abort(&t);
    return rc == 0 ? 0 : aly_errf(err, "volatile directory: %s", mdb_strerror(rc));
}

ratelimit_t *ratelimit_new(store_t *st, size_t max_addresses, aly_err_t *err)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (volatile_dir(st, dir, sizeof(dir), err) != 0)
        return NULL;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, RATELIMIT_FILE) >= sizeof(path)) {
        aly_errf(err, "%s: path too long", dir);
        return NULL;
    }
    ratelimit_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        aly_errf(err, "out of memory");
        return NULL;
    }
    uint64_t cells[TABLES] = {RATELIMIT_PRINCIPAL_CELLS, max_addresses > 0 ? max_addresses : 1};
    if (table_open(rl, path, cells, err) != 0) {
        free(rl);
        return NULL;
    }
    rl->st = st;
    rl->hdr = rl->map;
    rl->k0 = rl->hdr->hash_key[0];
    rl->k1 = rl->hdr->hash_key[1];
    rl->cells[PRINCIPALS] = (cell_t *)((char *)rl->map + HEADER_SIZE);
    rl->cells[ADDRESSES] = rl->cells[PRINCIPALS] + cells[PRINCIPALS];
    for (int t = 0; t < TABLES; t++) {
        rl->n[t] = cells[t];
        rl->window[t] = cells[t] < RATELIMIT_WINDOW ? (unsigned)cells[t] : RATELIMIT_WINDOW;
    }
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    munmap(rl->map, rl->map_len);
    free(rl);
}

store_t *ratelimit_store(const ratelimit_t *rl)
{
    return rl->st;
}

/* ---- cells ---- */

static void key_of(const ratelimit_t *rl, int table, const void *data, size_t len, cell_key_t *k)
{
    uint64_t d[2];
    siphash128(rl->k0, rl->k1, data, len, d);
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

/*
 * Is c a copy of k that counts: live, or pending under a claim that is not
 * abandoned?  Returns HEAD_LIVE, HEAD_PENDING, or HEAD_EMPTY for anything
 * else (a pending head without a claim can only come from a torn page).
 */
static uint64_t copy_of(cell_t *c, const cell_key_t *k)
{
    uint64_t h = atomic_load(&c->head), state = h & HEAD_STATE;
    if ((h & ~HEAD_STATE) != k->head || (state != HEAD_LIVE && state != HEAD_PENDING) || atomic_load(&c->lo) != k->lo)
        return HEAD_EMPTY;
    uint64_t t = atomic_load(&c->tat);
    if (t & BUSY)
        return abandoned(t) ? HEAD_EMPTY : state;
    return state == HEAD_LIVE ? HEAD_LIVE : HEAD_EMPTY;
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

void (*ratelimit_test_pause)(void);

/*
 * One decision on the live cell c of k: the compare-and-swap loop.  AGAIN when
 * c stopped being k's (evicted, or abandoned mid-claim): look it up again.
 */
static int step(cell_t *c, const cell_key_t *k, const aly_rate_t *rate, uint64_t now, int charge, ratelimit_decision_t *d)
{
    uint64_t cur = atomic_load(&c->tat);
    for (;;) {
        if (cur & BUSY) {
            if (abandoned(cur))
                return AGAIN;
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

/* Gives a claimed cell back, empty (an evicted owner's state was idle or is lost either way). */
static void withdraw(cell_t *c, uint64_t mark)
{
    atomic_store(&c->head, HEAD_EMPTY);
    atomic_store(&c->lo, 0);
    atomic_compare_exchange_strong(&c->tat, &mark, 0);
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
        if (copy_of(c, k) != HEAD_EMPTY)
            return AGAIN; /* k is live here, or someone is inserting it: wait for that */
        uint64_t h = atomic_load(&c->head), t = atomic_load(&c->tat);
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
    if (ratelimit_test_pause != NULL)
        ratelimit_test_pause();
    uint64_t mark = busy_mark();
    if (!atomic_compare_exchange_strong(&pick->tat, &pick_tat, mark))
        return AGAIN;
    if (atomic_load(&pick->head) != pick_head) {
        atomic_store(&pick->tat, pick_tat); /* it changed hands and back meanwhile: leave it as it was */
        return AGAIN;
    }
    if (rank == VICTIM)
        atomic_fetch_add(&rl->hdr->evictions[table], 1);
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
        uint64_t state;
        while ((state = copy_of(c, k)) != HEAD_EMPTY) {
            if (state == HEAD_LIVE || i < pick_i) {
                withdraw(pick, mark);
                return AGAIN;
            }
            sched_yield();
        }
    }
    uint64_t tat = 0, pending = k->head | HEAD_PENDING;
    ratelimit_gcra(&tat, rate, now, 1, d); /* a new cell: a full bucket, always admitted */
    if (!atomic_compare_exchange_strong(&pick->head, &pending, k->head | HEAD_LIVE))
        return AGAIN; /* we stalled past STALE_MS and someone took the cell */
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

int ratelimit_address_check(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                            ratelimit_decision_t *d, aly_err_t *err)
{
    if (a->len == 0) {
        uint64_t tat = 0;
        ratelimit_gcra(&tat, rate, now_ns, 0, d);
        return 0;
    }
    return decide(rl, ADDRESSES, a->key, a->len, rate, now_ns, 0, d, err);
}

int ratelimit_address_failure(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                              ratelimit_decision_t *d, aly_err_t *err)
{
    if (a->len == 0) {
        uint64_t tat = 0;
        ratelimit_gcra(&tat, rate, now_ns, 1, d);
        return 0;
    }
    return decide(rl, ADDRESSES, a->key, a->len, rate, now_ns, 1, d, err);
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
    snprintf(buf, len, "\"%s\";r=%llu;t=%llu", name, (unsigned long long)d->remaining, (unsigned long long)d->reset_s);
}

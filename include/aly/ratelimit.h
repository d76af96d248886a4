/*
 * Rate limits: a budget per principal, and a budget of failed authentications
 * per client address (brute force), both shared by every worker because their
 * state lives in one file every process maps: data_dir/volatile/RATELIMIT_FILE.
 *
 * The algorithm is GCRA, the "generic cell rate algorithm": a policy
 * "N/period burst=B" has an emission interval T = period / N and a capacity of
 * B requests.  Each key holds one theoretical arrival time (TAT); a request at
 * time now is admitted iff max(TAT, now) + T <= now + B*T, and admitting it
 * moves TAT to max(TAT, now) + T.  That is a token bucket of capacity B
 * refilled at N per period, computed without a timer: in any interval of
 * length t at most B + N*t/period requests are admitted, whichever workers
 * serve them, and there is no double burst at window edges.  A refusal
 * changes nothing, so Retry-After is exact: after it, one request passes.
 *
 * Where the cells live, and why there.  A file under the volatile directory,
 * mapped MAP_SHARED by each process that decides (ratelimit_new: every worker
 * after fork, tests, benchmarks), rather than a region the master maps before
 * forking: a worker's death, a respawn, a reload and a restart of the whole
 * daemon keep every budget (the old LMDB cells did too), the master needs no
 * part in it, and any process of the same user can open it.  Nothing is
 * synced: the kernel writes pages back when it likes, so after a crash of the
 * machine cells may be stale or torn; every cell value is either accepted as
 * is (a TAT is clamped below) or recognised as abandoned, so the worst a torn
 * page does is refill or spend some budgets once.
 *
 * File layout (host byte order; a file of another version or geometry is
 * replaced by a fresh one under the same name, atomically by rename, and
 * processes still mapping the old one go on using it until they reopen):
 *   bytes 0..4095      header: magic "alyrate", version, cell size, window,
 *                      cells per table, the 128-bit hash key (random at
 *                      creation), eviction counters
 *   then               RATELIMIT_PRINCIPAL_CELLS principal cells, then
 *                      max_addresses address cells, 32 bytes each:
 *                      head (62 bits of the key's digest + a state), the other
 *                      64 bits of the digest, the TAT, and a spare word
 * A key (principal id, or an address key) is hashed with SipHash-2-4 into 128
 * bits under the file's random key, so two keys share a cell only with
 * probability 2^-126, and an attacker choosing addresses cannot aim at a
 * victim's cell.  A key may sit in any of the RATELIMIT_WINDOW cells after
 * its home cell (open addressing, wrapping at the end of its table).
 *
 * No lock.  A decision on an existing cell is one compare-and-swap of the
 * 64-bit TAT (C11 atomics): read it, compute GCRA, swap it in if nobody
 * changed it meanwhile, else compute again.  A cell changes hands only while
 * its TAT word holds a "busy" mark (a flag, the claimer's pid and a
 * CLOCK_MONOTONIC millisecond stamp) put there by compare-and-swap, so no
 * decision can land on a cell that changed owner.  Inserting a key claims a
 * cell that way, publishes the key as pending, and looks at the rest of the
 * window: a live copy of the same key, or a pending copy nearer the home
 * cell, wins and the newcomer withdraws; a pending copy further away is
 * waited for.  Two processes inserting one key at once therefore end with a
 * single cell, and no budget is ever counted twice.  A busy mark older than
 * one second belongs to a process that died (or stalled) mid-insert: the cell
 * is then free for anyone to take.
 *
 * Bounded size, and the eviction rule.  Both tables have a fixed size.  A
 * cell whose TAT is past is the same as no cell (the bucket is full), so an
 * insert takes, in this order, an empty cell, an abandoned one, an idle one
 * (TAT past: no state lost, exactness kept), and only when the whole window
 * holds live budgets the one with the earliest TAT (the one closest to a full
 * budget, whose loss gives its owner the least); such evictions are counted.
 * Principals and addresses have separate tables, so a flood of addresses
 * never evicts a principal.  The address table holds max_addresses cells: an
 * attacker with more addresses than that (a large IPv6 allocation) can get a
 * fresh budget per address; nothing per-address stops that.
 *
 * Time is the wall clock (every worker and a restart agree on it).  A TAT more
 * than B*T ahead of now can only come from the clock stepping back, a policy
 * shrinking or a torn page; it is clamped to now + B*T, so none of them locks
 * anyone out for longer than one emission interval.
 *
 * Errors: functions that touch the table return 0, or -1 with err filled.
 * The HTTP layer admits a request whose decision failed (see README "Rate
 * limits").
 */
#ifndef ALY_RATELIMIT_H
#define ALY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "aly/common.h"
#include "aly/config.h"
#include "aly/store.h"

#define RATELIMIT_FILE "ratelimit.cells" /* in the volatile directory of the store */
#define RATELIMIT_MAX_ADDRESSES 100000   /* address cells (alyd's table; tests use less) */
#define RATELIMIT_PRINCIPAL_CELLS 65536  /* principal cells: principals with a live budget at once */
#define RATELIMIT_WINDOW 8               /* cells a key may occupy: probed on lookup, sampled to evict */

/* A 429 carries the JSON-RPC error RPC_RATE_LIMITED (aly/rpc.h). */

/* Names of the two policies in RateLimit-Policy / RateLimit (draft-ietf-httpapi-ratelimit-headers-11). */
#define RATELIMIT_POLICY_PRINCIPAL "principal"
#define RATELIMIT_POLICY_ADDRESS "auth-failures"

typedef struct ratelimit ratelimit_t;

typedef struct ratelimit_decision {
    int allowed;            /* 1: admitted (and charged when the call charges); 0: refused */
    uint64_t remaining;     /* whole requests admissible right now (after this one, when charged) */
    uint64_t reset_s;       /* whole seconds until remaining grows by one (>= 1); = retry_after_s when refused */
    uint64_t retry_after_s; /* refused: whole seconds until one request is admitted (>= 1); 0 when allowed */
} ratelimit_decision_t;

/*
 * A client address as the failure limit keys it: IPv4 by address, IPv6 by
 * /64 (one subscriber's usual allocation), IPv4-mapped IPv6 as IPv4.  len 0:
 * no address we can key (unix socket): not limited.
 */
typedef struct ratelimit_addr {
    unsigned char key[12]; /* "a:" + family byte + 4 or 8 address bytes */
    size_t len;
} ratelimit_addr_t;

/*
 * This process's mapping of the table file in st's volatile directory,
 * created (mode 0640, like the LMDB files) when missing.  Call it after
 * fork: a mapping inherited across fork works, but the store it names must
 * not be used by the child.
 * max_addresses is the size of the address table (RATELIMIT_MAX_ADDRESSES in
 * alyd; tests use less; at least 1); every process sharing the file must pass
 * the same value, or each new one replaces the file.  The store is only used
 * to find the directory and is returned by ratelimit_store.  NULL with err on
 * failure (directory not writable, mmap failed).
 */
ratelimit_t *ratelimit_new(store_t *st, size_t max_addresses, aly_err_t *err);
void ratelimit_free(ratelimit_t *rl);
store_t *ratelimit_store(const ratelimit_t *rl);

/* Wall clock in nanoseconds since the epoch: the time every decision takes. */
uint64_t ratelimit_now_ns(void);

/*
 * One GCRA step on a cell, no store: *tat is the stored TAT (0 for none).  When
 * charge is set and the request is admitted, *tat becomes the TAT to store;
 * otherwise *tat is left as the clamped current value.  Fills d; returns d->allowed.
 */
int ratelimit_gcra(uint64_t *tat, const aly_rate_t *rate, uint64_t now_ns, int charge, ratelimit_decision_t *d);

/* The decision for one request of principal id (any non-empty string), charged when admitted. */
int ratelimit_principal(ratelimit_t *rl, const char *id, const aly_rate_t *rate, uint64_t now_ns, ratelimit_decision_t *d,
                        aly_err_t *err);

/* The key of a peer address (sa as from getpeername; NULL or an unknown family gives len 0). */
void ratelimit_address(const struct sockaddr *sa, ratelimit_addr_t *out);

/*
 * Would one more failed authentication from a be refused?  Reads only:
 * d->allowed 0 means the address is over its failure budget and the request
 * must be refused before any credential work.
 */
int ratelimit_address_check(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                            ratelimit_decision_t *d, aly_err_t *err);

/* Charges one failed authentication to a (may evict another address's cell, see above). */
int ratelimit_address_failure(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                              ratelimit_decision_t *d, aly_err_t *err);

/*
 * What the two tables hold at now_ns (tests, alyctl): a scan of every cell,
 * racing with decisions, so a snapshot only when nothing else decides.
 */
typedef struct ratelimit_counts {
    size_t principals, addresses;                    /* cells holding state: TAT after now_ns */
    size_t principal_used, address_used;             /* cells taken, idle ones included */
    size_t principal_capacity, address_capacity;     /* cells in each table */
    uint64_t principal_evictions, address_evictions; /* live budgets dropped for want of room, since the file was made */
    size_t duplicates;                               /* live keys held by two cells: always 0 unless the file is damaged */
} ratelimit_counts_t;
int ratelimit_count(ratelimit_t *rl, uint64_t now_ns, ratelimit_counts_t *out, aly_err_t *err);

/*
 * Tests only (every entry NULL otherwise): points in an insert where a test
 * may stop one process, to force an interleaving of two.
 */
enum ratelimit_test_point {
    RL_AT_CHOSEN,   /* a cell chosen, not yet claimed */
    RL_AT_COPY,     /* a cell's head read and found to name the key, its TAT not yet read */
    RL_AT_RANK,     /* a cell read and found not to be the key's, before it is ranked */
    RL_AT_CLAIMED,  /* the cell claimed, the key not yet written there */
    RL_AT_WITHDRAW, /* another copy of the key met: about to give the cell back */
    RL_AT_LIVE,     /* every check done: just before the copy goes live */
    RL_TEST_POINTS
};
extern void (*ratelimit_test_hook[RL_TEST_POINTS])(void);

/*
 * Header values (draft-ietf-httpapi-ratelimit-headers-11, Structured Fields):
 *   RateLimit-Policy: "principal";q=600;w=60;aly-burst=60
 *   RateLimit: "principal";r=59;t=1
 * q/w are the sustained rate N per period; the bucket capacity B rides in
 * the vendor parameter aly-burst (the draft asks for vendor-prefixed extras).
 */
void ratelimit_policy_header(const char *name, const aly_rate_t *rate, char *buf, size_t len);
void ratelimit_header(const char *name, const ratelimit_decision_t *d, char *buf, size_t len);

#endif

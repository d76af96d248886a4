/*
 * Rate limits: a budget per principal, and a budget of failed
 * authentications per client address (brute force), both shared by every
 * worker because their state lives in the volatile LMDB environment (VDB_RATE,
 * opened MDB_NOSYNC: a crash may lose the last few decisions, never more).
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
 * Keys of VDB_RATE:
 *   "p:" principal id          -> cell (TAT) of a principal
 *   "a:" 4 (IPv4) or 6 (IPv6 /64) + address bytes -> cell of a client address
 *   "n:addresses"              -> number of address cells (uint64, little endian)
 * A cell is 9 bytes: version 1, then the TAT in nanoseconds since the epoch
 * (uint64, little endian).  A cell whose TAT is past is the same as no cell,
 * so idle cells are deleted by an amortised sweep: every RATELIMIT_SWEEP_EVERY
 * decisions of a process, RATELIMIT_SWEEP_BATCH cells after that
 * process's cursor are examined in the same transaction.  Address cells are
 * capped (an attacker may use many addresses): inserting one over the cap
 * first evicts, from a sample of RATELIMIT_EVICT_SAMPLE address cells, the
 * expired ones or else the one with the earliest TAT (the one closest to a
 * full budget, whose loss gives an attacker the least).
 *
 * Time is the wall clock (every worker and a restart agree on it).  A TAT more
 * than B*T ahead of now can only come from the clock stepping back or a
 * policy shrinking; it is clamped to now + B*T, so neither locks anyone out
 * for longer than one emission interval.
 *
 * Errors: functions that touch the store return 0, or -1 with err filled.  The
 * HTTP layer admits a request whose decision failed (see README "Rate limits").
 */
#ifndef ALY_RATELIMIT_H
#define ALY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "aly/common.h"
#include "aly/config.h"
#include "aly/store.h"

#define RATELIMIT_MAX_ADDRESSES 100000 /* address cells kept at most */
#define RATELIMIT_SWEEP_EVERY 16       /* write decisions between two sweeps, per process */
#define RATELIMIT_SWEEP_BATCH 32       /* cells a sweep examines */
#define RATELIMIT_EVICT_SAMPLE 8       /* address cells examined to evict one */

/* The JSON-RPC error code of a 429 (implementation-defined range -32000..-32099; "429"). */
#define RATELIMIT_RPC_CODE (-32029)

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
 * Per-process limiter on an open store: holds the sweep cursors.  max_addresses
 * caps the address cells (RATELIMIT_MAX_ADDRESSES in alyd; tests use less).
 * NULL with err on failure.
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

/* The decision for one request of principal id: one write transaction, charged when admitted. */
int ratelimit_principal(ratelimit_t *rl, const char *id, const aly_rate_t *rate, uint64_t now_ns, ratelimit_decision_t *d,
                        aly_err_t *err);

/* The key of a peer address (sa as from getpeername; NULL or an unknown family gives len 0). */
void ratelimit_address(const struct sockaddr *sa, ratelimit_addr_t *out);

/*
 * Would one more failed authentication from a be refused?  A read
 * transaction only: d->allowed 0 means the address is over its failure
 * budget and the request must be refused before any credential work.
 */
int ratelimit_address_check(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                            ratelimit_decision_t *d, aly_err_t *err);

/* Charges one failed authentication to a (one write transaction; may evict another address cell). */
int ratelimit_address_failure(ratelimit_t *rl, const ratelimit_addr_t *a, const aly_rate_t *rate, uint64_t now_ns,
                              ratelimit_decision_t *d, aly_err_t *err);

/* Cells now in VDB_RATE, by kind, and the address counter (tests, alyctl). */
typedef struct ratelimit_counts {
    size_t principals;
    size_t addresses;
    uint64_t address_counter; /* the "n:addresses" record; equals addresses when consistent */
} ratelimit_counts_t;
int ratelimit_count(ratelimit_t *rl, ratelimit_counts_t *out, aly_err_t *err);

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

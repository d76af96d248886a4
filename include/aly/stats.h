/*
 * Counters shared by the master and every worker, for /metrics.
 *
 * The master maps one anonymous shared region before forking; each worker owns
 * one slot and is its only writer, the master owns the process-wide fields.
 * Readers sum the slots with relaxed atomic loads: a scrape may see a counter
 * a few requests old, never a torn value.  Slots outlive workers so totals
 * survive a respawn; gauges are reset when a slot is handed to a new worker.
 */
#ifndef ALY_STATS_H
#define ALY_STATS_H

#include <stdint.h>
#include <sys/types.h>

#include "aly/config.h"

/* Status codes counted individually; anything else falls into "other". */
#define STATS_STATUS_CODES 200, 202, 204, 400, 401, 403, 404, 405, 406, 413, 415, 421, 429, 500, 501, 503
#define STATS_N_STATUS 17
#define STATS_N_SLOTS (ALY_MAX_WORKERS * 2) /* old and new generation during a reload */

/* Rate-limit decisions (aly/ratelimit.h), by result; "error": the store failed and the request was admitted. */
enum { STATS_RL_ALLOWED, STATS_RL_REFUSED, STATS_RL_ERROR, STATS_N_RL };

/* Connections shut for abuse (aly/http.h), by reason. */
enum { STATS_CUT_RESETS, STATS_CUT_BODY, STATS_CUT_DEADLINE, STATS_N_CUT };
/* Connections closed at accept (aly/guard.h), by reason. */
enum { STATS_REFUSE_PER_ADDRESS, STATS_REFUSE_STRUCK_OUT, STATS_N_REFUSE };
/* store_count_into()'s counters: STORE_RT_N round-trip purposes and the failures. */
#define STATS_N_PG 4
/* volatile_redis_count_into()'s counters: VOLATILE_REDIS_N of them. */
#define STATS_N_REDIS 3

typedef struct stats_slot {
    pid_t pid; /* 0 when free */
    uint64_t requests[STATS_N_STATUS];
    uint64_t in_flight;
    uint64_t connections;
    uint64_t accepting;                    /* 1 while the worker takes new connections (not full, not draining) */
    uint64_t ratelimit[STATS_N_RL];        /* per-principal decisions; errors of the address check count as errors too */
    uint64_t credential_checks;            /* credentials handed to auth_authenticate (HMAC or JWT, key lookup) */
    uint64_t auth_failures;                /* failed authentications charged to a client address */
    uint64_t auth_refused;                 /* requests refused (429) before any credential work: address over auth_failure_limit */
    uint64_t conn_cuts[STATS_N_CUT];       /* connections shut: reset budget spent, body in flight, deadline */
    uint64_t conn_refused[STATS_N_REFUSE]; /* connections closed at accept */
    uint64_t address_strikes;              /* strikes recorded against addresses */
    uint64_t address_bans;                 /* addresses that struck out */
    uint64_t pg[STATS_N_PG];               /* cluster mode: PostgreSQL round trips by purpose, then failures (aly/store.h) */
    uint64_t redis[STATS_N_REDIS];         /* cluster mode: Redis round trips, commands, outages (aly/volatile_redis.h) */
    uint64_t accept_alone;                 /* times the worker stopped leaving connections to its peers (worker.c) */
} stats_slot_t;

typedef struct stats_shared {
    uint64_t started_wall_ms;
    uint64_t worker_restarts;
    uint64_t workers;
    stats_slot_t slots[STATS_N_SLOTS];
} stats_shared_t;

/* Maps the shared region (master, before any fork).  NULL on failure. */
stats_shared_t *stats_create(void);

/* Claims a free slot for pid; returns its index or -1.  Master only. */
int stats_claim_slot(stats_shared_t *s, pid_t pid);
void stats_release_slot(stats_shared_t *s, pid_t pid);

/* Index of a status code in requests[]. */
unsigned stats_status_index(int status);

static inline void stats_add(uint64_t *counter, int64_t delta)
{
    __atomic_add_fetch(counter, (uint64_t)delta, __ATOMIC_RELAXED);
}

/* Prometheus text exposition of everything, into a malloc'd buffer (caller frees). */
char *stats_render(const stats_shared_t *s, size_t *len);

#endif

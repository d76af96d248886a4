/*
 * The volatile state on Redis ("volatile redis://host:port/db"): the one
 * connection a worker holds to the Redis server several alyd hosts share,
 * and the few operations the rest of alyd asks of it.  With "volatile lmdb"
 * (the default) none of this runs: the volatile LMDB environment and the
 * shared-memory rate-limit table of aly/ratelimit.h do the same work on one
 * host.
 *
 * What lives there (every key "aly:{TAG}:KIND", so Redis Cluster hashes a
 * key by its tag and each principal's, request's or mark's keys shard apart):
 *   aly:{PRINCIPAL}:rl       GCRA cell of a principal (ratelimit_redis.c)
 *   aly:{a:HEX}:af           GCRA cell of failed authentications of an address
 *   aly:{KEYID}:lu           last-used stamp of an API key (ms), no TTL
 *   aly:{REQID}:p / :r / :c  legacy server->client requests: pending (its
 *                            principal), the client's reply, a cancellation
 *   aly:{q:DIGEST}:q         who asked what (-> REQID), to cancel from any host
 *   aly:{s:MAC}:s            a requestState already used (SET NX PX)
 * Every key but the stamps carries a TTL: nothing outlives its use.
 *
 * Waits.  Synchronous hiredis with deadlines: connect and every command wait
 * at most volatile_timeout (redisConnectWithTimeout + redisSetTimeout), and
 * so does the lookup of a host name, made anew for each connection
 * (getaddrinfo_a + gai_suspend; one not answered in time fails the attempt
 * and is taken up by the next, so a slow DNS server never stops the loop for
 * the resolver's own timeouts).  Why
 * not hiredis' asynchronous API on h2o's loop: every caller (the gate, the
 * requestState check, the reply hand-over) runs in the middle of the MCP
 * engine's synchronous path from request to dispatch, which would have to be
 * cut into a continuation at each of them.  The price, measured (README,
 * "Volatile state on Redis"): one round trip per request, tens of
 * microseconds of CPU on the alyd host; a Redis that stops answering costs
 * a worker two deadlines per back-off step, not one per request (see below).
 *
 * Failure.  A command that meets a stale connection (EOF or reset: Redis
 * restarted) or no answer within the deadline is sent once more on a fresh
 * connection, silently (a busy machine's scheduling blip is no outage).  An
 * error after that, or any other (refused, protocol error), drops the
 * connection and marks Redis down.  While down, calls fail at once without
 * touching the network, and a reconnect is tried on use after a back-off
 * (100 ms doubling to 2 s), so recovery needs no restart.  The first failure
 * of an outage is logged once with what the daemon does about it
 * (volatile_failure closed: 503; open: served without rate limits), and the
 * recovery once.  Calls return -1 with err naming redis.
 *
 * One connection per process: volatile_redis_open() makes it the process's
 * (volatile_redis()), because it belongs to the worker like its event loop
 * does, and the modules that use it (gate, MCP hand-over, auth stamps) are
 * reached through layers that have no business carrying it.
 */
#ifndef ALY_VOLATILE_REDIS_H
#define ALY_VOLATILE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "aly/common.h"
#include "aly/config.h"

typedef struct volatile_redis volatile_redis_t;

/* "redis://host[:port][/db]", host a name, IPv4 or [IPv6]; port 6379 and db 0 by default. */
typedef struct volatile_redis_url {
    char host[256];
    unsigned port;
    unsigned db;
} volatile_redis_url_t;
int volatile_redis_parse_url(const char *url, volatile_redis_url_t *out, aly_err_t *err);

/*
 * The process's connection to cfg->volatile_url (which must be a redis://
 * URL), made the one volatile_redis() returns.  Connects at once; a Redis that
 * is down is no error here (the outage is logged and retried on use).  NULL
 * with err only on a bad URL.  volatile_redis_close() frees it.
 */
volatile_redis_t *volatile_redis_open(const aly_config_t *cfg, aly_err_t *err);
void volatile_redis_close(volatile_redis_t *r);

/* The process's connection; NULL with "volatile lmdb". */
volatile_redis_t *volatile_redis(void);

/* 1 when volatile_failure is open: serve without rate limits while Redis is down. */
int volatile_redis_fail_open(const volatile_redis_t *r);

/* Whether the last call reached Redis (0: down since then). */
int volatile_redis_up(const volatile_redis_t *r);

/*
 * Whether Redis serves us (for /healthz): a short-lived SET, not a PING, since
 * a replica, a failed save or a full memory answer PING and refuse writes.
 * 0, or -1 with err.  A reply of those kinds to any call marks Redis down.
 */
int volatile_redis_ping(volatile_redis_t *r, aly_err_t *err);

/* "aly:{tag}:kind" into buf; the length, or -1 when it does not fit. */
int volatile_redis_key(char *buf, size_t len, const char *tag, size_t taglen, const char *kind);

/* SET key val [PX ttl_ms] [NX]: 0 stored, 1 not stored (nx and the key exists), -1 error. ttl_ms 0: no TTL. */
int volatile_redis_set(volatile_redis_t *r, const char *key, const void *val, size_t vlen, uint64_t ttl_ms, int nx, aly_err_t *err);

/*
 * MGET of n keys (n <= 8; Redis Cluster needs them in one slot, i.e. one tag):
 * vals[i] a malloc'd NUL-terminated copy (lens[i] its length) or NULL when
 * absent.  0, or -1 with err (then every vals[i] is NULL).
 */
int volatile_redis_mget(volatile_redis_t *r, const char *const *keys, size_t n, char **vals, size_t *lens, aly_err_t *err);

/*
 * An API key's last-used stamp (aly:{ID}:lu, milliseconds since the epoch, no
 * TTL): stamp writes it (the caller coalesces); last_used reads it, 0 when
 * never written.  0, or -1 with err.
 */
int volatile_redis_stamp(volatile_redis_t *r, const char *id, uint64_t ms, aly_err_t *err);
int volatile_redis_last_used(volatile_redis_t *r, const char *id, uint64_t *ms, aly_err_t *err);

/* DEL key: 0 (deleted or absent), -1 error. */
int volatile_redis_del(volatile_redis_t *r, const char *key, aly_err_t *err);

/*
 * A Lua script run with EVALSHA (its SHA-1 computed once, here), loaded by
 * EVAL on the first NOSCRIPT of a connection.  keys and args are strings.
 * The reply (a hiredis redisReply, freed with freeReplyObject) or NULL with
 * err; an error reply from the script is an error too.
 */
typedef struct volatile_redis_script {
    const char *source;
    char sha1[41];
} volatile_redis_script_t;
struct redisReply *volatile_redis_eval(volatile_redis_t *r, volatile_redis_script_t *s, size_t nkeys, const char *const *keys,
                                       size_t nargs, const char *const *args, aly_err_t *err);

/*
 * Up to 4 script calls in one round trip (pipelined; Redis runs them in
 * order, each atomically, and they may hash to different slots).  A call
 * whose script is NULL is a plain GET of its one key (a read that needs no
 * script).  replies[i] is call i's reply; 0, or -1 with err and no reply kept.
 */
typedef struct volatile_redis_call {
    volatile_redis_script_t *script;
    size_t nkeys;
    const char *const *keys;
    size_t nargs;
    const char *const *args;
} volatile_redis_call_t;
int volatile_redis_eval_batch(volatile_redis_t *r, const volatile_redis_call_t *calls, size_t n, struct redisReply **replies,
                              aly_err_t *err);

/* Round trips made by this process since it started (the cost model's counter). */
uint64_t volatile_redis_round_trips(void);

/*
 * Where r also counts, from now on (the worker's stats slot, for /metrics):
 * counters[VOLATILE_REDIS_RT] round trips, [VOLATILE_REDIS_COMMANDS] commands
 * sent (a pipelined round trip carries several), [VOLATILE_REDIS_OUTAGES]
 * outages begun.  Relaxed atomic adds; counters must outlive r.
 */
enum { VOLATILE_REDIS_RT, VOLATILE_REDIS_COMMANDS, VOLATILE_REDIS_OUTAGES, VOLATILE_REDIS_N };
void volatile_redis_count_into(volatile_redis_t *r, uint64_t *counters);

#endif

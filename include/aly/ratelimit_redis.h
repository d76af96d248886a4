/*
 * Rate limits on Redis ("volatile redis://..."): the same GCRA as
 * aly/ratelimit.h, one cell per principal ("aly:{PRINCIPAL}:rl") and per
 * client address ("aly:{a:HEX}:af") in the Redis server every host shares,
 * so the budget is one across hosts.  A decision is one round trip: one Lua
 * script (EVALSHA) reads the cell, applies GCRA and writes it back, atomically
 * because Redis runs a script alone.
 *
 * The arithmetic is aly/ratelimit.h's, in integer microseconds on Redis'
 * clock (TIME), so hosts whose clocks disagree still share one timeline:
 * T = ceil(period / N) and the capacity B*T are computed here from the
 * policy (ratelimit_redis_params) and passed to the script, which does
 * only the comparison and the move of the TAT:
 *   tat = clamp(stored or 0, now, now + B*T); admitted iff tat + T <= now + B*T;
 *   admitted and charged: store tat + T, expiring when it is past (PX
 *   ceil((tat + T - now) / 1000)), so an idle cell, a full bucket, takes no
 *   memory.  A refusal writes nothing, so Retry-After is exact.
 * The script answers {admitted, tat, now}; ratelimit_redis_decision turns
 * that into the remaining count and the Retry-After/reset seconds exactly as
 * ratelimit_gcra does.
 * A check that charges nothing (an address's failure budget before the
 * credential is looked at) is a plain GET of the cell and the same
 * arithmetic on the host's own clock: no script runs, and the hosts' clocks
 * agree to milliseconds where emission intervals are seconds.
 *
 * Round trips.  The failure budget of the client address must be checked
 * before any credential work, and the principal is known only after it, so
 * the plain order costs two round trips per request.  To pay one, a worker
 * remembers the addresses it saw fail recently (the suspects, for the
 * failure policy's capacity): a suspect address is checked first, alone, as
 * on one host; any other request is authenticated first and then sends the
 * address check and the principal's charge in one pipelined round trip
 * (ratelimit_redis_admit).  An address over its budget that this worker has
 * not seen fail thus costs one credential check per worker and capacity
 * window, and its answer is still the 429; every failure is charged to the
 * shared cell, so the budget stays exact across hosts.
 *
 * Errors: -1 with err when Redis cannot be reached or answers an error; the
 * gate then applies volatile_failure.
 */
#ifndef ALY_RATELIMIT_REDIS_H
#define ALY_RATELIMIT_REDIS_H

#include <stdint.h>

#include "aly/config.h"
#include "aly/ratelimit.h"
#include "aly/volatile_redis.h"

/* The key of a principal's cell into buf: its length, or -1 when the id is empty or does not fit. */
int ratelimit_redis_principal_key(const char *id, char *buf, size_t len);

/* T and B*T in microseconds (T >= 1; B*T saturated at 2^50 us, 35 years: exact in the script's doubles). */
void ratelimit_redis_params(const aly_rate_t *rate, uint64_t *t_us, uint64_t *cap_us);

/* The decision from the script's answer (admitted, the TAT after it, Redis' now), all in microseconds. */
void ratelimit_redis_decision(int admitted, uint64_t tat_us, uint64_t now_us, const aly_rate_t *rate, ratelimit_decision_t *d);

/* One request of principal id, charged when admitted. */
int ratelimit_redis_principal(volatile_redis_t *r, const char *id, const aly_rate_t *rate, ratelimit_decision_t *d, aly_err_t *err);

/* The failure budget of an address: check (reads only) and failure (charges one); a of len 0 is never limited. */
int ratelimit_redis_address_check(volatile_redis_t *r, const ratelimit_addr_t *a, const aly_rate_t *rate, ratelimit_decision_t *d,
                                  aly_err_t *err);
int ratelimit_redis_address_failure(volatile_redis_t *r, const ratelimit_addr_t *a, const aly_rate_t *rate, ratelimit_decision_t *d,
                                    aly_err_t *err);

/*
 * The address check and the principal's charge in one round trip: *ad the
 * address's failure budget (read only), *d the principal's decision (charged
 * when admitted, whatever *ad says: the caller refuses the request when
 * ad->allowed is 0, and the principal is then one request poorer).
 */
int ratelimit_redis_admit(volatile_redis_t *r, const ratelimit_addr_t *a, const aly_rate_t *fail_rate, const char *id,
                          const aly_rate_t *rate, ratelimit_decision_t *ad, ratelimit_decision_t *d, aly_err_t *err);

/* Did this process see a from a failed authentication within the failure policy's capacity?  Mark it after one. */
int ratelimit_redis_suspect(const ratelimit_addr_t *a, uint64_t now_ms);
void ratelimit_redis_suspect_mark(const ratelimit_addr_t *a, const aly_rate_t *fail_rate, uint64_t now_ms);

#endif

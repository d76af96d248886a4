/*
 * The per-address guard of one worker: who may connect, and who has been cut
 * too often to be let in again.
 *
 * Each worker keeps a small fixed table of peer addresses (IPv4 addresses,
 * IPv6 /64 prefixes: one host owns a whole /64) with the number of open
 * connections and recent strikes of each.  A strike is a connection cut for
 * abuse (aly/http.h: reset budget spent, body bytes piling up, a request not
 * completed in time).  At accept the guard refuses an address that already
 * holds max_connections_per_address connections on this worker, or that
 * collected address_strikes strikes within strike_window (refused until
 * strike_window has passed since its last strike).
 *
 * The table is per worker, so limits count per worker: an address spread over
 * N workers may hold N times the connections, and is refused by each worker
 * once it struck out there.  The table has GUARD_ENTRIES rows in buckets of
 * GUARD_WAYS; an address whose bucket is full of live rows is admitted
 * untracked (the per-worker max_connections still bounds it) rather than
 * letting a flood of addresses lock everyone out.  Rows are recycled once an
 * address has no connection, no ban and no strike within the window.
 */
#ifndef ALY_GUARD_H
#define ALY_GUARD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "aly/config.h"

#define GUARD_ENTRIES 4096
#define GUARD_WAYS 8

typedef struct guard_addr {
    uint8_t key[17];  /* family byte, then the address (IPv4) or the /64 prefix (IPv6); all zero when free */
    unsigned conns;   /* open connections on this worker */
    unsigned strikes; /* since strikes_since_ms */
    uint64_t strikes_since_ms;
    uint64_t banned_until_ms;
    size_t pending_body; /* scratch for the HTTP layer's sweep: body bytes in flight over the address's connections */
} guard_addr_t;

typedef struct guard guard_t;

typedef enum {
    GUARD_ADMIT,
    GUARD_TOO_MANY_CONNECTIONS, /* max_connections_per_address reached */
    GUARD_STRUCK_OUT,           /* address_strikes within strike_window */
} guard_verdict_t;

/* A guard with an empty table; NULL when out of memory.  cfg must outlive it. */
guard_t *guard_new(const aly_config_t *cfg);
void guard_free(guard_t *g);

/*
 * Decides on a new connection from sa at now (monotonic ms).  On GUARD_ADMIT
 * *addr is the address's row with the connection counted (NULL when the
 * address is untracked or not IP: then nothing is counted); release it with
 * guard_release when the connection closes.  Otherwise nothing is counted
 * and the caller closes the socket.
 */
guard_verdict_t guard_accept(guard_t *g, const struct sockaddr *sa, uint64_t now, guard_addr_t **addr);

/* The connection counted by guard_accept closed; addr may be NULL. */
void guard_release(guard_addr_t *addr);

/*
 * Records a strike against addr (NULL: nothing).  Returns 1 when this strike
 * bans the address (the caller says so once in the error log), else 0.
 */
int guard_strike(guard_t *g, guard_addr_t *addr, uint64_t now);

/* The address of a row as text ("192.0.2.7", "2001:db8::/64") into buf (>= 64 bytes). */
void guard_format(const guard_addr_t *addr, char *buf, size_t len);

#endif

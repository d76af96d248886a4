/*
 * Looking a host name up without blocking the event loop for the resolver's
 * own timeouts (src/resolve.c), for the clients that connect with a deadline:
 * Redis (volatile_redis.c) and PostgreSQL (store_pg.c).
 *
 * A lookup runs in glibc's resolver thread (getaddrinfo_a) and is waited for
 * at most until a deadline (gai_suspend).  IPv4 is asked first, IPv6 only
 * when the name has no IPv4 address: asking both at once waits for the AAAA
 * answer too, which some DNS servers give late or never.  A lookup not
 * answered by the deadline stays in flight for the caller's next attempt to
 * take up (aly_resolve keeps it in *pending: never two at once); a caller
 * that goes away with one in flight abandons it (aly_lookup_abandon).
 */
#ifndef ALY_RESOLVE_H
#define ALY_RESOLVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct aly_lookup aly_lookup_t;

/* Whether host is an IP address (v4, v6, v6 with a %scope): connected to as it is, no resolver asked. */
int aly_ip_literal(const char *host);

/* A lookup of host's addresses of one family (AF_INET, AF_INET6), started, not waited for; NULL with why. */
aly_lookup_t *aly_lookup_start(const char *host, int family, char *why, size_t wlen);
/* Waits until deadline (aly_now_ms()) at most: 0 when the lookup is over (answered or failed), -1 while in flight. */
int aly_lookup_wait(aly_lookup_t *l, uint64_t deadline);
/* The first IPv4, else IPv6, address of a lookup that is over, as text; -1 with why (its error, or no address). */
int aly_lookup_address(aly_lookup_t *l, char *addr, size_t len, char *why, size_t wlen);
/* Frees a lookup that is over and its answers. */
void aly_lookup_free(aly_lookup_t *l);
/*
 * Gives up a lookup whatever its state: cancelled, or, when glibc's thread is
 * already asking the resolver (it cannot be stopped, and writes into the
 * lookup when the answer comes), kept on a list (LeakSanitizer sees it
 * reachable) until a later call finds glibc done with it and frees it.  NULL
 * is ignored (the list is still swept).
 */
void aly_lookup_abandon(aly_lookup_t *l);

/*
 * The address of host to connect to, as text in addr (at least
 * INET6_ADDRSTRLEN); -1 with why.  Waits at most until deadline: IPv4 first,
 * IPv6 when there is no IPv4 address.  *pending is the caller's lookup of
 * host left in flight by an earlier call (NULL when none), taken up rather
 * than started again; one not answered by the deadline is left there, with
 * why "resolving HOST: no answer within WITHIN" (within: the directive that
 * set the deadline).  The caller gives *pending up with aly_lookup_abandon.
 */
int aly_resolve(aly_lookup_t **pending, const char *host, uint64_t deadline, const char *within, char *addr, size_t len, char *why,
                size_t wlen);

#endif

/*
 * The per-address guard (aly/guard.h): a set-associative table of peer
 * addresses with their connection counts, strikes and bans.
 *
 * Set-associative rather than a general hash table: a lookup touches one
 * bucket of GUARD_WAYS rows, nothing is ever resized or freed while serving,
 * and an attacker who fills a bucket only gets untracked (not refused)
 * connections, still bounded by max_connections.  The hash is keyed with a
 * random seed per guard, so buckets cannot be aimed at from outside.
 */
#include "aly/guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define GUARD_BUCKETS (GUARD_ENTRIES / GUARD_WAYS)

struct guard {
    const aly_config_t *cfg;
    uint64_t seed;
    guard_addr_t rows[GUARD_ENTRIES];
};

_Static_assert(GUARD_ENTRIES % GUARD_WAYS == 0, "whole buckets");

guard_t *guard_new(const aly_config_t *cfg)
{
    guard_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->cfg = cfg;
    if (getrandom(&g->seed, sizeof(g->seed), 0) != (ssize_t)sizeof(g->seed))
        g->seed = (uint64_t)(uintptr_t)g ^ 0x9e3779b97f4a7c15ull;
    return g;
}

void guard_free(guard_t *g)
{
    free(g);
}

/* The row key of sa: IPv4 (also IPv4-mapped IPv6) by address, IPv6 by /64.  0, or -1 when not IP. */
static int make_key(const struct sockaddr *sa, uint8_t key[17])
{
    memset(key, 0, 17);
    if (sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            key[0] = 4;
            memcpy(key + 1, a->s6_addr + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a->s6_addr, 8);
        }
        return 0;
    }
    return -1;
}

static size_t bucket_of(const guard_t *g, const uint8_t key[17])
{
    uint64_t h = g->seed;
    for (int i = 0; i < 17; i++) {
        h ^= key[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return (size_t)(h % GUARD_BUCKETS);
}

static int row_free(const guard_t *g, const guard_addr_t *r, uint64_t now)
{
    if (r->key[0] == 0)
        return 1;
    return r->conns == 0 && r->banned_until_ms <= now && (r->strikes == 0 || now - r->strikes_since_ms >= g->cfg->strike_window_ms);
}

/* The row of key, claiming a free one in its bucket when absent; NULL when the bucket is full. */
static guard_addr_t *lookup(guard_t *g, const uint8_t key[17], uint64_t now)
{
    guard_addr_t *bucket = &g->rows[bucket_of(g, key) * GUARD_WAYS], *spare = NULL;
    for (int i = 0; i < GUARD_WAYS; i++) {
        guard_addr_t *r = &bucket[i];
        if (r->key[0] != 0 && memcmp(r->key, key, 17) == 0)
            return r;
        if (spare == NULL && row_free(g, r, now))
            spare = r;
    }
    if (spare != NULL) {
        memset(spare, 0, sizeof(*spare));
        memcpy(spare->key, key, 17);
    }
    return spare;
}

guard_verdict_t guard_accept(guard_t *g, const struct sockaddr *sa, uint64_t now, guard_addr_t **addr)
{
    uint8_t key[17];
    *addr = NULL;
    if (make_key(sa, key) != 0)
        return GUARD_ADMIT;
    guard_addr_t *r = lookup(g, key, now);
    if (r == NULL)
        return GUARD_ADMIT;
    if (r->banned_until_ms > now)
        return GUARD_STRUCK_OUT;
    if (r->conns >= g->cfg->max_connections_per_address)
        return GUARD_TOO_MANY_CONNECTIONS;
    r->conns++;
    *addr = r;
    return GUARD_ADMIT;
}

void guard_release(guard_addr_t *addr)
{
    if (addr != NULL && addr->conns > 0)
        addr->conns--;
}

int guard_strike(guard_t *g, guard_addr_t *addr, uint64_t now)
{
    if (addr == NULL)
        return 0;
    if (addr->strikes == 0 || now - addr->strikes_since_ms >= g->cfg->strike_window_ms) {
        addr->strikes = 0;
        addr->strikes_since_ms = now;
    }
    addr->strikes++;
    if (addr->strikes < g->cfg->address_strikes)
        return 0;
    int fresh = addr->banned_until_ms <= now;
    addr->banned_until_ms = now + g->cfg->strike_window_ms;
    return fresh;
}

void guard_format(const guard_addr_t *addr, char *buf, size_t len)
{
    char text[INET6_ADDRSTRLEN];
    if (addr->key[0] == 4) {
        inet_ntop(AF_INET, addr->key + 1, text, sizeof(text));
        snprintf(buf, len, "%s", text);
    } else if (addr->key[0] == 6) {
        uint8_t full[16] = {0};
        memcpy(full, addr->key + 1, 8);
        inet_ntop(AF_INET6, full, text, sizeof(text));
        snprintf(buf, len, "%s/64", text);
    } else {
        snprintf(buf, len, "-");
    }
}

/*
 * Host name lookups bounded by a deadline (aly/resolve.h): getaddrinfo_a
 * (GAI_NOWAIT, in libc since glibc 2.34; _GNU_SOURCE comes from
 * AC_USE_SYSTEM_EXTENSIONS) started in glibc's resolver thread, gai_suspend
 * to wait for it, gai_cancel to give it up.
 */
#include "aly/resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aly/common.h"

/*
 * A lookup, allocated apart from its user: glibc's resolver thread writes
 * into the gaicb and reads the name and hints until the answer comes, so one
 * that cannot be cancelled when its user goes away must outlive it (see
 * aly_lookup_abandon).
 */
struct aly_lookup {
    struct gaicb cb;
    struct addrinfo hints;
    char host[256];
    struct aly_lookup *next; /* on the abandoned list */
};

/* Lookups still running when their user went away: freed once glibc is done with them, or reachable at exit. */
static aly_lookup_t *abandoned;

int aly_ip_literal(const char *host)
{
    /* AI_NUMERICHOST never asks a resolver, and takes "fe80::1%eth0" where inet_pton does not. */
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return 0;
    freeaddrinfo(res);
    return 1;
}

aly_lookup_t *aly_lookup_start(const char *host, int family, char *why, size_t wlen)
{
    aly_lookup_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        abort();
    snprintf(l->host, sizeof(l->host), "%s", host);
    l->hints = (struct addrinfo){.ai_family = family, .ai_socktype = SOCK_STREAM};
    l->cb = (struct gaicb){.ar_name = l->host, .ar_request = &l->hints};
    struct gaicb *list[] = {&l->cb};
    int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
    if (rc != 0) {
        snprintf(why, wlen, "resolving %s: %s", host, gai_strerror(rc));
        free(l);
        return NULL;
    }
    return l;
}

int aly_lookup_wait(aly_lookup_t *l, uint64_t deadline)
{
    const struct gaicb *list[] = {&l->cb};
    for (uint64_t now = aly_now_ms(); gai_error(&l->cb) == EAI_INPROGRESS && now < deadline; now = aly_now_ms()) {
        struct timespec left = {.tv_sec = (time_t)((deadline - now) / 1000), .tv_nsec = (long)((deadline - now) % 1000 * 1000000)};
        (void)gai_suspend(list, 1, &left); /* again for the rest after a signal */
    }
    return gai_error(&l->cb) == EAI_INPROGRESS ? -1 : 0;
}

/* The address inside an AF_INET or AF_INET6 answer. */
static const void *in_addr_of(const struct addrinfo *a)
{
    if (a->ai_family == AF_INET)
        return &((const struct sockaddr_in *)(const void *)a->ai_addr)->sin_addr;
    return &((const struct sockaddr_in6 *)(const void *)a->ai_addr)->sin6_addr;
}

int aly_lookup_address(aly_lookup_t *l, char *addr, size_t len, char *why, size_t wlen)
{
    static const int families[] = {AF_INET, AF_INET6};
    int rc = gai_error(&l->cb);
    if (rc != 0) {
        snprintf(why, wlen, "resolving %s: %s", l->host, gai_strerror(rc));
        return -1;
    }
    for (size_t f = 0; f < ALY_ARRAY_SIZE(families); f++)
        for (const struct addrinfo *a = l->cb.ar_result; a != NULL; a = a->ai_next)
            if (a->ai_family == families[f] && inet_ntop(a->ai_family, in_addr_of(a), addr, (socklen_t)len) != NULL)
                return 0;
    snprintf(why, wlen, "resolving %s: no IPv4 or IPv6 address", l->host);
    return -1;
}

void aly_lookup_free(aly_lookup_t *l)
{
    if (gai_error(&l->cb) == 0)
        freeaddrinfo(l->cb.ar_result);
    free(l);
}

/* Frees the abandoned lookups glibc is done with: gai_cancel says so only once its thread has let go of one. */
static void reap_abandoned(void)
{
    for (aly_lookup_t **p = &abandoned; *p != NULL;) {
        aly_lookup_t *l = *p;
        if (gai_cancel(&l->cb) == EAI_NOTCANCELED) {
            p = &l->next;
            continue;
        }
        *p = l->next;
        aly_lookup_free(l);
    }
}

void aly_lookup_abandon(aly_lookup_t *l)
{
    reap_abandoned(); /* lookups are abandoned at every connection that leaves a slow name out: keep the list short */
    if (l == NULL)
        return;
    if (gai_cancel(&l->cb) == EAI_NOTCANCELED) {
        l->next = abandoned;
        abandoned = l;
        return;
    }
    aly_lookup_free(l);
}

int aly_resolve(aly_lookup_t **pending, const char *host, uint64_t deadline, const char *within, char *addr, size_t len, char *why,
                size_t wlen)
{
    if (*pending == NULL && (*pending = aly_lookup_start(host, AF_INET, why, wlen)) == NULL)
        return -1;
    for (;;) {
        if (aly_lookup_wait(*pending, deadline) != 0) {
            snprintf(why, wlen, "resolving %s: no answer within %s", host, within);
            return -1;
        }
        /* IPv4 first, IPv6 only for a name without an IPv4 address (a lookup of both waits for the AAAA answer too). */
        int rc = gai_error(&(*pending)->cb);
        if ((*pending)->hints.ai_family != AF_INET || (rc != EAI_NONAME && rc != EAI_NODATA && rc != EAI_ADDRFAMILY))
            break;
        aly_lookup_free(*pending);
        if ((*pending = aly_lookup_start(host, AF_INET6, why, wlen)) == NULL)
            return -1;
    }
    int rc = aly_lookup_address(*pending, addr, len, why, wlen);
    aly_lookup_free(*pending);
    *pending = NULL;
    return rc;
}

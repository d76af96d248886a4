/*
 * Unit tests of the per-address guard (src/guard.c): connections per address,
 * strikes and bans with their window, IPv6 /64 grouping, IPv4-mapped
 * addresses, row recycling, and a full bucket admitting untracked.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "aly/config.h"
#include "aly/guard.h"
#include "tap.h"

static struct sockaddr_storage v4(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, text, &sin->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    sin6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, text, &sin6->sin6_addr);
    return ss;
}

static guard_verdict_t admit(guard_t *g, struct sockaddr_storage ss, uint64_t now, guard_addr_t **row)
{
    return guard_accept(g, (struct sockaddr *)&ss, now, row);
}

int main(void)
{
    aly_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_connections_per_address = 3;
    cfg.address_strikes = 2;
    cfg.strike_window_ms = 1000;
    guard_t *g = guard_new(&cfg);
    ok(g != NULL, "guard_new");

    /* Connections per address. */
    guard_addr_t *rows[4];
    for (int i = 0; i < 3; i++)
        is_int(admit(g, v4("192.0.2.1"), 10, &rows[i]), GUARD_ADMIT, "connection %d of 192.0.2.1 admitted", i + 1);
    ok(rows[0] != NULL && rows[0] == rows[1] && rows[1] == rows[2], "one row per address");
    is_int(rows[0]->conns, 3, "three connections counted");
    is_int(admit(g, v4("192.0.2.1"), 10, &rows[3]), GUARD_TOO_MANY_CONNECTIONS, "the fourth is refused");
    ok(rows[3] == NULL, "a refused connection gets no row");
    is_int(rows[0]->conns, 3, "and is not counted");
    guard_addr_t *other;
    is_int(admit(g, v4("192.0.2.2"), 10, &other), GUARD_ADMIT, "another address is not affected");
    guard_release(rows[2]);
    is_int(admit(g, v4("192.0.2.1"), 10, &rows[2]), GUARD_ADMIT, "after one closes, a new one is admitted");

    char text[64];
    guard_format(rows[0], text, sizeof(text));
    is_str(text, "192.0.2.1", "an IPv4 row prints as its address");

    /* IPv6 by /64, IPv4-mapped as IPv4. */
    guard_addr_t *a, *b, *c;
    is_int(admit(g, v6("2001:db8:1:2::1"), 10, &a), GUARD_ADMIT, "IPv6 admitted");
    is_int(admit(g, v6("2001:db8:1:2:ffff::9"), 10, &b), GUARD_ADMIT, "another host of the same /64 admitted");
    ok(a == b && a->conns == 2, "the same /64 shares one row");
    is_int(admit(g, v6("2001:db8:1:3::1"), 10, &c), GUARD_ADMIT, "the next /64");
    ok(c != a, "is another row");
    guard_format(a, text, sizeof(text));
    is_str(text, "2001:db8:1:2::/64", "an IPv6 row prints as its /64");
    is_int(admit(g, v6("::ffff:192.0.2.2"), 10, &c), GUARD_ADMIT, "IPv4-mapped admitted");
    ok(c == other, "an IPv4-mapped address shares the IPv4 row");

    /* Strikes and bans. */
    guard_addr_t *s;
    is_int(admit(g, v4("198.51.100.7"), 100, &s), GUARD_ADMIT, "a fresh address");
    is_int(guard_strike(g, s, 100), 0, "first strike: no ban");
    is_int(admit(g, v4("198.51.100.7"), 150, &s), GUARD_ADMIT, "one strike is not enough to be refused");
    is_int(guard_strike(g, s, 200), 1, "second strike within the window bans");
    is_int(guard_strike(g, s, 210), 0, "a strike while banned extends the ban but does not report it again");
    is_int(admit(g, v4("198.51.100.7"), 300, &s), GUARD_STRUCK_OUT, "a banned address is refused at accept");
    ok(s == NULL, "with no row handed out");
    is_int(admit(g, v4("198.51.100.7"), 1209, &s), GUARD_STRUCK_OUT, "still refused just before the window ends");
    is_int(admit(g, v4("198.51.100.7"), 1210, &s), GUARD_ADMIT, "admitted once strike_window has passed since the last strike");
    is_int(guard_strike(g, s, 3000), 0, "strikes older than the window are forgotten");
    is_int(guard_strike(g, s, 4500), 0, "a strike after the window starts a new count");
    is_int(guard_strike(g, NULL, 4500), 0, "a strike against no row does nothing");
    guard_release(NULL);

    /* Recycling: a row with no connection, no ban and no recent strike is reused; one that holds any is not. */
    guard_free(g);
    cfg.max_connections_per_address = 1000;
    g = guard_new(&cfg);
    int untracked = 0, tracked = 0, refused = 0;
    char name[32];
    for (int i = 0; i < GUARD_ENTRIES * 2; i++) {
        snprintf(name, sizeof(name), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        guard_addr_t *r;
        if (admit(g, v4(name), 10, &r) != GUARD_ADMIT)
            refused++;
        if (r == NULL)
            untracked++;
        else
            tracked++;
    }
    is_int(refused, 0, "a full table refuses nobody");
    ok(tracked <= GUARD_ENTRIES && untracked >= GUARD_ENTRIES, "with every row holding a connection, %d of %d are untracked",
       untracked, GUARD_ENTRIES * 2);
    guard_free(g);
    g = guard_new(&cfg);
    int reused = 1;
    for (int i = 0; i < GUARD_ENTRIES * 2; i++) {
        snprintf(name, sizeof(name), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        guard_addr_t *r;
        admit(g, v4(name), 10, &r);
        if (r == NULL)
            reused = 0;
        guard_release(r);
    }
    ok(reused, "rows of closed connections are recycled: %d addresses one after another all tracked", GUARD_ENTRIES * 2);
    guard_free(g);
    return done_testing();
}

/*
 * The value grammars of alyd.conf, declared in aly/config.h and shared with
 * alyctl: unsigned numbers with unit suffixes (plain, sizes, durations),
 * rates, listener addresses, and the user/group lookup of "user"/"group".
 */
#include "aly/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Unsigned decimal with an optional unit suffix looked up in units[] (NULL-terminated pairs). */
struct unit {
    const char *suffix;
    uint64_t mult;
};

static int parse_scaled(const char *text, const struct unit *units, uint64_t *out)
{
    if (!isdigit((unsigned char)text[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0)
        return -1;
    for (const struct unit *u = units; u->suffix != NULL; u++) {
        if (strcmp(end, u->suffix) == 0) {
            if (u->mult != 0 && v > UINT64_MAX / u->mult)
                return -1;
            *out = v * u->mult;
            return 0;
        }
    }
    return -1;
}

static const struct unit size_units[] = {{"", 1},        {"k", 1024},    {"K", 1024},    {"m", 1 << 20},
                                         {"M", 1 << 20}, {"g", 1 << 30}, {"G", 1 << 30}, {NULL, 0}};
static const struct unit duration_units[] = {{"", 1000},         {"ms", 1},           {"s", 1000}, {"m", 60 * 1000},
                                             {"h", 3600 * 1000}, {"d", 86400 * 1000}, {NULL, 0}};

static const struct unit plain[] = {{"", 1}, {NULL, 0}};

int config_parse_uint(const char *text, uint64_t *v)
{
    return parse_scaled(text, plain, v);
}

int config_parse_size(const char *text, uint64_t *bytes)
{
    return parse_scaled(text, size_units, bytes);
}

int config_parse_duration(const char *text, uint64_t *ms)
{
    return parse_scaled(text, duration_units, ms);
}

int config_lookup_user(const aly_config_t *cfg, uid_t *uid, gid_t *gid, aly_err_t *err)
{
    *uid = (uid_t)-1;
    *gid = (gid_t)-1;
    if (cfg->user != NULL) {
        struct passwd *pw = getpwnam(cfg->user);
        if (pw == NULL)
            return aly_errf(err, "%s:%u: user \"%s\" does not exist", cfg->path, cfg->user_line, cfg->user);
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
    }
    if (cfg->group != NULL) {
        struct group *gr = getgrnam(cfg->group);
        if (gr == NULL)
            return aly_errf(err, "%s:%u: group \"%s\" does not exist", cfg->path, cfg->group_line, cfg->group);
        *gid = gr->gr_gid;
    }
    return 0;
}

int config_parse_rate(const char *text, aly_rate_t *rate, aly_err_t *err)
{
    static const struct {
        const char *name;
        uint32_t secs;
    } periods[] = {{"second", 1},  {"s", 1},    {"minute", 60}, {"min", 60}, {"m", 60},
                   {"hour", 3600}, {"h", 3600}, {"day", 86400}, {"d", 86400}};
    char buf[128];
    if (strlen(text) >= sizeof(buf))
        return aly_errf(err, "rate \"%.40s...\" is too long", text);
    strcpy(buf, text);

    char *burst = NULL, *sp = strpbrk(buf, " \t");
    if (sp != NULL) {
        *sp++ = '\0';
        while (*sp == ' ' || *sp == '\t')
            sp++;
        if (strncmp(sp, "burst=", 6) != 0)
            return aly_errf(err, "expected \"burst=B\" after the rate, got \"%s\"", sp);
        burst = sp + 6;
    }
    char *slash = strchr(buf, '/');
    if (slash == NULL)
        return aly_errf(err, "rate \"%s\" must look like 600/minute", buf);
    *slash = '\0';
    uint64_t count, b = 0;
    if (parse_scaled(buf, plain, &count) != 0 || count == 0 || count > 1000000000)
        return aly_errf(err, "rate count \"%s\" must be an integer from 1 to 1000000000", buf);
    size_t i;
    for (i = 0; i < ALY_ARRAY_SIZE(periods); i++)
        if (strcmp(slash + 1, periods[i].name) == 0)
            break;
    if (i == ALY_ARRAY_SIZE(periods))
        return aly_errf(err, "rate period \"%s\" must be second, minute, hour or day", slash + 1);
    if (burst != NULL && (parse_scaled(burst, plain, &b) != 0 || b == 0 || b > 1000000000))
        return aly_errf(err, "burst \"%s\" must be an integer from 1 to 1000000000", burst);
    rate->count = (uint32_t)count;
    rate->period_s = periods[i].secs;
    rate->burst = burst != NULL ? (uint32_t)b : (uint32_t)count;
    return 0;
}

void config_format_rate(const aly_rate_t *rate, char *buf, size_t len)
{
    const char *p = rate->period_s == 1 ? "second" : rate->period_s == 60 ? "minute" : rate->period_s == 3600 ? "hour" : "day";
    snprintf(buf, len, "%u/%s burst=%u", rate->count, p, rate->burst);
}

int config_parse_listen(const char *spec, aly_listen_t *l, aly_err_t *err)
{
    char host[256];
    const char *port_str;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host))
            return aly_errf(err, "listen address \"%s\" must look like [::1]:8080", spec);
        memcpy(host, spec + 1, close - spec - 1);
        host[close - spec - 1] = '\0';
        port_str = close + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (colon == NULL || (size_t)(colon - spec) >= sizeof(host) || colon == spec)
            return aly_errf(err, "listen address \"%s\" must look like 127.0.0.1:8080", spec);
        if (memchr(spec, ':', colon - spec) != NULL)
            return aly_errf(err, "IPv6 listen address \"%s\" must be in brackets, like [::1]:8080", spec);
        memcpy(host, spec, colon - spec);
        host[colon - spec] = '\0';
        port_str = colon + 1;
    }
    uint64_t port;
    if (parse_scaled(port_str, plain, &port) != 0 || port == 0 || port > 65535)
        return aly_errf(err, "port \"%s\" in \"%s\" must be from 1 to 65535", port_str, spec);

    memset(&l->addr, 0, sizeof(l->addr));
    struct sockaddr_in *sin = (struct sockaddr_in *)&l->addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l->addr;
    const char *ip = strcmp(host, "*") == 0 ? "0.0.0.0" : strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        l->addrlen = sizeof(*sin);
        l->loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        l->addrlen = sizeof(*sin6);
        l->loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
    } else {
        return aly_errf(err, "listen host \"%s\" must be an IP address, \"*\" or \"localhost\"", host);
    }
    l->spec = strdup(spec);
    l->host = strdup(host);
    if (l->spec == NULL || l->host == NULL)
        abort();
    l->port = (uint16_t)port;
    return 0;
}

void config_strlist_push(aly_strlist_t *l, const char *s)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof(*items));
    if (items == NULL)
        abort();
    l->items = items;
    if ((l->items[l->n] = strdup(s)) == NULL)
        abort();
    l->n++;
}

int config_strlist_has(const aly_strlist_t *l, const char *s, size_t n)
{
    for (size_t i = 0; i < l->n; i++)
        if (strlen(l->items[i]) == n && strncasecmp(l->items[i], s, n) == 0)
            return 1;
    return 0;
}

void config_strlist_free(aly_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

int config_url_ok(const char *u)
{
    const char *rest;
    if (strncmp(u, "https://", 8) == 0)
        rest = u + 8;
    else if (strncmp(u, "http://", 7) == 0)
        rest = u + 7;
    else
        return 0;
    if (*rest == '\0' || *rest == '/')
        return 0;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '"' || *p == '\\' || *p == '?' || *p == '#')
            return 0;
    return 1;
}

char *config_url_dup(const char *u)
{
    char *s = strdup(u);
    if (s == NULL)
        abort();
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return s;
}

/*
 * The alyd.conf parser.  Directives are rows of one table: a name, a value
 * kind, where the value goes in aly_config_t, and whether it may repeat.  The
 * parser tokenises a line, finds its row and hands the arguments to the kind's
 * parser; checks that involve several directives (TLS listeners need a
 * certificate, OAuth needs an issuer and a key source) run once the whole file
 * has been read, and are reported against the line that caused them.  The
 * value grammars themselves (numbers with units, rates, addresses) are in
 * config_value.c, shared with alyctl.
 */
#include "aly/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/volatile_redis.h"

#define MAX_LINE 4096
#define MAX_ARGS 64

typedef enum {
    K_STRING,     /* one word */
    K_PATH,       /* one word, a file path */
    K_LOG,        /* path, "stderr" or "off" */
    K_URL,        /* http(s)://host[:port][/path], stored without trailing slash */
    K_LIST,       /* one or more words, appended */
    K_URLLIST,    /* one or more URLs, appended */
    K_LISTEN,     /* host:port [tls] */
    K_MLISTEN,    /* host:port, for metrics */
    K_WORKERS,    /* N or auto */
    K_UINT,       /* positive integer */
    K_SIZE,       /* bytes with k/m/g */
    K_DURATION,   /* ms/s/m/h/d; bare numbers are seconds; stored in ms */
    K_DURATION_S, /* the same, stored in whole seconds (min/max still in ms) */
    K_RATE,       /* N/period [burst=B] */
    K_CLIENTRATE,
    K_ONOFF, /* on or off, into an int */
} kind_t;

typedef struct directive {
    const char *name;
    kind_t kind;
    size_t offset;
    int repeatable;
    uint64_t min, max; /* for K_UINT, K_SIZE (bytes), K_DURATION (ms); 0/0 = no bound */
} directive_t;

#define F(field) offsetof(aly_config_t, field)

static const directive_t directives[] = {
    {"listen", K_LISTEN, 0, 1, 0, 0},
    {"tls_certificate", K_PATH, F(tls_certificate), 0, 0, 0},
    {"tls_key", K_PATH, F(tls_key), 0, 0, 0},
    {"workers", K_WORKERS, F(workers), 0, 1, ALY_MAX_WORKERS},
    {"max_connections", K_UINT, F(max_connections), 0, 1, 1000000},
    {"idle_timeout", K_DURATION, F(idle_timeout_ms), 0, 1000, 3600 * 1000},
    {"data_dir", K_PATH, F(data_dir), 0, 0, 0},
    {"map_size", K_SIZE, F(map_size), 0, (uint64_t)1 << 20, (uint64_t)1 << 40},
    {"volatile_map_size", K_SIZE, F(volatile_map_size), 0, (uint64_t)16 << 20, (uint64_t)1 << 40},
    {"pid_file", K_PATH, F(pid_file), 0, 0, 0},
    {"user", K_STRING, F(user), 0, 0, 0},
    {"group", K_STRING, F(group), 0, 0, 0},
    {"error_log", K_LOG, F(error_log), 0, 0, 0},
    {"access_log", K_LOG, F(access_log), 0, 0, 0},
    {"access_log_buffer", K_SIZE, F(access_log_buffer), 0, 0, (uint64_t)16 << 20},
    {"access_log_flush", K_DURATION, F(access_log_flush_ms), 0, 10, 3600 * 1000},
    {"public_url", K_URL, F(public_url), 0, 0, 0},
    {"allowed_origins", K_LIST, F(allowed_origins), 1, 0, 0},
    {"allowed_hosts", K_LIST, F(allowed_hosts), 1, 0, 0},
    {"key_pepper_file", K_PATH, F(key_pepper_file), 0, 0, 0},
    {"rate_limit", K_RATE, F(rate_limit), 0, 0, 0},
    {"auth_failure_limit", K_RATE, F(auth_failure_limit), 0, 0, 0},
    {"oauth_client_rate_limit", K_CLIENTRATE, 0, 1, 0, 0},
    {"oauth_issuer", K_URL, F(oauth_issuer), 0, 0, 0},
    {"oauth_jwks_file", K_PATH, F(oauth_jwks_file), 0, 0, 0},
    {"oauth_hs256_secret_file", K_PATH, F(oauth_hs256_secret_file), 0, 0, 0},
    {"oauth_leeway", K_DURATION_S, F(oauth_leeway_s), 0, 0, 3600 * 1000},
    {"authorization_servers", K_URLLIST, F(authorization_servers), 1, 0, 0},
    {"max_request_body", K_SIZE, F(max_request_body), 0, 1024, (uint64_t)64 << 20},
    {"shutdown_timeout", K_DURATION, F(shutdown_timeout_ms), 0, 0, 3600 * 1000},
    {"session_ttl", K_DURATION, F(session_ttl_ms), 0, 1000, (uint64_t)30 * 86400 * 1000},
    {"metrics_listen", K_MLISTEN, 0, 0, 0, 0},
    {"list_scan_budget", K_UINT, F(list_scan_budget), 0, 1, 100000000},
    {"analytics_scan_budget", K_UINT, F(analytics_scan_budget), 0, 1, 100000000},
    {"workspace_quota", K_SIZE, F(workspace_quota), 0, 4096, (uint64_t)1 << 40},
    {"tls_ticket_rotation", K_DURATION, F(tls_ticket_rotation_ms), 0, 1000, (uint64_t)7 * 86400 * 1000},
    {"audit_retention", K_DURATION, F(audit_retention_ms), 0, 0, (uint64_t)3650 * 86400 * 1000},
    {"max_connections_per_address", K_UINT, F(max_connections_per_address), 0, 1, 1000000},
    {"max_streams_per_connection", K_UINT, F(max_streams_per_connection), 0, 1, 256},
    {"max_inflight_body", K_SIZE, F(max_inflight_body), 0, 64 << 10, (uint64_t)1 << 32},
    {"max_inflight_body_per_address", K_SIZE, F(max_inflight_body_per_address), 0, 64 << 10, (uint64_t)1 << 36},
    {"header_timeout", K_DURATION, F(header_timeout_ms), 0, 100, 3600 * 1000},
    {"body_timeout", K_DURATION, F(body_timeout_ms), 0, 100, 3600 * 1000},
    {"send_timeout", K_DURATION, F(send_timeout_ms), 0, 100, 3600 * 1000},
    {"reset_budget", K_UINT, F(reset_budget), 0, 1, 1000000},
    {"address_strikes", K_UINT, F(address_strikes), 0, 1, 1000000},
    {"strike_window", K_DURATION, F(strike_window_ms), 0, 1000, (uint64_t)86400 * 1000},
    {"store", K_STRING, F(store), 0, 0, 0},
    {"store_timeout", K_DURATION, F(store_timeout_ms), 0, 100, 60 * 1000},
    {"store_poll", K_DURATION, F(store_poll_ms), 0, 10, 60 * 1000},
    {"store_changes_keep", K_DURATION, F(store_changes_keep_ms), 0, 1000, (uint64_t)30 * 86400 * 1000},
    {"volatile", K_STRING, F(volatile_url), 0, 0, 0},
    {"volatile_prefix", K_STRING, F(volatile_prefix), 0, 0, 0},
    {"volatile_failure", K_STRING, F(volatile_failure), 0, 0, 0},
    {"volatile_timeout", K_DURATION, F(volatile_timeout_ms), 0, 1, 10 * 1000},
    {"oauth_server", K_ONOFF, F(oauth_server), 0, 0, 0},
    {"oauth_cimd_allow", K_LIST, F(oauth_cimd_allow), 1, 0, 0},
    {"oauth_cimd_ca_file", K_PATH, F(oauth_cimd_ca_file), 0, 0, 0},
    {"oauth_max_dynamic_clients", K_UINT, F(oauth_max_dynamic_clients), 0, 1, 1000000},
};

#undef F

/* Per-directive parse state: the line where each was set, for cross checks and duplicates. */
typedef struct parse_state {
    const char *path;
    unsigned set_line[ALY_ARRAY_SIZE(directives)];
    unsigned line;
} parse_state_t;

static void *field(aly_config_t *cfg, const directive_t *d)
{
    return (char *)cfg + d->offset;
}

static int fail(const parse_state_t *ps, aly_err_t *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(const parse_state_t *ps, aly_err_t *err, const char *fmt, ...)
{
    char why[ALY_ERR_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (ps->line != 0)
        return aly_errf(err, "%s:%u: %s", ps->path, ps->line, why);
    return aly_errf(err, "%s: %s", ps->path, why);
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        abort();
    return p;
}

static int set_value(aly_config_t *cfg, const directive_t *d, parse_state_t *ps, char **argv, int argc, aly_err_t *err)
{
    void *dst = field(cfg, d);
    int one = d->kind != K_LIST && d->kind != K_URLLIST && d->kind != K_LISTEN && d->kind != K_RATE && d->kind != K_CLIENTRATE;
    if (argc == 0)
        return fail(ps, err, "\"%s\" needs a value", d->name);
    if (one && argc != 1)
        return fail(ps, err, "\"%s\" takes one value, got \"%s ...\"", d->name, argv[0]);

    switch (d->kind) {
    case K_ONOFF:
        if (strcmp(argv[0], "on") != 0 && strcmp(argv[0], "off") != 0)
            return fail(ps, err, "%s must be on or off, got \"%s\"", d->name, argv[0]);
        *(int *)dst = strcmp(argv[0], "on") == 0;
        return 0;
    case K_STRING:
    case K_PATH:
        free(*(char **)dst);
        *(char **)dst = xstrdup(argv[0]);
        return 0;
    case K_LOG:
        free(*(char **)dst);
        *(char **)dst = xstrdup(argv[0]);
        return 0;
    case K_URL:
        if (!config_url_ok(argv[0]))
            return fail(ps, err, "%s \"%s\" must be an http:// or https:// URL without query or fragment", d->name, argv[0]);
        free(*(char **)dst);
        *(char **)dst = config_url_dup(argv[0]);
        return 0;
    case K_LIST:
    case K_URLLIST:
        for (int i = 0; i < argc; i++) {
            if (d->kind == K_URLLIST && !config_url_ok(argv[i]))
                return fail(ps, err, "%s: \"%s\" is not an http:// or https:// URL", d->name, argv[i]);
            config_strlist_push(dst, argv[i]);
        }
        return 0;
    case K_LISTEN:
    case K_MLISTEN: {
        int tls = 0;
        if (argc == 2 && d->kind == K_LISTEN && strcmp(argv[1], "tls") == 0)
            tls = 1;
        else if (argc != 1)
            return fail(ps, err,
                        d->kind == K_LISTEN ? "%s takes an address and optionally \"tls\", got \"%s\""
                                            : "%s takes one address, got \"%s\"",
                        d->name, argv[argc - 1]);
        aly_listen_t *l;
        if (d->kind == K_MLISTEN) {
            l = &cfg->metrics_listen;
        } else {
            if (cfg->n_listens == ALY_MAX_LISTENERS)
                return fail(ps, err, "too many listen directives (at most %d)", ALY_MAX_LISTENERS);
            l = &cfg->listens[cfg->n_listens];
        }
        aly_err_t why;
        if (config_parse_listen(argv[0], l, &why) != 0)
            return fail(ps, err, "%s", why.msg);
        l->tls = tls;
        if (d->kind == K_LISTEN)
            cfg->n_listens++;
        return 0;
    }
    case K_WORKERS: {
        if (strcmp(argv[0], "auto") == 0) {
            cfg->workers = 0;
            return 0;
        }
        uint64_t v;
        if (config_parse_uint(argv[0], &v) != 0 || v < d->min || v > d->max)
            return fail(ps, err, "workers \"%s\" must be \"auto\" or from 1 to %d", argv[0], ALY_MAX_WORKERS);
        cfg->workers = (unsigned)v;
        return 0;
    }
    case K_UINT: {
        uint64_t v;
        char range[64];
        snprintf(range, sizeof(range), "from %llu to %llu", (unsigned long long)d->min, (unsigned long long)d->max);
        if (config_parse_uint(argv[0], &v) != 0 || v < d->min || v > d->max)
            return fail(ps, err, "%s must be an integer %s", d->name, range);
        *(unsigned *)dst = (unsigned)v;
        return 0;
    }
    case K_SIZE:
    case K_DURATION:
    case K_DURATION_S: {
        uint64_t v;
        int is_size = d->kind == K_SIZE;
        if ((is_size ? config_parse_size(argv[0], &v) : config_parse_duration(argv[0], &v)) != 0)
            return fail(ps, err,
                        is_size ? "%s \"%s\" must be a size like 512k, 1m or 2g"
                                : "%s \"%s\" must be a duration like 500ms, 30s, 5m, 24h or 7d",
                        d->name, argv[0]);
        if ((d->min != 0 || d->max != 0) && (v < d->min || v > d->max)) {
            char range[96];
            if (is_size)
                snprintf(range, sizeof(range), "from %llu to %llu bytes", (unsigned long long)d->min, (unsigned long long)d->max);
            else
                snprintf(range, sizeof(range), "from %llums to %llums", (unsigned long long)d->min, (unsigned long long)d->max);
            return fail(ps, err, "%s must be %s", d->name, range);
        }
        if (d->kind == K_DURATION_S && v % 1000 != 0)
            return fail(ps, err, "%s \"%s\" must be whole seconds (it is kept in seconds)", d->name, argv[0]);
        if (is_size)
            *(size_t *)dst = (size_t)v;
        else
            *(uint64_t *)dst = d->kind == K_DURATION_S ? v / 1000 : v;
        return 0;
    }
    case K_RATE:
    case K_CLIENTRATE: {
        char joined[256] = "";
        int first = d->kind == K_CLIENTRATE ? 1 : 0;
        if (d->kind == K_CLIENTRATE && argc < 2)
            return fail(ps, err, "%s takes a client id and a rate, like \"%s\"", d->name, "my-client 60/minute burst=10");
        if (argc - first > 2)
            return fail(ps, err, "%s takes \"N/period burst=B\", got extra \"%s\"", d->name, argv[argc - 1]);
        for (int i = first; i < argc; i++) {
            if (strlen(joined) + strlen(argv[i]) + 2 > sizeof(joined))
                return fail(ps, err, "%s value is too long", d->name);
            if (i > first)
                strcat(joined, " ");
            strcat(joined, argv[i]);
        }
        aly_rate_t r;
        aly_err_t why;
        if (config_parse_rate(joined, &r, &why) != 0)
            return fail(ps, err, "%s: %s", d->name, why.msg);
        if (d->kind == K_RATE) {
            *(aly_rate_t *)dst = r;
            return 0;
        }
        for (size_t i = 0; i < cfg->n_client_rates; i++)
            if (strcmp(cfg->client_rates[i].client_id, argv[0]) == 0)
                return fail(ps, err, "%s for client \"%s\" is set twice", d->name, argv[0]);
        aly_client_rate_t *cr = realloc(cfg->client_rates, (cfg->n_client_rates + 1) * sizeof(*cr));
        if (cr == NULL)
            abort();
        cfg->client_rates = cr;
        cr[cfg->n_client_rates].client_id = xstrdup(argv[0]);
        cr[cfg->n_client_rates].rate = r;
        cfg->n_client_rates++;
        return 0;
    }
    }
    return fail(ps, err, "internal: unhandled directive kind for %s", d->name);
}

static void set_defaults(aly_config_t *cfg)
{
    cfg->workers = 0;
    cfg->max_connections = 1024;
    cfg->idle_timeout_ms = 10 * 1000;
    cfg->map_size = (size_t)1 << 30;
    cfg->volatile_map_size = (size_t)256 << 20;
    cfg->rate_limit = (aly_rate_t){600, 60, 60};
    cfg->auth_failure_limit = (aly_rate_t){30, 60, 30};
    cfg->oauth_leeway_s = 60;
    cfg->max_request_body = (size_t)1 << 20;
    cfg->shutdown_timeout_ms = 30 * 1000;
    cfg->session_ttl_ms = (uint64_t)24 * 3600 * 1000;
    cfg->list_scan_budget = 5000;
    cfg->analytics_scan_budget = 250000;
    cfg->workspace_quota = (size_t)256 << 20;
    cfg->tls_ticket_rotation_ms = 3600 * 1000;
    cfg->audit_retention_ms = (uint64_t)90 * 86400 * 1000;
    cfg->max_connections_per_address = 64;
    cfg->max_streams_per_connection = 100;
    cfg->max_inflight_body = (size_t)8 << 20;
    cfg->max_inflight_body_per_address = (size_t)32 << 20;
    cfg->header_timeout_ms = 10 * 1000;
    cfg->body_timeout_ms = 60 * 1000;
    cfg->send_timeout_ms = 60 * 1000;
    cfg->reset_budget = 100;
    cfg->address_strikes = 5;
    cfg->strike_window_ms = 60 * 1000;
    cfg->store_timeout_ms = 2000;
    cfg->store_poll_ms = 200;
    cfg->store_changes_keep_ms = 3600 * 1000;
    cfg->access_log_buffer = (size_t)64 << 10;
    cfg->access_log_flush_ms = 1000;
    cfg->volatile_timeout_ms = 50;
    cfg->oauth_server = -1;
    cfg->oauth_max_dynamic_clients = 10000;
}

/* Points ps at the line that set a directive, so cross-directive errors name a line. */
static void at(parse_state_t *ps, const char *name)
{
    ps->line = 0;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(directives); i++)
        if (strcmp(directives[i].name, name) == 0)
            ps->line = ps->set_line[i];
}

static int file_readable(const char *path)
{
    return access(path, R_OK) == 0;
}

/* Defaults that depend on other directives, and checks that span several lines. */
static int finish(aly_config_t *cfg, parse_state_t *ps, aly_err_t *err)
{
    at(ps, "user");
    cfg->user_line = ps->line;
    at(ps, "group");
    cfg->group_line = ps->line;
    if (cfg->n_listens == 0) {
        aly_err_t ignored;
        config_parse_listen("127.0.0.1:8080", &cfg->listens[0], &ignored);
        cfg->n_listens = 1;
    }
    for (size_t i = 0; i < cfg->n_listens; i++) {
        for (size_t j = 0; j < i; j++) {
            if (cfg->listens[i].addrlen == cfg->listens[j].addrlen &&
                memcmp(&cfg->listens[i].addr, &cfg->listens[j].addr, cfg->listens[i].addrlen) == 0) {
                at(ps, "listen");
                return fail(ps, err, "listen %s appears twice", cfg->listens[i].spec);
            }
        }
        if (cfg->metrics_listen.port != 0 && cfg->listens[i].addrlen == cfg->metrics_listen.addrlen &&
            memcmp(&cfg->listens[i].addr, &cfg->metrics_listen.addr, cfg->metrics_listen.addrlen) == 0) {
            at(ps, "metrics_listen");
            return fail(ps, err, "metrics_listen %s is also a listen address", cfg->metrics_listen.spec);
        }
    }

    /* A connection must be able to carry one whole body, and an address one whole connection. */
    at(ps, "max_inflight_body");
    if (ps->line == 0)
        at(ps, "max_request_body");
    if (cfg->max_inflight_body < cfg->max_request_body)
        return fail(ps, err, "max_inflight_body (%zu bytes) is below max_request_body (%zu bytes): no body that large could arrive",
                    cfg->max_inflight_body, cfg->max_request_body);
    at(ps, "max_inflight_body_per_address");
    if (cfg->max_inflight_body_per_address < cfg->max_inflight_body)
        return fail(ps, err, "max_inflight_body_per_address (%zu bytes) is below max_inflight_body (%zu bytes)",
                    cfg->max_inflight_body_per_address, cfg->max_inflight_body);

    int any_tls = 0;
    for (size_t i = 0; i < cfg->n_listens; i++)
        any_tls |= cfg->listens[i].tls;
    at(ps, "listen");
    if (any_tls && (cfg->tls_certificate == NULL || cfg->tls_key == NULL))
        return fail(ps, err, "a tls listener needs both tls_certificate and tls_key");
    const char *files[] = {cfg->tls_certificate, cfg->tls_key, cfg->oauth_jwks_file, cfg->oauth_hs256_secret_file};
    const char *names[] = {"tls_certificate", "tls_key", "oauth_jwks_file", "oauth_hs256_secret_file"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(files); i++)
        if (files[i] != NULL && !file_readable(files[i]) && (at(ps, names[i]), 1))
            return fail(ps, err, "%s: cannot read \"%s\"", names[i], files[i]);
    at(ps, "oauth_issuer");
    if (cfg->oauth_issuer != NULL && cfg->oauth_jwks_file == NULL && cfg->oauth_hs256_secret_file == NULL)
        return fail(ps, err, "oauth_issuer is set but no key source: add oauth_jwks_file or oauth_hs256_secret_file");
    if (cfg->oauth_issuer == NULL && (cfg->oauth_jwks_file != NULL || cfg->oauth_hs256_secret_file != NULL))
        return fail(ps, err, "an OAuth key file is set but oauth_issuer is not");

    at(ps, "volatile");
    if (cfg->volatile_url != NULL && strcmp(cfg->volatile_url, "lmdb") == 0) {
        free(cfg->volatile_url);
        cfg->volatile_url = NULL;
    }
    volatile_redis_url_t vurl;
    aly_err_t why;
    if (cfg->volatile_url != NULL && volatile_redis_parse_url(cfg->volatile_url, &vurl, &why) != 0)
        return fail(ps, err, "volatile must be \"lmdb\" or redis://host[:port][/db]: %s", why.msg);
    at(ps, "volatile_prefix");
    if (cfg->volatile_prefix != NULL) {
        size_t n = strlen(cfg->volatile_prefix), ok = n >= 1 && n <= 16;
        for (size_t i = 0; ok && i < n; i++) {
            char c = cfg->volatile_prefix[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
        }
        if (!ok)
            return fail(ps, err, "volatile_prefix must be 1 to 16 of A-Z a-z 0-9 . _ -, not \"%s\"", cfg->volatile_prefix);
    }
    at(ps, "volatile_failure");
    if (cfg->volatile_failure != NULL && strcmp(cfg->volatile_failure, "open") != 0 && strcmp(cfg->volatile_failure, "closed") != 0)
        return fail(ps, err, "volatile_failure must be \"closed\" or \"open\", not \"%s\"", cfg->volatile_failure);
    cfg->volatile_failure_open = cfg->volatile_failure != NULL && strcmp(cfg->volatile_failure, "open") == 0;

    if (cfg->data_dir == NULL)
        cfg->data_dir = xstrdup("/var/lib/alyd");
    if (cfg->key_pepper_file == NULL) {
        size_t n = strlen(cfg->data_dir) + sizeof("/pepper");
        cfg->key_pepper_file = malloc(n);
        if (cfg->key_pepper_file == NULL)
            abort();
        snprintf(cfg->key_pepper_file, n, "%s/pepper", cfg->data_dir);
    }
    if (cfg->error_log == NULL)
        cfg->error_log = xstrdup("stderr");
    if (cfg->access_log == NULL)
        cfg->access_log = xstrdup("stderr");
    if (cfg->public_url == NULL) {
        const aly_listen_t *l = &cfg->listens[0];
        int wildcard = (l->addr.ss_family == AF_INET && ((struct sockaddr_in *)&l->addr)->sin_addr.s_addr == htonl(INADDR_ANY)) ||
                       (l->addr.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&l->addr)->sin6_addr));
        if (wildcard) {
            at(ps, "listen");
            return fail(ps, err, "listen %s is a wildcard address: set public_url to the URL clients use", l->spec);
        }
        char buf[300];
        int v6 = l->addr.ss_family == AF_INET6;
        snprintf(buf, sizeof(buf), "%s://%s%s%s:%u", l->tls ? "https" : "http", v6 ? "[" : "", l->host, v6 ? "]" : "", l->port);
        cfg->public_url = xstrdup(buf);
    }
    /*
     * The built-in authorization server runs by default where browsers and
     * Claude's connectors can reach it safely (https, or loopback), unless
     * oauth_issuer names an external one: then the operator chose theirs.
     */
    if (cfg->oauth_server < 0) {
        const char *h = strstr(cfg->public_url, "://") + 3;
        size_t hl = strcspn(h, ":/");
        int loop = (hl >= 4 && strncmp(h, "127.", 4) == 0) || strncmp(h, "[::1]", 5) == 0 ||
                   (hl == 9 && strncmp(h, "localhost", 9) == 0);
        cfg->oauth_server = cfg->oauth_issuer == NULL && (strncmp(cfg->public_url, "https://", 8) == 0 || loop);
    }
    if (cfg->authorization_servers.n == 0) {
        if (cfg->oauth_issuer != NULL)
            config_strlist_push(&cfg->authorization_servers, cfg->oauth_issuer);
        if (cfg->oauth_server)
            config_strlist_push(&cfg->authorization_servers, cfg->public_url);
    }
    at(ps, "store");
    if (cfg->store != NULL && strcmp(cfg->store, "lmdb") == 0)
        free(cfg->store), cfg->store = NULL;
    else if (cfg->store != NULL && strncmp(cfg->store, "postgresql://", 13) != 0 && strncmp(cfg->store, "postgres://", 11) != 0)
        return fail(ps, err, "store \"%s\" must be \"lmdb\" or a postgresql:// URL", cfg->store);

    if (cfg->allowed_hosts.n == 0) {
        /* The public URL's authority, plus loopback names for loopback listeners (DNS-rebinding guard). */
        const char *auth = strstr(cfg->public_url, "://") + 3;
        size_t alen = strcspn(auth, "/");
        char buf[300];
        snprintf(buf, sizeof(buf), "%.*s", (int)alen, auth);
        config_strlist_push(&cfg->allowed_hosts, buf);
        for (size_t i = 0; i < cfg->n_listens; i++) {
            if (!cfg->listens[i].loopback)
                continue;
            const char *names6[] = {"localhost", "127.0.0.1", "[::1]"};
            for (size_t k = 0; k < ALY_ARRAY_SIZE(names6); k++) {
                snprintf(buf, sizeof(buf), "%s:%u", names6[k], cfg->listens[i].port);
                config_strlist_push(&cfg->allowed_hosts, buf);
            }
        }
    }
    if (cfg->oauth_cimd_allow.n == 0) {
        config_strlist_push(&cfg->oauth_cimd_allow, "claude.ai");
        config_strlist_push(&cfg->oauth_cimd_allow, "claude.com");
    }
    if (cfg->allowed_origins.n == 0) {
        const char *auth = strstr(cfg->public_url, "://") + 3;
        size_t olen = (size_t)(auth - cfg->public_url) + strcspn(auth, "/");
        char buf[300];
        snprintf(buf, sizeof(buf), "%.*s", (int)olen, cfg->public_url);
        config_strlist_push(&cfg->allowed_origins, buf);
    }
    return 0;
}

static int tokenize(char *line, char **argv)
{
    int argc = 0;
    char *hash = strchr(line, '#');
    if (hash != NULL)
        *hash = '\0';
    for (char *p = line;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p == '\0')
            break;
        if (argc == MAX_ARGS)
            return -1;
        argv[argc++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            p++;
        if (*p)
            *p++ = '\0';
    }
    return argc;
}

static aly_config_t *alloc_config(const char *path)
{
    aly_config_t *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        abort();
    cfg->path = xstrdup(path);
    set_defaults(cfg);
    return cfg;
}

aly_config_t *config_load(const char *path, aly_err_t *err)
{
    parse_state_t ps = {.path = path};
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        aly_errf(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    aly_config_t *cfg = alloc_config(path);
    char line[MAX_LINE + 2];
    while (fgets(line, sizeof(line), fp) != NULL) {
        ps.line++;
        size_t len = strlen(line);
        if (len > MAX_LINE && line[len - 1] != '\n') {
            fail(&ps, err, "line is longer than %d bytes", MAX_LINE);
            goto bad;
        }
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)line[i];
            if ((c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f) {
                fail(&ps, err, "control character in line");
                goto bad;
            }
        }
        char *argv[MAX_ARGS];
        int argc = tokenize(line, argv);
        if (argc < 0) {
            fail(&ps, err, "too many values on one line");
            goto bad;
        }
        if (argc == 0)
            continue;
        size_t di;
        for (di = 0; di < ALY_ARRAY_SIZE(directives); di++)
            if (strcmp(directives[di].name, argv[0]) == 0)
                break;
        if (di == ALY_ARRAY_SIZE(directives)) {
            fail(&ps, err, "unknown directive \"%s\"", argv[0]);
            goto bad;
        }
        const directive_t *d = &directives[di];
        if (!d->repeatable && ps.set_line[di] != 0) {
            char prev[16];
            snprintf(prev, sizeof(prev), "%u", ps.set_line[di]);
            fail(&ps, err, "\"%s\" is already set on line %s", d->name, prev);
            goto bad;
        }
        ps.set_line[di] = ps.line;
        if (set_value(cfg, d, &ps, argv + 1, argc - 1, err) != 0)
            goto bad;
    }
    if (ferror(fp)) {
        ps.line = 0;
        fail(&ps, err, "read error: %s", strerror(errno));
        goto bad;
    }
    fclose(fp);
    if (finish(cfg, &ps, err) != 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
bad:
    fclose(fp);
    config_free(cfg);
    return NULL;
}

aly_config_t *config_defaults(aly_err_t *err)
{
    parse_state_t ps = {.path = "(defaults)"};
    aly_config_t *cfg = alloc_config("(defaults)");
    if (finish(cfg, &ps, err) != 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

static void listen_free(aly_listen_t *l)
{
    free(l->spec);
    free(l->host);
}

void config_free(aly_config_t *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_listens; i++)
        listen_free(&cfg->listens[i]);
    listen_free(&cfg->metrics_listen);
    char **strings[] = {&cfg->path,
                        &cfg->tls_certificate,
                        &cfg->tls_key,
                        &cfg->data_dir,
                        &cfg->pid_file,
                        &cfg->user,
                        &cfg->group,
                        &cfg->error_log,
                        &cfg->access_log,
                        &cfg->public_url,
                        &cfg->key_pepper_file,
                        &cfg->oauth_issuer,
                        &cfg->oauth_jwks_file,
                        &cfg->oauth_hs256_secret_file,
                        &cfg->store,
                        &cfg->volatile_url,
                        &cfg->volatile_prefix,
                        &cfg->volatile_failure,
                        &cfg->oauth_cimd_ca_file};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(strings); i++)
        free(*strings[i]);
    config_strlist_free(&cfg->allowed_origins);
    config_strlist_free(&cfg->allowed_hosts);
    config_strlist_free(&cfg->authorization_servers);
    config_strlist_free(&cfg->oauth_cimd_allow);
    for (size_t i = 0; i < cfg->n_client_rates; i++)
        free(cfg->client_rates[i].client_id);
    free(cfg->client_rates);
    free(cfg);
}

unsigned config_worker_count(const aly_config_t *cfg)
{
    if (cfg->workers != 0)
        return cfg->workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > ALY_MAX_WORKERS)
        n = ALY_MAX_WORKERS;
    return (unsigned)n;
}

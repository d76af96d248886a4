/*
 * Unit tests of the alyd.conf parser (src/config.c): values, defaults, and
 * every kind of bad line reported as "file:line: why".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/config.h"
#include "tap.h"

static char dir[] = "/tmp/aly-unit-config-XXXXXX";

static const char *write_conf(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    if (fp == NULL) {
        perror(path);
        exit(1);
    }
    fputs(text, fp);
    fclose(fp);
    return path;
}

/* Loads text and checks that it fails with "path:line:" and a message containing want. */
static void bad(const char *text, unsigned line, const char *want)
{
    const char *path = write_conf("bad.conf", text);
    aly_err_t err = {.msg = {0}};
    aly_config_t *cfg = config_load(path, &err);
    ok(cfg == NULL, "rejected: %s", want);
    char prefix[300];
    if (line != 0)
        snprintf(prefix, sizeof(prefix), "%s:%u: ", path, line);
    else
        snprintf(prefix, sizeof(prefix), "%s: ", path);
    int good = strncmp(err.msg, prefix, strlen(prefix)) == 0 && strstr(err.msg, want) != NULL;
    ok(good, "message names %s and the line", want);
    if (!good)
        printf("#   got: %s\n#   expected prefix %s and \"%s\"\n", err.msg, prefix, want);
    config_free(cfg);
}

static void test_full(void)
{
    const char *cert = write_conf("cert.pem", "x");
    char text[2048];
    snprintf(text, sizeof(text),
             "# comment line\n"
             "listen 127.0.0.1:8443 tls   # trailing comment\n"
             "listen [::1]:8080\n"
             "tls_certificate %s\n"
             "tls_key %s\n"
             "workers 4\n"
             "data_dir /var/tmp/aly\n"
             "public_url https://aly.example.com/\n"
             "rate_limit 60/minute burst=10\n"
             "auth_failure_limit 5/second\n"
             "max_request_body 512k\n"
             "shutdown_timeout 1500ms\n"
             "session_ttl 2h\n"
             "oauth_issuer https://auth.example.com\n"
             "oauth_hs256_secret_file %s\n"
             "oauth_leeway 2m\n"
             "allowed_origins https://a.example https://b.example\n"
             "allowed_origins https://c.example\n"
             "oauth_client_rate_limit claude 10/hour burst=2\n"
             "metrics_listen 127.0.0.1:9180\n",
             cert, cert, cert);
    aly_err_t err;
    aly_config_t *cfg = config_load(write_conf("full.conf", text), &err);
    ok(cfg != NULL, "full configuration loads");
    if (cfg == NULL) {
        printf("#   %s\n", err.msg);
        return;
    }
    is_int(cfg->n_listens, 2, "two listeners");
    is_int(cfg->listens[0].tls, 1, "first is tls");
    is_int(cfg->listens[0].port, 8443, "port parsed");
    is_int(cfg->listens[1].loopback, 1, "[::1] is loopback");
    is_int(cfg->workers, 4, "workers");
    is_str(cfg->public_url, "https://aly.example.com", "public_url without trailing slash");
    is_int(cfg->rate_limit.count, 60, "rate count");
    is_int(cfg->rate_limit.period_s, 60, "rate period");
    is_int(cfg->rate_limit.burst, 10, "rate burst");
    is_int(cfg->auth_failure_limit.burst, 5, "burst defaults to the count");
    is_int(cfg->max_request_body, 512 * 1024, "size with k");
    is_int(cfg->shutdown_timeout_ms, 1500, "duration in ms");
    is_int(cfg->session_ttl_ms, 2 * 3600 * 1000, "duration in h");
    is_int(cfg->oauth_leeway_s, 120, "leeway in seconds");
    is_int(cfg->allowed_origins.n, 3, "allowed_origins accumulate");
    is_int(cfg->n_client_rates, 1, "client rate");
    is_str(cfg->client_rates[0].client_id, "claude", "client id");
    is_int(cfg->client_rates[0].rate.period_s, 3600, "client rate period");
    is_int(cfg->authorization_servers.n, 1, "authorization_servers defaults to the issuer");
    is_str(cfg->authorization_servers.items[0], "https://auth.example.com", "issuer");
    is_str(cfg->key_pepper_file, "/var/tmp/aly/pepper", "pepper file under data_dir");
    is_int(cfg->metrics_listen.port, 9180, "metrics_listen");
    is_str(cfg->allowed_hosts.items[0], "aly.example.com", "allowed_hosts from public_url");
    config_free(cfg);
}

static void test_defaults(void)
{
    aly_err_t err;
    aly_config_t *cfg = config_load(write_conf("empty.conf", "\n# nothing\n\n"), &err);
    ok(cfg != NULL, "empty file loads");
    if (cfg == NULL)
        return;
    is_int(cfg->n_listens, 1, "default listener");
    is_str(cfg->listens[0].spec, "127.0.0.1:8080", "default listen 127.0.0.1:8080");
    is_str(cfg->public_url, "http://127.0.0.1:8080", "public_url from the first listener");
    is_str(cfg->data_dir, "/var/lib/alyd", "data_dir default");
    is_int(cfg->workers, 0, "workers auto");
    ok(config_worker_count(cfg) >= 1, "auto resolves to at least one worker");
    is_int(cfg->rate_limit.count, 600, "rate_limit default 600");
    is_int(cfg->rate_limit.burst, 60, "rate_limit default burst 60");
    is_int(cfg->auth_failure_limit.count, 30, "auth_failure_limit default 30/minute");
    is_int(cfg->max_request_body, 1 << 20, "max_request_body 1m");
    is_int(cfg->shutdown_timeout_ms, 30000, "shutdown_timeout 30s");
    is_int(cfg->session_ttl_ms, 86400000, "session_ttl 24h");
    is_int(cfg->oauth_leeway_s, 60, "oauth_leeway 60s");
    ok(cfg->oauth_issuer == NULL, "OAuth off by default");
    is_str(cfg->error_log, "stderr", "error_log stderr");
    ok(cfg->allowed_hosts.n >= 2, "loopback names allowed on a loopback listener");
    is_str(cfg->allowed_origins.items[0], "http://127.0.0.1:8080", "origin from public_url");
    config_free(cfg);
}

static void test_rates(void)
{
    aly_rate_t r;
    aly_err_t err;
    is_int(config_parse_rate("600/minute burst=60", &r, &err), 0, "rate parses");
    char buf[64];
    config_format_rate(&r, buf, sizeof(buf));
    is_str(buf, "600/minute burst=60", "rate round-trips");
    is_int(config_parse_rate("1/day", &r, &err), 0, "1/day parses");
    is_int(r.period_s, 86400, "day is 86400 s");
    const char *bad_rates[] = {"",
                               "10",
                               "0/minute",
                               "10/fortnight",
                               "10/minute burst=0",
                               "10/minute burst=x",
                               "10/minute bust=3",
                               "-1/minute",
                               "99999999999/minute"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(bad_rates); i++)
        is_int(config_parse_rate(bad_rates[i], &r, &err), -1, "rate \"%s\" refused", bad_rates[i]);
}

static void test_durations(void)
{
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {{"1500ms", 1500}, {"30", 30000}, {"45s", 45000}, {"5m", 300000}, {"12h", 43200000}, {"90d", 7776000000ULL}};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(good); i++) {
        uint64_t ms = 0;
        is_int(config_parse_duration(good[i].text, &ms), 0, "duration \"%s\" parses", good[i].text);
        is_int(ms, good[i].ms, "duration \"%s\" in ms", good[i].text);
    }
    const char *bad_durations[] =
        {"", "d", "-1s", " 5s", "5 s", "5w", "5sec", "1.5h", "99999999999999999999s", "9999999999999999d"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(bad_durations); i++) {
        uint64_t ms = 7;
        is_int(config_parse_duration(bad_durations[i], &ms), -1, "duration \"%s\" refused", bad_durations[i]);
    }
}

static void test_numbers(void)
{
    uint64_t v = 0;
    is_int(config_parse_uint("0", &v), 0, "0 parses");
    is_int(config_parse_uint("18446744073709551615", &v), 0, "UINT64_MAX parses");
    ok(v == UINT64_MAX, "as UINT64_MAX");
    const char *bad_uints[] = {"", "-1", "+1", " 1", "1 ", "1k", "0x10", "18446744073709551616"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(bad_uints); i++)
        is_int(config_parse_uint(bad_uints[i], &v), -1, "uint \"%s\" refused", bad_uints[i]);
    static const struct {
        const char *text;
        uint64_t bytes;
    } sizes[] = {{"512", 512},    {"512k", 524288},      {"2K", 2048},      {"1m", 1048576},
                 {"3M", 3145728}, {"2g", 2147483648ULL}, {"1G", 1073741824}};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(sizes); i++) {
        is_int(config_parse_size(sizes[i].text, &v), 0, "size \"%s\" parses", sizes[i].text);
        is_int(v, sizes[i].bytes, "size \"%s\" in bytes", sizes[i].text);
    }
    const char *bad_sizes[] = {"", "k", "1kb", "1t", "1.5m", "-1k", "17179869184g"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(bad_sizes); i++)
        is_int(config_parse_size(bad_sizes[i], &v), -1, "size \"%s\" refused", bad_sizes[i]);
}

/* Resolves the user and group of a configuration made of text; the config is freed. */
static int lookup(const char *text, uid_t *uid, gid_t *gid, aly_err_t *err)
{
    aly_err_t perr;
    aly_config_t *cfg = config_load(write_conf("users.conf", text), &perr);
    if (cfg == NULL) {
        *err = perr;
        return -2;
    }
    int rc = config_lookup_user(cfg, uid, gid, err);
    config_free(cfg);
    return rc;
}

static void test_users(void)
{
    uid_t uid;
    gid_t gid;
    aly_err_t err;
    char want[400];
    const char *path = write_conf("users.conf", "");
    is_int(lookup("listen 127.0.0.1:8080\n", &uid, &gid, &err), 0, "no user, no group");
    ok(uid == (uid_t)-1 && gid == (gid_t)-1, "nothing set: ids stay -1");
    is_int(lookup("user root\n", &uid, &gid, &err), 0, "root resolves");
    ok(uid == 0 && gid == 0, "root is uid 0, gid 0");
    is_int(lookup("group root\n", &uid, &gid, &err), 0, "group alone resolves");
    ok(uid == (uid_t)-1 && gid == 0, "group alone sets the gid only");
    is_int(lookup("listen 127.0.0.1:8080\n\nuser no-such-user-aly\n", &uid, &gid, &err), -1, "unknown user refused");
    snprintf(want, sizeof(want), "%s:3: user \"no-such-user-aly\" does not exist", path);
    is_str(err.msg, want, "unknown user named, with its file and line");
    is_int(lookup("group no-such-group-aly\nuser root\n", &uid, &gid, &err), -1, "unknown group refused");
    snprintf(want, sizeof(want), "%s:1: group \"no-such-group-aly\" does not exist", path);
    is_str(err.msg, want, "unknown group named, with its file and line");
}

static void test_bad(void)
{
    bad("listen 127.0.0.1:8080\nlistn 127.0.0.1:9000\n", 2, "unknown directive \"listn\"");
    bad("listen 127.0.0.1:99999\n", 1, "must be from 1 to 65535");
    bad("listen 127.0.0.1\n", 1, "must look like");
    bad("listen ::1:80\n", 1, "in brackets");
    bad("listen example.com:80\n", 1, "must be an IP address");
    bad("listen 127.0.0.1:80 ssl\n", 1, "optionally \"tls\"");
    bad("listen 127.0.0.1:80\nlisten 127.0.0.1:80\n", 2, "appears twice");
    bad("listen *:8080\n", 1, "wildcard");
    bad("workers 0\n", 1, "workers \"0\"");
    bad("workers 999\n", 1, "workers \"999\"");
    bad("workers many\n", 1, "workers \"many\"");
    bad("max_request_body 1x\n", 1, "must be a size");
    bad("max_request_body 10\n", 1, "max_request_body must be from");
    bad("shutdown_timeout 5 minutes\n", 1, "takes one value");
    bad("shutdown_timeout soon\n", 1, "must be a duration");
    bad("audit_retention forever\n", 1, "must be a duration");
    bad("audit_retention 3651d\n", 1, "audit_retention must be");
    bad("rate_limit 10/fortnight\n", 1, "rate period \"fortnight\"");
    bad("rate_limit 10/minute burst=5 extra\n", 1, "got extra");
    bad("workers 2\nworkers 3\n", 2, "already set on line 1");
    bad("public_url ftp://aly.example\n", 1, "must be an http:// or https:// URL");
    bad("public_url https://aly.example/?x=1\n", 1, "must be an http:// or https:// URL");
    bad("authorization_servers notaurl\n", 1, "is not an http:// or https:// URL");
    bad("data_dir\n", 1, "needs a value");
    bad("listen 127.0.0.1:8443 tls\n", 1, "needs both tls_certificate and tls_key");
    bad("tls_certificate /nonexistent/cert.pem\n", 1, "cannot read \"/nonexistent/cert.pem\"");
    bad("oauth_issuer https://auth.example\n", 1, "no key source");
    bad("oauth_client_rate_limit only-id\n", 1, "takes a client id and a rate");
    bad("oauth_client_rate_limit a 1/second\noauth_client_rate_limit a 2/second\n", 2, "set twice");
    bad("listen 127.0.0.1:80\x01\n", 1, "control character");
    bad("metrics_listen 127.0.0.1:8080\n", 1, "also a listen address");

    /* Each bounded integer: one past each end refused, naming the directive and its range; each end accepted. */
    static const struct {
        const char *name;
        unsigned long long max;
    } bounded[] = {{"max_connections", 1000000},        {"max_connections_per_address", 1000000},
                   {"max_streams_per_connection", 256}, {"reset_budget", 1000000},
                   {"address_strikes", 1000000},        {"list_scan_budget", 100000000},
                   {"analytics_scan_budget", 100000000}};
    for (size_t i = 0; i < sizeof(bounded) / sizeof(bounded[0]); i++) {
        char text[120], want[120];
        snprintf(want, sizeof(want), "%s must be an integer from 1 to %llu", bounded[i].name, bounded[i].max);
        snprintf(text, sizeof(text), "%s 0\n", bounded[i].name);
        bad(text, 1, want);
        snprintf(text, sizeof(text), "%s %llu\n", bounded[i].name, bounded[i].max + 1);
        bad(text, 1, want);
        for (int end = 0; end < 2; end++) {
            snprintf(text, sizeof(text), "%s %llu\n", bounded[i].name, end ? bounded[i].max : 1ULL);
            aly_err_t e;
            aly_config_t *c = config_load(write_conf("ok.conf", text), &e);
            ok(c != NULL, "%s %llu accepted", bounded[i].name, end ? bounded[i].max : 1ULL);
            config_free(c);
        }
    }
    /* A line of 4,097 bytes and a line of 65 words are refused, naming the line. */
    static char longline[4200], words[400];
    memset(longline, '#', 4097);
    longline[4097] = '\n';
    bad(longline, 1, "line is longer than 4096 bytes");
    size_t n = (size_t)snprintf(words, sizeof(words), "allowed_origins");
    for (int w = 0; w < 64; w++)
        n += (size_t)snprintf(words + n, sizeof(words) - n, " o%d", w);
    snprintf(words + n, sizeof(words) - n, "\n");
    bad(words, 1, "too many values on one line");

    aly_err_t err;
    ok(config_load("/nonexistent/alyd.conf", &err) == NULL, "missing file refused");
    ok(strstr(err.msg, "/nonexistent/alyd.conf: cannot open") == err.msg, "missing file named");
}

int main(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_full();
    test_defaults();
    test_rates();
    test_durations();
    test_numbers();
    test_users();
    test_bad();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return done_testing();
}

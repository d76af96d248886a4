/*
 * Tests of the client-ID metadata document fetcher (src/oauth_cimd.c) against
 * a real HTTPS server (t/fixtures/cimd-server.mjs, on Node) whose certificate
 * is issued by a CA made for this run: URL refusals, good documents returned
 * byte for byte, every response limit, the cache and its lifetimes, joined
 * fetches and cancelled waiters, the TLS trust and name checks, the 5 s
 * deadline, and the loop serving other work while a fetch hangs.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "aly/common.h"
#include "aly/config.h"
#include "aly/oauth_cimd.h"
#include "tap.h"

/* The body of /wrongid.json in the fixture, byte for byte. */
static const char WRONG_ID_BODY[] = "{\"client_id\": \"https://evil.example/ok.json\",\n"
                                    " \"client_name\": \"caf\xc3\xa9 \\\"quoted\\\"\",\n"
                                    " \"redirect_uris\": [\"https://evil.example/cb\"]}\n";

static h2o_loop_t *loop;
static char tmp[] = "/tmp/aly-unit-cimd-XXXXXX";
static pid_t server_pid;
static unsigned port;

typedef struct result {
    int calls;
    char *doc;
    size_t len;
    char err[256];
    uint64_t at_ms;
} result_t;

static void on_doc(void *ctx, const char *doc, size_t len, const char *err)
{
    result_t *r = ctx;
    r->calls++;
    r->at_ms = aly_now_ms();
    free(r->doc);
    r->doc = NULL;
    r->err[0] = '\0';
    if (doc != NULL) {
        r->doc = malloc(len + 1);
        memcpy(r->doc, doc, len + 1);
        r->len = len;
    } else {
        snprintf(r->err, sizeof(r->err), "%s", err != NULL ? err : "(null)");
    }
}

static void reset(result_t *r)
{
    free(r->doc);
    *r = (result_t){0};
}

static void run_until(const int *calls, int want)
{
    uint64_t end = aly_now_ms() + 20000;
    while (*calls < want && aly_now_ms() < end)
        h2o_evloop_run(loop, 50);
}

static char *url_of(const char *host, const char *path)
{
    static char buf[4][256];
    static int i;
    char *u = buf[i++ % 4];
    snprintf(u, sizeof(buf[0]), "https://%s:%u%s", host, port, path);
    return u;
}

/* Fetches path from localhost, waits for the answer; the return value of oauth_cimd_fetch. */
static int fetch(const aly_config_t *cfg, const char *path, result_t *r)
{
    reset(r);
    int rc = oauth_cimd_fetch(loop, cfg, url_of("localhost", path), on_doc, r);
    if (rc == 0)
        run_until(&r->calls, 1);
    return rc;
}

/* The document's "serial" (how often the fixture served its path), or -1. */
static long long serial(const result_t *r)
{
    if (r->doc == NULL)
        return -1;
    json_t *j = json_loadb(r->doc, r->len, 0, NULL);
    long long s = json_is_integer(json_object_get(j, "serial")) ? json_integer_value(json_object_get(j, "serial")) : -1;
    json_decref(j);
    return s;
}

static int has(const char *s, const char *needle)
{
    return s != NULL && strstr(s, needle) != NULL;
}

static int sh(const char *cmd)
{
    char full[2048];
    snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", tmp, cmd);
    return system(full);
}

/* A CA and a certificate for "localhost" it signed. */
static int make_certs(void)
{
    FILE *fp;
    char p[512];
    snprintf(p, sizeof(p), "%s/leaf.ext", tmp);
    if ((fp = fopen(p, "w")) == NULL)
        return -1;
    fputs("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n", fp);
    fclose(fp);
    return sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=alyd-cimd-test-ca "
              "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -keyout ca.key -out ca.pem") |
           sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout leaf.key -out leaf.csr") |
           sh("openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext -out leaf.pem");
}

static const char *find_node(void)
{
    static char p[1024];
    const char *dir = getenv("ALY_NODE_DIR");
    if (dir != NULL && *dir != '\0') {
        snprintf(p, sizeof(p), "%s/node_modules/node/bin/node", dir);
        if (access(p, X_OK) == 0)
            return p;
    }
    return system("command -v node >/dev/null 2>&1") == 0 ? "node" : NULL;
}

static int start_server(const char *node)
{
    const char *src = getenv("ALY_SRCDIR");
    char script[1024], key[600], cert[600], line[64];
    snprintf(script, sizeof(script), "%s/t/fixtures/cimd-server.mjs", src != NULL ? src : ".");
    snprintf(key, sizeof(key), "%s/leaf.key", tmp);
    snprintf(cert, sizeof(cert), "%s/leaf.pem", tmp);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    if ((server_pid = fork()) == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execlp(node, node, script, key, cert, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *fp = fdopen(fds[0], "r");
    int rc = fp != NULL && fgets(line, sizeof(line), fp) != NULL && sscanf(line, "port %u", &port) == 1 ? 0 : -1;
    if (fp != NULL)
        fclose(fp);
    return rc;
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
}

static aly_config_t *test_config(int with_ca)
{
    aly_err_t err;
    aly_config_t *cfg = config_defaults(&err);
    if (cfg == NULL)
        return NULL;
    config_strlist_push(&cfg->oauth_cimd_allow, "localhost");
    config_strlist_push(&cfg->oauth_cimd_allow, "127.0.0.1");
    if (with_ca) {
        char p[600];
        snprintf(p, sizeof(p), "%s/ca.pem", tmp);
        cfg->oauth_cimd_ca_file = strdup(p);
    }
    return cfg;
}

static void test_refusals(const aly_config_t *cfg)
{
    char longurl[OAUTH_CIMD_URL_MAX + 64];
    int n = snprintf(longurl, sizeof(longurl), "https://localhost:%u/", port);
    memset(longurl + n, 'a', sizeof(longurl) - (size_t)n - 1);
    longurl[OAUTH_CIMD_URL_MAX + 1] = '\0';
    char atlimit[OAUTH_CIMD_URL_MAX + 1];
    memcpy(atlimit, longurl, OAUTH_CIMD_URL_MAX);
    atlimit[OAUTH_CIMD_URL_MAX] = '\0';

    char bad[][128] = {"", "", "", "", "", "", "", "", "", "", "", "", "", "", ""};
    const char *why[ALY_ARRAY_SIZE(bad)];
    int i = 0;
#define BAD(reason, ...) (snprintf(bad[i], sizeof(bad[0]), __VA_ARGS__), why[i++] = (reason))
    BAD("http, not https", "http://localhost:%u/ok.json", port);
    BAD("scheme in capitals", "HTTPS://localhost:%u/ok.json", port);
    BAD("host not in oauth_cimd_allow", "https://example.com/ok.json");
    BAD("a name that merely starts with an allowed host", "https://localhost.evil.example:%u/ok.json", port);
    BAD("user info before the host", "https://user@localhost:%u/ok.json", port);
    BAD("allowed host as user info of another", "https://localhost:%u@evil.example/ok.json", port);
    BAD("no path", "https://localhost:%u", port);
    BAD("a fragment", "https://localhost:%u/ok.json#frag", port);
    BAD("a \"..\" segment", "https://localhost:%u/a/../ok.json", port);
    BAD("a \".\" segment", "https://localhost:%u/./ok.json", port);
    BAD("port 0", "https://localhost:0/ok.json");
    BAD("port over 65535", "https://localhost:65536/ok.json");
    BAD("a space in the path", "https://localhost:%u/ok .json", port);
    BAD("a backslash", "https://localhost:%u\\@evil.example/ok.json", port);
    BAD("an IPv6 literal", "https://[::1]:%u/ok.json", port);
#undef BAD
    for (int k = 0; k < i; k++) {
        result_t r = {0};
        int rc = oauth_cimd_fetch(loop, cfg, bad[k], on_doc, &r);
        h2o_evloop_run(loop, 10);
        ok(rc == -1 && r.calls == 0, "refused at once, no callback: %s (%s)", why[k], bad[k]);
    }
    result_t r = {0};
    ok(oauth_cimd_fetch(loop, cfg, longurl, on_doc, &r) == -1 && r.calls == 0, "refused: a URL of %d bytes",
       OAUTH_CIMD_URL_MAX + 1);
    ok(oauth_cimd_fetch(loop, cfg, atlimit, on_doc, &r) == 0, "a URL of exactly %d bytes is fetched", OAUTH_CIMD_URL_MAX);
    run_until(&r.calls, 1);
    ok(r.calls == 1 && has(r.err, "404"), "... and answered (404 from the fixture): %s", r.err);
    reset(&r);
}

static void test_documents(const aly_config_t *cfg)
{
    result_t r = {0};
    int rc = oauth_cimd_fetch(loop, cfg, url_of("localhost", "/ok.json"), on_doc, &r);
    ok(rc == 0 && r.calls == 0, "a fetch starts and does not call back before returning");
    run_until(&r.calls, 1);
    ok(r.calls == 1 && r.doc != NULL, "the document arrives: %s", r.doc != NULL ? r.doc : r.err);
    json_t *j = r.doc != NULL ? json_loadb(r.doc, r.len, 0, NULL) : NULL;
    is_str(json_string_value(json_object_get(j, "client_id")), url_of("localhost", "/ok.json"), "its client_id is its URL");
    json_decref(j);
    ok(r.doc != NULL && strlen(r.doc) == r.len, "the document is NUL-terminated and len excludes the NUL");
    is_int(serial(&r), 1, "served once");
    uint64_t ttl = oauth_cimd_cache_ttl(url_of("localhost", "/ok.json"));
    ok(ttl > 50000 && ttl <= 60000, "cached for its max-age=60: %llu ms left", (unsigned long long)ttl);

    reset(&r);
    rc = oauth_cimd_fetch(loop, cfg, url_of("localhost", "/ok.json"), on_doc, &r);
    ok(rc == 0 && r.calls == 1, "a cache hit calls back before oauth_cimd_fetch returns");
    is_int(serial(&r), 1, "the cached document (the fixture was not asked again)");
    ok(oauth_cimd_cache_ttl(url_of("localhost", "/ok.json?x")) == 0, "the cache is keyed by the exact URL");

    ok(fetch(cfg, "/wrongid.json", &r) == 0 && r.doc != NULL, "a document whose client_id is another URL is still returned");
    ok(r.doc != NULL && r.len == strlen(WRONG_ID_BODY) && memcmp(r.doc, WRONG_ID_BODY, r.len) == 0,
       "... byte for byte as served (the caller compares client_id)");

    ok(fetch(cfg, "/charset.json", &r) == 0 && r.doc != NULL, "Content-Type application/json with parameters, any case: accepted");
    ok(fetch(cfg, "/exact.json", &r) == 0 && r.doc != NULL && r.len == OAUTH_CIMD_MAX_DOC,
       "a document of exactly %d bytes: accepted", OAUTH_CIMD_MAX_DOC);
    reset(&r);
}

static void test_cache_lifetimes(const aly_config_t *cfg)
{
    result_t r = {0};
    static const char *uncached[] = {"/nostore.json", "/nocache.json", "/maxage0.json"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(uncached); i++) {
        fetch(cfg, uncached[i], &r);
        long long first = serial(&r);
        ok(oauth_cimd_cache_ttl(url_of("localhost", uncached[i])) == 0, "%s: not cached", uncached[i]);
        fetch(cfg, uncached[i], &r);
        ok(first == 1 && serial(&r) == 2, "%s: the next request fetches again (serials %lld, %lld)", uncached[i], first,
           serial(&r));
    }

    fetch(cfg, "/nocc.json", &r);
    uint64_t ttl = oauth_cimd_cache_ttl(url_of("localhost", "/nocc.json"));
    ok(r.doc != NULL && ttl > (OAUTH_CIMD_DEFAULT_AGE_S - 10) * 1000 && ttl <= OAUTH_CIMD_DEFAULT_AGE_S * 1000,
       "no Cache-Control: kept for the default %d s (%llu ms left)", OAUTH_CIMD_DEFAULT_AGE_S, (unsigned long long)ttl);

    fetch(cfg, "/long.json", &r);
    ttl = oauth_cimd_cache_ttl(url_of("localhost", "/long.json"));
    ok(r.doc != NULL && ttl > (OAUTH_CIMD_MAX_AGE_S - 10) * 1000ULL && ttl <= OAUTH_CIMD_MAX_AGE_S * 1000ULL,
       "max-age=999999999: kept 24 h at most (%llu ms left)", (unsigned long long)ttl);

    fetch(cfg, "/short.json", &r);
    ok(serial(&r) == 1 && oauth_cimd_cache_ttl(url_of("localhost", "/short.json")) > 0, "max-age=1 among other directives: cached");
    fetch(cfg, "/short.json", &r);
    ok(r.calls == 1 && serial(&r) == 1, "... a hit within the second");
    usleep(1100 * 1000);
    ok(oauth_cimd_cache_ttl(url_of("localhost", "/short.json")) == 0, "... gone after a second");
    fetch(cfg, "/short.json", &r);
    is_int(serial(&r), 2, "... and fetched again");
    reset(&r);
}

static void test_refused_answers(const aly_config_t *cfg)
{
    static const struct {
        const char *path, *why, *err;
    } cases[] = {
        {"/redirect.json", "302 redirect", "redirect (HTTP 302) not followed"},
        {"/moved.json", "301 redirect to an absolute URL", "redirect (HTTP 301) not followed"},
        {"/404.json", "404", "HTTP status 404"},
        {"/html.json", "Content-Type text/html", "Content-Type is not application/json"},
        {"/jsonish.json", "Content-Type application/jsonp", "Content-Type is not application/json"},
        {"/notype.json", "no Content-Type", "Content-Type is not application/json"},
        {"/big.json", "Content-Length one byte over the limit", "document larger than 5120 bytes"},
        {"/bigchunked.json", "64 KB chunked, no Content-Length", "document larger than 5120 bytes"},
        {"/empty.json", "an empty body", "empty document"},
    };
    for (size_t i = 0; i < ALY_ARRAY_SIZE(cases); i++) {
        result_t r = {0};
        int rc = fetch(cfg, cases[i].path, &r);
        ok(rc == 0 && r.calls == 1 && r.doc == NULL && strcmp(r.err, cases[i].err) == 0, "refused: %s (%s)", cases[i].why, r.err);
        ok(oauth_cimd_cache_ttl(url_of("localhost", cases[i].path)) == 0, "... and nothing cached");
        reset(&r);
    }
}

static void test_tls(const aly_config_t *cfg, const aly_config_t *system_trust)
{
    result_t r = {0};
    int rc = fetch(system_trust, "/nostore.json", &r);
    ok(rc == 0 && r.calls == 1 && r.doc == NULL && r.err[0] != '\0',
       "a certificate from a CA outside the trust store: refused (%s)", r.err);
    fetch(cfg, "/nostore.json", &r);
    ok(r.doc != NULL, "the same URL with the test CA trusted: fetched");

    reset(&r);
    rc = oauth_cimd_fetch(loop, cfg, url_of("127.0.0.1", "/nostore.json"), on_doc, &r);
    run_until(&r.calls, 1);
    ok(rc == 0 && r.calls == 1 && r.doc == NULL && has(r.err, "IP address mismatch"),
       "a trusted certificate that does not name the URL's host (127.0.0.1): refused (%s)", r.err);
    reset(&r);
}

static void test_join_and_cancel(const aly_config_t *cfg)
{
    result_t r[4] = {{0}};
    const char *u = url_of("localhost", "/delay.json");
    int rc = 0;
    for (int i = 0; i < 4; i++)
        rc |= oauth_cimd_fetch(loop, cfg, u, on_doc, &r[i]);
    oauth_cimd_cancel(&r[2]);
    run_until(&r[3].calls, 1);
    h2o_evloop_run(loop, 10);
    ok(rc == 0, "four requests for one URL in flight");
    ok(r[0].calls == 1 && r[1].calls == 1 && r[3].calls == 1, "each waiter called once");
    ok(serial(&r[0]) == 1 && serial(&r[1]) == 1 && serial(&r[3]) == 1, "one fetch served them all (serial 1 each)");
    is_int(r[2].calls, 0, "the cancelled waiter is not called");
    ok(oauth_cimd_cache_ttl(u) > 0, "the joined fetch filled the cache");

    /* A requester that goes away before anyone else asked: the fetch still fills the cache. */
    result_t gone = {0}, later = {0};
    u = url_of("localhost", "/ok.json?cancelled");
    ok(oauth_cimd_fetch(loop, cfg, u, on_doc, &gone) == 0, "a fetch whose only requester cancels");
    oauth_cimd_cancel(&gone);
    uint64_t end = aly_now_ms() + 20000;
    while (oauth_cimd_cache_ttl(u) == 0 && aly_now_ms() < end)
        h2o_evloop_run(loop, 50);
    ok(gone.calls == 0 && oauth_cimd_cache_ttl(u) > 0, "... goes on, fills the cache and calls nobody");
    ok(oauth_cimd_fetch(loop, cfg, u, on_doc, &later) == 0 && later.calls == 1, "... so the next requester is answered at once");
    for (int i = 0; i < 4; i++)
        reset(&r[i]);
    reset(&later);
}

static void test_prepare(const aly_config_t *cfg)
{
    is_int(oauth_cimd_prepare(cfg), 0, "prepare: the test CA and a TLS context per allowed host");
    aly_err_t err;
    aly_config_t *missing = config_defaults(&err);
    config_strlist_push(&missing->oauth_cimd_allow, "localhost");
    missing->oauth_cimd_ca_file = strdup("/nonexistent/ca.pem");
    is_int(oauth_cimd_prepare(missing), -1, "prepare: a CA file that cannot be read is an error");
    result_t r = {0};
    ok(oauth_cimd_fetch(loop, missing, url_of("localhost", "/nostore.json"), on_doc, &r) == -1 && r.calls == 0,
       "... and fetches with it are refused at once");
    config_free(missing);
}

typedef struct ticker {
    h2o_timeout_t timeout;
    h2o_timeout_entry_t entry;
    int ticks;
} ticker_t;

static ticker_t ticker;

static void on_tick(h2o_timeout_entry_t *entry)
{
    ticker.ticks++;
    h2o_timeout_link(loop, &ticker.timeout, entry);
}

static void test_deadline_and_loop(const aly_config_t *cfg)
{
    result_t slow = {0}, stall = {0}, fast = {0}, extra[OAUTH_CIMD_MAX_FETCHES] = {{0}}, joiner = {0}, refused = {0};
    h2o_timeout_init(loop, &ticker.timeout, 100);
    ticker.entry.cb = on_tick;
    h2o_timeout_link(loop, &ticker.timeout, &ticker.entry);

    uint64_t t0 = aly_now_ms();
    ok(oauth_cimd_fetch(loop, cfg, url_of("localhost", "/slow.json"), on_doc, &slow) == 0,
       "a fetch from a server trickling a byte every 200 ms");
    ok(oauth_cimd_fetch(loop, cfg, url_of("localhost", "/stall.json"), on_doc, &stall) == 0,
       "a fetch from a server that never answers");
    ok(oauth_cimd_fetch(loop, cfg, url_of("localhost", "/nostore.json"), on_doc, &fast) == 0, "a third fetch meanwhile");
    run_until(&fast.calls, 1);
    ok(fast.doc != NULL && slow.calls == 0 && stall.calls == 0, "the third is answered while the other two hang");

    /* Fill the in-flight table with distinct URLs: the next new URL is refused, joining is not. */
    int started = 0;
    for (int i = 0; i < OAUTH_CIMD_MAX_FETCHES - 2; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/stall.json?%d", i);
        started += oauth_cimd_fetch(loop, cfg, url_of("localhost", p), on_doc, &extra[i]) == 0;
    }
    is_int(started, OAUTH_CIMD_MAX_FETCHES - 2, "%d fetches in flight", OAUTH_CIMD_MAX_FETCHES);
    ok(oauth_cimd_fetch(loop, cfg, url_of("localhost", "/stall.json?one-more"), on_doc, &refused) == -1 && refused.calls == 0,
       "one more URL: refused at once");
    ok(oauth_cimd_fetch(loop, cfg, url_of("localhost", "/stall.json"), on_doc, &joiner) == 0,
       "joining a fetch in flight: accepted");
    ok(oauth_cimd_fetch(loop, cfg, url_of("localhost", "/ok.json"), on_doc, &refused) == 0 && refused.calls == 1,
       "a cached document is still served at once");

    int ticks_before = ticker.ticks;
    run_until(&slow.calls, 1);
    run_until(&stall.calls, 1);
    run_until(&joiner.calls, 1);
    for (int i = 0; i < OAUTH_CIMD_MAX_FETCHES - 2; i++)
        run_until(&extra[i].calls, 1);
    const char *deadline = "no complete answer within 5000 ms";
    ok(slow.calls == 1 && slow.doc == NULL && strcmp(slow.err, deadline) == 0,
       "the trickling server is cut off by the deadline (%s)", slow.err);
    /* The loop's clock, which arms the deadline, may lag ours by a tick. */
    ok(slow.at_ms - t0 >= OAUTH_CIMD_TIMEOUT_MS - 100, "... not before %d ms (%llu ms)", OAUTH_CIMD_TIMEOUT_MS,
       (unsigned long long)(slow.at_ms - t0));
    ok(stall.calls == 1 && strcmp(stall.err, deadline) == 0, "the silent server too (%s)", stall.err);
    ok(joiner.calls == 1 && strcmp(joiner.err, deadline) == 0, "the joined waiter hears the same");
    int all = 1;
    for (int i = 0; i < OAUTH_CIMD_MAX_FETCHES - 2; i++)
        all &= extra[i].calls == 1 && strcmp(extra[i].err, deadline) == 0;
    ok(all, "every stalled fetch ends with the deadline");
    ok(ticker.ticks - ticks_before >= 10, "a 100 ms timer kept firing during the hung fetches (%d times)",
       ticker.ticks - ticks_before);
    result_t after = {0};
    ok(fetch(cfg, "/ok.json?again", &after) == 0 && after.doc != NULL, "after the deadlines, new URLs are fetched again");
    h2o_timeout_unlink(&ticker.entry);
    reset(&slow), reset(&stall), reset(&fast), reset(&joiner), reset(&refused), reset(&after);
    for (int i = 0; i < OAUTH_CIMD_MAX_FETCHES - 2; i++)
        reset(&extra[i]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *node = find_node();
    if (node == NULL) {
        printf("1..0 # SKIP no node to run the HTTPS fixture\n");
        return 0;
    }
    if (mkdtemp(tmp) == NULL || make_certs() != 0) {
        printf("Bail out! cannot make test certificates with openssl in %s\n", tmp);
        return 1;
    }
    if (start_server(node) != 0) {
        printf("Bail out! the HTTPS fixture did not start (%s)\n", node);
        stop_server();
        return 1;
    }
    loop = h2o_evloop_create();
    aly_config_t *cfg = test_config(1), *system_trust = test_config(0);
    if (cfg == NULL || system_trust == NULL) {
        printf("Bail out! config_defaults failed\n");
        stop_server();
        return 1;
    }
    ok(cfg->oauth_cimd_allow.n == 4 && strcmp(cfg->oauth_cimd_allow.items[0], "claude.ai") == 0 &&
           strcmp(cfg->oauth_cimd_allow.items[1], "claude.com") == 0,
       "oauth_cimd_allow defaults to claude.ai and claude.com");

    test_prepare(cfg);
    test_refusals(cfg);
    test_documents(cfg);
    test_cache_lifetimes(cfg);
    test_refused_answers(cfg);
    test_tls(cfg, system_trust);
    test_join_and_cancel(cfg);
    test_deadline_and_loop(cfg);

    oauth_cimd_dispose();
    ok(oauth_cimd_cache_ttl(url_of("localhost", "/ok.json")) == 0, "dispose empties the cache");
    config_free(cfg);
    config_free(system_trust);
    stop_server();
    return done_testing();
}

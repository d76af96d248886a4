/*
 * The PostgreSQL side of cluster mode (aly/store.h): one connection per
 * process, its deadlines, the versioned schema, and the write batch a durable
 * transaction sends at commit.
 *
 * Waiting: libpq is driven without blocking (PQconnectStart/PQconnectPoll,
 * PQsendQuery, PQconsumeInput/PQisBusy) and every wait is a poll() on its
 * socket bounded by store_timeout, so a worker's event loop never waits on
 * the network for longer than that; a missed deadline drops the connection
 * (the server rolls back what was open).  The event loop is still stopped for
 * the duration of a round trip: measured on loopback a write costs two round
 * trips, a few hundred microseconds, the same order as LMDB's own fsync on
 * commit, so a callback-driven client would buy little and cost a second
 * transaction model in every tool.  While PostgreSQL is down, a process
 * tries to connect at most once per store_poll (at most once a second);
 * writes in between fail at once.
 *
 * A host name in the URL is looked up here, not by libpq: libpq's
 * getaddrinfo inside PQconnectStart/PQconnectPoll blocks, unbounded by
 * store_timeout, for the resolver's own timeouts (5 s a try by default) when
 * the DNS server is slow, which is when PostgreSQL fails over behind a name.
 * The lookup (aly/resolve.h) is made anew for each connection and waited for
 * within the connection's store_timeout; its address goes to libpq as
 * hostaddr, beside host (TLS verification and .pgpass still see the name).
 * One not answered in time fails the attempt like an unreachable PostgreSQL
 * and stays in flight for the next attempts to take up (never two), which
 * look at it without waiting again.  A list of hosts (host=a,b or
 * postgresql://a:1,b:2/db) has each name looked up so, all at once; a name
 * without an address in time is left out of the list libpq is given, as
 * libpq itself skips a host it cannot resolve, and the others are tried.
 * A URL that names a service (service=, PGSERVICE), and lists longer than
 * STORE_PG_HOSTS_MAX, are left to libpq, which resolves them itself,
 * blocking.
 *
 * Statements are sent as text (no parameters), several per round trip; keys
 * and values go in as bytea hex literals, which need no quoting rules beyond
 * the digits themselves.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "aly/log.h"
#include "aly/stats.h"
#include "aly/store_internal.h"

#define RETRY_MS 1000

/*
 * The schema, one step per version: step i takes a version i database to
 * version i + 1.  alyctl init runs the steps a database lacks, all in one
 * transaction under the write lock.
 */
static const char *const schema_steps[STORE_PG_SCHEMA_VERSION] = {
    /* 1: the records and the change log. */
    "CREATE TABLE kv (db smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (db, k));"
    "CREATE TABLE changes (seq bigserial PRIMARY KEY, db smallint NOT NULL, k bytea NOT NULL, v bytea,"
    " at timestamptz NOT NULL DEFAULT now());",
    /* 2: the change log is pruned; a replica behind the horizon copies kv whole. */
    "CREATE TABLE replica_horizon (upto bigint NOT NULL); INSERT INTO replica_horizon VALUES (0);"
    "CREATE INDEX changes_at ON changes (at);",
};

static void grow(char **buf, size_t *len, size_t *cap, size_t more)
{
    if (*len + more + 1 <= *cap)
        return;
    size_t n = *cap ? *cap : 4096;
    while (n < *len + more + 1)
        n *= 2;
    char *p = realloc(*buf, n);
    if (p == NULL)
        abort();
    *buf = p;
    *cap = n;
}

static void put_text(char **buf, size_t *len, size_t *cap, const char *text, size_t n)
{
    grow(buf, len, cap, n);
    memcpy(*buf + *len, text, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static void put_bytea(char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    grow(buf, len, cap, 2 * n + 4);
    char *o = *buf + *len;
    *o++ = '\'';
    *o++ = '\\';
    *o++ = 'x';
    for (size_t i = 0; i < n; i++) {
        *o++ = hex[((const unsigned char *)data)[i] >> 4];
        *o++ = hex[((const unsigned char *)data)[i] & 15];
    }
    *o++ = '\'';
    *len = (size_t)(o - *buf);
    (*buf)[*len] = '\0';
}

void store_pg_append(store_pg_t *pg, const char *text)
{
    put_text(&pg->buf, &pg->len, &pg->cap, text, strlen(text));
}

void store_pg_append_bytea(store_pg_t *pg, const void *data, size_t len)
{
    put_bytea(&pg->buf, &pg->len, &pg->cap, data, len);
}

void store_pg_reset(store_pg_t *pg)
{
    pg->len = pg->log_len = 0;
    if (pg->buf != NULL)
        pg->buf[0] = '\0';
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long store_pg_bytea(const char *text, size_t len, unsigned char *out)
{
    if (len < 2 || text[0] != '\\' || text[1] != 'x' || len % 2 != 0)
        return -1;
    for (size_t i = 2; i < len; i += 2) {
        int hi = hexval(text[i]), lo = hexval(text[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[(i - 2) / 2] = (unsigned char)(hi << 4 | lo);
    }
    return (long)(len - 2) / 2;
}

/* Whether a host item is a name that a resolver would be asked for: not empty, no socket directory, no IP address. */
static int host_is_name(const char *h)
{
    return h[0] != '\0' && h[0] != '/' && h[0] != '@' && !aly_ip_literal(h);
}

/* The items of a libpq list ("a,b,,c": empty ones too) into out, as copies; 0 when there are more than max. */
static size_t split_list(const char *list, char **out, size_t max)
{
    size_t n = 0;
    for (const char *p = list;; n++) {
        size_t len = strcspn(p, ",");
        if (n == max) {
            while (n > 0) {
                free(out[--n]);
                out[n] = NULL;
            }
            return 0;
        }
        if ((out[n] = strndup(p, len)) == NULL)
            abort();
        if (p[len] == '\0')
            return n + 1;
        p += len + 1;
    }
}

/* Drops the host and port lists (and abandons their lookups): libpq gets the URL's own. */
static void forget_hosts(store_pg_t *pg)
{
    for (size_t i = 0; i < STORE_PG_HOSTS_MAX; i++) {
        aly_lookup_abandon(pg->lookups[i]);
        free(pg->hosts[i]);
        free(pg->ports[i]);
        pg->lookups[i] = NULL;
        pg->hosts[i] = pg->ports[i] = NULL;
    }
    pg->n_hosts = 0;
}

/*
 * The hosts of url that store_pg_connect() looks up itself, into
 * pg->hosts (and pg->ports when the URL gives one port per host); none when
 * libpq would ask no resolver (hostaddr given; no host: the default unix
 * socket; socket directories and IP addresses only), when url does not
 * parse (libpq says why on connecting), or for a list of more than
 * STORE_PG_HOSTS_MAX hosts (left to libpq).  libpq's own defaults: PGHOST,
 * PGHOSTADDR and PGPORT when the URL sets none.
 */
static void hosts_to_resolve(store_pg_t *pg, const char *url)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    if (opts == NULL) {
        PQfreemem(msg);
        return;
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL, *service = NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    if (service == NULL || service[0] == '\0')
        service = getenv("PGSERVICE");
    /* A service file's host and port win over PGHOST and PGPORT, and alyd does not read service files: libpq's. */
    if (service != NULL && service[0] != '\0') {
        PQconninfoFree(opts);
        return;
    }
    if (host == NULL || host[0] == '\0')
        host = getenv("PGHOST");
    if (hostaddr == NULL || hostaddr[0] == '\0')
        hostaddr = getenv("PGHOSTADDR");
    if (port == NULL || port[0] == '\0')
        port = getenv("PGPORT");
    if ((hostaddr == NULL || hostaddr[0] == '\0') && host != NULL && host[0] != '\0' &&
        (pg->n_hosts = split_list(host, pg->hosts, STORE_PG_HOSTS_MAX)) > 0) {
        size_t names = 0;
        for (size_t i = 0; i < pg->n_hosts; i++)
            names += host_is_name(pg->hosts[i]) != 0;
        /* One port per host is filtered with the hosts; one port for all (or none) is the URL's to give. */
        int port_list = port != NULL && strchr(port, ',') != NULL;
        size_t n_ports = port_list ? split_list(port, pg->ports, STORE_PG_HOSTS_MAX) : 0;
        if (names == 0 || (port_list && n_ports != pg->n_hosts)) {
            /* Nothing to look up; or ports that do not pair with the hosts, which libpq refuses in its own words. */
            forget_hosts(pg);
        }
    }
    PQconninfoFree(opts);
}

store_pg_t *store_pg_new(const aly_config_t *cfg, const char *url)
{
    store_pg_t *pg = calloc(1, sizeof(*pg));
    if (pg == NULL || (pg->url = strdup(url)) == NULL) {
        free(pg);
        return NULL;
    }
    hosts_to_resolve(pg, url);
    pg->timeout_ms = cfg->store_timeout_ms;
    pg->poll_ms = cfg->store_poll_ms;
    pg->keep_ms = cfg->store_changes_keep_ms;
    pg->counters = pg->own_counters;
    pg->pruned_ms = aly_now_ms();
    return pg;
}

void store_pg_free(store_pg_t *pg)
{
    if (pg == NULL)
        return;
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    forget_hosts(pg);
    free(pg->url);
    free(pg->buf);
    free(pg->log);
    free(pg);
}

int store_pg_unavailable(store_pg_t *pg, aly_err_t *err)
{
    aly_errf(err, "the store is unavailable (PostgreSQL: %s); try again shortly", pg->error[0] ? pg->error : "not connected");
    if (err != NULL)
        err->refused = STORE_UNAVAILABLE;
    return -1;
}

static const char no_answer[] = "no answer within store_timeout";

/* The connection is gone or in an unknown state: drop it (the server rolls back) and say so. */
static int lost(store_pg_t *pg, const char *why, aly_err_t *err)
{
    pg->timed_out = why == no_answer;
    char msg[sizeof(pg->error)];
    snprintf(msg, sizeof(msg), "%s", why);
    msg[strcspn(msg, "\n")] = '\0';
    if (pg->error[0] == '\0')
        log_error("PostgreSQL is unreachable: %s; writes are refused, reads use the local replica", msg);
    memcpy(pg->error, msg, sizeof(pg->error));
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->in_txn = 0;
    pg->next_try_ms = aly_now_ms() + (pg->poll_ms < RETRY_MS ? pg->poll_ms : RETRY_MS);
    stats_add(&pg->counters[STORE_RT_N], 1);
    return store_pg_unavailable(pg, err);
}

/* Waits until the socket is ready for events or the deadline passes: 0 ready, -1 deadline or error. */
static int wait_socket(PGconn *conn, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = aly_now_ms();
        if (now >= deadline)
            return -1;
        struct pollfd p = {PQsocket(conn), events, 0};
        if (p.fd < 0)
            return -1;
        int n = poll(&p, 1, (int)(deadline - now));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static int check_version(store_pg_t *pg, PGresult *r, aly_err_t *err)
{
    long v = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    if (v == STORE_PG_SCHEMA_VERSION)
        return 0;
    if (pg->conn != NULL)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->next_try_ms = aly_now_ms() + RETRY_MS;
    snprintf(pg->error, sizeof(pg->error), "its schema is version %ld, this alyd needs %d: run alyctl init", v,
             STORE_PG_SCHEMA_VERSION);
    return store_pg_unavailable(pg, err);
}

/* The host, hostaddr and port lists a connection is made with: the URL's hosts that have an address. */
typedef struct host_lists {
    char host[STORE_PG_HOSTS_MAX * 256], addr[STORE_PG_HOSTS_MAX * 48], port[STORE_PG_HOSTS_MAX * 16];
} host_lists_t;

/* libpq's default port (its compiled-in one: PGPORT, when set, was read into the URL's list already). */
static const char *default_port(void)
{
    static char port[16];
    if (port[0] == '\0') {
        PQconninfoOption *d = PQconndefaults();
        for (const PQconninfoOption *o = d; o != NULL && o->keyword != NULL; o++)
            if (strcmp(o->keyword, "port") == 0 && o->compiled != NULL)
                snprintf(port, sizeof(port), "%s", o->compiled);
        PQconninfoFree(d);
        if (port[0] == '\0')
            snprintf(port, sizeof(port), "5432");
    }
    return port;
}

/*
 * Looks the URL's host names up for a connection due by deadline, into *hl.
 * Every name's lookup runs at once (each started before any is waited for).
 * A lookup that already missed an attempt's store_timeout is only looked at,
 * not waited for again: while the DNS server is slow, the worker's loop stops
 * for store_timeout once per lookup rather than at every retry (each
 * store_poll).  When the list has other hosts, the names are waited for half
 * of store_timeout at most, which leaves the other half to connect in.  A
 * name without an address is left out of the lists, as libpq would skip a
 * host it cannot resolve, and the others are tried; -1 with why (the first
 * name's) when none is left.
 */
static int resolve_hosts(store_pg_t *pg, uint64_t now, uint64_t deadline, host_lists_t *hl, char *why, size_t wlen)
{
    int missed[STORE_PG_HOSTS_MAX] = {0}, pending = 0;
    uint64_t until = pg->n_hosts > 1 ? now + (deadline - now) / 2 : deadline;
    for (size_t i = 0; i < pg->n_hosts; i++) {
        missed[i] = pg->lookups[i] != NULL;
        if (host_is_name(pg->hosts[i]) && pg->lookups[i] == NULL)
            pg->lookups[i] = aly_lookup_start(pg->hosts[i], AF_INET, why, wlen); /* NULL: aly_resolve says why */
    }
    hl->host[0] = hl->addr[0] = hl->port[0] = '\0';
    size_t kept = 0;
    char first[320] = "";
    for (size_t i = 0; i < pg->n_hosts; i++) {
        char addr[64] = "", w[320]; /* addr: at most INET6_ADDRSTRLEN; empty: libpq uses the host item as it is */
        if (host_is_name(pg->hosts[i]) && aly_resolve(&pg->lookups[i], pg->hosts[i], missed[i] ? now : until, "store_timeout", addr,
                                                      sizeof(addr), w, sizeof(w)) != 0) {
            pending |= pg->lookups[i] != NULL;
            if (first[0] == '\0')
                snprintf(first, sizeof(first), "%s", w);
            continue;
        }
        /* Items are joined by count, so an empty one ("a,,b": libpq's default there) stays an item. */
        size_t hl_len = strlen(hl->host), al_len = strlen(hl->addr);
        snprintf(hl->host + hl_len, sizeof(hl->host) - hl_len, "%s%s", kept > 0 ? "," : "", pg->hosts[i]);
        snprintf(hl->addr + al_len, sizeof(hl->addr) - al_len, "%s%s", kept > 0 ? "," : "", addr);
        if (pg->ports[i] != NULL) {
            /* An empty port item is libpq's default port; written out, so that a list of one is not an empty value. */
            size_t pl_len = strlen(hl->port);
            snprintf(hl->port + pl_len, sizeof(hl->port) - pl_len, "%s%s", kept > 0 ? "," : "",
                     pg->ports[i][0] != '\0' ? pg->ports[i] : default_port());
        }
        kept++;
    }
    if (kept == 1 && hl->host[0] == '\0') {
        /*
         * One empty host item (libpq's default: its socket directory) left:
         * an empty value is no value to libpq, which would take the URL's
         * whole list instead.  The item twice is the same host, and a value.
         */
        char port[sizeof(hl->port) / 2];
        snprintf(port, sizeof(port), "%s", hl->port);
        snprintf(hl->host, sizeof(hl->host), ",");
        snprintf(hl->addr, sizeof(hl->addr), ",");
        if (port[0] != '\0')
            snprintf(hl->port, sizeof(hl->port), "%s,%s", port, port);
    }
    /* One line per connection about names left out: lookup_logged is cleared once connected. */
    if (kept > 0 && first[0] != '\0' && !pg->lookup_logged) {
        log_error("PostgreSQL: %s; connecting to the other hosts", first);
        pg->lookup_logged = 1;
    }
    if (kept > 0)
        return 0;
    snprintf(why, wlen, "%s", first);
    /* lost() logs the first failure of an outage; an unanswered lookup later in it is worth a line too. */
    if (pending && pg->error[0] != '\0' && !pg->lookup_logged)
        log_error("PostgreSQL: %s (the lookup goes on; writes are refused meanwhile)", why);
    pg->lookup_logged |= pending;
    return -1;
}

int store_pg_connect(store_pg_t *pg, int purpose, int check, aly_err_t *err)
{
    if (pg->conn != NULL)
        return 0;
    uint64_t now = aly_now_ms();
    if (now < pg->next_try_ms)
        return store_pg_unavailable(pg, err);
    uint64_t deadline = now + pg->timeout_ms;
    char secs[24];
    snprintf(secs, sizeof(secs), "%llu", (unsigned long long)(pg->timeout_ms + 999) / 1000);
    /* expand_dbname: the URL's keys, then the later ones override: the hosts and their addresses (when looked up here). */
    const char *keys[7] = {"dbname", "application_name", "connect_timeout"}, *vals[7] = {pg->url, "alyd", secs};
    size_t nk = 3;
    host_lists_t hl;
    if (pg->n_hosts > 0) {
        char why[320];
        if (resolve_hosts(pg, now, deadline, &hl, why, sizeof(why)) != 0)
            return lost(pg, why, err);
        keys[nk] = "host", vals[nk++] = hl.host;
        keys[nk] = "hostaddr", vals[nk++] = hl.addr;
        if (pg->ports[0] != NULL)
            keys[nk] = "port", vals[nk++] = hl.port;
    }
    keys[nk] = vals[nk] = NULL;
    pg->conn = PQconnectStartParams(keys, vals, 1);
    if (pg->conn == NULL)
        return lost(pg, "out of memory", err);
    if (PQstatus(pg->conn) == CONNECTION_BAD)
        return lost(pg, PQerrorMessage(pg->conn), err);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED)
            return lost(pg, PQerrorMessage(pg->conn), err);
        if (wait_socket(pg->conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline) != 0)
            return lost(pg, "no connection within store_timeout", err);
        st = PQconnectPoll(pg->conn);
    }
    if (PQsetnonblocking(pg->conn, 1) != 0)
        return lost(pg, PQerrorMessage(pg->conn), err);
    /* The server enforces the same deadline, so a statement we gave up on does not run on. */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SET statement_timeout = %llu; SET lock_timeout = %llu; SET idle_in_transaction_session_timeout = %llu;%s",
             (unsigned long long)pg->timeout_ms, (unsigned long long)pg->timeout_ms, (unsigned long long)pg->timeout_ms * 5,
             check ? " SELECT max(version) FROM schema_version" : "");
    PGresult *res[4] = {NULL};
    int n = store_pg_run(pg, purpose, sql, res, 4, err);
    if (n < 0) {
        if (pg->conn != NULL && check) {
            /* No schema_version table: a database alyctl init never saw. */
            snprintf(pg->error, sizeof(pg->error), "it has no alyd schema: run alyctl init");
            PQfinish(pg->conn);
            pg->conn = NULL;
            pg->next_try_ms = aly_now_ms() + RETRY_MS;
            return store_pg_unavailable(pg, err);
        }
        return -1;
    }
    int rc = check && n == 4 ? check_version(pg, res[3], err) : 0;
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    if (rc == 0 && pg->error[0] != '\0') {
        log_info("PostgreSQL is reachable again");
        pg->error[0] = '\0';
    }
    if (rc == 0) {
        pg->lookup_logged = 0;
        /* A name left out of this connection is looked up anew for the next, not answered from a lookup of now. */
        for (size_t i = 0; i < pg->n_hosts; i++) {
            aly_lookup_abandon(pg->lookups[i]);
            pg->lookups[i] = NULL;
        }
    }
    return rc;
}

/* A round trip may take one store_timeout, plus one per MiB it sends (an import's commit), times slack (a whole-table copy). */
int store_pg_run_slack(store_pg_t *pg, int purpose, const char *sql, unsigned slack, PGresult **res, int max, aly_err_t *err)
{
    if (pg->conn == NULL)
        return store_pg_unavailable(pg, err);
    uint64_t deadline = aly_now_ms() + pg->timeout_ms * slack * (1 + (strlen(sql) >> 20));
    if (!PQsendQuery(pg->conn, sql))
        return lost(pg, PQerrorMessage(pg->conn), err);
    stats_add(&pg->counters[purpose], 1);
    int fl;
    while ((fl = PQflush(pg->conn)) == 1) {
        if (wait_socket(pg->conn, POLLOUT | POLLIN, deadline) != 0)
            return lost(pg, no_answer, err);
        if (!PQconsumeInput(pg->conn))
            return lost(pg, PQerrorMessage(pg->conn), err);
    }
    if (fl < 0)
        return lost(pg, PQerrorMessage(pg->conn), err);
    int n = 0, failed = 0;
    char why[sizeof(pg->error)] = "";
    for (;;) {
        while (PQisBusy(pg->conn)) {
            if (wait_socket(pg->conn, POLLIN, deadline) != 0) {
                for (int i = 0; i < n; i++)
                    PQclear(res[i]);
                return lost(pg, no_answer, err);
            }
            if (!PQconsumeInput(pg->conn)) {
                for (int i = 0; i < n; i++)
                    PQclear(res[i]);
                return lost(pg, PQerrorMessage(pg->conn), err);
            }
        }
        PGresult *r = PQgetResult(pg->conn);
        if (r == NULL)
            break;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
            if (!failed)
                snprintf(why, sizeof(why), "%s", PQresultErrorMessage(r));
            failed = 1;
            PQclear(r);
        } else if (n < max) {
            res[n++] = r;
        } else {
            PQclear(r);
        }
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        for (int i = 0; i < n; i++)
            PQclear(res[i]);
        return lost(pg, failed ? why : PQerrorMessage(pg->conn), err);
    }
    if (failed) {
        for (int i = 0; i < n; i++)
            PQclear(res[i]);
        why[strcspn(why, "\n")] = '\0';
        stats_add(&pg->counters[STORE_RT_N], 1);
        /* A BEGIN of the same text left a failed transaction nobody else will end. */
        if (!pg->in_txn && PQtransactionStatus(pg->conn) == PQTRANS_INERROR)
            store_pg_exec(pg, purpose, "ROLLBACK", NULL);
        return aly_errf(err, "PostgreSQL refused a statement: %s", why);
    }
    return n;
}

int store_pg_run(store_pg_t *pg, int purpose, const char *sql, PGresult **res, int max, aly_err_t *err)
{
    return store_pg_run_slack(pg, purpose, sql, 1, res, max, err);
}

int store_pg_exec(store_pg_t *pg, int purpose, const char *sql, aly_err_t *err)
{
    PGresult *res[8];
    int n = store_pg_run(pg, purpose, sql, res, 8, err);
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    return n < 0 ? -1 : 0;
}

void store_pg_rollback(store_pg_t *pg)
{
    store_pg_reset(pg);
    if (!pg->in_txn || pg->conn == NULL)
        return;
    pg->in_txn = 0;
    aly_err_t err;
    if (store_pg_exec(pg, STORE_RT_TXN, "ROLLBACK", &err) != 0 && pg->conn != NULL)
        lost(pg, err.msg, NULL);
}

void store_pg_note(store_pg_t *pg, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
    char head[64];
    if (val != NULL) {
        snprintf(head, sizeof(head), "INSERT INTO kv VALUES (%d,", db);
        store_pg_append(pg, head);
        store_pg_append_bytea(pg, key, klen);
        store_pg_append(pg, ",");
        store_pg_append_bytea(pg, val, vlen);
        store_pg_append(pg, ") ON CONFLICT (db, k) DO UPDATE SET v = EXCLUDED.v;");
    } else {
        snprintf(head, sizeof(head), "DELETE FROM kv WHERE db = %d AND k = ", db);
        store_pg_append(pg, head);
        store_pg_append_bytea(pg, key, klen);
        store_pg_append(pg, ";");
    }
    snprintf(head, sizeof(head), "%s(%d,", pg->log_len ? "," : "", db);
    put_text(&pg->log, &pg->log_len, &pg->log_cap, head, strlen(head));
    put_bytea(&pg->log, &pg->log_len, &pg->log_cap, key, klen);
    put_text(&pg->log, &pg->log_len, &pg->log_cap, ",", 1);
    if (val != NULL)
        put_bytea(&pg->log, &pg->log_len, &pg->log_cap, val, vlen);
    else
        put_text(&pg->log, &pg->log_len, &pg->log_cap, "NULL", 4);
    put_text(&pg->log, &pg->log_len, &pg->log_cap, ")", 1);
}

int store_pg_commit(store_pg_t *pg, uint64_t *seq, aly_err_t *err)
{
    *seq = 0;
    if (pg->log_len == 0) {
        /* Nothing written: no change-log row, and nothing to commit. */
        store_pg_rollback(pg);
        return 0;
    }
    /*
     * The change-log row first, then the writes noted in pg->buf: its seq is
     * then the batch's first result however many writes follow (results past
     * the ones kept are dropped).
     */
    char *writes = pg->buf;
    size_t writes_len = pg->len;
    pg->buf = NULL;
    pg->len = pg->cap = 0;
    store_pg_append(pg, "WITH c AS (INSERT INTO changes (db, k, v) VALUES ");
    store_pg_append(pg, pg->log);
    store_pg_append(pg, " RETURNING seq) SELECT max(seq) FROM c;");
    if (writes_len != 0)
        put_text(&pg->buf, &pg->len, &pg->cap, writes, writes_len);
    free(writes);
    store_pg_append(pg, "COMMIT");
    PGresult *res[1];
    int n = store_pg_run(pg, STORE_RT_TXN, pg->buf, res, 1, err);
    store_pg_reset(pg);
    if (n < 0) {
        store_pg_rollback(pg);
        return -1;
    }
    pg->in_txn = 0;
    if (n == 1) {
        if (PQresultStatus(res[0]) == PGRES_TUPLES_OK && PQntuples(res[0]) == 1 && PQnfields(res[0]) == 1)
            *seq = strtoull(PQgetvalue(res[0], 0, 0), NULL, 10);
        PQclear(res[0]);
    }
    return 0;
}

int store_pg_schema(store_pg_t *pg, aly_err_t *err)
{
    if (store_pg_connect(pg, STORE_RT_TXN, 0, err) != 0)
        return -1;
    char sql[256];
    snprintf(sql, sizeof(sql),
             "BEGIN; SELECT pg_advisory_xact_lock(%d); CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);"
             " SELECT coalesce(max(version), 0) FROM schema_version",
             STORE_PG_LOCK);
    PGresult *res[4];
    int n = store_pg_run(pg, STORE_RT_TXN, sql, res, 4, err);
    if (n < 0)
        return -1;
    pg->in_txn = 1;
    long v = n == 4 ? strtol(PQgetvalue(res[3], 0, 0), NULL, 10) : -1;
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    if (v < 0 || v > STORE_PG_SCHEMA_VERSION) {
        store_pg_rollback(pg);
        if (v < 0)
            return aly_errf(err, "cannot read the PostgreSQL schema version");
        return aly_errf(err, "the PostgreSQL schema is version %ld, newer than this alyd's %d: upgrade alyd", v,
                        STORE_PG_SCHEMA_VERSION);
    }
    store_pg_reset(pg);
    for (long i = v; i < STORE_PG_SCHEMA_VERSION; i++)
        store_pg_append(pg, schema_steps[i]);
    snprintf(sql, sizeof(sql), "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d); COMMIT",
             STORE_PG_SCHEMA_VERSION);
    store_pg_append(pg, sql);
    int rc = store_pg_exec(pg, STORE_RT_TXN, pg->buf, err);
    store_pg_reset(pg);
    if (rc != 0) {
        char why[ALY_ERR_MAX];
        snprintf(why, sizeof(why), "%s", err != NULL ? err->msg : "");
        store_pg_rollback(pg);
        return aly_errf(err, "cannot create the PostgreSQL schema: %s", why);
    }
    pg->in_txn = 0;
    if (v != 0 && v != STORE_PG_SCHEMA_VERSION)
        log_info("PostgreSQL schema upgraded from version %ld to %d", v, STORE_PG_SCHEMA_VERSION);
    return 0;
}

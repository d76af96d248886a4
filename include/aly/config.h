/*
 * alyd.conf: the directive table, the parsed configuration, and its loader
 * (config.c); the value grammars alyctl shares (config_value.c).
 *
 * The file holds one directive per line, "name value...", and "#" starts a
 * comment.  Every directive alyd knows is one row of a table in config.c; the
 * parser walks that table, so adding a directive is adding a row and a field.
 * Unknown directives, bad values, repeated singletons and missing files are
 * errors reported as "file:line: why".  alyd(8), alyctl(1) and the unit test
 * t/unit-config.c all load files through config_load().
 */
#ifndef ALY_CONFIG_H
#define ALY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "aly/common.h"

#define ALY_DEFAULT_CONFIG "/etc/alyd/alyd.conf"
#define ALY_MAX_WORKERS 256
#define ALY_MAX_LISTENERS 32

typedef struct aly_strlist {
    char **items;
    size_t n;
} aly_strlist_t;

/* One "listen" (or "metrics_listen") directive, resolved to a socket address. */
typedef struct aly_listen {
    char *spec; /* as written, e.g. "127.0.0.1:8080" */
    char *host; /* host part without brackets */
    uint16_t port;
    int tls;
    int loopback;
    struct sockaddr_storage addr;
    socklen_t addrlen;
} aly_listen_t;

/* "N/period burst=B": a sustained rate of count per period_s, plus burst on top. */
typedef struct aly_rate {
    uint32_t count;
    uint32_t period_s;
    uint32_t burst;
} aly_rate_t;

/* "oauth_client_rate_limit CLIENT_ID RATE" */
typedef struct aly_client_rate {
    char *client_id;
    aly_rate_t rate;
} aly_client_rate_t;

typedef struct aly_config {
    char *path;

    aly_listen_t listens[ALY_MAX_LISTENERS];
    size_t n_listens;
    aly_listen_t metrics_listen; /* port 0 when off */
    char *tls_certificate;
    char *tls_key;
    unsigned workers; /* 0 means "auto": one per CPU */
    unsigned max_connections;
    uint64_t idle_timeout_ms;

    char *data_dir;
    size_t map_size;
    size_t volatile_map_size;
    char *pid_file;
    char *user;
    char *group;
    unsigned user_line, group_line; /* where they were set, for messages; 0: not in the file */
    char *error_log;                /* path, "stderr" or "off" */
    char *access_log;               /* path, "stderr" or "off" */
    size_t access_log_buffer;       /* bytes per worker; 0 writes each line at once */
    uint64_t access_log_flush_ms;   /* longest a line waits in the buffer */

    char *public_url; /* no trailing slash */
    aly_strlist_t allowed_origins;
    aly_strlist_t allowed_hosts;
    char *key_pepper_file;

    aly_rate_t rate_limit;
    aly_rate_t auth_failure_limit;
    aly_client_rate_t *client_rates;
    size_t n_client_rates;

    char *oauth_issuer;
    char *oauth_jwks_file;
    char *oauth_hs256_secret_file;
    uint64_t oauth_leeway_s;
    aly_strlist_t authorization_servers;
    aly_strlist_t oauth_cimd_allow; /* hosts whose client-ID metadata documents are fetched */
    char *oauth_cimd_ca_file;       /* CA certificates those hosts are checked against; NULL: the system's */

    size_t max_request_body;
    uint64_t shutdown_timeout_ms;
    uint64_t session_ttl_ms;

    unsigned list_scan_budget;       /* records a filtered list call examines at most before its page ends */
    unsigned analytics_scan_budget;  /* orders one analytics call examines at most; a range holding more is refused */
    size_t workspace_quota;          /* bytes of data (keys and values) one workspace may hold */
    uint64_t tls_ticket_rotation_ms; /* a session-ticket key encrypts for this long, then decrypts for as long again */
    uint64_t audit_retention_ms;     /* audit records older than this are pruned as new ones are written; 0: kept for ever */

    /* Abuse limits (aly/guard.h per address, aly/http.h per connection). */
    unsigned max_connections_per_address;
    unsigned max_streams_per_connection;
    size_t max_inflight_body;             /* per connection, >= max_request_body */
    size_t max_inflight_body_per_address; /* >= max_inflight_body */
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t send_timeout_ms; /* a response that has bytes waiting and none acknowledged this long: its connection is cut */
    unsigned reset_budget;
    unsigned address_strikes;
    uint64_t strike_window_ms;

    /* Cluster mode's durable store (aly/store.h): NULL for LMDB alone, else the postgresql:// URL LMDB replicates. */
    char *store;
    uint64_t store_timeout_ms;      /* longest a worker waits on PostgreSQL for one step (connect, one round trip) */
    uint64_t store_poll_ms;         /* how often each worker applies other hosts' changes to the local replica */
    uint64_t store_changes_keep_ms; /* the change log's horizon: a replica further behind copies the whole table */

    /* Cluster mode's volatile state (aly/volatile_redis.h): NULL for "volatile lmdb". */
    char *volatile_url;
    char *volatile_prefix;     /* the first part of every Redis key (NULL: "aly"): deployments sharing a database differ here */
    char *volatile_failure;    /* as written: "closed" or "open" */
    int volatile_failure_open; /* 1: serve without rate limits while Redis is unreachable */
    uint64_t volatile_timeout_ms;

    /* The built-in authorization server (aly/oauth_server.h). */
    int oauth_server; /* 1 on, 0 off (default: on for an https or loopback public_url without oauth_issuer) */
    /* Live dynamically registered clients at most; past it a registration is refused. */
    unsigned oauth_max_dynamic_clients;
} aly_config_t;

/*
 * Parses path into a freshly allocated configuration, applies defaults and
 * cross-directive checks.  On failure returns NULL and err holds "file:line: why"
 * (or "file: why" for a problem that belongs to no single line).
 */
aly_config_t *config_load(const char *path, aly_err_t *err);

/* A configuration made of defaults only, as if the file were empty (for alyctl without -c). */
aly_config_t *config_defaults(aly_err_t *err);

void config_free(aly_config_t *cfg);

/* Number of workers to run: "auto" resolved to the CPU count. */
unsigned config_worker_count(const aly_config_t *cfg);

/* ---- value grammars (config_value.c) ---- */

/* A plain unsigned decimal (no sign, no space, no unit): 0, or -1 on anything else or on overflow. */
int config_parse_uint(const char *text, uint64_t *v);

/* A size: a decimal with k, m or g (binary multiples, either case) or none (bytes).  0, or -1. */
int config_parse_size(const char *text, uint64_t *bytes);

/*
 * The one duration grammar of alyd.conf and alyctl: a decimal number and a
 * unit, ms, s, m, h or d; a bare number is seconds.  0 and *ms in
 * milliseconds, or -1 (no message: the caller names the directive or option)
 * on anything else or on overflow.  Bounds are the caller's.
 */
int config_parse_duration(const char *text, uint64_t *ms);

/* Appends a copy of s to l (aborts when out of memory); frees every item and empties l. */
void config_strlist_push(aly_strlist_t *l, const char *s);
void config_strlist_free(aly_strlist_t *l);
/* 1 when l holds the n bytes of s, compared without regard to ASCII case (host names, origins). */
int config_strlist_has(const aly_strlist_t *l, const char *s, size_t n);
/* 1 when u is an http:// or https:// URL with a host and no query, fragment, quote or control character. */
int config_url_ok(const char *u);
/* A malloc'd copy of u without trailing slashes. */
char *config_url_dup(const char *u);

/*
 * Resolves cfg's "user" and "group" directives (either may be unset: then
 * its id stays -1).  uid and gid come from user's passwd entry, and group,
 * when set, overrides gid.  -1 with err naming a user or group that does not
 * exist, with the file and line that named it.  Not thread-safe (getpwnam):
 * call it before starting threads.
 */
int config_lookup_user(const aly_config_t *cfg, uid_t *uid, gid_t *gid, aly_err_t *err);

/* "N/period burst=B" into rate; -1 with err on a malformed value. */
int config_parse_rate(const char *text, aly_rate_t *rate, aly_err_t *err);

/* Writes the canonical form of a rate ("600/minute burst=60"). */
void config_format_rate(const aly_rate_t *rate, char *buf, size_t len);

/* Listener spec "host:port" (IPv6 in brackets, "*" for any) into l; tls is not touched. */
int config_parse_listen(const char *spec, aly_listen_t *l, aly_err_t *err);

#endif

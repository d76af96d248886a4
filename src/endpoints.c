/*
 * The endpoints that need no credential (aly/endpoints.h).
 */
#include "aly/endpoints.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/http.h"
#include "aly/log.h"
#include "aly/scope.h"
#include "aly/volatile_redis.h"

void endpoint_resource_metadata(void *data, h2o_req_t *req)
{
    const aly_config_t *cfg = ((endpoints_t *)data)->cfg;
    char resource[1024];
    snprintf(resource, sizeof(resource), "%s/api/mcp", cfg->public_url);
    json_t *servers = json_array(), *scopes = json_array();
    for (size_t i = 0; i < cfg->authorization_servers.n; i++)
        json_array_append_new(servers, json_string(cfg->authorization_servers.items[i]));
    for (size_t i = 0; i < scope_count; i++)
        json_array_append_new(scopes, json_string(scope_catalogue[i].name));
    json_t *doc = json_pack("{s:s, s:o, s:o, s:[s], s:s}", "resource", resource, "authorization_servers", servers,
                            "scopes_supported", scopes, "bearer_methods_supported", "header", "resource_name", "Aly");
    http_send_json_object(req, 200, doc);
}

void endpoint_healthz(void *data, h2o_req_t *req)
{
    endpoints_t *e = data;
    aly_err_t err;
    char body[512];
    int n;
    uint64_t up = (aly_now_ms() - e->started_ms) / 1000;
    if (store_check(e->store, &err) != 0) {
        log_error("health check: %s", err.msg);
        n = snprintf(body, sizeof(body),
                     "{\"status\":\"unavailable\",\"pid\":%d,\"version\":\"%s\",\"worker\":%u,\"error\":\"the store cannot be "
                     "read; see the error log\"}",
                     (int)getpid(), PACKAGE_VERSION, e->worker_number);
        http_send_json(req, 503, body, (size_t)n);
        return;
    }
    /*
     * Cluster mode with PostgreSQL unreachable: this host still answers reads
     * from its replica, but every write fails, so a load balancer should
     * prefer a host that can write: 503, naming the engine, and Retry-After.
     */
    store_pg_status_t pg;
    store_pg_status(e->store, &pg);
    if (pg.configured && !pg.up) {
        json_t *doc = json_pack("{s:s, s:i, s:s, s:I, s:s, s:s, s:I}", "status", "unavailable", "pid", (int)getpid(), "version",
                                PACKAGE_VERSION, "worker", (json_int_t)e->worker_number, "engine", "postgresql", "error",
                                "PostgreSQL is unreachable: writes are refused, reads are served from this host's replica",
                                "replica_lag_ms", (json_int_t)pg.lag_ms);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        http_send_json_object(req, 503, doc);
        return;
    }
    /*
     * Redis down: with volatile_failure closed every authenticated request
     * gets a 503, so this worker is out of service too; open, it serves
     * without rate limits: degraded.  Either way the body names redis.
     */
    volatile_redis_t *vr = volatile_redis();
    if (vr != NULL && volatile_redis_ping(vr, &err) != 0) {
        int open = volatile_redis_fail_open(vr);
        json_t *doc = json_pack("{s:s, s:i, s:s, s:I, s:s, s:s}", "status", open ? "degraded" : "unavailable", "pid", (int)getpid(),
                                "version", PACKAGE_VERSION, "worker", (json_int_t)e->worker_number, "engine", "redis", "error",
                                open ? "redis (the volatile state) is unreachable: serving without rate limits"
                                     : "redis (the volatile state) is unreachable: requests are refused with 503");
        if (!open)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
        http_send_json_object(req, open ? 200 : 503, doc);
        return;
    }
    /*
     * A full store is degraded, not down: reads, deletes and revocations
     * still work, and every instance shares the store, so taking this one out
     * of a load balancer (a 503) would help nobody.  Still 200.
     */
    store_usage_t u;
    int full = store_usage(e->store, &u, &err) == 0 && u.full;
    n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"pid\":%d,\"version\":\"%s\",\"uptime_seconds\":%llu,\"worker\":%u%s}",
                 full ? "degraded" : "ok", (int)getpid(), PACKAGE_VERSION, (unsigned long long)up, e->worker_number,
                 full ? ",\"error\":\"the store is full: writes are refused; raise map_size or delete data\"" : "");
    http_send_json(req, 200, body, (size_t)n);
}

/* text (malloc'd, *len bytes) with the n bytes snprintf wrote into buf (size bytes) after it; text unchanged when there
 * is no memory or the output was cut. */
static char *append_text(char *text, size_t *len, const char *buf, size_t size, int n)
{
    char *more = n > 0 && (size_t)n < size ? realloc(text, *len + (size_t)n + 1) : NULL;
    if (more == NULL)
        return text;
    memcpy(more + *len, buf, (size_t)n + 1);
    *len += (size_t)n;
    return more;
}

/* Cluster mode's figures: round trips and failures summed over the workers, the replica as this worker sees it. */
static char *append_pg(char *text, size_t *len, const stats_shared_t *s, const store_pg_status_t *pg)
{
    uint64_t c[STATS_N_PG] = {0};
    for (int i = 0; i < STATS_N_SLOTS; i++)
        for (int k = 0; k < STATS_N_PG; k++)
            c[k] += __atomic_load_n(&s->slots[i].pg[k], __ATOMIC_RELAXED);
    char buf[1536];
    int n = snprintf(
        buf, sizeof(buf),
        "# HELP alyd_pg_roundtrips_total Round trips to PostgreSQL: store transactions (writes), replication, lookups that missed.\n"
        "# TYPE alyd_pg_roundtrips_total counter\n"
        "alyd_pg_roundtrips_total{purpose=\"transaction\"} %llu\n"
        "alyd_pg_roundtrips_total{purpose=\"replication\"} %llu\n"
        "alyd_pg_roundtrips_total{purpose=\"lookup_miss\"} %llu\n"
        "# HELP alyd_pg_failures_total PostgreSQL failures: lost connections, missed deadlines, refused statements.\n"
        "# TYPE alyd_pg_failures_total counter\nalyd_pg_failures_total %llu\n"
        "# HELP alyd_pg_up 1 while PostgreSQL answers (this worker's connection).\n"
        "# TYPE alyd_pg_up gauge\nalyd_pg_up %d\n"
        "# HELP alyd_pg_replica_applied_seq The last change-log seq in this host's replica.\n"
        "# TYPE alyd_pg_replica_applied_seq gauge\nalyd_pg_replica_applied_seq %llu\n"
        "# HELP alyd_pg_replica_lag_ms Since this worker last saw the replica hold every committed change.\n"
        "# TYPE alyd_pg_replica_lag_ms gauge\nalyd_pg_replica_lag_ms %llu\n",
        (unsigned long long)c[STORE_RT_TXN], (unsigned long long)c[STORE_RT_POLL], (unsigned long long)c[STORE_RT_SYNC],
        (unsigned long long)c[STORE_RT_N], pg->up, (unsigned long long)pg->applied_seq, (unsigned long long)pg->lag_ms);
    return append_text(text, len, buf, sizeof(buf), n);
}

/* Cluster mode's Redis figures, summed over the workers; up as this worker sees it. */
static char *append_redis(char *text, size_t *len, const stats_shared_t *s, const volatile_redis_t *r)
{
    _Static_assert(STATS_N_REDIS == VOLATILE_REDIS_N, "a slot holds every Redis counter");
    uint64_t c[STATS_N_REDIS] = {0};
    for (int i = 0; i < STATS_N_SLOTS; i++)
        for (int k = 0; k < STATS_N_REDIS; k++)
            c[k] += __atomic_load_n(&s->slots[i].redis[k], __ATOMIC_RELAXED);
    char buf[1024];
    int n = snprintf(buf, sizeof(buf),
                     "# HELP alyd_redis_roundtrips_total Round trips to Redis (one may carry several pipelined commands).\n"
                     "# TYPE alyd_redis_roundtrips_total counter\nalyd_redis_roundtrips_total %llu\n"
                     "# HELP alyd_redis_commands_total Commands sent to Redis.\n"
                     "# TYPE alyd_redis_commands_total counter\nalyd_redis_commands_total %llu\n"
                     "# HELP alyd_redis_outages_total Times a worker found Redis unreachable after a retry.\n"
                     "# TYPE alyd_redis_outages_total counter\nalyd_redis_outages_total %llu\n"
                     "# HELP alyd_redis_up 1 while Redis answers (this worker's connection).\n"
                     "# TYPE alyd_redis_up gauge\nalyd_redis_up %d\n",
                     (unsigned long long)c[VOLATILE_REDIS_RT], (unsigned long long)c[VOLATILE_REDIS_COMMANDS],
                     (unsigned long long)c[VOLATILE_REDIS_OUTAGES], volatile_redis_up(r));
    return append_text(text, len, buf, sizeof(buf), n);
}

void endpoint_metrics(void *data, h2o_req_t *req)
{
    endpoints_t *e = data;
    size_t len;
    char *text = stats_render(e->stats, &len);
    store_usage_t u;
    aly_err_t err;
    if (text != NULL && store_usage(e->store, &u, &err) == 0) {
        /* The store is shared, so any worker's view is the store's: read at scrape time, not counted. */
        char gauges[1024];
        int n = snprintf(gauges, sizeof(gauges),
                         "# HELP alyd_store_map_bytes map_size of the durable store.\n# TYPE alyd_store_map_bytes gauge\n"
                         "alyd_store_map_bytes %zu\n"
                         "# HELP alyd_store_used_bytes Bytes of the durable store's pages in use (free pages excluded).\n"
                         "# TYPE alyd_store_used_bytes gauge\nalyd_store_used_bytes %zu\n"
                         "# HELP alyd_store_limit_bytes Use above which ordinary writes are refused (map_size minus the reserve).\n"
                         "# TYPE alyd_store_limit_bytes gauge\nalyd_store_limit_bytes %zu\n"
                         "# HELP alyd_store_full 1 while ordinary writes are refused because the store is full.\n"
                         "# TYPE alyd_store_full gauge\nalyd_store_full %d\n",
                         u.map_size, u.used_bytes, u.limit_bytes, u.full);
        text = append_text(text, &len, gauges, sizeof(gauges), n);
    } else if (text != NULL) {
        log_error("metrics: %s", err.msg);
    }
    store_pg_status_t pg;
    store_pg_status(e->store, &pg);
    if (text != NULL && pg.configured)
        text = append_pg(text, &len, e->stats, &pg);
    if (text != NULL && volatile_redis() != NULL)
        text = append_redis(text, &len, e->stats, volatile_redis());
    if (text == NULL) {
        http_send_error(req, 500, "internal", "cannot render metrics");
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_send_inline(req, text, len);
    free(text);
}

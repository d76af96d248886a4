/*
 * The endpoints that need no credential: /healthz (is this worker able to
 * serve: can it read the store), /metrics (Prometheus text of every worker's
 * counters) and the OAuth protected-resource metadata of /api/mcp (RFC 9728),
 * which names the resource, its authorization servers and scopes.
 * Each is an http_serve_fn over an endpoints_t.
 */
#ifndef ALY_ENDPOINTS_H
#define ALY_ENDPOINTS_H

#include <h2o.h>

#include "aly/config.h"
#include "aly/stats.h"
#include "aly/store.h"

typedef struct endpoints {
    const aly_config_t *cfg;
    store_t *store;
    stats_shared_t *stats;
    uint64_t started_ms;
    unsigned worker_number;
} endpoints_t;

void endpoint_healthz(void *endpoints, h2o_req_t *req);
void endpoint_metrics(void *endpoints, h2o_req_t *req);
void endpoint_resource_metadata(void *endpoints, h2o_req_t *req);

#endif

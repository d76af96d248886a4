/*
 * A worker process: one h2o event loop serving the listeners it inherited.
 *
 * The master forks, and the child calls worker_run(), which never returns: it
 * drops privileges, opens the store, composes the layers (the route table,
 * the gate, the MCP engine, the registry and its tools), serves until told to
 * stop, and exits.
 * Signals: TERM/INT stop at once, QUIT drains (stop accepting, let in-flight
 * requests finish, close idle connections, give up at shutdown_timeout), USR1
 * reopens the logs.
 */
#ifndef ALY_WORKER_H
#define ALY_WORKER_H

#include <h2o.h>
#include <openssl/ssl.h>
#include <sys/types.h>

#include "aly/config.h"
#include "aly/stats.h"

typedef struct worker_listener {
    int fd;
    int tls;
    int admin; /* the metrics_listen socket */
} worker_listener_t;

typedef struct worker_spec {
    const aly_config_t *cfg;
    const worker_listener_t *listeners;
    size_t n_listeners;
    SSL_CTX *ssl_ctx;
    stats_shared_t *stats;
    int slot;
    unsigned number;
    uid_t uid; /* (uid_t)-1: keep */
    gid_t gid;
    /*
     * -1, or a pipe to the master: once its listeners are live the worker
     * writes its number (an unsigned, atomically) there and closes it.  A
     * reload stops the old workers only when every new one has done so.
     */
    int ready_fd;
} worker_spec_t;

void worker_run(const worker_spec_t *spec) __attribute__((noreturn));

/*
 * Loads, in a child that has switched to uid/gid ((uid_t)-1: keep), the files
 * a worker reads at start-up besides the store (the key pepper, the cursor
 * key, the OAuth verifier's keys), so that alyd -t and a reload refuse a
 * configuration whose workers could not start.  0, or -1 with *err.
 */
int worker_check_start(const aly_config_t *cfg, uid_t uid, gid_t gid, aly_err_t *err);

#endif

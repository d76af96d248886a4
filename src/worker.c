/*
 * A worker: privilege drop, store, the composition of the layers (it owns the
 * route table and registers the tools: no layer below names one above it),
 * the h2o event loop over the inherited listeners, accepting connections,
 * and the two ways out (immediate stop and graceful drain).
 *
 * Signals only set flags and write a byte to a self-pipe watched by the event
 * loop, so the loop wakes and acts on them between callbacks; h2o_evloop_run()
 * also returns early on EINTR, which the loop tolerates.
 */
#include "aly/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aly/alyd.h"
#include "aly/cursor.h"
#include "aly/daemon.h"
#include "aly/endpoints.h"
#include "aly/gate.h"
#include "aly/guard.h"
#include "aly/http.h"
#include "aly/log.h"
#include "aly/mcp.h"
#include "aly/oauth_cimd.h"
#include "aly/oauth_server.h"
#include "aly/rpc_parse.h"
#include "aly/store.h"
#include "aly/tools.h"
#include "aly/volatile_redis.h"

/*
 * Connections accepted per wake-up.  One: when a burst of clients connects at
 * once, a worker that took many would serve them all while the others idle
 * (measured: with 50 connections and a batch of 32, one worker carried up to
 * 100 % of the load; with 1, 50-60 %, and 10-15 % more throughput).
 */
#define ACCEPT_BATCH 1
/*
 * Even so, whichever worker wakes first takes the next connection, and one
 * worker often ended up with all of a burst (measured: 50 HTTP/1.1 clients
 * connecting at once split 0/50, 12/38, 24/26 over six runs, and the 0/50
 * runs served half the rate on one core).  So a worker that already holds
 * more than ACCEPT_SLACK connections above another accepting worker of the
 * stats table leaves the listener alone for ACCEPT_DEFER_MS: the other one,
 * woken by the same readiness, takes the connection.  If it does not (busy,
 * stuck), the deferring worker accepts after the pause: a connection waits
 * at most that long.
 */
#define ACCEPT_SLACK 1
#define ACCEPT_DEFER_MS 1
/*
 * Connections still left for this worker after its pauses, with no other
 * worker taking one, for ACCEPT_PATIENCE_MS in a row (each miss within that
 * long of the one before: a miss seconds after the last one, at the next
 * burst, starts a new row instead of ending an old one) mean the others are not
 * coming (one stopped in a long write, a debugger, a core dump; a peer that
 * is only busy comes within that): then this worker accepts without pausing
 * for ACCEPT_ALONE_MS, so a stalled peer costs a few milliseconds of pauses
 * per second, not one per connection.
 */
#define ACCEPT_PATIENCE_MS 20
#define ACCEPT_ALONE_MS 1000
#define FRESH_CONN_GRACE_MS 1000 /* while draining, how long a connection that sent nothing may still send a request */

/*
 * A connection's input buffer starts at 16 KB, where h2o 2.2.5 starts every
 * socket's at 8 KB.  A client with many requests in flight sends them in
 * bursts: fifty 2026-07-28 calls (each carries its _meta, about 300 bytes on
 * the wire) are 15 KB.  From 8 KB the worker read such a burst in two system
 * calls, and h2o grew the buffer on the way by a malloc, a copy and a free;
 * from 16 KB it takes one.  The buffer is held only while a connection has
 * bytes not yet parsed (h2o frees it when they are consumed, and keeps up to
 * 16 freed ones for reuse), and the worst case does not move: a peer
 * holding back the end of a maximal HTTP/2 frame (16,393 bytes) already
 * grew it to 32 KB.  Request bodies keep h2o's 8 KB start.
 */
#define CONN_INPUT_BUFFER 16384
static h2o_buffer_prototype_t conn_input = {.allocator = {.max = 16},
                                            ._initial_buf = {.capacity = CONN_INPUT_BUFFER},
                                            .mmap_settings = &h2o_socket_buffer_mmap_settings};

typedef struct listener_state {
    h2o_socket_t *sock;
    h2o_accept_ctx_t accept_ctx;
} listener_state_t;

static struct {
    const worker_spec_t *spec;
    h2o_globalconf_t conf;
    h2o_context_t ctx;
    h2o_evloop_t *loop;
    stats_slot_t *slot;
    gate_t gate;
    mcp_ctx_t mcp;
    endpoints_t endpoints;
    oauth_server_t oauth;
    http_site_t site;
    listener_state_t *listeners;
    size_t n_listeners;
    int accepting;
    h2o_linklist_t conns;
    size_t n_conns;
    int draining;
    uint64_t drain_started_ms;
    uint64_t drain_deadline_ms;
    h2o_timeout_t sweep_timeout;
    h2o_timeout_entry_t sweep_entry;
    guard_t *guard;
    h2o_timeout_t abuse_timeout;
    h2o_timeout_entry_t abuse_entry;
    h2o_timeout_t log_flush_timeout;
    h2o_timeout_entry_t log_flush_entry;
    h2o_timeout_t trim_timeout;
    h2o_timeout_entry_t trim_entry;
    store_t *store;
    h2o_timeout_t replica_timeout;
    h2o_timeout_entry_t replica_entry;
    h2o_timeout_t defer_timeout; /* ACCEPT_DEFER_MS: the pause of a worker that leaves a connection to another */
    h2o_timeout_entry_t defer_entry;
    int deferring, accept_anyway;
    uint64_t alone_until_ms;   /* no pausing before this (ACCEPT_ALONE_MS) */
    uint64_t others_at_pause;  /* the other workers' connections when the pause began */
    uint64_t missing_since_ms; /* the first of the pauses in a row that found nobody taking connections (0: none) */
    uint64_t last_miss_ms;     /* the latest of them: a miss longer after it than the patience starts a new row */
} w;

/* Every endpoint of alyd: the HTTP layer routes over this table and names none itself. */
static const http_route_t routes[] = {
    {"/api/mcp", HTTP_POST | HTTP_GET | HTTP_DELETE, HTTP_PUBLIC, mcp_serve, &w.mcp},
    {"/.well-known/oauth-protected-resource", HTTP_GET, HTTP_PUBLIC, endpoint_resource_metadata, &w.endpoints},
    {"/.well-known/oauth-protected-resource/api/mcp", HTTP_GET, HTTP_PUBLIC, endpoint_resource_metadata, &w.endpoints},
    {"/healthz", HTTP_GET, HTTP_PUBLIC | HTTP_ADMIN, endpoint_healthz, &w.endpoints},
    /* Never on a public listener: a local reverse proxy makes every client a loopback peer. */
    {"/metrics", HTTP_GET, HTTP_ADMIN, endpoint_metrics, &w.endpoints},
    /* The built-in authorization server (404 when oauth_server is off). */
    {"/.well-known/oauth-authorization-server", HTTP_GET, HTTP_PUBLIC, oauth_serve_metadata, &w.oauth},
    {"/oauth/authorize", HTTP_GET | HTTP_POST, HTTP_PUBLIC, oauth_serve_authorize, &w.oauth},
    {"/oauth/token", HTTP_POST, HTTP_PUBLIC, oauth_serve_token, &w.oauth},
    {"/oauth/register", HTTP_POST, HTTP_PUBLIC, oauth_serve_register, &w.oauth},
    {"/oauth/revoke", HTTP_POST, HTTP_PUBLIC, oauth_serve_revoke, &w.oauth},
    {"/oauth/jwks", HTTP_GET, HTTP_PUBLIC, oauth_serve_jwks, &w.oauth},
};

static volatile sig_atomic_t sig_stop, sig_drain, sig_reopen;
static int wake_pipe[2] = {-1, -1};

static void on_signal(int signo)
{
    int saved = errno;
    if (signo == SIGTERM || signo == SIGINT)
        sig_stop = 1;
    else if (signo == SIGQUIT)
        sig_drain = 1;
    else if (signo == SIGUSR1)
        sig_reopen = 1;
    ssize_t r = write(wake_pipe[1], "", 1);
    (void)r;
    errno = saved;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(sigs); i++)
        sigaction(sigs[i], &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void drop_privileges(const worker_spec_t *spec)
{
    if (spec->gid != (gid_t)-1) {
        if (setgroups(1, &spec->gid) != 0 || setgid(spec->gid) != 0)
            log_fatal("cannot switch to group %u: %s", (unsigned)spec->gid, strerror(errno));
    }
    if (spec->uid != (uid_t)-1) {
        if (setuid(spec->uid) != 0)
            log_fatal("cannot switch to user %u: %s", (unsigned)spec->uid, strerror(errno));
        if (setuid(0) == 0)
            log_fatal("privileges could be regained after dropping them; refusing to serve");
    }
}

static void start_listener(listener_state_t *ls);

static void listen_all(int on)
{
    for (size_t i = 0; i < w.n_listeners; i++) {
        if (on)
            start_listener(&w.listeners[i]);
        else
            h2o_socket_read_stop(w.listeners[i].sock);
    }
}

static void set_accepting(int on)
{
    if (w.accepting == on || w.draining)
        return;
    if (!w.deferring)
        listen_all(on);
    w.accepting = on;
    __atomic_store_n(&w.slot->accepting, (uint64_t)on, __ATOMIC_RELAXED);
}

/*
 * 1 when another accepting worker holds fewer connections than this one by
 * more than ACCEPT_SLACK.  *others: the connections of all other accepting
 * workers (a pause that left them unchanged found nobody coming).
 */
static int others_have_room(uint64_t *others)
{
    const stats_shared_t *st = w.spec->stats;
    int room = 0;
    *others = 0;
    for (size_t i = 0; i < STATS_N_SLOTS; i++) {
        const stats_slot_t *s = &st->slots[i];
        if (s == w.slot || __atomic_load_n(&s->pid, __ATOMIC_RELAXED) == 0 || !__atomic_load_n(&s->accepting, __ATOMIC_RELAXED))
            continue;
        uint64_t c = __atomic_load_n(&s->connections, __ATOMIC_RELAXED);
        *others += c;
        room |= w.n_conns > c + ACCEPT_SLACK;
    }
    return room;
}

static void on_defer_end(h2o_timeout_entry_t *entry)
{
    (void)entry;
    w.deferring = 0;
    w.accept_anyway = 1; /* the connection left to the others, if nobody took it */
    if (w.accepting && !w.draining)
        listen_all(1);
}

static void on_conn_close(void *data)
{
    http_conn_t *conn = data;
    guard_release(conn->addr);
    h2o_linklist_unlink(&conn->link);
    free(conn);
    w.n_conns--;
    stats_add(&w.slot->connections, -1);
    if (w.n_conns < w.spec->cfg->max_connections)
        set_accepting(1);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    listener_state_t *ls = listener->data;
    uint64_t others = 0;
    if (!w.accept_anyway && aly_now_ms() >= w.alone_until_ms && others_have_room(&others)) {
        w.others_at_pause = others;
        w.deferring = 1;
        listen_all(0);
        h2o_timeout_link(w.loop, &w.defer_timeout, &w.defer_entry);
        return;
    }
    int after_pause = w.accept_anyway;
    w.accept_anyway = 0;
    for (int i = 0; i < ACCEPT_BATCH && w.n_conns < w.spec->cfg->max_connections; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL) {
            if (after_pause)
                w.missing_since_ms = 0; /* another worker came for it */
            break;                      /* EAGAIN: another worker took it */
        }
        if (after_pause) {
            /* Nobody else took a connection during the pause: a miss. */
            others_have_room(&others);
            uint64_t now = aly_now_ms();
            if (others > w.others_at_pause) {
                w.missing_since_ms = 0;
            } else {
                if (w.missing_since_ms == 0 || now - w.last_miss_ms > ACCEPT_PATIENCE_MS) {
                    w.missing_since_ms = now; /* not in a row with a miss of an earlier burst */
                } else if (now - w.missing_since_ms >= ACCEPT_PATIENCE_MS) {
                    w.alone_until_ms = now + ACCEPT_ALONE_MS;
                    w.missing_since_ms = 0;
                    stats_add(&w.slot->accept_alone, 1);
                }
                w.last_miss_ms = now;
            }
        }
        after_pause = 0;
        /* Refused before h2o sees the socket, so closing it here is ours to do, and costs no more than the accept. */
        struct sockaddr_storage peer;
        guard_addr_t *addr = NULL;
        guard_verdict_t v = GUARD_ADMIT;
        if (h2o_socket_getpeername(sock, (struct sockaddr *)&peer) != 0)
            v = guard_accept(w.guard, (struct sockaddr *)&peer, aly_now_ms(), &addr);
        if (v != GUARD_ADMIT) {
            stats_add(&w.slot->conn_refused[v == GUARD_STRUCK_OUT ? STATS_REFUSE_STRUCK_OUT : STATS_REFUSE_PER_ADDRESS], 1);
            h2o_socket_close(sock);
            continue;
        }
        http_conn_t *conn = calloc(1, sizeof(*conn));
        if (conn == NULL) {
            guard_release(addr);
            h2o_socket_close(sock);
            continue;
        }
        int one = 1;
        setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        http_conn_start(&w.site, conn, sock, addr);
        h2o_linklist_insert(&w.conns, &conn->link);
        w.n_conns++;
        stats_add(&w.slot->connections, 1);
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = conn;
        h2o_buffer_set_prototype(&sock->input, &conn_input);
        h2o_accept(&ls->accept_ctx, sock);
    }
    if (w.n_conns >= w.spec->cfg->max_connections)
        set_accepting(0);
}

static void start_listener(listener_state_t *ls)
{
    ls->sock->data = ls;
    h2o_socket_read_start(ls->sock, on_accept);
}

static void on_wake(h2o_socket_t *sock, const char *err)
{
    if (err != NULL)
        return;
    h2o_buffer_consume(&sock->input, sock->input->size);
}

/*
 * While draining: close connections that are idle, so the worker can exit
 * before shutdown_timeout.  Idle means no request in a handler and no byte
 * read since the last response (a request whose headers or body are still
 * arriving is not idle: h2o calls handlers only once the body is in).  A
 * connection that has sent nothing at all gets a grace period, so a client
 * that connected just before the drain can still send its request; HTTP/2
 * connections get h2o's GOAWAY and are closed by h2o once their streams end.
 * shutdown(2) rather than h2o_socket_close(): h2o sees the EOF and closes the
 * connection through its own path.
 */
static void sweep(h2o_timeout_entry_t *entry)
{
    (void)entry;
    uint64_t now = aly_now_ms();
    for (h2o_linklist_t *l = w.conns.next; l != &w.conns; l = l->next) {
        http_conn_t *c = H2O_STRUCT_FROM_MEMBER(http_conn_t, link, l);
        if (http_conn_quiet(c) && !c->shut && (c->responses > 0 || now - w.drain_started_ms >= FRESH_CONN_GRACE_MS)) {
            shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
            c->shut = 1;
        }
    }
    h2o_timeout_link(w.loop, &w.sweep_timeout, &w.sweep_entry);
}

/* The abuse budgets of aly/http.h, applied to every connection several times a second. */
static void abuse_sweep(h2o_timeout_entry_t *entry)
{
    (void)entry;
    http_sweep(&w.site, &w.conns, aly_now_ms());
    h2o_timeout_link(w.loop, &w.abuse_timeout, &w.abuse_entry);
}

static void begin_drain(void)
{
    if (w.draining)
        return;
    set_accepting(0);
    w.draining = 1;
    w.drain_started_ms = aly_now_ms();
    w.drain_deadline_ms = w.drain_started_ms + w.spec->cfg->shutdown_timeout_ms;
    for (size_t i = 0; i < w.n_listeners; i++) {
        h2o_socket_read_stop(w.listeners[i].sock);
        h2o_socket_close(w.listeners[i].sock);
        w.listeners[i].sock = NULL;
    }
    log_info("draining %zu connection(s), at most %llu ms", w.n_conns, (unsigned long long)w.spec->cfg->shutdown_timeout_ms);
    h2o_context_request_shutdown(&w.ctx);
    mcp_close_streams();
    /* First sweep one tick later: the GOAWAY frames h2o just queued must reach the wire first. */
    h2o_timeout_init(w.loop, &w.sweep_timeout, 100);
    w.sweep_entry.cb = sweep;
    h2o_timeout_link(w.loop, &w.sweep_timeout, &w.sweep_entry);
}

/* The access log's buffer is written out at least every access_log_flush. */
static void on_log_flush(h2o_timeout_entry_t *entry)
{
    log_access_flush();
    h2o_timeout_link(w.loop, &w.log_flush_timeout, entry);
}

/*
 * Every TRIM_EVERY_MS the worker hands freed heap back to the kernel.  Results
 * up to 64 KB are captured and dropped all the time (cache misses, refused
 * entries): without this, the heap's high-water mark, not the live data, is
 * what the worker keeps resident.
 */
#define TRIM_EVERY_MS 5000

static void on_trim(h2o_timeout_entry_t *entry)
{
    malloc_trim(0);
    h2o_timeout_link(w.loop, &w.trim_timeout, entry);
}

/* Cluster mode: other hosts' writes reach this host's replica every store_poll (aly/store.h). */
static void on_replicate(h2o_timeout_entry_t *entry)
{
    aly_err_t err;
    if (store_replicate(w.store, &err) < 0 && err.refused != STORE_UNAVAILABLE)
        log_error("replication: %s", err.msg);
    h2o_timeout_link(w.loop, &w.replica_timeout, entry);
}

static void start_access_log(const aly_config_t *cfg)
{
    log_access_buffer(log_access_enabled() ? cfg->access_log_buffer : 0);
    if (!log_access_buffered())
        return;
    h2o_timeout_init(w.loop, &w.log_flush_timeout, cfg->access_log_flush_ms);
    w.log_flush_entry.cb = on_log_flush;
    h2o_timeout_link(w.loop, &w.log_flush_timeout, &w.log_flush_entry);
}

static void setup_globalconf(const aly_config_t *cfg)
{
    h2o_config_init(&w.conf);
    w.conf.server_name = h2o_iovec_init(H2O_STRLIT("alyd"));
    /*
     * h2o refuses bodies over this limit itself: a bare 413 on HTTP/1 and
     * RST_STREAM(REFUSED_STREAM) on HTTP/2, which clients retry.  Letting up to
     * 4x max_request_body through gives the common oversize body a proper JSON
     * 413 from our handler, at a bounded memory cost per stream.
     */
    w.conf.max_request_entity_size = cfg->max_request_body * 4;
    w.conf.http1.req_timeout = cfg->idle_timeout_ms;
    w.conf.http2.idle_timeout = cfg->idle_timeout_ms;
    uint64_t grace = cfg->shutdown_timeout_ms < 1000 ? 1000 : cfg->shutdown_timeout_ms;
    w.conf.http2.graceful_shutdown_timeout = grace;
    /* SETTINGS still announce h2o's fixed 100 streams; this bounds how many of them reach a route at once. */
    w.conf.http2.max_concurrent_requests_per_connection = cfg->max_streams_per_connection;
}

/*
 * The files a worker reads before it serves, beyond the store: the pepper
 * (API keys; the authorization server's signer uses the same file), the
 * cursor key derived from it, and the OAuth verifier's JWKS or HS256 secret.
 * store may be NULL: worker_check_start() only loads them.
 */
static auth_t *load_keys(const aly_config_t *cfg, store_t *store, aly_err_t *err)
{
    auth_t *auth = auth_new(cfg, store, err);
    if (auth != NULL && cursor_init(cfg->key_pepper_file, err) != 0) {
        auth_free(auth);
        return NULL;
    }
    return auth;
}

static int check_keys(void *arg, aly_err_t *err)
{
    auth_t *auth = load_keys(*(const aly_config_t **)arg, NULL, err);
    auth_free(auth);
    return auth != NULL ? 0 : -1;
}

int worker_check_start(const aly_config_t *cfg, uid_t uid, gid_t gid, aly_err_t *err)
{
    /* As the worker user: a file root can read and the worker cannot is what took reloads down. */
    return daemon_as_user(uid, gid, "check what the workers need", check_keys, &cfg, sizeof(cfg), DAEMON_TASK_MS, err);
}

/* Tells a master waiting on a reload that this worker's listeners are live (aly/worker.h). */
static void report_ready(const worker_spec_t *spec)
{
    if (spec->ready_fd < 0)
        return;
    unsigned number = spec->number;
    ssize_t n = write(spec->ready_fd, &number, sizeof(number));
    if (n != (ssize_t)sizeof(number))
        log_error("cannot tell the master this worker is serving: %s", n < 0 ? strerror(errno) : "short write");
    close(spec->ready_fd);
}

void worker_run(const worker_spec_t *spec)
{
    char role[32];
    snprintf(role, sizeof(role), "worker %u", spec->number);
    log_set_role(role);
    w.spec = spec;

    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        log_fatal("cannot create the wake-up pipe: %s", strerror(errno));
    install_signals();
    drop_privileges(spec);

    aly_err_t err;
    store_t *store = store_open(spec->cfg, &err);
    if (store == NULL)
        log_fatal("%s", err.msg);
    auth_t *auth = load_keys(spec->cfg, store, &err);
    if (auth == NULL)
        log_fatal("%s", err.msg);
    if (tools_register(&err) != 0 ||
        (alyd_hooks != NULL && alyd_hooks->register_tables != NULL && alyd_hooks->register_tables(&err) != 0))
        log_fatal("%s", err.msg);

    w.loop = h2o_evloop_create();
    w.slot = &spec->stats->slots[spec->slot];
    volatile_redis_t *vr = spec->cfg->volatile_url != NULL ? volatile_redis_open(spec->cfg, &err) : NULL;
    if (spec->cfg->volatile_url != NULL && vr == NULL)
        log_fatal("%s", err.msg);
    if (vr != NULL)
        volatile_redis_count_into(vr, w.slot->redis);
    gate_init(&w.gate, spec->cfg, auth, store, w.slot, alyd_hooks != NULL ? alyd_hooks->authenticate : NULL);
    w.mcp = (mcp_ctx_t){.cfg = spec->cfg, .store = store, .loop = w.loop, .gate = &w.gate};
    w.endpoints = (endpoints_t){.cfg = spec->cfg,
                                .store = store,
                                .stats = spec->stats,
                                .started_ms = aly_now_ms(),
                                .worker_number = spec->number};
    if (oauth_server_init(&w.oauth, spec->cfg, store, w.loop, &err) != 0)
        log_fatal("%s", err.msg);
    /* Loaded before serving (a failure is logged there): reading the system trust store takes tens of ms. */
    if (spec->cfg->oauth_server)
        (void)oauth_cimd_prepare(spec->cfg);
    w.guard = guard_new(spec->cfg);
    if (w.guard == NULL)
        log_fatal("out of memory");
    w.site =
        (http_site_t){.cfg = spec->cfg, .slot = w.slot, .guard = w.guard, .routes = routes, .n_routes = ALY_ARRAY_SIZE(routes)};
    setup_globalconf(spec->cfg);
    h2o_hostconf_t **public_hosts, **admin_hosts;
    http_register(&w.conf, &w.site, &public_hosts, &admin_hosts);

    h2o_context_init(&w.ctx, w.loop, &w.conf);
    h2o_linklist_init_anchor(&w.conns);
    start_access_log(spec->cfg);
    h2o_timeout_init(w.loop, &w.trim_timeout, TRIM_EVERY_MS);
    w.trim_entry.cb = on_trim;
    h2o_timeout_link(w.loop, &w.trim_timeout, &w.trim_entry);
    w.store = store;
    store_count_into(store, w.slot->pg);
    if (store_poll_ms(store) != 0) {
        h2o_timeout_init(w.loop, &w.replica_timeout, store_poll_ms(store));
        w.replica_entry.cb = on_replicate;
        h2o_timeout_link(w.loop, &w.replica_timeout, &w.replica_entry);
    }

    w.n_listeners = spec->n_listeners;
    w.listeners = calloc(spec->n_listeners, sizeof(*w.listeners));
    if (w.listeners == NULL)
        log_fatal("out of memory");
    for (size_t i = 0; i < spec->n_listeners; i++) {
        listener_state_t *ls = &w.listeners[i];
        ls->accept_ctx.ctx = &w.ctx;
        ls->accept_ctx.hosts = spec->listeners[i].admin ? admin_hosts : public_hosts;
        ls->accept_ctx.ssl_ctx = spec->listeners[i].tls ? spec->ssl_ctx : NULL;
        ls->sock = h2o_evloop_socket_create(w.loop, spec->listeners[i].fd, H2O_SOCKET_FLAG_DONT_READ);
        start_listener(ls);
    }
    w.accepting = 1;
    __atomic_store_n(&w.slot->accepting, 1, __ATOMIC_RELAXED);
    h2o_timeout_init(w.loop, &w.defer_timeout, ACCEPT_DEFER_MS);
    w.defer_entry.cb = on_defer_end;
    h2o_timeout_init(w.loop, &w.abuse_timeout, HTTP_SWEEP_MS);
    w.abuse_entry.cb = abuse_sweep;
    h2o_timeout_link(w.loop, &w.abuse_timeout, &w.abuse_entry);
    h2o_socket_t *wake = h2o_evloop_socket_create(w.loop, wake_pipe[0], 0);
    h2o_socket_read_start(wake, on_wake);

    log_info("serving %zu listener(s)", spec->n_listeners);
    report_ready(spec);
    for (;;) {
        h2o_evloop_run(w.loop, INT32_MAX);
        if (sig_stop)
            break;
        if (sig_reopen) {
            sig_reopen = 0;
            if (log_reopen(&err) != 0)
                log_error("%s", err.msg);
        }
        if (sig_drain)
            begin_drain();
        if (w.draining && (w.n_conns == 0 || aly_now_ms() >= w.drain_deadline_ms)) {
            if (w.n_conns != 0)
                log_warn("shutdown_timeout reached with %zu connection(s) still open", w.n_conns);
            break;
        }
    }
    log_access_flush();
    gate_free(&w.gate);
    volatile_redis_close(vr);
    guard_free(w.guard);
    oauth_server_free(&w.oauth);
    oauth_cimd_dispose();
    auth_free(auth);
    store_close(store);
    rpc_parse_reset();
    log_info("exiting");
    /* _exit: the connections' memory dies with the process; running atexit handlers in a child would be wrong. */
    _exit(0);
}

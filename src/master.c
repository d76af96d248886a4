/*
 * The master process: binds listeners, forks and supervises workers, and
 * turns signals into the operator's contract (nginx's): TERM/INT stop, QUIT
 * drain, HUP reload, USR1 reopen logs.
 *
 * The master never serves a request and never keeps an LMDB environment open,
 * so nothing it holds is shared by accident with a child.  It waits for
 * signals with sigtimedwait() (all of them blocked), which makes the
 * supervisor a plain sequential loop with no async-signal-safety concerns.
 * Workers belong to a generation: a reload starts a new generation with the
 * new configuration and drains the old one; only current-generation workers
 * are respawned.
 */
#include "aly/master.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aly/auth.h"
#include "aly/daemon.h"
#include "aly/log.h"
#include "aly/stats.h"
#include "aly/store.h"
#include "aly/tls.h"
#include "aly/worker.h"

#define QUICK_DEATH_MS 10000 /* a worker dying sooner than this counts towards back-off */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define FAST_STOP_WAIT_MS 10000
#define KILL_GRACE_MS 2000  /* past shutdown_timeout, before a draining worker that has not exited is killed */
#define READY_WAIT_MS 30000 /* how long a reload waits for every new worker to report that it serves */
#define READY_POLL_MS 20    /* how often the master looks for those reports meanwhile */
#define LISTEN_BACKLOG 1024

typedef struct bound {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int fd;
} bound_t;

typedef struct generation {
    aly_config_t *cfg;
    SSL_CTX *ssl_ctx;
    worker_listener_t listeners[ALY_MAX_LISTENERS + 1];
    size_t n_listeners;
    unsigned n_workers;
    uid_t uid;
    gid_t gid;
    unsigned id;
    int ready_rd, ready_wr; /* a reload's generation: the workers' "serving" reports (aly/worker.h); else -1 */
} generation_t;

typedef struct proc {
    pid_t pid;
    unsigned number;
    unsigned generation;
    uint64_t started_ms;
    uint64_t kill_at_ms; /* a draining worker: SIGKILL once this passes (0: none) */
} proc_t;

static struct {
    generation_t gen;
    /*
     * A reload's generation while its workers start (id 0: none).  The old
     * generation keeps serving, and is told to drain only once every new
     * worker has reported that it serves; if one dies first, or the reports
     * do not come within READY_WAIT_MS, the new generation is stopped instead.
     */
    generation_t next;
    unsigned char next_ready[ALY_MAX_WORKERS];
    unsigned next_n_ready;
    uint64_t next_deadline_ms;
    char next_failed[160]; /* why the new generation cannot serve ("" while none said so) */
    int hup_again;         /* a HUP came while a reload was still starting its workers */
    unsigned last_id;
    bound_t bound[ALY_MAX_LISTENERS + 1];
    size_t n_bound;
    proc_t procs[STATS_N_SLOTS];
    /* per worker number, for the current generation */
    unsigned quick_deaths[ALY_MAX_WORKERS];
    uint64_t respawn_at[ALY_MAX_WORKERS]; /* 0: running or not due */
    int missing[ALY_MAX_WORKERS];
    stats_shared_t *stats;
    int foreground;
    char *pid_path;      /* the pid_file this master wrote; NULL: none */
    char *next_pid_path; /* a reload's other pid_file, written for m.next; promoted with it */
    int next_pid_moves;  /* the reload changes the pid_file (next_pid_path NULL: to none) */
} m;

/* The pid_file a configuration asks for: its own, or the default when alyd detaches. */
static const char *pid_file_of(const aly_config_t *cfg)
{
    return cfg->pid_file != NULL ? cfg->pid_file : m.foreground ? NULL : "/run/alyd/alyd.pid";
}

/*
 * A reload that names another pid_file writes it before the new workers
 * start, so a path it cannot write fails the reload; the old file is removed
 * once the new generation serves, and the new one if the reload is abandoned.
 */
/* Whether two pid_file settings (NULL: none) are one file; another name for it (/var/run and /run, "dir//alyd.pid") is the same. */
static int same_pid_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0 || (stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
}

static int stage_pid_file(const aly_config_t *cfg, aly_err_t *err)
{
    const char *want = pid_file_of(cfg);
    m.next_pid_moves = !same_pid_file(want, m.pid_path); /* moving a file to another of its names would remove it */
    if (!m.next_pid_moves || want == NULL)
        return 0;
    if (daemon_write_pid_file(want, err) != 0)
        return -1;
    if ((m.next_pid_path = strdup(want)) == NULL) {
        unlink(want);
        return aly_errf(err, "out of memory");
    }
    return 0;
}

/* Ends a staged pid_file change: kept (the reload took) or undone. */
static void settle_pid_file(int took)
{
    if (m.next_pid_moves) {
        char *gone = took ? m.pid_path : m.next_pid_path;
        if (gone != NULL) {
            unlink(gone);
            free(gone);
        }
        if (took) {
            m.pid_path = m.next_pid_path;
            log_info("pid_file is now %s", m.pid_path != NULL ? m.pid_path : "(none)");
        }
    }
    m.next_pid_path = NULL;
    m.next_pid_moves = 0;
}

static int resolve_user(const aly_config_t *cfg, uid_t *uid, gid_t *gid, aly_err_t *err)
{
    if (config_lookup_user(cfg, uid, gid, err) != 0)
        return -1;
    if (*uid == getuid())
        *uid = (uid_t)-1;
    if (*gid == getgid() && *uid == (uid_t)-1)
        *gid = (gid_t)-1;
    if ((*uid != (uid_t)-1 || *gid != (gid_t)-1) && geteuid() != 0)
        return aly_errf(err, "%s: user/group is set but alyd is not started as root", cfg->path);
    return 0;
}

static int bind_one(const aly_listen_t *l, int *fd_out, aly_err_t *err)
{
    for (size_t i = 0; i < m.n_bound; i++) {
        if (m.bound[i].addrlen == l->addrlen && memcmp(&m.bound[i].addr, &l->addr, l->addrlen) == 0) {
            *fd_out = m.bound[i].fd;
            return 0;
        }
    }
    if (m.n_bound == ALY_ARRAY_SIZE(m.bound))
        return aly_errf(err, "too many listeners");
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return aly_errf(err, "cannot create a socket for %s: %s", l->spec, strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (l->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return aly_errf(err, "cannot listen on %s: %s", l->spec, strerror(e));
    }
    m.bound[m.n_bound] = (bound_t){.addr = l->addr, .addrlen = l->addrlen, .fd = fd};
    m.n_bound++;
    *fd_out = fd;
    return 0;
}

/* Closes bound sockets the generation does not use (after a reload dropped a listen line). */
static void close_unused(const generation_t *g)
{
    size_t keep = 0;
    for (size_t i = 0; i < m.n_bound; i++) {
        int used = 0;
        for (size_t k = 0; k < g->n_listeners; k++)
            used |= g->listeners[k].fd == m.bound[i].fd;
        if (used)
            m.bound[keep++] = m.bound[i];
        else
            close(m.bound[i].fd);
    }
    m.n_bound = keep;
}

/* Closes the sockets bound since m.n_bound was mark: a failed generation leaves no listener behind. */
static void unbind_from(size_t mark)
{
    for (size_t i = mark; i < m.n_bound; i++)
        close(m.bound[i].fd);
    if (mark < m.n_bound)
        m.n_bound = mark;
}

/*
 * Workers that stay root by omission turn any bug in request handling into
 * root: a root master needs "user", and "user root" is how an operator says
 * it knowingly.
 */
static int refuse_implicit_root(const aly_config_t *cfg, aly_err_t *err)
{
    if (cfg->user == NULL && geteuid() == 0)
        return aly_errf(err,
                        "%s: alyd is started as root and \"user\" is not set, so its workers would serve requests as root: "
                        "set \"user\" to the account they should run as (\"user root\" to keep root knowingly)",
                        cfg->path);
    return 0;
}

/* Everything a generation needs before its workers fork.  On failure nothing changes. */
static int prepare_generation(aly_config_t *cfg, unsigned workers_override, generation_t *g, aly_err_t *err)
{
    memset(g, 0, sizeof(*g));
    g->cfg = cfg;
    g->ready_rd = g->ready_wr = -1;
    size_t mark = m.n_bound;
    if (refuse_implicit_root(cfg, err) != 0 || resolve_user(cfg, &g->uid, &g->gid, err) != 0)
        return -1;
    for (size_t i = 0; i < cfg->n_listens; i++) {
        if (cfg->listens[i].tls && g->ssl_ctx == NULL) {
            g->ssl_ctx = tls_context_new(cfg->tls_certificate, cfg->tls_key, cfg->tls_ticket_rotation_ms, err);
            if (g->ssl_ctx == NULL)
                return -1;
        }
    }
    if (auth_check_config(cfg, err) != 0 || worker_check_start(cfg, g->uid, g->gid, err) != 0)
        goto fail;
    /* The store must exist before workers try to open it; this also clears stale readers. */
    int cleared;
    if (daemon_reader_check(cfg, g->uid, g->gid, &cleared, err) != 0)
        goto fail;
    for (size_t i = 0; i < cfg->n_listens; i++) {
        worker_listener_t *wl = &g->listeners[g->n_listeners];
        if (bind_one(&cfg->listens[i], &wl->fd, err) != 0)
            goto fail;
        wl->tls = cfg->listens[i].tls;
        g->n_listeners++;
    }
    if (cfg->metrics_listen.port != 0) {
        worker_listener_t *wl = &g->listeners[g->n_listeners];
        if (bind_one(&cfg->metrics_listen, &wl->fd, err) != 0)
            goto fail;
        wl->admin = 1;
        g->n_listeners++;
    }
    g->n_workers = workers_override != 0 ? workers_override : config_worker_count(cfg);
    return 0;
fail:
    unbind_from(mark);
    if (g->ssl_ctx != NULL)
        SSL_CTX_free(g->ssl_ctx);
    g->ssl_ctx = NULL;
    return -1;
}

static proc_t *proc_slot(pid_t pid)
{
    for (size_t i = 0; i < ALY_ARRAY_SIZE(m.procs); i++)
        if (m.procs[i].pid == pid)
            return &m.procs[i];
    return NULL;
}

/*
 * In a new worker of generation g: closes what the master holds for anything
 * else.  Workers never exec, so close-on-exec does nothing for them: a
 * listener another generation binds (a port a reload removes or adds) would
 * stay open, unaccepted, for this worker's life, and connections to it hang.
 */
static void child_fds(const generation_t *g)
{
    for (size_t i = 0; i < m.n_bound; i++) {
        int used = 0;
        for (size_t k = 0; k < g->n_listeners && !used; k++)
            used = g->listeners[k].fd == m.bound[i].fd;
        if (!used)
            close(m.bound[i].fd);
    }
    /* A generation of id 0 is none (m.next between reloads, zeroed: its pipe fields are not descriptors). */
    const generation_t *other = g == &m.gen ? &m.next : &m.gen;
    int fds[] = {g->ready_rd, other->id != 0 ? other->ready_rd : -1, other->id != 0 ? other->ready_wr : -1};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Starts worker number of generation g (the current one, or a reload's next one). */
static int spawn(generation_t *g, unsigned number)
{
    proc_t *p = proc_slot(0);
    if (p == NULL) {
        log_error("no room to start worker %u", number);
        return -1;
    }
    int slot = stats_claim_slot(m.stats, -1);
    if (slot < 0) {
        log_error("no statistics slot for worker %u", number);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        m.stats->slots[slot].pid = 0;
        log_error("cannot fork worker %u: %s", number, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        child_fds(g);
        worker_spec_t spec = {.cfg = g->cfg,
                              .listeners = g->listeners,
                              .n_listeners = g->n_listeners,
                              .ssl_ctx = g->ssl_ctx,
                              .stats = m.stats,
                              .slot = slot,
                              .number = number,
                              .uid = g->uid,
                              .gid = g->gid,
                              .ready_fd = g->ready_wr};
        worker_run(&spec);
    }
    m.stats->slots[slot].pid = pid;
    *p = (proc_t){.pid = pid, .number = number, .generation = g->id, .started_ms = aly_now_ms()};
    if (g == &m.gen) {
        m.missing[number] = 0;
        m.respawn_at[number] = 0;
    }
    return 0;
}

static void signal_generation(unsigned generation, int all, int sig)
{
    for (size_t i = 0; i < ALY_ARRAY_SIZE(m.procs); i++)
        if (m.procs[i].pid > 0 && (all || m.procs[i].generation == generation))
            kill(m.procs[i].pid, sig);
}

static size_t live_workers(void)
{
    size_t n = 0;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(m.procs); i++)
        n += m.procs[i].pid > 0;
    return n;
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

/* Reaps every dead child; schedules respawns of current-generation workers unless stopping. */
static void reap(int stopping)
{
    int status, died = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        proc_t *p = proc_slot(pid);
        stats_release_slot(m.stats, pid);
        if (p == NULL)
            continue;
        proc_t dead = *p;
        p->pid = 0;
        int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!stopping && m.next.id != 0 && dead.generation == m.next.id) {
            /* A new worker died before the reload finished: the new generation cannot serve. */
            char why[96];
            describe_exit(status, why, sizeof(why));
            if (m.next_failed[0] == '\0')
                snprintf(m.next_failed, sizeof(m.next_failed), "new worker %u (pid %d) %s before it served", dead.number, (int)pid,
                         why);
            continue;
        }
        if (stopping || dead.generation != m.gen.id) {
            if (!clean) {
                char why[96];
                describe_exit(status, why, sizeof(why));
                log_warn("worker %u (pid %d) %s while stopping", dead.number, (int)pid, why);
            }
            continue;
        }
        died = 1;
        char why[96];
        describe_exit(status, why, sizeof(why));
        uint64_t now = aly_now_ms(), lived = now - dead.started_ms;
        stats_add(&m.stats->worker_restarts, 1);
        m.missing[dead.number] = 1;
        if (lived < QUICK_DEATH_MS) {
            /* The first quick death is respawned at once; then 0.5 s, doubling up to 30 s (README, alyd(8)). */
            unsigned n = ++m.quick_deaths[dead.number];
            uint64_t delay = n == 1 ? 0 : BACKOFF_MIN_MS;
            for (unsigned k = 2; k < n && delay < BACKOFF_MAX_MS; k++)
                delay *= 2;
            if (delay > BACKOFF_MAX_MS)
                delay = BACKOFF_MAX_MS;
            m.respawn_at[dead.number] = now + delay;
            if (n == 1)
                log_error("worker %u (pid %d) %s after %llu ms; respawning", dead.number, (int)pid, why, (unsigned long long)lived);
            else
                log_error("worker %u (pid %d) %s after %llu ms; it keeps dying (%u times in a row), respawning in %llu ms",
                          dead.number, (int)pid, why, (unsigned long long)lived, n, (unsigned long long)delay);
        } else {
            m.quick_deaths[dead.number] = 0;
            m.respawn_at[dead.number] = now;
            log_error("worker %u (pid %d) %s; respawning", dead.number, (int)pid, why);
        }
    }
    if (died) {
        /* A dead process may have held LMDB reader slots; free them for the others. */
        aly_err_t err;
        int cleared;
        if (daemon_reader_check(m.gen.cfg, m.gen.uid, m.gen.gid, &cleared, &err) != 0)
            log_error("reader check after a worker death: %s", err.msg);
        else if (cleared > 0)
            log_info("cleared %d stale store reader slot(s)", cleared);
    }
}

/* Milliseconds until the next respawn is due, or -1 when none is pending. */
static int64_t respawn_due(int start_now)
{
    uint64_t now = aly_now_ms();
    int64_t next = -1;
    for (unsigned n = 0; n < m.gen.n_workers; n++) {
        if (!m.missing[n])
            continue;
        if (m.respawn_at[n] <= now) {
            if (start_now && spawn(&m.gen, n) != 0) {
                m.respawn_at[n] = now + BACKOFF_MAX_MS;
                next = next < 0 || (int64_t)BACKOFF_MAX_MS < next ? BACKOFF_MAX_MS : next;
            }
            continue;
        }
        int64_t d = (int64_t)(m.respawn_at[n] - now);
        if (next < 0 || d < next)
            next = d;
    }
    return next;
}

static void start_generation(void)
{
    memset(m.quick_deaths, 0, sizeof(m.quick_deaths));
    memset(m.respawn_at, 0, sizeof(m.respawn_at));
    for (unsigned n = 0; n < m.gen.n_workers; n++)
        m.missing[n] = 1;
    respawn_due(1);
    __atomic_store_n(&m.stats->workers, m.gen.n_workers, __ATOMIC_RELAXED);
}

static void free_generation(generation_t *g)
{
    if (g->ssl_ctx != NULL)
        SSL_CTX_free(g->ssl_ctx);
    config_free(g->cfg);
    memset(g, 0, sizeof(*g));
}

static void close_ready_pipe(generation_t *g)
{
    if (g->ready_rd >= 0)
        close(g->ready_rd);
    if (g->ready_wr >= 0)
        close(g->ready_wr);
    g->ready_rd = g->ready_wr = -1;
}

/* Tells generation id to drain, and sets when the master kills what is left of it (alyd.conf(5), shutdown_timeout). */
static void drain_generation(unsigned id, uint64_t shutdown_timeout_ms)
{
    uint64_t kill_at = aly_now_ms() + shutdown_timeout_ms + KILL_GRACE_MS;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(m.procs); i++) {
        if (m.procs[i].pid > 0 && m.procs[i].generation == id) {
            kill(m.procs[i].pid, SIGQUIT);
            m.procs[i].kill_at_ms = kill_at;
        }
    }
}

/* SIGKILLs draining workers past their deadline; returns the milliseconds until the next deadline, or -1. */
static int64_t kill_overdue(void)
{
    uint64_t now = aly_now_ms();
    int64_t next = -1;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(m.procs); i++) {
        proc_t *p = &m.procs[i];
        if (p->pid <= 0 || p->kill_at_ms == 0)
            continue;
        if (p->kill_at_ms <= now) {
            log_warn("worker %u (pid %d) of generation %u is still running past shutdown_timeout; killing it", p->number,
                     (int)p->pid, p->generation);
            kill(p->pid, SIGKILL);
            p->kill_at_ms = 0;
            continue;
        }
        int64_t d = (int64_t)(p->kill_at_ms - now);
        if (next < 0 || d < next)
            next = d;
    }
    return next;
}

/* The new generation did not come up: it is stopped, and the old one serves on as if the HUP had not come. */
static void abandon_next(void)
{
    aly_err_t err;
    generation_t g = m.next;
    memset(&m.next, 0, sizeof(m.next));
    close_ready_pipe(&g);
    drain_generation(g.id, g.cfg->shutdown_timeout_ms);
    if (log_open(m.gen.cfg->error_log, m.gen.cfg->access_log, m.gen.uid, m.gen.gid, &err) != 0)
        log_error("cannot reopen the running configuration's logs: %s", err.msg);
    log_error("reload failed, keeping the running configuration: %s; stopping the new workers", m.next_failed);
    settle_pid_file(0);
    free_generation(&g);
    close_unused(&m.gen);
}

/* The new generation serves: the old one drains, and the new one is the one respawned from now on. */
static void promote_next(void)
{
    generation_t old = m.gen;
    m.gen = m.next;
    memset(&m.next, 0, sizeof(m.next));
    close_ready_pipe(&m.gen);
    drain_generation(old.id, old.cfg->shutdown_timeout_ms);
    close_unused(&m.gen);
    free_generation(&old);
    settle_pid_file(1);
    memset(m.quick_deaths, 0, sizeof(m.quick_deaths));
    memset(m.respawn_at, 0, sizeof(m.respawn_at));
    memset(m.missing, 0, sizeof(m.missing));
    __atomic_store_n(&m.stats->workers, m.gen.n_workers, __ATOMIC_RELAXED);
    log_info("reloaded: generation %u with %u worker(s)", m.gen.id, m.gen.n_workers);
}

/* Reads the new workers' reports; promotes or abandons the new generation once that is decided. */
static void settle_next(void)
{
    if (m.next.id == 0)
        return;
    unsigned numbers[64];
    ssize_t n;
    while ((n = read(m.next.ready_rd, numbers, sizeof(numbers))) > 0) {
        for (size_t i = 0; i < (size_t)n / sizeof(numbers[0]); i++) {
            if (numbers[i] < m.next.n_workers && !m.next_ready[numbers[i]]) {
                m.next_ready[numbers[i]] = 1;
                m.next_n_ready++;
            }
        }
    }
    if (m.next_failed[0] == '\0' && m.next_n_ready < m.next.n_workers && aly_now_ms() >= m.next_deadline_ms)
        snprintf(m.next_failed, sizeof(m.next_failed), "%u of %u new worker(s) reported serving within %d ms", m.next_n_ready,
                 m.next.n_workers, READY_WAIT_MS);
    if (m.next_failed[0] != '\0')
        abandon_next();
    else if (m.next_n_ready == m.next.n_workers)
        promote_next();
}

static void reload(const char *config_path, unsigned workers_override)
{
    aly_err_t err;
    if (m.next.id != 0) {
        log_info("HUP while the new workers of the last one are starting: reloading again once they serve or fail");
        m.hup_again = 1;
        return;
    }
    log_info("reloading %s", config_path);
    aly_config_t *cfg = config_load(config_path, &err);
    if (cfg == NULL) {
        log_error("reload failed, keeping the running configuration: %s", err.msg);
        return;
    }
    generation_t g;
    if (prepare_generation(cfg, workers_override, &g, &err) != 0) {
        log_error("reload failed, keeping the running configuration: %s", err.msg);
        config_free(cfg);
        return;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        log_error("reload failed, keeping the running configuration: pipe: %s", strerror(errno));
        free_generation(&g);
        close_unused(&m.gen);
        return;
    }
    g.ready_rd = fds[0];
    g.ready_wr = fds[1];
    if (stage_pid_file(cfg, &err) != 0) {
        log_error("reload failed, keeping the running configuration: %s", err.msg);
        close_ready_pipe(&g);
        free_generation(&g);
        close_unused(&m.gen);
        return;
    }
    if (log_open(cfg->error_log, cfg->access_log, g.uid, g.gid, &err) != 0) {
        log_error("reload failed, keeping the running configuration: %s", err.msg);
        settle_pid_file(0);
        close_ready_pipe(&g);
        free_generation(&g);
        close_unused(&m.gen);
        return;
    }
    g.id = ++m.last_id;
    m.next = g;
    memset(m.next_ready, 0, sizeof(m.next_ready));
    m.next_n_ready = 0;
    m.next_failed[0] = '\0';
    m.next_deadline_ms = aly_now_ms() + READY_WAIT_MS;
    for (unsigned n = 0; n < m.next.n_workers && m.next_failed[0] == '\0'; n++)
        if (spawn(&m.next, n) != 0)
            snprintf(m.next_failed, sizeof(m.next_failed), "cannot start new worker %u", n);
    log_info("generation %u: %u new worker(s) starting; the running ones serve until they all do", m.next.id, m.next.n_workers);
}

/* The sooner of two waits in milliseconds, where -1 is none. */
static int64_t earliest(int64_t a, int64_t b)
{
    return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

/*
 * Stops every worker: sig is SIGTERM (fast) or SIGQUIT (drain); SIGKILL after
 * wait_ms.  TERM or INT during a drain turn it into the fast stop (the init
 * scripts escalate QUIT to TERM).
 */
static void stop_all(int sig, uint64_t wait_ms)
{
    signal_generation(0, 1, sig);
    uint64_t deadline = aly_now_ms() + wait_ms;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sig == SIGQUIT) {
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
    }
    while (live_workers() > 0) {
        uint64_t now = aly_now_ms();
        if (now >= deadline) {
            log_warn("%zu worker(s) still running after %llu ms; killing them", live_workers(), (unsigned long long)wait_ms);
            signal_generation(0, 1, SIGKILL);
            deadline = now + 5000;
            wait_ms = 5000;
        }
        struct timespec ts = {0, 100 * 1000000};
        int got = sigtimedwait(&set, NULL, &ts);
        if (got == SIGTERM || got == SIGINT) {
            log_info("received %s while draining: stopping now", got == SIGTERM ? "TERM" : "INT");
            sigdelset(&set, SIGTERM);
            sigdelset(&set, SIGINT);
            signal_generation(0, 1, SIGTERM);
            wait_ms = FAST_STOP_WAIT_MS;
            deadline = aly_now_ms() + wait_ms;
        }
        reap(1);
    }
}

int master_run(const char *config_path, int foreground, unsigned workers_override)
{
    aly_err_t err;
    aly_config_t *cfg = config_load(config_path, &err);
    if (cfg == NULL) {
        fprintf(stderr, "alyd: %s\n", err.msg);
        return 1;
    }
    log_set_role("master");
    m.stats = stats_create();
    if (m.stats == NULL) {
        fprintf(stderr, "alyd: cannot map the shared statistics region: %s\n", strerror(errno));
        config_free(cfg);
        return 1;
    }
    if (prepare_generation(cfg, workers_override, &m.gen, &err) != 0 ||
        log_open(cfg->error_log, cfg->access_log, m.gen.uid, m.gen.gid, &err) != 0) {
        fprintf(stderr, "alyd: %s\n", err.msg);
        config_free(cfg);
        return 1;
    }
    m.gen.id = m.last_id = 1;
    int report_fd = -1;
    int keep_stderr = strcmp(cfg->error_log, "stderr") == 0 || strcmp(cfg->access_log, "stderr") == 0;
    if (!foreground && (report_fd = daemon_detach(keep_stderr, &err)) < 0) {
        fprintf(stderr, "alyd: %s\n", err.msg);
        return 1;
    }
    m.foreground = foreground;
    const char *pid_file = pid_file_of(cfg);
    if (pid_file != NULL) {
        if (daemon_write_pid_file(pid_file, &err) != 0) {
            log_error("%s", err.msg);
            fprintf(stderr, "alyd: %s\n", err.msg);
            daemon_report_started(report_fd, 0);
            return 1;
        }
        m.pid_path = strdup(pid_file);
    }
    daemon_report_started(report_fd, 1);

    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(sigs); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    /* A shell starts background jobs with QUIT and INT ignored; the master wants them delivered. */
    for (size_t i = 0; i < ALY_ARRAY_SIZE(sigs); i++)
        signal(sigs[i], SIG_DFL);
    signal(SIGPIPE, SIG_IGN);

    log_info("alyd %s starting %u worker(s) on %zu listener(s), public_url %s", PACKAGE_VERSION, m.gen.n_workers, m.gen.n_listeners,
             cfg->public_url);
    start_generation();

    int exit_code = 0;
    for (;;) {
        int64_t due = earliest(respawn_due(0), kill_overdue());
        if (m.next.id != 0)
            due = earliest(due, READY_POLL_MS);
        struct timespec ts = {1, 0};
        if (due >= 0 && due < 1000)
            ts = (struct timespec){0, (long)due * 1000000};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("received %s: stopping", sig == SIGTERM ? "TERM" : "INT");
            stop_all(SIGTERM, FAST_STOP_WAIT_MS);
            break;
        }
        if (sig == SIGQUIT) {
            log_info("received QUIT: draining, at most %llu ms", (unsigned long long)m.gen.cfg->shutdown_timeout_ms);
            stop_all(SIGQUIT, m.gen.cfg->shutdown_timeout_ms + 2000);
            break;
        }
        if (sig == SIGHUP)
            reload(config_path, workers_override);
        if (sig == SIGUSR1) {
            if (log_reopen(&err) != 0)
                log_error("%s", err.msg);
            else
                log_info("reopened log files");
            signal_generation(0, 1, SIGUSR1);
        }
        reap(0);
        respawn_due(1);
        settle_next();
        if (m.hup_again && m.next.id == 0) {
            m.hup_again = 0;
            reload(config_path, workers_override);
        }
    }
    if (m.next.id != 0) {
        close_ready_pipe(&m.next);
        free_generation(&m.next);
        settle_pid_file(0);
    }
    log_info("stopped");
    if (m.pid_path != NULL) {
        unlink(m.pid_path);
        free(m.pid_path);
    }
    for (size_t i = 0; i < m.n_bound; i++)
        close(m.bound[i].fd);
    free_generation(&m.gen);
    return exit_code;
}

int master_test_config(const char *config_path)
{
    aly_err_t err;
    aly_config_t *cfg = config_load(config_path, &err);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    uid_t uid;
    gid_t gid;
    int rc = 0;
    if (refuse_implicit_root(cfg, &err) != 0 || resolve_user(cfg, &uid, &gid, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        rc = 1;
    }
    if (rc == 0 && auth_check_config(cfg, &err) != 0) {
        fprintf(stderr, "%s: %s\n", config_path, err.msg);
        rc = 1;
    }
    /* Before alyctl init there is no store and no pepper yet: the start-up files are checked once data_dir exists. */
    struct stat st;
    if (rc == 0 && stat(cfg->data_dir, &st) != 0 && errno == ENOENT)
        fprintf(stderr, "%s: data_dir %s does not exist yet (alyctl init creates it): the key files are not checked\n", config_path,
                cfg->data_dir);
    else if (rc == 0 && worker_check_start(cfg, uid, gid, &err) != 0) {
        fprintf(stderr, "%s: %s\n", config_path, err.msg);
        rc = 1;
    }
    for (size_t i = 0; rc == 0 && i < cfg->n_listens; i++) {
        if (cfg->listens[i].tls) {
            SSL_CTX *ctx = tls_context_new(cfg->tls_certificate, cfg->tls_key, cfg->tls_ticket_rotation_ms, &err);
            if (ctx == NULL) {
                fprintf(stderr, "%s: %s\n", config_path, err.msg);
                rc = 1;
            } else {
                SSL_CTX_free(ctx);
            }
            break;
        }
    }
    if (rc == 0)
        printf("%s: configuration OK\n", config_path);
    config_free(cfg);
    return rc;
}

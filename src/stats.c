/*
 * The shared counters of aly/stats.h and their Prometheus rendering.
 */
#include "aly/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const int status_codes[] = {STATS_STATUS_CODES};

_Static_assert(ALY_ARRAY_SIZE(status_codes) + 1 == STATS_N_STATUS, "one bucket per code plus other");

stats_shared_t *stats_create(void)
{
    void *p = mmap(NULL, sizeof(stats_shared_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0, sizeof(stats_shared_t));
    stats_shared_t *s = p;
    s->started_wall_ms = aly_wall_ms();
    return s;
}

int stats_claim_slot(stats_shared_t *s, pid_t pid)
{
    for (int i = 0; i < STATS_N_SLOTS; i++) {
        if (s->slots[i].pid == 0) {
            s->slots[i].pid = pid;
            __atomic_store_n(&s->slots[i].in_flight, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&s->slots[i].connections, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&s->slots[i].accepting, 0, __ATOMIC_RELAXED);
            return i;
        }
    }
    return -1;
}

void stats_release_slot(stats_shared_t *s, pid_t pid)
{
    for (int i = 0; i < STATS_N_SLOTS; i++) {
        if (s->slots[i].pid == pid) {
            __atomic_store_n(&s->slots[i].accepting, 0, __ATOMIC_RELAXED);
            s->slots[i].pid = 0;
            __atomic_store_n(&s->slots[i].in_flight, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&s->slots[i].connections, 0, __ATOMIC_RELAXED);
        }
    }
}

unsigned stats_status_index(int status)
{
    for (unsigned i = 0; i < ALY_ARRAY_SIZE(status_codes); i++)
        if (status_codes[i] == status)
            return i;
    return STATS_N_STATUS - 1;
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

char *stats_render(const stats_shared_t *s, size_t *len)
{
    uint64_t req[STATS_N_STATUS] = {0}, in_flight = 0, conns = 0, rl[STATS_N_RL] = {0}, checks = 0, failures = 0, refused = 0;
    uint64_t cuts[STATS_N_CUT] = {0}, conn_refused[STATS_N_REFUSE] = {0}, strikes = 0, bans = 0, alone = 0;
    for (int i = 0; i < STATS_N_SLOTS; i++) {
        const stats_slot_t *sl = &s->slots[i];
        for (int k = 0; k < STATS_N_STATUS; k++)
            req[k] += load(&sl->requests[k]);
        in_flight += load(&sl->in_flight);
        conns += load(&sl->connections);
        for (int k = 0; k < STATS_N_RL; k++)
            rl[k] += load(&sl->ratelimit[k]);
        checks += load(&sl->credential_checks);
        failures += load(&sl->auth_failures);
        refused += load(&sl->auth_refused);
        for (int k = 0; k < STATS_N_CUT; k++)
            cuts[k] += load(&sl->conn_cuts[k]);
        for (int k = 0; k < STATS_N_REFUSE; k++)
            conn_refused[k] += load(&sl->conn_refused[k]);
        strikes += load(&sl->address_strikes);
        bans += load(&sl->address_bans);
        alone += load(&sl->accept_alone);
    }
    char *buf;
    size_t size;
    FILE *fp = open_memstream(&buf, &size);
    if (fp == NULL)
        return NULL;
    fputs("# HELP alyd_requests_total HTTP requests answered, by status code.\n"
          "# TYPE alyd_requests_total counter\n",
          fp);
    for (int k = 0; k < STATS_N_STATUS; k++) {
        if (k < STATS_N_STATUS - 1)
            fprintf(fp, "alyd_requests_total{status=\"%d\"} %llu\n", status_codes[k], (unsigned long long)req[k]);
        else
            fprintf(fp, "alyd_requests_total{status=\"other\"} %llu\n", (unsigned long long)req[k]);
    }
    uint64_t up = (aly_wall_ms() - s->started_wall_ms) / 1000;
    fprintf(fp,
            "# HELP alyd_requests_in_flight Requests being processed now.\n"
            "# TYPE alyd_requests_in_flight gauge\n"
            "alyd_requests_in_flight %llu\n"
            "# HELP alyd_connections Open client connections.\n"
            "# TYPE alyd_connections gauge\n"
            "alyd_connections %llu\n"
            "# HELP alyd_workers Worker processes the master keeps running.\n"
            "# TYPE alyd_workers gauge\n"
            "alyd_workers %llu\n"
            "# HELP alyd_worker_restarts_total Workers respawned after dying.\n"
            "# TYPE alyd_worker_restarts_total counter\n"
            "alyd_worker_restarts_total %llu\n"
            "# HELP alyd_uptime_seconds Seconds since the master started.\n"
            "# TYPE alyd_uptime_seconds gauge\n"
            "alyd_uptime_seconds %llu\n",
            (unsigned long long)in_flight, (unsigned long long)conns, (unsigned long long)load(&s->workers),
            (unsigned long long)load(&s->worker_restarts), (unsigned long long)up);
    fprintf(fp,
            "# HELP alyd_ratelimit_decisions_total Rate-limit decisions; error: the limiter could not decide, request admitted.\n"
            "# TYPE alyd_ratelimit_decisions_total counter\n"
            "alyd_ratelimit_decisions_total{result=\"allowed\"} %llu\n"
            "alyd_ratelimit_decisions_total{result=\"refused\"} %llu\n"
            "alyd_ratelimit_decisions_total{result=\"error\"} %llu\n"
            "# HELP alyd_credential_checks_total Bearer credentials verified (key HMAC and lookup, or JWT).\n"
            "# TYPE alyd_credential_checks_total counter\n"
            "alyd_credential_checks_total %llu\n"
            "# HELP alyd_auth_failures_total Failed authentications charged to a client address.\n"
            "# TYPE alyd_auth_failures_total counter\n"
            "alyd_auth_failures_total %llu\n"
            "# HELP alyd_auth_failures_refused_total Requests refused before any credential work (auth_failure_limit).\n"
            "# TYPE alyd_auth_failures_refused_total counter\n"
            "alyd_auth_failures_refused_total %llu\n",
            (unsigned long long)rl[STATS_RL_ALLOWED], (unsigned long long)rl[STATS_RL_REFUSED],
            (unsigned long long)rl[STATS_RL_ERROR], (unsigned long long)checks, (unsigned long long)failures,
            (unsigned long long)refused);
    fprintf(
        fp,
        "# HELP alyd_connections_cut_total Connections shut for abuse: reset budget spent, body bytes in flight, request deadline.\n"
        "# TYPE alyd_connections_cut_total counter\n"
        "alyd_connections_cut_total{reason=\"resets\"} %llu\n"
        "alyd_connections_cut_total{reason=\"body\"} %llu\n"
        "alyd_connections_cut_total{reason=\"deadline\"} %llu\n"
        "# HELP alyd_connections_refused_total Connections closed at accept: too many from the address, or the address struck out.\n"
        "# TYPE alyd_connections_refused_total counter\n"
        "alyd_connections_refused_total{reason=\"per_address\"} %llu\n"
        "alyd_connections_refused_total{reason=\"strikes\"} %llu\n"
        "# HELP alyd_address_strikes_total Strikes recorded against client addresses (one per connection cut).\n"
        "# TYPE alyd_address_strikes_total counter\n"
        "alyd_address_strikes_total %llu\n"
        "# HELP alyd_address_bans_total Client addresses refused for strike_window after address_strikes strikes.\n"
        "# TYPE alyd_address_bans_total counter\n"
        "alyd_address_bans_total %llu\n"
        "# HELP alyd_accept_alone_total Times a worker went on taking new connections without leaving any to the other workers, "
        "because none of them took one through a run of its pauses (a worker stopped or stalled).\n"
        "# TYPE alyd_accept_alone_total counter\n"
        "alyd_accept_alone_total %llu\n",
        (unsigned long long)cuts[STATS_CUT_RESETS], (unsigned long long)cuts[STATS_CUT_BODY],
        (unsigned long long)cuts[STATS_CUT_DEADLINE], (unsigned long long)conn_refused[STATS_REFUSE_PER_ADDRESS],
        (unsigned long long)conn_refused[STATS_REFUSE_STRUCK_OUT], (unsigned long long)strikes, (unsigned long long)bans,
        (unsigned long long)alone);
    if (fclose(fp) != 0) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}

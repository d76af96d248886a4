/*
 * The worker's connection to Redis (aly/volatile_redis.h): URL grammar,
 * connect with a deadline, reconnect with back-off, the outage log, and the
 * handful of commands alyd sends (SET, MGET, DEL, GET, EVALSHA).
 */
#include "aly/volatile_redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "aly/log.h"
#include "aly/resolve.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 2000
#define MGET_MAX 8

struct volatile_redis {
    volatile_redis_url_t url;
    int literal;          /* the host is an IP address: connected to as it is, no lookup */
    aly_lookup_t *lookup; /* the lookup of the next connection, started and not yet used; NULL when none */
    uint64_t timeout_ms;
    int fail_open;
    redisContext *c;
    int down;            /* in an outage: logged once, cleared on the next success */
    uint64_t down_since; /* aly_now_ms() of the failure that began the outage */
    uint64_t retry_at;   /* no connection attempt before this (aly_now_ms) */
    uint64_t backoff_ms;
    uint64_t *counters; /* [VOLATILE_REDIS_N], or NULL */
};

static volatile_redis_t *process_redis;
static uint64_t round_trips;

volatile_redis_t *volatile_redis(void)
{
    return process_redis;
}

uint64_t volatile_redis_round_trips(void)
{
    return round_trips;
}

void volatile_redis_count_into(volatile_redis_t *r, uint64_t *counters)
{
    r->counters = counters;
}

static void count(volatile_redis_t *r, int which, uint64_t n)
{
    if (r->counters != NULL)
        __atomic_fetch_add(&r->counters[which], n, __ATOMIC_RELAXED);
}

int volatile_redis_fail_open(const volatile_redis_t *r)
{
    return r->fail_open;
}

int volatile_redis_up(const volatile_redis_t *r)
{
    return !r->down;
}

int volatile_redis_parse_url(const char *url, volatile_redis_url_t *out, aly_err_t *err)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return aly_errf(err, "\"%s\" is not a redis://host[:port][/db] URL", url);
    const char *p = url + sizeof(scheme) - 1, *end;
    if (memchr(p, '@', strcspn(p, "/")) != NULL)
        return aly_errf(err, "\"%s\": credentials in the URL are not supported (bind Redis to a private network)", url);
    if (*p == '[') {
        end = strchr(p, ']');
        if (end == NULL)
            return aly_errf(err, "\"%s\": an IPv6 host needs its closing bracket", url);
        p++;
    } else {
        end = p + strcspn(p, ":/");
    }
    size_t hl = (size_t)(end - p);
    if (hl == 0 || hl >= sizeof(out->host))
        return aly_errf(err, "\"%s\" has no host (or one too long)", url);
    for (size_t i = 0; i < hl; i++)
        if (p[i] == '?' || p[i] == '#' || (unsigned char)p[i] <= ' ')
            return aly_errf(err, "\"%s\": queries, fragments and spaces are not allowed in the host", url);
    memcpy(out->host, p, hl);
    p = end + (*end == ']');
    if (*p == ':') {
        uint64_t port;
        char num[8];
        size_t nl = strcspn(p + 1, "/");
        if (nl == 0 || nl >= sizeof(num))
            return aly_errf(err, "\"%s\": bad port", url);
        memcpy(num, p + 1, nl);
        num[nl] = '\0';
        if (config_parse_uint(num, &port) != 0 || port == 0 || port > 65535)
            return aly_errf(err, "\"%s\": the port must be from 1 to 65535", url);
        out->port = (unsigned)port;
        p += 1 + nl;
    }
    if (*p == '/' && p[1] != '\0') {
        uint64_t db;
        if (config_parse_uint(p + 1, &db) != 0 || db > 1000000)
            return aly_errf(err, "\"%s\": the database must be a number", url);
        out->db = (unsigned)db;
    } else if (*p != '\0' && strcmp(p, "/") != 0) {
        return aly_errf(err, "\"%s\": unexpected \"%s\" after the host", url, p);
    }
    return 0;
}

static struct timeval tv_of(uint64_t ms)
{
    return (struct timeval){.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000 * 1000)};
}

static void drop(volatile_redis_t *r, const char *why)
{
    uint64_t now = aly_now_ms();
    if (r->c != NULL) {
        redisFree(r->c);
        r->c = NULL;
    }
    if (!r->down) {
        r->down = 1;
        r->down_since = now;
        count(r, VOLATILE_REDIS_OUTAGES, 1);
        r->backoff_ms = BACKOFF_FIRST_MS;
        log_error("volatile: redis at %s:%u unreachable (%s): %s", r->url.host, r->url.port, why,
                  r->fail_open ? "volatile_failure open, serving WITHOUT rate limits until it is back"
                               : "volatile_failure closed, answering 503 until it is back");
    } else if (r->backoff_ms < BACKOFF_MAX_MS) {
        r->backoff_ms *= 2;
    }
    r->retry_at = now + r->backoff_ms;
}

static void recovered(volatile_redis_t *r)
{
    if (!r->down)
        return;
    r->down = 0;
    log_info("volatile: redis at %s:%u reachable again after %llu ms", r->url.host, r->url.port,
             (unsigned long long)(aly_now_ms() - r->down_since));
}

/* An error reply that means this server cannot serve us now, whatever the command: an outage, not a failed call. */
static int outage_reply(const void *reply)
{
    static const char *const kinds[] = {"READONLY", "MISCONF", "OOM", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "NOREPLICAS"};
    const redisReply *rep = reply;
    if (rep->type != REDIS_REPLY_ERROR || rep->str == NULL)
        return 0;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(kinds); i++) {
        size_t n = strlen(kinds[i]);
        if (strncmp(rep->str, kinds[i], n) == 0 && (rep->str[n] == ' ' || rep->str[n] == '\0'))
            return 1;
    }
    return 0;
}

/*
 * The address to connect to, in addr; -1 with why.  An IP address is used as
 * it is.  A name is looked up anew for every connection (Redis failing over
 * behind a DNS name is followed), without blocking the worker longer than
 * volatile_timeout: hiredis' own getaddrinfo would wait out the resolver's
 * timeouts (5 s per attempt by default) with the event loop stopped.  A
 * lookup not answered by then fails this attempt like an unreachable Redis
 * and stays in flight (never two), for the next attempt, after the back-off,
 * to take its answer.
 */
static int resolve(volatile_redis_t *r, char *addr, size_t len, char *why, size_t wlen)
{
    if (r->literal) {
        snprintf(addr, len, "%s", r->url.host);
        return 0;
    }
    return aly_resolve(&r->lookup, r->url.host, aly_now_ms() + r->timeout_ms, "volatile_timeout", addr, len, why, wlen);
}

/* A usable context, connecting when there is none and the back-off allows; NULL with err otherwise. */
static redisContext *context(volatile_redis_t *r, aly_err_t *err)
{
    if (r->c != NULL)
        return r->c;
    if (r->down && aly_now_ms() < r->retry_at)
        return aly_errf(err, "redis at %s:%u is unreachable (retrying)", r->url.host, r->url.port), NULL;
    char addr[sizeof(r->url.host)], why[320]; /* addr: the host itself, or an address as text (at most INET6_ADDRSTRLEN) */
    if (resolve(r, addr, sizeof(addr), why, sizeof(why)) != 0) {
        drop(r, why);
        return aly_errf(err, "redis at %s:%u: %s", r->url.host, r->url.port, why), NULL;
    }
    redisContext *c = redisConnectWithTimeout(addr, (int)r->url.port, tv_of(r->timeout_ms));
    round_trips++;
    if (c == NULL || c->err) {
        snprintf(why, sizeof(why), "connect: %s", c != NULL ? c->errstr : "out of memory");
        if (c != NULL)
            redisFree(c);
        drop(r, why);
        return aly_errf(err, "redis at %s:%u: %s", r->url.host, r->url.port, why), NULL;
    }
    if (redisSetTimeout(c, tv_of(r->timeout_ms)) != REDIS_OK) {
        redisFree(c);
        drop(r, "cannot set the socket timeout");
        return aly_errf(err, "redis: cannot set the socket timeout"), NULL;
    }
    r->c = c;
    if (r->url.db != 0) {
        redisReply *rep = redisCommand(c, "SELECT %u", r->url.db);
        round_trips++;
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            snprintf(why, sizeof(why), "SELECT %u: %s", r->url.db, rep != NULL ? rep->str : c->errstr);
            if (rep != NULL)
                freeReplyObject(rep);
            drop(r, why);
            return aly_errf(err, "redis: %s", why), NULL;
        }
        freeReplyObject(rep);
    }
    return c;
}

/*
 * n commands written at once and their n replies read back: one round trip.
 * Replies of type error are returned as they are (the caller knows which
 * errors it expects).  -1 with err, and no reply kept, when hiredis fails:
 * the connection is then unusable (timeout, reset, protocol) and dropped.
 */
static int pipeline(volatile_redis_t *r, size_t n, const int *argc, const char **const *argv, const size_t *const *lens,
                    redisReply **out, aly_err_t *err)
{
    for (int attempt = 0;; attempt++) {
        int reused = r->c != NULL;
        redisContext *c = context(r, err);
        if (c == NULL)
            return -1;
        size_t got = 0;
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++)
            ok = redisAppendCommandArgv(c, argc[i], argv[i], lens != NULL ? lens[i] : NULL) == REDIS_OK;
        for (; got < n && ok; got++) {
            void *rep = NULL;
            ok = redisGetReply(c, &rep) == REDIS_OK && rep != NULL;
            out[got] = rep;
        }
        round_trips++;
        count(r, VOLATILE_REDIS_RT, 1);
        count(r, VOLATILE_REDIS_COMMANDS, n);
        if (ok) {
            /* A server that answers but cannot serve (a replica after a failover, a failed save, out of memory) is down. */
            for (size_t i = 0; i < n; i++) {
                if (outage_reply(out[i])) {
                    char why[160];
                    snprintf(why, sizeof(why), "%.150s", ((redisReply *)out[i])->str);
                    for (size_t k = 0; k < n; k++)
                        freeReplyObject(out[k]);
                    drop(r, why);
                    return aly_errf(err, "redis at %s:%u: %s", r->url.host, r->url.port, why);
                }
            }
            recovered(r);
            return 0;
        }
        int saved = errno;
        for (size_t i = 0; i + 1 < got; i++)
            freeReplyObject(out[i]);
        int stale = c->err == REDIS_ERR_EOF || (c->err == REDIS_ERR_IO && (saved == ECONNRESET || saved == EPIPE));
        int timeout = c->err == REDIS_ERR_IO && (saved == EAGAIN || saved == EWOULDBLOCK);
        if (attempt == 0 && ((reused && got <= 1 && stale) || timeout)) {
            /*
             * One retry on a fresh connection, without a word in the log: a
             * connection that went stale while idle (Redis restarted, or a
             * proxy dropped it) answers the first command with EOF or a
             * reset, and one answer later than volatile_timeout is usually a
             * scheduling blip on a busy machine, not an outage.  So a
             * restart or a blip costs no request a 503; a dead or stalled
             * Redis costs two deadlines, then the back-off.  Had the server
             * run the commands before the connection was given up, the
             * retry charges that request twice: the limit errs by one unit
             * on the strict side.
             */
            redisFree(r->c);
            r->c = NULL;
            continue;
        }
        char why[160];
        snprintf(why, sizeof(why), "%s: %s", argv[0][0], timeout ? "no answer within volatile_timeout" : c->errstr);
        drop(r, why);
        return aly_errf(err, "redis at %s:%u: %s", r->url.host, r->url.port, why);
    }
}

/* One command (lens NULL: every argument a C string). */
static redisReply *command_lens(volatile_redis_t *r, int argc, const char **argv, const size_t *lens, aly_err_t *err)
{
    redisReply *rep;
    const char **const argvs[] = {argv};
    const size_t *const lensv[] = {lens};
    return pipeline(r, 1, &argc, argvs, lensv, &rep, err) == 0 ? rep : NULL;
}

static redisReply *command(volatile_redis_t *r, int argc, const char **argv, aly_err_t *err)
{
    return command_lens(r, argc, argv, NULL, err);
}

static int reply_error(redisReply *rep, const char *what, aly_err_t *err)
{
    aly_errf(err, "redis %s: %s", what, rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply type");
    freeReplyObject(rep);
    return -1;
}

/* volatile_prefix: every key of this process starts with it (config.c checks its characters). */
static char key_prefix[40] = "aly";

volatile_redis_t *volatile_redis_open(const aly_config_t *cfg, aly_err_t *err)
{
    volatile_redis_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    if (volatile_redis_parse_url(cfg->volatile_url, &r->url, err) != 0) {
        free(r);
        return NULL;
    }
    snprintf(key_prefix, sizeof(key_prefix), "%s", cfg->volatile_prefix != NULL ? cfg->volatile_prefix : "aly");
    r->literal = aly_ip_literal(r->url.host);
    r->timeout_ms = cfg->volatile_timeout_ms;
    r->fail_open = cfg->volatile_failure_open;
    aly_err_t ignored;
    volatile_redis_ping(r, &ignored);
    process_redis = r;
    return r;
}

void volatile_redis_close(volatile_redis_t *r)
{
    if (r == NULL)
        return;
    if (r->c != NULL)
        redisFree(r->c);
    aly_lookup_abandon(r->lookup);
    if (process_redis == r)
        process_redis = NULL;
    free(r);
}

int volatile_redis_ping(volatile_redis_t *r, aly_err_t *err)
{
    /* A write, not PING: a replica, a failed save or a full memory answer PING and refuse what alyd needs. */
    char key[64];
    volatile_redis_key(key, sizeof(key), "healthz", 7, "probe");
    const char *argv[] = {"SET", key, "1", "PX", "10000"};
    redisReply *rep = command(r, 5, argv, err);
    if (rep == NULL)
        return -1;
    if (rep->type != REDIS_REPLY_STATUS)
        return reply_error(rep, "SET", err);
    freeReplyObject(rep);
    return 0;
}

int volatile_redis_key(char *buf, size_t len, const char *tag, size_t taglen, const char *kind)
{
    int n = snprintf(buf, len, "%s:{%.*s}:%s", key_prefix, (int)taglen, tag, kind);
    return n < 0 || (size_t)n >= len ? -1 : n;
}

int volatile_redis_set(volatile_redis_t *r, const char *key, const void *val, size_t vlen, uint64_t ttl_ms, int nx, aly_err_t *err)
{
    char ttl[24];
    const char *argv[6] = {"SET", key, (const char *)val};
    size_t lens[6] = {3, strlen(key), vlen};
    int argc = 3;
    if (ttl_ms != 0) {
        snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
        argv[argc] = "PX";
        lens[argc++] = 2;
        argv[argc] = ttl;
        lens[argc++] = strlen(ttl);
    }
    if (nx) {
        argv[argc] = "NX";
        lens[argc++] = 2;
    }
    redisReply *rep = command_lens(r, argc, argv, lens, err);
    if (rep == NULL)
        return -1;
    int rc = rep->type == REDIS_REPLY_STATUS ? 0 : rep->type == REDIS_REPLY_NIL ? 1 : -1;
    if (rc < 0)
        return reply_error(rep, "SET", err);
    freeReplyObject(rep);
    return rc;
}

int volatile_redis_mget(volatile_redis_t *r, const char *const *keys, size_t n, char **vals, size_t *lens, aly_err_t *err)
{
    const char *argv[MGET_MAX + 1] = {"MGET"};
    for (size_t i = 0; i < n; i++) {
        vals[i] = NULL;
        lens[i] = 0;
    }
    if (n == 0 || n > MGET_MAX)
        return aly_errf(err, "redis MGET of %zu keys", n);
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = keys[i];
    redisReply *rep = command(r, (int)n + 1, argv, err);
    if (rep == NULL)
        return -1;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n)
        return reply_error(rep, "MGET", err);
    for (size_t i = 0; i < n; i++) {
        redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        if ((vals[i] = malloc(e->len + 1)) == NULL)
            abort();
        memcpy(vals[i], e->str, e->len);
        vals[i][e->len] = '\0';
        lens[i] = e->len;
    }
    freeReplyObject(rep);
    return 0;
}

int volatile_redis_stamp(volatile_redis_t *r, const char *id, uint64_t ms, aly_err_t *err)
{
    char key[320], text[24];
    int n = snprintf(text, sizeof(text), "%llu", (unsigned long long)ms);
    if (volatile_redis_key(key, sizeof(key), id, strlen(id), "lu") < 0)
        return aly_errf(err, "key id too long for a stamp");
    return volatile_redis_set(r, key, text, (size_t)n, 0, 0, err) == 0 ? 0 : -1;
}

int volatile_redis_last_used(volatile_redis_t *r, const char *id, uint64_t *ms, aly_err_t *err)
{
    char key[320], *val;
    size_t len;
    const char *keys[] = {key};
    if (volatile_redis_key(key, sizeof(key), id, strlen(id), "lu") < 0)
        return aly_errf(err, "key id too long for a stamp");
    if (volatile_redis_mget(r, keys, 1, &val, &len, err) != 0)
        return -1;
    *ms = 0;
    int rc = val == NULL || config_parse_uint(val, ms) == 0 ? 0 : aly_errf(err, "the last-used stamp of %s is not a number", id);
    free(val);
    return rc;
}

int volatile_redis_del(volatile_redis_t *r, const char *key, aly_err_t *err)
{
    const char *argv[] = {"DEL", key};
    redisReply *rep = command(r, 2, argv, err);
    if (rep == NULL)
        return -1;
    if (rep->type != REDIS_REPLY_INTEGER)
        return reply_error(rep, "DEL", err);
    freeReplyObject(rep);
    return 0;
}

static void script_sha1(volatile_redis_script_t *s)
{
    if (s->sha1[0] != '\0')
        return;
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)s->source, strlen(s->source), d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha1 + 2 * i, 3, "%02x", d[i]);
}

int volatile_redis_eval_batch(volatile_redis_t *r, const volatile_redis_call_t *calls, size_t n, redisReply **replies,
                              aly_err_t *err)
{
    enum { MAX_ARGV = 16, MAX_CALLS = 4 };
    char nk[MAX_CALLS][8];
    const char *argv[MAX_CALLS][MAX_ARGV];
    const char **argvs[MAX_CALLS] = {NULL};
    int argc[MAX_CALLS] = {0};
    if (n == 0 || n > MAX_CALLS)
        return aly_errf(err, "redis script batch of %zu calls", n);
    for (size_t c = 0; c < n; c++) {
        const volatile_redis_call_t *k = &calls[c];
        argvs[c] = argv[c];
        if (k->script == NULL) {
            argv[c][0] = "GET";
            argv[c][1] = k->keys[0];
            argc[c] = 2;
            continue;
        }
        if (3 + k->nkeys + k->nargs > MAX_ARGV)
            return aly_errf(err, "redis script: too many arguments");
        script_sha1(k->script);
        snprintf(nk[c], sizeof(nk[c]), "%zu", k->nkeys);
        argv[c][0] = "EVALSHA";
        argv[c][1] = k->script->sha1;
        argv[c][2] = nk[c];
        for (size_t i = 0; i < k->nkeys; i++)
            argv[c][3 + i] = k->keys[i];
        for (size_t i = 0; i < k->nargs; i++)
            argv[c][3 + k->nkeys + i] = k->args[i];
        argc[c] = (int)(3 + k->nkeys + k->nargs);
    }
    if (pipeline(r, n, argc, (const char **const *)argvs, NULL, replies, err) != 0)
        return -1;
    int rc = 0;
    for (size_t c = 0; c < n; c++) {
        if (rc == 0 && calls[c].script != NULL && replies[c]->type == REDIS_REPLY_ERROR &&
            strncmp(replies[c]->str, "NOSCRIPT", 8) == 0) {
            /* A fresh server (restarted, or SCRIPT FLUSH): EVAL runs the script and caches it for the next EVALSHA. */
            freeReplyObject(replies[c]);
            argv[c][0] = "EVAL";
            argv[c][1] = calls[c].script->source;
            if ((replies[c] = command(r, argc[c], argv[c], err)) == NULL)
                rc = -1;
        }
        if (rc == 0 && replies[c]->type == REDIS_REPLY_ERROR)
            rc = reply_error(replies[c], "script", err), replies[c] = NULL;
    }
    /* A failed call fails the batch: no reply is handed out. */
    if (rc != 0)
        for (size_t c = 0; c < n; c++)
            if (replies[c] != NULL) {
                freeReplyObject(replies[c]);
                replies[c] = NULL;
            }
    return rc;
}

redisReply *volatile_redis_eval(volatile_redis_t *r, volatile_redis_script_t *s, size_t nkeys, const char *const *keys,
                                size_t nargs, const char *const *args, aly_err_t *err)
{
    volatile_redis_call_t call = {s, nkeys, keys, nargs, args};
    redisReply *rep;
    return volatile_redis_eval_batch(r, &call, 1, &rep, err) == 0 ? rep : NULL;
}

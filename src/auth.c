/*
 * The credential gate: parses the Authorization header, routes "aly_" keys
 * and "aly_oauth_" tokens to their checks, and yields one principal model.
 * Everything a request needs from the store happens in one read transaction.
 */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aly/auth_internal.h"
#include "aly/log.h"
#include "aly/volatile_redis.h"

#define STAMP_SLOTS 256
#define STAMP_INTERVAL_MS 60000
#define KEY_CACHE_SLOTS 1024

/*
 * Keys this worker verified, by tag: SipHash-2-4 (128 bits) of the key under
 * a random per-worker secret.  A hit skips the HMAC, the store lookup and the
 * record decode; the key itself is never kept.  Finding another key with an
 * entry's tag means predicting a keyed PRF's 128-bit output without its key,
 * and a miss still goes through the HMAC and the store.  An entry is trusted
 * only under the revocation generation it was made in (alyctl keys revoke
 * moves it) and never past the key's expiry.
 */
typedef struct key_cache_entry {
    uint64_t tag[2];
    uint64_t generation;
    principal_t principal;
    int used;
} key_cache_entry_t;

typedef struct stamp {
    char id[ALY_ID_MAX];
    uint64_t ms;
} stamp_t;

struct auth {
    const aly_config_t *cfg;
    store_t *store;
    auth_pepper_t *pepper;
    auth_oauth_t *oauth;
    stamp_t stamps[STAMP_SLOTS]; /* last-used stamps this worker wrote, to write at most once a minute */
    uint64_t tag_key[2];         /* the key cache's SipHash key: random, this process's own */
    key_cache_entry_t keys[KEY_CACHE_SLOTS];
    uint64_t gen_snapshot, gen_value; /* the revocation generation last read, and the snapshot it was read in (0: none) */
};

auth_t *auth_new(const aly_config_t *cfg, store_t *st, aly_err_t *err)
{
    auth_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        abort();
    a->cfg = cfg;
    a->store = st;
    if (RAND_bytes((unsigned char *)a->tag_key, sizeof(a->tag_key)) != 1) {
        free(a);
        return aly_errf(err, "cannot draw the key cache's secret from the CSPRNG"), NULL;
    }
    if ((a->pepper = auth_pepper_load(cfg->key_pepper_file, err)) == NULL || auth_oauth_new(cfg, &a->oauth, err) != 0) {
        auth_free(a);
        return NULL;
    }
    return a;
}

void auth_free(auth_t *a)
{
    if (a == NULL)
        return;
    auth_pepper_free(a->pepper);
    auth_oauth_free(a->oauth);
    free(a);
}

int auth_check_config(const aly_config_t *cfg, aly_err_t *err)
{
    return auth_oauth_check_config(cfg, err);
}

/* Records that key id was used now, at most once a minute per key across all workers. */
static void stamp_used(auth_t *a, const char *id)
{
    uint64_t now = aly_wall_ms(), h = 5381;
    for (const char *p = id; *p; p++)
        h = h * 33 + (unsigned char)*p;
    stamp_t *s = &a->stamps[h % STAMP_SLOTS];
    if (strcmp(s->id, id) == 0 && now - s->ms < STAMP_INTERVAL_MS)
        return;
    volatile_redis_t *vr = volatile_redis();
    if (vr != NULL) {
        /* Every host stamps into one key: no read first, the per-worker slot above already coalesces. */
        aly_err_t err;
        if (volatile_redis_stamp(vr, id, now, &err) != 0)
            return; /* an outage is logged by volatile_redis; the next request tries again */
        snprintf(s->id, sizeof(s->id), "%s", id);
        s->ms = now;
        return;
    }
    store_txn_t t;
    aly_err_t err;
    if (store_begin(a->store, STORE_WRITE | STORE_VOLATILE, &t, &err) != 0) {
        log_warn("last-used stamp: %s", err.msg);
        return;
    }
    store_val_t v;
    uint64_t prev = 0;
    size_t idlen = strlen(id);
    if (store_get(&t, VDB_LAST_USED, id, idlen, &v, &err) == 0 && v.len == sizeof(prev))
        memcpy(&prev, v.data, sizeof(prev));
    if (now - prev >= STAMP_INTERVAL_MS) {
        if (store_put(&t, VDB_LAST_USED, id, idlen, &now, sizeof(now), 0, &err) != 0 || store_commit(&t, &err) != 0) {
            store_abort(&t);
            log_warn("last-used stamp: %s", err.msg);
            return;
        }
        prev = now;
    } else {
        store_abort(&t);
    }
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->ms = prev;
}

static auth_result_t check_key(auth_t *a, const char *key, size_t len, store_txn_t *t, uint64_t generation, principal_t *out,
                               aly_err_t *why)
{
    /*
     * The verified-key cache first: a slot is filled only after the whole check below, so a tag that matches
     * is the tag of bytes that passed it (the form included) -- SipHash-128 under a per-worker random key.
     */
    uint64_t tag[2];
    aly_siphash128(a->tag_key[0], a->tag_key[1], key, len, tag);
    key_cache_entry_t *ce = &a->keys[tag[0] % KEY_CACHE_SLOTS];
    if (ce->used && ce->generation == generation && CRYPTO_memcmp(ce->tag, tag, sizeof(tag)) == 0 &&
        (ce->principal.expires_ms == 0 || aly_wall_ms() < ce->principal.expires_ms)) {
        *out = ce->principal;
        return AUTH_OK;
    }
    if (!auth_key_well_formed(key, len))
        return aly_errf(why, "malformed API key (wrong length or checksum): paste the whole key, or mint a new one"), AUTH_INVALID;
    unsigned char hash[32];
    aly_err_t err;
    if (auth_key_hash(a->pepper, key, len, hash, &err) != 0) {
        log_error("%s", err.msg);
        return AUTH_ERROR;
    }
    store_val_t ref, val;
    int rc = store_get(t, DB_KEY_HASH, hash, sizeof(hash), &ref, &err);
    if (rc == 1)
        return aly_errf(why, "unknown API key: mint a new one with alyctl keys create"), AUTH_INVALID;
    if (rc == 0)
        rc = store_get(t, DB_KEYS, ref.data, ref.len, &val, &err);
    if (rc != 0) {
        log_error("key lookup: %s", rc == 1 ? "hash index names a missing key" : err.msg);
        return AUTH_ERROR;
    }
    key_record_t rec;
    if (record_decode(&record_key, val.data, val.len, &rec, &err) != 0) {
        log_error("key record: %s", err.msg);
        return AUTH_ERROR;
    }
    if (CRYPTO_memcmp(rec.hash, hash, sizeof(hash)) != 0)
        return aly_errf(why, "unknown API key: mint a new one with alyctl keys create"), AUTH_INVALID;
    uint64_t now = aly_wall_ms();
    if (rec.revoked_ms != 0)
        return aly_errf(why, "this API key has been revoked: mint a new one"), AUTH_INVALID;
    if (rec.expires_ms != 0 && now >= rec.expires_ms)
        return aly_errf(why, "this API key has expired: mint a new one"), AUTH_INVALID;
    memset(out, 0, sizeof(*out));
    out->kind = PRINCIPAL_KEY;
    snprintf(out->id, sizeof(out->id), "%s", rec.id);
    snprintf(out->workspace, sizeof(out->workspace), "%s", rec.workspace);
    out->scopes = (scope_set_t)rec.scopes;
    out->expires_ms = rec.expires_ms;
    if (rec.rate_count != 0)
        out->rate = (aly_rate_t){(uint32_t)rec.rate_count, (uint32_t)rec.rate_period_s, (uint32_t)rec.rate_burst};
    else
        out->rate = a->cfg->rate_limit;
    memcpy(ce->tag, tag, sizeof(tag));
    ce->generation = generation;
    ce->principal = *out;
    ce->used = 1;
    return AUTH_OK;
}

/*
 * The revocation generation t sees, into *gen: 0, or -1 when the store could
 * not be read.  A revocation is a committed write, so one snapshot has one
 * generation: remembered with the snapshot it was read in, it costs a
 * request no lookup while nothing has been written since (a write by any
 * process is a new snapshot).
 */
static int revocation_generation(auth_t *a, store_txn_t *t, uint64_t *gen, aly_err_t *err)
{
    uint64_t snap = store_txn_snapshot(t);
    if (snap != 0 && snap == a->gen_snapshot) {
        *gen = a->gen_value;
        return 0;
    }
    if (auth_revocation_generation(t, gen, err) != 0)
        return -1;
    a->gen_snapshot = snap;
    a->gen_value = *gen;
    return 0;
}

auth_result_t auth_authenticate(auth_t *a, const char *header, size_t len, principal_t *out, aly_err_t *why)
{
    if (header == NULL)
        return AUTH_MISSING;
    /* "Bearer" is case-insensitive (RFC 9110 auth-scheme); one or more spaces, then the token. */
    if (len < 7 || strncasecmp(header, "Bearer ", 7) != 0)
        return aly_errf(why, "use the Bearer scheme: Authorization: Bearer aly_..."), AUTH_INVALID;
    size_t i = 7;
    while (i < len && header[i] == ' ')
        i++;
    const char *tok = header + i;
    size_t tlen = len - i;
    while (tlen > 0 && (tok[tlen - 1] == ' ' || tok[tlen - 1] == '\t'))
        tlen--;
    if (tlen == 0)
        return aly_errf(why, "the Bearer credential is empty"), AUTH_INVALID;
    if (tlen > AUTH_MAX_TOKEN)
        return aly_errf(why, "the Bearer credential is longer than %d bytes", AUTH_MAX_TOKEN), AUTH_INVALID;

    const size_t op = sizeof(AUTH_OAUTH_PREFIX) - 1, kp = sizeof(AUTH_KEY_PREFIX) - 1;
    int is_oauth = tlen > op && memcmp(tok, AUTH_OAUTH_PREFIX, op) == 0;
    if (!is_oauth && (tlen < kp || memcmp(tok, AUTH_KEY_PREFIX, kp) != 0))
        return aly_errf(why, "not an Aly credential: API keys start with aly_, OAuth tokens with aly_oauth_"), AUTH_INVALID;
    if (is_oauth && a->oauth == NULL)
        return aly_errf(why, "this server does not accept OAuth tokens: use an API key"), AUTH_INVALID;

    store_txn_t t;
    aly_err_t err;
    if (store_begin(a->store, 0, &t, &err) != 0) {
        log_error("credential check: %s", err.msg);
        return AUTH_ERROR;
    }
    auth_result_t r;
    uint64_t generation;
    /* Never generation 0 for a read that failed: caches made before any revocation would match it. */
    if (revocation_generation(a, &t, &generation, &err) != 0) {
        store_abort(&t);
        log_error("credential check: %s", err.msg);
        return AUTH_ERROR;
    }
    if (is_oauth)
        r = auth_oauth_verify(a->oauth, tok + op, tlen - op, &t, generation, out, why);
    else
        r = check_key(a, tok, tlen, &t, generation, out, why);
    store_abort(&t);
    if (r == AUTH_OK && out->kind == PRINCIPAL_KEY)
        stamp_used(a, out->id);
    return r;
}

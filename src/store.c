/*
 * The two LMDB environments of aly/store.h: creating, opening and checking
 * them, transactions, and the raw get/put/del/scan with the checks that tie
 * a database id to its environment and a key to LMDB's size limit; the
 * reserve that keeps a full store deletable and the per-workspace quota.
 * The typed record layer (store_record.c) builds on this file.
 */
#include "aly/store.h"

#include "aly/log.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <msgpack.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The volatile environment takes a write per request (rate limits), so it
 * skips fsync (MDB_NOSYNC: a system crash may lose the last updates, which
 * only resets some budgets) and writes pages in place (MDB_WRITEMAP: no
 * malloc'd copies and write(2) per commit; measured about 8x faster per
 * decision).  Copy-on-write still protects the last committed state from a
 * writer killed mid-transaction.  LMDB requires every process to open an
 * environment with the same MDB_WRITEMAP setting, hence one constant.
 */
#define VOLATILE_FLAGS (MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP)
#define DURABLE_FLAGS 0

#define MAX_READERS 1022 /* workers x concurrent read txns, plus alyctl; LMDB's default is 126 */
#define RESERVE_MAX ((size_t)64 << 20)
#define RESERVE_SMALL ((size_t)4 << 20)
#define FULL_LOG_EVERY_MS 10000
#define USAGE_PREFIX "usage/"

/* The named databases of each environment, opened once per process. */
static const char *const durable_dbs[DB_N] = {"meta", "workspaces", "keys", "key_hash", "revoked_jti", "revoked_sub", "data", "sessions"};
static const char *const volatile_dbs[VDB_N] = {"meta", "last_used", "rate", "replies"};

struct store {
    MDB_env *env;
    MDB_env *vol;
    MDB_dbi dbi[DB_N];
    MDB_dbi vdbi[VDB_N];
    MDB_txn *reader[2]; /* reset read transactions kept for reuse: durable, volatile */
    int reader_busy[2];
    size_t reserve; /* bytes of the durable map only STORE_RESERVE transactions may use */
    size_t quota;   /* workspace_quota */
};

static const char schema_key[] = "schema";

static int env_path(const aly_config_t *cfg, const char *sub, char *buf, size_t len, aly_err_t *err)
{
    if ((size_t)snprintf(buf, len, "%s/%s", cfg->data_dir, sub) >= len)
        return aly_errf(err, "data_dir path is too long");
    return 0;
}

static int env_open(const aly_config_t *cfg, const char *sub, size_t map_size, unsigned flags, MDB_env **out,
                    aly_err_t *err)
{
    char path[4096];
    if (env_path(cfg, sub, path, sizeof(path), err) != 0)
        return -1;
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(env, 16);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(env, MAX_READERS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(env, map_size);
    /* MDB_NOTLS: read transactions are tied to our handles, not to the thread, so they can be reset and renewed. */
    if (rc == 0)
        rc = mdb_env_open(env, path, flags | MDB_NOTLS, 0640);
    if (rc != 0) {
        mdb_env_close(env);
        if (rc == ENOENT)
            return aly_errf(err, "store %s does not exist: run \"alyctl -c %s init\" first", path, cfg->path);
        return aly_errf(err, "cannot open store %s: %s", path, mdb_strerror(rc));
    }
    *out = env;
    return 0;
}

/* Opens (creating when asked) the named databases of env into dbis. */
static int open_dbis(MDB_env *env, const char *const *names, size_t n, MDB_dbi *dbis, int create, aly_err_t *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, create ? 0 : MDB_RDONLY, &txn);
    if (rc != 0)
        return aly_errf(err, "cannot begin store transaction: %s", mdb_strerror(rc));
    for (size_t i = 0; i < n; i++) {
        if ((rc = mdb_dbi_open(txn, names[i], create ? MDB_CREATE : 0, &dbis[i])) != 0) {
            mdb_txn_abort(txn);
            if (rc == MDB_NOTFOUND)
                return aly_errf(err, "store database \"%s\" is missing: run alyctl init", names[i]);
            return aly_errf(err, "cannot open store database \"%s\": %s", names[i], mdb_strerror(rc));
        }
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return aly_errf(err, "cannot commit store transaction: %s", mdb_strerror(rc));
    return 0;
}

/* The schema record: {"t":"meta","v":1,"schema":N,"created":ms}. */
static int write_schema(MDB_env *env, MDB_dbi dbi, aly_err_t *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (rc != 0)
        return aly_errf(err, "cannot begin store transaction: %s", mdb_strerror(rc));
    MDB_val k = {sizeof(schema_key) - 1, (void *)schema_key}, v;
    if (mdb_get(txn, dbi, &k, &v) == 0) {
        mdb_txn_abort(txn);
        return 0;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "meta", 4);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_str_with_body(&pk, "schema", 6);
    msgpack_pack_uint32(&pk, STORE_SCHEMA_VERSION);
    msgpack_pack_str_with_body(&pk, "created", 7);
    msgpack_pack_uint64(&pk, aly_wall_ms());
    v.mv_size = sb.size;
    v.mv_data = sb.data;
    rc = mdb_put(txn, dbi, &k, &v, 0);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc != 0)
        return aly_errf(err, "cannot write the schema record: %s", mdb_strerror(rc));
    return 0;
}

/* Checks that v is a whole msgpack map whose "schema" is ours. */
static int check_schema(const MDB_val *v, aly_err_t *err)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int ok = msgpack_unpack_next(&up, v->mv_data, v->mv_size, &off) == MSGPACK_UNPACK_SUCCESS && off == v->mv_size &&
             up.data.type == MSGPACK_OBJECT_MAP;
    uint64_t schema = 0;
    for (uint32_t i = 0; ok && i < up.data.via.map.size; i++) {
        const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 6 && memcmp(kv->key.via.str.ptr, "schema", 6) == 0 &&
            kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            schema = kv->val.via.u64;
    }
    msgpack_unpacked_destroy(&up);
    if (!ok)
        return aly_errf(err, "the store's schema record is corrupt");
    if (schema != STORE_SCHEMA_VERSION)
        return aly_errf(err, "the store has schema %llu, this alyd reads %d", (unsigned long long)schema, STORE_SCHEMA_VERSION);
    return 0;
}

static int make_dir(const char *path, mode_t mode, uid_t uid, gid_t gid, aly_err_t *err)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        return aly_errf(err, "cannot create %s: %s", path, strerror(errno));
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(path, uid, gid) != 0)
        return aly_errf(err, "cannot hand %s to the alyd user: %s", path, strerror(errno));
    return 0;
}

static int make_pepper(const char *path, uid_t uid, gid_t gid, aly_err_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return 0;
        return aly_errf(err, "cannot create pepper file %s: %s", path, strerror(errno));
    }
    unsigned char pepper[32];
    int rc = 0;
    if (RAND_bytes(pepper, sizeof(pepper)) != 1)
        rc = aly_errf(err, "cannot draw random bytes for the pepper");
    else if (write(fd, pepper, sizeof(pepper)) != (ssize_t)sizeof(pepper) || fsync(fd) != 0)
        rc = aly_errf(err, "cannot write pepper file %s: %s", path, strerror(errno));
    else if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0)
        rc = aly_errf(err, "cannot hand %s to the alyd user: %s", path, strerror(errno));
    memset(pepper, 0, sizeof(pepper));
    close(fd);
    if (rc != 0)
        unlink(path);
    return rc;
}

static int chown_env(const char *dir, uid_t uid, gid_t gid, aly_err_t *err)
{
    if (uid == (uid_t)-1 && gid == (gid_t)-1)
        return 0;
    const char *files[] = {"data.mdb", "lock.mdb"};
    for (size_t i = 0; i < ALY_ARRAY_SIZE(files); i++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        if (chown(p, uid, gid) != 0)
            return aly_errf(err, "cannot hand %s to the alyd user: %s", p, strerror(errno));
    }
    return 0;
}

int store_init(const aly_config_t *cfg, uid_t uid, gid_t gid, aly_err_t *err)
{
    char path[4096];
    if (make_dir(cfg->data_dir, 0750, uid, gid, err) != 0)
        return -1;
    struct {
        const char *sub;
        size_t map;
        unsigned flags;
        const char *const *dbs;
        size_t n;
    } envs[] = {
        {"store", cfg->map_size, DURABLE_FLAGS, durable_dbs, ALY_ARRAY_SIZE(durable_dbs)},
        {"volatile", cfg->volatile_map_size, VOLATILE_FLAGS, volatile_dbs, ALY_ARRAY_SIZE(volatile_dbs)},
    };
    for (size_t i = 0; i < ALY_ARRAY_SIZE(envs); i++) {
        if (env_path(cfg, envs[i].sub, path, sizeof(path), err) != 0 || make_dir(path, 0750, uid, gid, err) != 0)
            return -1;
        MDB_env *env;
        MDB_dbi dbis[16];
        if (env_open(cfg, envs[i].sub, envs[i].map, envs[i].flags, &env, err) != 0)
            return -1;
        int rc = open_dbis(env, envs[i].dbs, envs[i].n, dbis, 1, err);
        if (rc == 0)
            rc = write_schema(env, dbis[0], err);
        if (rc == 0 && envs[i].flags & MDB_NOSYNC && mdb_env_sync(env, 1) != 0)
            rc = aly_errf(err, "cannot sync %s", path);
        mdb_env_close(env);
        if (rc != 0 || chown_env(path, uid, gid, err) != 0)
            return -1;
    }
    return make_pepper(cfg->key_pepper_file, uid, gid, err);
}

static int verify_schema(MDB_env *env, MDB_dbi dbi, aly_err_t *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return aly_errf(err, "cannot begin a read transaction: %s", mdb_strerror(rc));
    MDB_val k = {sizeof(schema_key) - 1, (void *)schema_key}, v;
    rc = mdb_get(txn, dbi, &k, &v);
    int ret;
    if (rc == MDB_NOTFOUND)
        ret = aly_errf(err, "the store has no schema record: run alyctl init");
    else if (rc != 0)
        ret = aly_errf(err, "cannot read the schema record: %s", mdb_strerror(rc));
    else
        ret = check_schema(&v, err);
    mdb_txn_abort(txn);
    return ret;
}

store_t *store_open(const aly_config_t *cfg, aly_err_t *err)
{
    store_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        aly_errf(err, "out of memory");
        return NULL;
    }
    st->reserve = store_reserve(cfg->map_size);
    st->quota = cfg->workspace_quota;
    if (env_open(cfg, "store", cfg->map_size, DURABLE_FLAGS, &st->env, err) != 0)
        goto fail;
    if (env_open(cfg, "volatile", cfg->volatile_map_size, VOLATILE_FLAGS, &st->vol, err) != 0)
        goto fail;
    int dead;
    mdb_reader_check(st->env, &dead);
    mdb_reader_check(st->vol, &dead);
    /* Creating missing databases here lets a newer alyd open a store made by an older one. */
    if (open_dbis(st->env, durable_dbs, ALY_ARRAY_SIZE(durable_dbs), st->dbi, 1, err) != 0 ||
        open_dbis(st->vol, volatile_dbs, ALY_ARRAY_SIZE(volatile_dbs), st->vdbi, 1, err) != 0 ||
        verify_schema(st->env, st->dbi[0], err) != 0)
        goto fail;
    return st;
fail:
    store_close(st);
    return NULL;
}

void store_close(store_t *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < 2; i++)
        if (st->reader[i] != NULL)
            mdb_txn_abort(st->reader[i]);
    if (st->env != NULL)
        mdb_env_close(st->env);
    if (st->vol != NULL)
        mdb_env_close(st->vol);
    free(st);
}

int store_check(store_t *st, aly_err_t *err)
{
    return verify_schema(st->env, st->dbi[0], err);
}

int store_reader_check(const aly_config_t *cfg, int *cleared, aly_err_t *err)
{
    const char *subs[] = {"store", "volatile"};
    size_t maps[] = {cfg->map_size, cfg->volatile_map_size};
    unsigned flags[] = {DURABLE_FLAGS, VOLATILE_FLAGS};
    *cleared = 0;
    for (size_t i = 0; i < ALY_ARRAY_SIZE(subs); i++) {
        MDB_env *env;
        if (env_open(cfg, subs[i], maps[i], flags[i], &env, err) != 0)
            return -1;
        int dead = 0, rc = mdb_reader_check(env, &dead);
        mdb_env_close(env);
        if (rc != 0)
            return aly_errf(err, "mdb_reader_check on %s: %s", subs[i], mdb_strerror(rc));
        *cleared += dead;
    }
    return 0;
}

static int env_stat(MDB_env *env, const char *name, store_env_stat_t *out, aly_err_t *err)
{
    MDB_envinfo info;
    MDB_stat ms;
    int rc = mdb_env_info(env, &info);
    if (rc == 0)
        rc = mdb_env_stat(env, &ms);
    if (rc != 0)
        return aly_errf(err, "cannot read %s statistics: %s", name, mdb_strerror(rc));
    out->env = name;
    out->map_size = info.me_mapsize;
    out->used_bytes = (info.me_last_pgno + 1) * (size_t)ms.ms_psize;
    out->readers = info.me_numreaders;
    out->max_readers = info.me_maxreaders;
    return 0;
}

int store_stats(store_t *st, store_db_stat_t *dbs, size_t max, store_env_stat_t envs[2], aly_err_t *err)
{
    if (env_stat(st->env, "store", &envs[0], err) != 0 || env_stat(st->vol, "volatile", &envs[1], err) != 0)
        return -1;
    size_t n = 0;
    struct {
        MDB_env *env;
        const char *name;
        const char *const *names;
        MDB_dbi *dbi;
        size_t count;
    } all[] = {{st->env, "store", durable_dbs, st->dbi, ALY_ARRAY_SIZE(durable_dbs)},
               {st->vol, "volatile", volatile_dbs, st->vdbi, ALY_ARRAY_SIZE(volatile_dbs)}};
    for (size_t e = 0; e < ALY_ARRAY_SIZE(all); e++) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(all[e].env, NULL, MDB_RDONLY, &txn);
        if (rc != 0)
            return aly_errf(err, "cannot begin a read transaction: %s", mdb_strerror(rc));
        for (size_t i = 0; i < all[e].count && n < max; i++) {
            MDB_stat ms;
            if ((rc = mdb_stat(txn, all[e].dbi[i], &ms)) != 0) {
                mdb_txn_abort(txn);
                return aly_errf(err, "cannot stat %s: %s", all[e].names[i], mdb_strerror(rc));
            }
            dbs[n++] = (store_db_stat_t){all[e].name, all[e].names[i], ms.ms_entries};
        }
        mdb_txn_abort(txn);
    }
    return (int)n;
}

/*
 * A quarter of a small map (up to 4 MiB), an eighth of a large one, never
 * more than 64 MiB.  Deletes copy the pages they touch and LMDB reuses a
 * freed page only once no reader can still see it, so a map close to its end
 * needs room for a few transactions' worth of copies beyond what is "in use".
 */
size_t store_reserve(size_t map_size)
{
    size_t r = map_size / 8, small = map_size / 4 < RESERVE_SMALL ? map_size / 4 : RESERVE_SMALL;
    if (r < small)
        r = small;
    return r < RESERVE_MAX ? r : RESERVE_MAX;
}

/* Pages on the free list as txn sees it: freed by deletes, reused before the map grows. */
static int free_pages(MDB_txn *txn, size_t *pages)
{
    MDB_cursor *cur;
    MDB_val k, v;
    *pages = 0;
    int rc = mdb_cursor_open(txn, 0, &cur);
    if (rc != 0)
        return rc;
    /* Each value is an ID list whose first element is its length. */
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0)
        if (v.mv_size >= sizeof(size_t))
            *pages += *(const size_t *)v.mv_data;
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* LMDB reads its free list only in a read transaction: a write transaction asks this before it begins. */
int store_usage(store_t *st, store_usage_t *u, aly_err_t *err)
{
    MDB_envinfo info;
    MDB_stat ms;
    MDB_txn *txn;
    size_t freed;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc == 0) {
        rc = mdb_env_info(st->env, &info);
        if (rc == 0)
            rc = mdb_env_stat(st->env, &ms);
        if (rc == 0)
            rc = free_pages(txn, &freed);
        mdb_txn_abort(txn);
    }
    if (rc != 0)
        return aly_errf(err, "cannot read how full the store is: %s", mdb_strerror(rc));
    size_t pages = info.me_last_pgno + 1;
    u->map_size = info.me_mapsize;
    u->used_bytes = (pages > freed ? pages - freed : 0) * (size_t)ms.ms_psize;
    u->limit_bytes = u->map_size - st->reserve;
    u->full = u->used_bytes > u->limit_bytes;
    return 0;
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* An ordinary write on a full durable store: refused with what to do, and logged (at most every 10 s per process). */
static int refuse_full(const store_usage_t *u, aly_err_t *err)
{
    static uint64_t logged_ms;
    uint64_t now = aly_now_ms();
    if (logged_ms == 0 || now - logged_ms >= FULL_LOG_EVERY_MS) {
        logged_ms = now;
        log_error("the store is full (%.1f of %.1f MiB in use; ordinary writes stop at %.1f MiB): raise map_size and reload "
                  "(HUP), or delete data; deletes and revocations still work",
                  mib(u->used_bytes), mib(u->map_size), mib(u->limit_bytes));
    }
    return aly_refusef(err, "the store is full (%.1f of %.1f MiB): raise map_size or delete data", mib(u->used_bytes),
                       mib(u->map_size));
}

int store_begin(store_t *st, int flags, store_txn_t *t, aly_err_t *err)
{
    int vol = (flags & STORE_VOLATILE) != 0;
    MDB_env *env = vol ? st->vol : st->env;
    MDB_txn *txn = NULL;
    int rc;
    t->st = st;
    t->flags = flags;
    t->quota_ws[0] = '\0';
    t->quota_net = 0;
    if ((flags & (STORE_WRITE | STORE_VOLATILE | STORE_RESERVE)) == STORE_WRITE) {
        store_usage_t u;
        if (store_usage(st, &u, err) != 0 || (u.full && refuse_full(&u, err) != 0))
            return -1;
    }
    if (!(flags & STORE_WRITE) && !st->reader_busy[vol]) {
        if (st->reader[vol] != NULL) {
            rc = mdb_txn_renew(st->reader[vol]);
            if (rc != 0) {
                mdb_txn_abort(st->reader[vol]);
                st->reader[vol] = NULL;
            }
        }
        if (st->reader[vol] == NULL && (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &st->reader[vol])) != 0)
            return aly_errf(err, "cannot begin a read transaction: %s", mdb_strerror(rc));
        st->reader_busy[vol] = 1;
        t->txn = st->reader[vol];
        return 0;
    }
    rc = mdb_txn_begin(env, NULL, (flags & STORE_WRITE) ? 0 : MDB_RDONLY, &txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process grew the map: adopt its size and retry. */
        mdb_env_set_mapsize(env, 0);
        rc = mdb_txn_begin(env, NULL, (flags & STORE_WRITE) ? 0 : MDB_RDONLY, &txn);
    }
    if (rc != 0)
        return aly_errf(err, "cannot begin a transaction: %s", mdb_strerror(rc));
    t->txn = txn;
    return 0;
}

static int is_cached_reader(store_txn_t *t)
{
    int vol = (t->flags & STORE_VOLATILE) != 0;
    return !(t->flags & STORE_WRITE) && t->txn == t->st->reader[vol] && t->st->reader_busy[vol];
}

void store_abort(store_txn_t *t)
{
    if (t->txn == NULL)
        return;
    if (is_cached_reader(t)) {
        mdb_txn_reset(t->txn);
        t->st->reader_busy[(t->flags & STORE_VOLATILE) != 0] = 0;
    } else {
        mdb_txn_abort(t->txn);
    }
    t->txn = NULL;
}

int store_commit(store_txn_t *t, aly_err_t *err)
{
    if (!(t->flags & STORE_WRITE)) {
        store_abort(t);
        return 0;
    }
    int rc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    if (rc == MDB_MAP_FULL)
        return aly_errf(err, "the store is full: raise map_size in the configuration and reload");
    if (rc != 0)
        return aly_errf(err, "cannot commit: %s", mdb_strerror(rc));
    return 0;
}

/* The handle of db in t's environment; -1 when db belongs to the other environment or to none. */
static int dbi_of(store_txn_t *t, int db, MDB_dbi *dbi, aly_err_t *err)
{
    int vol = (t->flags & STORE_VOLATILE) != 0;
    if (vol && db >= STORE_VDB_BASE && db < VDB_END) {
        *dbi = t->st->vdbi[db - STORE_VDB_BASE];
        return 0;
    }
    if (!vol && db >= 0 && db < DB_N) {
        *dbi = t->st->dbi[db];
        return 0;
    }
    if ((db >= 0 && db < DB_N) || (db >= STORE_VDB_BASE && db < VDB_END))
        return aly_errf(err, "store database \"%s\" is in the %s environment, this transaction is on the %s one",
                        db < DB_N ? durable_dbs[db] : volatile_dbs[db - STORE_VDB_BASE], vol ? "durable" : "volatile",
                        vol ? "volatile" : "durable");
    return aly_errf(err, "no store database %d", db);
}

/*
 * Resolves db for a call with a key of klen bytes: 0 with *dbi set, 1 when
 * the key is empty (nothing is stored under it), -1 when the key is over
 * LMDB's limit or db is not in t's environment.
 */
static int target(store_txn_t *t, int db, size_t klen, MDB_dbi *dbi, aly_err_t *err)
{
    if (klen == 0)
        return 1;
    if (klen > STORE_MAX_KEY)
        return aly_errf(err, "store key of %zu bytes is over the limit of %d", klen, STORE_MAX_KEY);
    return dbi_of(t, db, dbi, err);
}

/* Bytes of ws's data counted from its records (a store made before usage was kept). */
static int count_usage(store_txn_t *t, const char *prefix, size_t plen, uint64_t *bytes, aly_err_t *err)
{
    MDB_cursor *cur;
    MDB_val k = {plen, (void *)prefix}, v;
    *bytes = 0;
    int rc = mdb_cursor_open(t->txn, t->st->dbi[DB_DATA], &cur);
    if (rc != 0)
        return aly_errf(err, "cannot open a cursor: %s", mdb_strerror(rc));
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        *bytes += k.mv_size + v.mv_size;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return aly_errf(err, "cannot count a workspace's data: %s", mdb_strerror(rc));
    return 0;
}

/* The usage record's key "usage/<ws>" and the data prefix "<ws>/" of a DB_DATA key; 0 when the key names no workspace. */
static size_t workspace_of(const void *key, size_t klen, char *ukey, size_t ulen, char *prefix, size_t plen)
{
    const char *slash = memchr(key, '/', klen);
    size_t wl = slash != NULL ? (size_t)(slash - (const char *)key) : 0;
    if (wl == 0 || wl + 1 > plen || sizeof(USAGE_PREFIX) + wl > ulen)
        return 0;
    memcpy(prefix, key, wl + 1);
    memcpy(ukey, USAGE_PREFIX, sizeof(USAGE_PREFIX) - 1);
    memcpy(ukey + sizeof(USAGE_PREFIX) - 1, key, wl);
    return wl;
}

static int read_usage(store_txn_t *t, const char *ukey, size_t ulen, const char *prefix, size_t plen, uint64_t *bytes,
                      aly_err_t *err)
{
    MDB_val k = {ulen, (void *)ukey}, v;
    int rc = mdb_get(t->txn, t->st->dbi[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND)
        return count_usage(t, prefix, plen, bytes, err);
    if (rc != 0 || v.mv_size != sizeof(*bytes))
        return aly_errf(err, "cannot read a workspace's usage: %s", rc != 0 ? mdb_strerror(rc) : "bad record");
    memcpy(bytes, v.mv_data, sizeof(*bytes));
    return 0;
}

/*
 * Charges delta bytes of a DB_DATA write at key to its workspace, before the
 * write: a growth that takes the workspace over its quota is refused unless
 * this transaction freed at least as much there first.
 */
static int charge_quota(store_txn_t *t, const void *key, size_t klen, int64_t delta, aly_err_t *err)
{
    char ukey[sizeof(USAGE_PREFIX) + sizeof(t->quota_ws)], prefix[sizeof(t->quota_ws) + 1];
    size_t wl = workspace_of(key, klen, ukey, sizeof(ukey), prefix, sizeof(prefix));
    if (wl == 0 || delta == 0)
        return 0;
    size_t ul = sizeof(USAGE_PREFIX) - 1 + wl;
    uint64_t used;
    if (read_usage(t, ukey, ul, prefix, wl + 1, &used, err) != 0)
        return -1;
    if (strlen(t->quota_ws) != wl || memcmp(t->quota_ws, key, wl) != 0) {
        memcpy(t->quota_ws, key, wl);
        t->quota_ws[wl] = '\0';
        t->quota_net = 0;
    }
    t->quota_net += delta;
    uint64_t after = delta < 0 && (uint64_t)-delta > used ? 0 : used + (uint64_t)delta;
    if (delta > 0 && t->quota_net > 0 && after > t->st->quota)
        return aly_refusef(err, "workspace %s is over its storage quota (%.1f of %.1f MiB): delete data or raise workspace_quota",
                           t->quota_ws, mib((size_t)after), mib(t->st->quota));
    MDB_val k = {ul, ukey}, v = {sizeof(after), &after};
    int rc = mdb_put(t->txn, t->st->dbi[DB_META], &k, &v, 0);
    if (rc != 0)
        return aly_errf(err, "cannot record a workspace's usage: %s", mdb_strerror(rc));
    return 0;
}

int store_workspace_usage(store_t *st, const char *ws, uint64_t *bytes, aly_err_t *err)
{
    char ukey[sizeof(USAGE_PREFIX) + 64], prefix[66];
    size_t wl = strlen(ws);
    if (wl == 0 || wl > 63)
        return aly_errf(err, "no workspace id \"%s\"", ws);
    snprintf(ukey, sizeof(ukey), "%s%s", USAGE_PREFIX, ws);
    snprintf(prefix, sizeof(prefix), "%s/", ws);
    store_txn_t t;
    if (store_begin(st, 0, &t, err) != 0)
        return -1;
    int rc = read_usage(&t, ukey, strlen(ukey), prefix, wl + 1, bytes, err);
    store_abort(&t);
    return rc;
}

int store_get(store_txn_t *t, int db, const void *key, size_t klen, store_val_t *val, aly_err_t *err)
{
    MDB_dbi dbi;
    int rc = target(t, db, klen, &dbi, err);
    if (rc != 0)
        return rc;
    MDB_val k = {klen, (void *)key}, v;
    rc = mdb_get(t->txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return aly_errf(err, "store read failed: %s", mdb_strerror(rc));
    val->data = v.mv_data;
    val->len = v.mv_size;
    return 0;
}

int store_put(store_txn_t *t, int db, const void *key, size_t klen, const void *val, size_t vlen, int noclobber,
              aly_err_t *err)
{
    MDB_dbi dbi;
    int rc = target(t, db, klen, &dbi, err);
    if (rc != 0)
        return rc == 1 ? aly_errf(err, "store key is empty") : -1;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val}, old;
    if (db == DB_DATA && !(t->flags & STORE_VOLATILE)) {
        rc = mdb_get(t->txn, dbi, &k, &old);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return aly_errf(err, "store read failed: %s", mdb_strerror(rc));
        if (rc == 0 && noclobber)
            return 1;
        int64_t delta = (int64_t)(klen + vlen) - (rc == 0 ? (int64_t)(klen + old.mv_size) : 0);
        if (charge_quota(t, key, klen, delta, err) != 0)
            return -1;
    }
    rc = mdb_put(t->txn, dbi, &k, &v, noclobber ? MDB_NOOVERWRITE : 0);
    if (rc == MDB_KEYEXIST)
        return 1;
    if (rc == MDB_MAP_FULL)
        return aly_errf(err, "the store is full: raise map_size in the configuration and reload");
    if (rc != 0)
        return aly_errf(err, "store write failed: %s", mdb_strerror(rc));
    return 0;
}

int store_del(store_txn_t *t, int db, const void *key, size_t klen, aly_err_t *err)
{
    MDB_dbi dbi;
    int rc = target(t, db, klen, &dbi, err);
    if (rc != 0)
        return rc;
    MDB_val k = {klen, (void *)key}, old;
    if (db == DB_DATA && !(t->flags & STORE_VOLATILE)) {
        rc = mdb_get(t->txn, dbi, &k, &old);
        if (rc == MDB_NOTFOUND)
            return 1;
        if (rc != 0)
            return aly_errf(err, "store read failed: %s", mdb_strerror(rc));
        if (charge_quota(t, key, klen, -(int64_t)(klen + old.mv_size), err) != 0)
            return -1;
    }
    rc = mdb_del(t->txn, dbi, &k, NULL);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return aly_errf(err, "store delete failed: %s", mdb_strerror(rc));
    return 0;
}

int store_scan(store_txn_t *t, int db, const void *prefix, size_t plen, const void *after, size_t alen, store_scan_cb cb,
               void *ctx, aly_err_t *err)
{
    MDB_dbi dbi;
    MDB_cursor *cur;
    if (plen > STORE_MAX_KEY || alen > STORE_MAX_KEY)
        return aly_errf(err, "store scan key of %zu bytes is over the limit of %d", plen > alen ? plen : alen, STORE_MAX_KEY);
    if (dbi_of(t, db, &dbi, err) != 0)
        return -1;
    int rc = mdb_cursor_open(t->txn, dbi, &cur);
    if (rc != 0)
        return aly_errf(err, "cannot open a cursor: %s", mdb_strerror(rc));
    MDB_val k, v;
    if (after != NULL && alen > 0) {
        k = (MDB_val){alen, (void *)after};
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == alen && memcmp(k.mv_data, after, alen) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else if (plen > 0) {
        k = (MDB_val){plen, (void *)prefix};
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    int ret = 0;
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        store_val_t sk = {k.mv_data, k.mv_size}, sv = {v.mv_data, v.mv_size};
        int r = cb(ctx, &sk, &sv);
        if (r < 0) {
            ret = aly_errf(err, "store scan stopped on a bad record");
            break;
        }
        if (r > 0)
            break;
    }
    if (rc != 0 && rc != MDB_NOTFOUND && ret == 0)
        ret = aly_errf(err, "store scan failed: %s", mdb_strerror(rc));
    mdb_cursor_close(cur);
    return ret;
}

uint64_t store_snapshot(store_t *st)
{
    store_txn_t t;
    if (store_begin(st, 0, &t, NULL) != 0)
        return 0;
    uint64_t id = mdb_txn_id(t.txn);
    store_abort(&t);
    return id;
}

int store_backup(store_t *st, const char *dir, aly_err_t *err)
{
    int rc = mdb_env_copy2(st->env, dir, MDB_CP_COMPACT);
    if (rc != 0)
        return aly_errf(err, "backup to %s failed: %s", dir, mdb_strerror(rc));
    return 0;
}

int store_new_id(const char *prefix, char *out, size_t len, aly_err_t *err)
{
    size_t pl = strlen(prefix);
    if (len < pl + 21)
        return aly_errf(err, "id buffer too small");
    memcpy(out, prefix, pl);
    if (aly_random_b62(out + pl, 20) != 0)
        return aly_errf(err, "cannot draw random bytes");
    return 0;
}

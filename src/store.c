/*
 * The two LMDB environments of aly/store.h: creating, opening and checking
 * them, their statistics, hot backups and random ids.  Transactions and the
 * data operations are in store_txn.c; the typed record layer
 * (store_record.c) builds on both.
 */
#include "aly/store.h"

#include "aly/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <msgpack.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aly/store_internal.h"

const char *const store_durable_dbs[DB_N] = {"meta", "workspaces", "keys",        "key_hash",      "revoked_jti",  "revoked_sub",
                                             "data", "sessions",   "oauth_users", "oauth_clients", "oauth_grants", "oauth_keys"};
const char *const store_volatile_dbs[VDB_N] = {"meta", "last_used", "rate", "replies", "oauth_limits"};

static const char schema_key[] = "schema";

static int env_path(const aly_config_t *cfg, const char *sub, char *buf, size_t len, aly_err_t *err)
{
    if ((size_t)snprintf(buf, len, "%s/%s", cfg->data_dir, sub) >= len)
        return aly_errf(err, "data_dir path is too long");
    return 0;
}

static int env_open(const aly_config_t *cfg, const char *sub, size_t map_size, unsigned flags, MDB_env **out, aly_err_t *err)
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
        {"store", cfg->map_size, DURABLE_FLAGS, store_durable_dbs, ALY_ARRAY_SIZE(store_durable_dbs)},
        {"volatile", cfg->volatile_map_size, VOLATILE_FLAGS, store_volatile_dbs, ALY_ARRAY_SIZE(store_volatile_dbs)},
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
    if (make_pepper(cfg->key_pepper_file, uid, gid, err) != 0)
        return -1;
    if (cfg->store == NULL)
        return 0;
    store_pg_t *pg = store_pg_new(cfg, cfg->store);
    if (pg == NULL)
        return aly_errf(err, "out of memory");
    int rc = store_pg_schema(pg, err);
    store_pg_free(pg);
    return rc;
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
    if (open_dbis(st->env, store_durable_dbs, ALY_ARRAY_SIZE(store_durable_dbs), st->dbi, 1, err) != 0 ||
        open_dbis(st->vol, store_volatile_dbs, ALY_ARRAY_SIZE(store_volatile_dbs), st->vdbi, 1, err) != 0 ||
        verify_schema(st->env, st->dbi[0], err) != 0)
        goto fail;
    if (cfg->store != NULL && (st->pg = store_pg_new(cfg, cfg->store)) == NULL) {
        aly_errf(err, "out of memory");
        goto fail;
    }
    /* Start from PostgreSQL's latest; when it is down, from what the replica holds (writes wait for it). */
    aly_err_t why;
    if (st->pg != NULL && store_replicate(st, &why) < 0)
        log_warn("the replica could not catch up with PostgreSQL: %s", why.msg);
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
    store_pg_free(st->pg);
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
    } all[] = {{st->env, "store", store_durable_dbs, st->dbi, ALY_ARRAY_SIZE(store_durable_dbs)},
               {st->vol, "volatile", store_volatile_dbs, st->vdbi, ALY_ARRAY_SIZE(store_volatile_dbs)}};
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

uint64_t store_snapshot(store_t *st)
{
    store_txn_t t;
    if (store_begin(st, 0, &t, NULL) != 0)
        return 0;
    uint64_t id = store_txn_snapshot(&t);
    store_abort(&t);
    return id;
}

/*
 * Removes what a backup killed mid-copy left in dir: ".data.mdb.PID.XXXXXX"
 * files whose process is gone.  A backup still running (its pid alive) keeps
 * its file.
 */
static void remove_stale_copies(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (strncmp(e->d_name, ".data.mdb.", 10) != 0)
            continue;
        long pid = strtol(e->d_name + 10, &end, 10);
        if (end == e->d_name + 10 || *end != '.' || pid <= 0 || pid > INT32_MAX)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* that backup may still be writing */
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/*
 * The copy goes to a temporary name in dir, is synced, and only then becomes
 * dir/data.mdb: a copy that fails (a full disk) leaves no truncated data.mdb
 * behind to pass for a backup, or to make the retry refuse the directory.
 * The new name never replaces a data.mdb that appeared meanwhile (another
 * backup into the same directory): that is refused.
 */
int store_backup(store_t *st, const char *dir, aly_err_t *err)
{
    char tmp[4200], final[4200];
    remove_stale_copies(dir);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.data.mdb.%d.XXXXXX", dir, (int)getpid()) >= sizeof(tmp) ||
        (size_t)snprintf(final, sizeof(final), "%s/data.mdb", dir) >= sizeof(final))
        return aly_errf(err, "backup directory path is too long");
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return aly_errf(err, "backup to %s failed: cannot create a file there: %s", dir, strerror(errno));
    int rc = mdb_env_copyfd2(st->env, fd, MDB_CP_COMPACT);
    const char *why = rc != 0 ? mdb_strerror(rc) : NULL;
    if (why == NULL && fsync(fd) != 0)
        why = strerror(errno);
    if (close(fd) != 0 && why == NULL)
        why = strerror(errno);
    /* link() fails where the name exists, unlike rename(); renameat2's no-replace where hard links are not supported. */
    if (why == NULL && link(tmp, final) != 0 &&
        ((errno != EPERM && errno != ENOTSUP) || renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) != 0))
        why = errno == EEXIST ? "another backup wrote data.mdb there meanwhile: back up into an empty directory" : strerror(errno);
    unlink(tmp); /* linked (or failed); after a rename it is already gone */
    if (why != NULL)
        return aly_errf(err, "backup to %s failed: %s", dir, why);
    /* The new name must survive a crash too. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
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

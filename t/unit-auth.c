/*
 * Unit tests of API-key authentication (src/auth.c) on a real store in a
 * temporary data_dir: keys minted with admin_key_mint() authenticate, twice
 * (the second time from the verified-key cache), and keep their principal;
 * thousands of other well-formed keys are refused while the cache holds the
 * real ones, so a cache that matched a slot without comparing its tag would
 * let some through (with 64 of 1024 slots taken, 2000 strangers land on a
 * taken slot about 125 times); a key whose records are deleted behind the
 * cache's back still authenticates (so the cache answered) until a worker
 * without it looks; a cached key is refused past its expiry, and a revoked
 * one at once.  Also the reference vectors of the SipHash it keys by.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aly/admin.h"
#include "aly/auth.h"
#include "aly/common.h"
#include "aly/config.h"
#include "aly/store.h"
#include "tap.h"

#define KEYS 64
#define STRANGERS 2000

static auth_result_t present(auth_t *a, const char *key, principal_t *p)
{
    char header[128];
    aly_err_t why;
    int n = snprintf(header, sizeof(header), "Bearer %s", key);
    return auth_authenticate(a, header, (size_t)n, p, &why);
}

/* SipHash-2-4-128 of the bytes 0..len-1 under the key 00..0f: the reference implementation's vectors (veorq/SipHash vectors.h). */
static const char *const sip128[] = {
    "a3817f04ba25a8e66df67214c7550293", "da87c1d86b99af44347659119b22fc45", "8177228da4a45dc7fca38bdef60affe4",
    "9c70b60c5267a94e5f33b6b02985ed51", "f88164c12d9c8faf7d0f6e7c7bcd5579", "1368875980776f8854527a07690e9627",
    "14eeca338b208613485ea0308fd7a15e", "a1f1ebbed8dbc153c0b84aa61ff08239", "3b62a9ba6258f5610f83e264f31497b4",
    "264499060ad9baabc47f8b02bb6d71ed", "00110dc378146956c95447d3f3d0fbba", "0151c568386b6677a2b4dc6f81e5dc18",
    "d626b266905ef35882634df68532c125", "9869e247e9c08b10d029934fc4b952f7", "31fcefac66d7de9c7ec7485fe4494902",
    "5493e99933b0a8117e08ec0f97cfc3d9", "6ee2a4ca67b054bbfd3315bf85230577", "473d06e8738db89854c066c47ae47740",
    "a426e5e423bf4885294da481feaef723", "78017731cf65fab074d5208952512eb1", "9e25fc833f2290733e9344a5e83839eb",
    "568e495abe525a218a2214cd3e071d12", "4a29b54552d16b9a469c10528eff0aae", "c9d184ddd5a9f5e0cf8ce29a9abf691c",
    "2db479ae78bd50d8882a8a178a6132ad", "8ece5f042d5e447b5051b9eacb8d8f6f", "9c0b53b4b3c307e87eaee08678141f66",
    "abf248af69a6eae4bfd3eb2f129eeb94", "0664da1668574b88b935f3027358aef4", "aa4b9dc4bf337de90cd4fd3c467c6ab7",
    "ea5c7f471faf6bde2b1ad7d4686d2287", "2939b0183223fafc1723de4f52c43d35", "7c3956ca5eeafc3e363e9d556546eb68",
    "77c6077146f01c32b6b69d5f4ea9ffcf", "37a6986cb8847edf0925f0f1309b54de", "a705f0e69da9a8f907241a2e923c8cc8",
    "3dc47d1f29c448461e9e76ed904f6711", "0d62bf01e6fc0e1a0d3c4751c5d3692b", "8c03468bca7c669ee4fd5e084bbee7b5",
    "528a5bb93baf2c9c4473cce5d0d22bd9", "df6a301e95c95dad97ae0cc8c6913bd8", "801189902c857f39e73591285e70b6db",
    "e617346ac9c231bb3650ae34ccca0c5b", "27d93437efb721aa401821dcec5adf89", "89237d9ded9c5e78d8b1c9b166cc7342",
    "4a6d8091bf5e7d651189fa94a250b14c", "0e33f96055e7ae893ffc0e3dcf492902", "e61c432b720b19d18ec8d84bdc63151b",
    "f7e5aef549f782cf379055a608269b16", "438d030fd0b7a54fa837f2ad201a6403", "a590d3ee4fbf04e3247e0d27f286423f",
    "5fe2c1a172fe93c4b15cd37caef9f538", "2c97325cbd06b36eb2133dd08b3a017c", "92c814227a6bca949ff0659f002ad39e",
    "dce850110bd8328cfbd50841d6911d87", "67f14984c7da791248e32bb5922583da", "1938f2cf72d54ee97e94166fa91d2a36",
    "74481e9646ed49fe0f6224301604698e", "57fca5de98a9d6d8006438d0583d8a1d", "9fecde1cefdc1cbed4763674d9575359",
    "e3040c00eb28f15366ca73cbd872e740", "7697009a6a831dfecca91c5993670f7a", "5853542321f567a005d547a4f04759bd",
    "5150d1772f50834a503e069a973fbd7c",
};

static void siphash_vectors(void)
{
    uint64_t k0 = 0x0706050403020100ull, k1 = 0x0f0e0d0c0b0a0908ull;
    unsigned char in[64];
    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)i;
    int good = 0;
    for (size_t len = 0; len < sizeof(sip128) / sizeof(sip128[0]); len++) {
        uint64_t out[2];
        aly_siphash128(k0, k1, in, len, out);
        char hex[33];
        for (int i = 0; i < 16; i++) /* the tag's bytes: out[0] then out[1], each little endian */
            snprintf(hex + 2 * i, 3, "%02x", (unsigned)(out[i / 8] >> (8 * (i % 8))) & 0xff);
        good += strcmp(hex, sip128[len]) == 0;
    }
    is_int(good, (int)(sizeof(sip128) / sizeof(sip128[0])),
           "aly_siphash128 gives the reference SipHash-2-4-128 tags (lengths 0-63: every tail length, up to 7 whole words)");
}

int main(void)
{
    siphash_vectors();
    char dir[] = "/tmp/aly-unit-auth.XXXXXX", conf[64];
    if (mkdtemp(dir) == NULL)
        return perror("mkdtemp"), 1;
    snprintf(conf, sizeof(conf), "%s/alyd.conf", dir);
    FILE *f = fopen(conf, "w");
    fprintf(f, "data_dir %s/data\nerror_log off\naccess_log off\n%s", dir, getuid() == 0 ? "user root\n" : "");
    fclose(f);
    aly_err_t err;
    aly_config_t *cfg = config_load(conf, &err);
    ok(cfg != NULL, "configuration loads%s%s", cfg ? "" : ": ", cfg ? "" : err.msg);
    ok(cfg != NULL && admin_init(cfg, &err) == 0, "data_dir initialised");
    store_t *st = cfg != NULL ? store_open(cfg, &err) : NULL;
    ok(st != NULL, "store opens");
    if (st == NULL)
        return done_testing();

    workspace_record_t ws;
    ok(admin_workspace_create(st, "unit", &ws, &err) == 0, "workspace created");
    static char keys[KEYS][AUTH_KEY_LEN + 1];
    static key_record_t recs[KEYS];
    int minted = 0;
    for (int i = 0; i < KEYS; i++) {
        admin_key_spec_t spec = {ws.id, NULL, SCOPE_READ_SITES, 0, NULL};
        minted += admin_key_mint(st, cfg->key_pepper_file, &spec, &recs[i], keys[i], sizeof(keys[i]), &err) == 0;
    }
    is_int(minted, KEYS, "%d keys minted", KEYS);

    auth_t *a = auth_new(cfg, st, &err);
    ok(a != NULL, "auth_new");
    int good = 0, cached = 0;
    principal_t p;
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < KEYS; i++)
            if (present(a, keys[i], &p) == AUTH_OK && strcmp(p.id, recs[i].id) == 0 && strcmp(p.workspace, ws.id) == 0)
                ++*(round == 0 ? &good : &cached);
    is_int(good, KEYS, "every minted key authenticates as its own principal");
    is_int(cached, KEYS, "and again, from the cache, as the same principal");

    int refused = 0;
    char stranger[AUTH_KEY_LEN + 1];
    for (int i = 0; i < STRANGERS; i++) {
        if (auth_key_generate(stranger, sizeof(stranger), &err) != 0)
            break;
        refused += present(a, stranger, &p) == AUTH_INVALID;
    }
    is_int(refused, STRANGERS, "%d other well-formed keys are all refused while the cache is warm", STRANGERS);

    /*
     * The second pass above must have come from the cache: take the last key's records out of the store behind
     * auth's back (no revocation, so the generation stays) and it still authenticates, as the same principal.  The
     * last key: no later key can have taken its cache slot.
     */
    store_txn_t t;
    char rk[2 * ALY_ID_MAX + 2];
    snprintf(rk, sizeof(rk), "%s/%s", recs[KEYS - 1].workspace, recs[KEYS - 1].id);
    ok(store_begin(st, STORE_WRITE, &t, &err) == 0 && store_del(&t, DB_KEYS, rk, strlen(rk), &err) == 0 &&
           store_del(&t, DB_KEY_HASH, recs[KEYS - 1].hash, sizeof(recs[KEYS - 1].hash), &err) == 0 && store_commit(&t, &err) == 0,
       "the last key's records deleted from the store directly");
    ok(present(a, keys[KEYS - 1], &p) == AUTH_OK && strcmp(p.id, recs[KEYS - 1].id) == 0,
       "the last key still authenticates: the cache answered");
    auth_t *fresh = auth_new(cfg, st, &err);
    is_int(present(fresh, keys[KEYS - 1], &p), AUTH_INVALID, "a worker without it in its cache refuses it");
    auth_free(fresh);

    /* A cached key is not trusted past its expiry. */
    admin_key_spec_t brief = {ws.id, NULL, SCOPE_READ_SITES, 1000, NULL};
    key_record_t brec;
    char bkey[AUTH_KEY_LEN + 1];
    ok(admin_key_mint(st, cfg->key_pepper_file, &brief, &brec, bkey, sizeof(bkey), &err) == 0, "a key that expires in 1 s");
    ok(present(a, bkey, &p) == AUTH_OK && present(a, bkey, &p) == AUTH_OK, "authenticates, and again from the cache");
    usleep(1200 * 1000);
    is_int(present(a, bkey, &p), AUTH_INVALID, "after its expiry it is refused, cached or not");

    /* auth remembers the revocation generation by the snapshot it read it in: a write must make a new one. */
    uint64_t before = 0, after = 0;
    if (store_begin(st, 0, &t, &err) == 0) {
        before = store_txn_snapshot(&t);
        store_abort(&t);
    }
    key_record_t revoked;
    ok(admin_key_revoke(st, recs[0].id, &revoked, &err) == 0, "key 0 revoked");
    if (store_begin(st, 0, &t, &err) == 0) {
        after = store_txn_snapshot(&t);
        store_abort(&t);
    }
    ok(before != 0 && after > before, "the revocation's write is a newer snapshot (%llu -> %llu)", (unsigned long long)before,
       (unsigned long long)after);
    ok(store_begin(st, STORE_WRITE, &t, &err) == 0 && store_txn_snapshot(&t) == 0, "a write transaction names no snapshot");
    store_abort(&t);
    /* The transaction's own snapshot, not the store's latest: a write committed while it is open does not change it. */
    store_txn_t w;
    uint64_t open_id = 0, still = 0, later = 0;
    if (store_begin(st, 0, &t, &err) == 0) {
        open_id = store_txn_snapshot(&t);
        if (store_begin(st, STORE_WRITE, &w, &err) == 0 && store_put(&w, DB_META, "unit-snapshot", 13, "x", 1, 0, &err) == 0 &&
            store_commit(&w, &err) == 0)
            still = store_txn_snapshot(&t);
        store_abort(&t);
    }
    if (store_begin(st, 0, &t, &err) == 0) {
        later = store_txn_snapshot(&t);
        store_abort(&t);
    }
    ok(open_id != 0 && still == open_id && later > open_id,
       "a write committed while a read is open leaves the read's snapshot as it was (%llu, %llu), the next read's newer (%llu)",
       (unsigned long long)open_id, (unsigned long long)still, (unsigned long long)later);
    is_int(present(a, keys[0], &p), AUTH_INVALID, "the revoked key is refused though it was cached");
    is_int(present(a, keys[1], &p), AUTH_OK, "another key still authenticates");

    /*
     * A revocation generation that cannot be read is an error, never 0: key 1 was cached under the current
     * generation, and a cache made before any revocation would match 0.  A record of the wrong length stands in for
     * a damaged store.
     */
    uint64_t gen = 0;
    ok(store_begin(st, 0, &t, &err) == 0 && auth_revocation_generation(&t, &gen, &err) == 0 && gen != 0, "the generation reads");
    store_abort(&t);
    ok(store_begin(st, STORE_WRITE, &t, &err) == 0 && store_put(&t, DB_META, "revocations", 11, "bad", 3, 0, &err) == 0 &&
           store_commit(&t, &err) == 0,
       "the generation's record damaged (3 bytes)");
    is_int(present(a, keys[1], &p), AUTH_ERROR, "the cached key is not let in under a generation that cannot be read");
    ok(store_begin(st, STORE_WRITE, &t, &err) == 0 && store_put(&t, DB_META, "revocations", 11, &gen, sizeof(gen), 0, &err) == 0 &&
           store_commit(&t, &err) == 0,
       "the generation's record put back");
    is_int(present(a, keys[1], &p), AUTH_OK, "the key authenticates again");

    auth_free(a);
    store_close(st);
    config_free(cfg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return done_testing();
}

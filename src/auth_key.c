/*
 * API keys: "aly_" + 32 base62 characters of secret + 6 base62 characters of
 * the secret's CRC32 (GitHub's 2021 token design).  The checksum lets the gate
 * refuse a mistyped or made-up key without touching the store, and lets
 * secret scanners recognise the shape.  ~190 bits of secret make guessing
 * pointless; the stored form is HMAC-SHA256 under a pepper kept outside the
 * store.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aly/auth.h"

struct auth_pepper {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx; /* keyed once; re-initialised with a NULL key per use */
};

/* CRC-32 (IEEE), table-driven: it runs on every request that carries a key. */
static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
        crc_table[i] = c;
    }
}

static uint32_t crc32(const char *s, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, crc_init);
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ (unsigned char)s[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void checksum(const char *secret, char out[AUTH_KEY_CHECK_LEN])
{
    uint32_t c = crc32(secret, AUTH_KEY_SECRET_LEN);
    for (int i = AUTH_KEY_CHECK_LEN - 1; i >= 0; i--) {
        out[i] = aly_b62_digits[c % 62];
        c /= 62;
    }
}

int auth_key_generate(char *out, size_t len, aly_err_t *err)
{
    if (len < AUTH_KEY_LEN + 1)
        return aly_errf(err, "key buffer too small");
    const size_t pl = sizeof(AUTH_KEY_PREFIX) - 1;
    memcpy(out, AUTH_KEY_PREFIX, pl);
    if (aly_random_b62(out + pl, AUTH_KEY_SECRET_LEN) != 0)
        return aly_errf(err, "cannot draw random bytes");
    checksum(out + pl, out + pl + AUTH_KEY_SECRET_LEN);
    out[AUTH_KEY_LEN] = '\0';
    return 0;
}

int auth_key_well_formed(const char *key, size_t len)
{
    const size_t pl = sizeof(AUTH_KEY_PREFIX) - 1;
    if (len != AUTH_KEY_LEN || memcmp(key, AUTH_KEY_PREFIX, pl) != 0)
        return 0;
    for (size_t i = pl; i < len; i++)
        if (!aly_b62_char((unsigned char)key[i]))
            return 0;
    char want[AUTH_KEY_CHECK_LEN];
    checksum(key + pl, want);
    return memcmp(want, key + pl + AUTH_KEY_SECRET_LEN, AUTH_KEY_CHECK_LEN) == 0;
}

auth_pepper_t *auth_pepper_load(const char *path, aly_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        aly_errf(err, "cannot open key_pepper_file %s: %s (alyctl init creates it)", path, strerror(errno));
        return NULL;
    }
    unsigned char buf[257];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < 32 || n > 256) {
        aly_errf(err, "key_pepper_file %s must hold 32 to 256 bytes", path);
        OPENSSL_cleanse(buf, sizeof(buf));
        return NULL;
    }
    auth_pepper_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        abort();
    p->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    p->ctx = p->mac != NULL ? EVP_MAC_CTX_new(p->mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0), OSSL_PARAM_construct_end()};
    if (p->ctx == NULL || EVP_MAC_init(p->ctx, buf, (size_t)n, params) != 1) {
        aly_errf(err, "cannot set up HMAC-SHA256");
        auth_pepper_free(p);
        p = NULL;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return p;
}

void auth_pepper_free(auth_pepper_t *p)
{
    if (p == NULL)
        return;
    EVP_MAC_CTX_free(p->ctx);
    EVP_MAC_free(p->mac);
    free(p);
}

int auth_key_hash(auth_pepper_t *p, const char *key, size_t len, unsigned char out[32], aly_err_t *err)
{
    size_t outl = 0;
    if (EVP_MAC_init(p->ctx, NULL, 0, NULL) != 1 || EVP_MAC_update(p->ctx, (const unsigned char *)key, len) != 1 ||
        EVP_MAC_final(p->ctx, out, &outl, 32) != 1 || outl != 32)
        return aly_errf(err, "HMAC computation failed");
    return 0;
}

static size_t record_key_of(const char *ws, const char *id, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", ws, id);
    return n > 0 && (size_t)n < len ? (size_t)n : 0;
}

int auth_key_store(store_txn_t *t, const key_record_t *rec, aly_err_t *err)
{
    char k[2 * ALY_ID_MAX + 2];
    size_t kl = record_key_of(rec->workspace, rec->id, k, sizeof(k));
    if (kl == 0)
        return aly_errf(err, "key id too long");
    if (store_put_record(t, DB_KEYS, k, kl, &record_key, rec, 0, err) != 0)
        return -1;
    return store_put(t, DB_KEY_HASH, rec->hash, sizeof(rec->hash), k, kl, 0, err) == 0 ? 0 : -1;
}

typedef struct find_ctx {
    const char *id;
    key_record_t *rec;
    int found;
    aly_err_t *err;
} find_ctx_t;

static int find_cb(void *vctx, const store_val_t *key, const store_val_t *val)
{
    find_ctx_t *ctx = vctx;
    const char *slash = memchr(key->data, '/', key->len);
    if (slash == NULL)
        return 0;
    size_t idlen = key->len - (size_t)(slash + 1 - (const char *)key->data);
    if (idlen != strlen(ctx->id) || memcmp(slash + 1, ctx->id, idlen) != 0)
        return 0;
    if (record_decode(&record_key, val->data, val->len, ctx->rec, ctx->err) != 0)
        return -1;
    ctx->found = 1;
    return 1;
}

int auth_key_find(store_txn_t *t, const char *id, key_record_t *rec, aly_err_t *err)
{
    /* Operators name keys by id alone; keys are few, so a scan beats a second index. */
    aly_err_t why = {.msg = ""};
    find_ctx_t ctx = {id, rec, 0, &why};
    if (store_scan(t, DB_KEYS, "", 0, NULL, 0, find_cb, &ctx, err) != 0)
        return why.msg[0] != '\0' ? aly_errf(err, "key %s: %s", id, why.msg) : -1;
    return ctx.found ? 0 : 1;
}

static const char revocations_key[] = "revocations";

int auth_revocation_generation(store_txn_t *t, uint64_t *gen, aly_err_t *err)
{
    store_val_t v;
    *gen = 0;
    int rc = store_get(t, DB_META, revocations_key, sizeof(revocations_key) - 1, &v, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0; /* none stored yet: 0 */
    if (v.len != sizeof(*gen))
        return aly_errf(err, "the store's revocation generation is %zu bytes, not %zu: the store is damaged", v.len, sizeof(*gen));
    memcpy(gen, v.data, sizeof(*gen));
    return 0;
}

int auth_bump_revocations(store_txn_t *t, aly_err_t *err)
{
    uint64_t gen;
    if (auth_revocation_generation(t, &gen, err) != 0)
        return -1;
    gen++;
    return store_put(t, DB_META, revocations_key, sizeof(revocations_key) - 1, &gen, sizeof(gen), 0, err) == 0 ? 0 : -1;
}

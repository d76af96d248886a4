/*
 * The authorization server's ES256 signing keys (aly/oauth.h): made with
 * OpenSSL (P-256), the private scalar sealed with XChaCha20-Poly1305 under a
 * key derived from the pepper (the kid bound as associated data, so a sealed
 * scalar cannot be moved to another record), the public point in clear for
 * /oauth/jwks and the validator.  A rotated key is retired, not deleted: it
 * keeps verifying (and stays in the JWKS) until every token it signed has
 * expired.  Workers keep the active key decrypted and reload it when the
 * store's revocation generation moves (rotate-key bumps it).
 */
#include "aly/oauth.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tokens live an hour; the validator allows oauth_leeway (at most an hour) on top. */
#define KEY_RETIRED_KEEP_MS ((uint64_t)(OAUTH_ACCESS_TTL_S + 3600) * 1000)

typedef struct signing_key {
    char kid[ALY_ID_MAX];
    uint64_t created_ms;
    uint64_t retired_ms; /* 0: the active key */
    unsigned char pub[65];
    unsigned char nonce[24];
    unsigned char sealed[48];
} signing_key_t;

static const record_field_t key_fields[] = {
    RF_STR_(signing_key_t, kid, "kid", 0),
    RF_U64_(signing_key_t, created_ms, "created", 0),
    RF_U64_(signing_key_t, retired_ms, "retired", 1),
    RF_BIN_(signing_key_t, pub, "pub"),
    RF_BIN_(signing_key_t, nonce, "nonce"),
    RF_BIN_(signing_key_t, sealed, "sealed"),
};
static const record_type_t record_signing_key = {"sigkey", 1, key_fields, ALY_ARRAY_SIZE(key_fields)};

static int seal_key(auth_pepper_t *p, unsigned char key[32], aly_err_t *err)
{
    static const char label[] = "v1";
    if (sodium_init() < 0)
        return aly_errf(err, "libsodium cannot initialise");
    return oauth_mac(p, "signing-key-seal", label, sizeof(label) - 1, key, err);
}

static int usable(const signing_key_t *k, uint64_t now)
{
    /* Added, not subtracted: a key retired by a host whose clock is ahead of ours has a stamp in our future. */
    return k->retired_ms == 0 || now < k->retired_ms + KEY_RETIRED_KEEP_MS;
}

/* PEM text of an EC P-256 key: the public point alone, or the key pair when priv is not NULL.  malloc'd. */
static char *ec_pem(const unsigned char pub[65], const unsigned char *priv, size_t *len)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    BIGNUM *d = priv != NULL ? BN_bin2bn(priv, 32, NULL) : NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;
    char *out = NULL;
    if (bld == NULL || ctx == NULL || (priv != NULL && d == NULL))
        goto done;
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 65);
    if (d != NULL)
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d);
    params = OSSL_PARAM_BLD_to_param(bld);
    if (params == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, d != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1)
        goto done;
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL ||
        (d != NULL ? PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) : PEM_write_bio_PUBKEY(bio, pkey)) != 1)
        goto done;
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    out = malloc((size_t)n + 1);
    if (out == NULL)
        abort();
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    OPENSSL_cleanse(data, (size_t)n); /* the memory BIO would free a copy of the private key uncleansed */
done:
    BIO_free_all(bio);
    BN_clear_free(d);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    return out;
}

/* A new key pair sealed into k (kid set here). */
static int make_key(auth_pepper_t *p, signing_key_t *k, aly_err_t *err)
{
    unsigned char priv[32], sk[32];
    memset(k, 0, sizeof(*k));
    k->created_ms = aly_wall_ms();
    if (store_new_id(OAUTH_KEY_KID_PREFIX, k->kid, sizeof(k->kid), err) != 0 || seal_key(p, sk, err) != 0)
        return -1;
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    BIGNUM *d = NULL;
    size_t plen = 0;
    int ok = pkey != NULL && EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1 && BN_bn2binpad(d, priv, 32) == 32 &&
             EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, k->pub, sizeof(k->pub), &plen) == 1 && plen == 65 &&
             k->pub[0] == 0x04;
    BN_clear_free(d);
    EVP_PKEY_free(pkey);
    unsigned long long clen = 0;
    if (ok) {
        randombytes_buf(k->nonce, sizeof(k->nonce));
        ok = crypto_aead_xchacha20poly1305_ietf_encrypt(k->sealed, &clen, priv, sizeof(priv), (const unsigned char *)k->kid,
                                                        strlen(k->kid), NULL, k->nonce, sk) == 0 &&
             clen == sizeof(k->sealed);
    }
    OPENSSL_cleanse(priv, sizeof(priv));
    OPENSSL_cleanse(sk, sizeof(sk));
    return ok ? 0 : aly_errf(err, "cannot generate an ES256 signing key");
}

typedef struct find_active {
    signing_key_t *out;
    int found;
    char retire[8][ALY_ID_MAX];
    size_t n_retire;
} find_active_t;

static int each_key(void *ctx, const store_val_t *key, void *rec)
{
    (void)key;
    find_active_t *f = ctx;
    signing_key_t *k = rec;
    if (k->retired_ms != 0)
        return 0;
    if (f->n_retire < ALY_ARRAY_SIZE(f->retire))
        snprintf(f->retire[f->n_retire++], ALY_ID_MAX, "%s", k->kid);
    if (!f->found || k->created_ms > f->out->created_ms) {
        *f->out = *k;
        f->found = 1;
    }
    return 0;
}

static int scan_active(store_txn_t *t, signing_key_t *out, find_active_t *f, aly_err_t *err)
{
    signing_key_t tmp;
    memset(f, 0, sizeof(*f));
    f->out = out;
    store_records_t r = {&record_signing_key, &tmp, each_key, NULL, f};
    return store_scan_records(t, DB_OAUTH_KEYS, "", 0, NULL, 0, &r, err);
}

/* In write transaction t: a new active key; with rotate, every older active key is retired. */
static int add_key(store_txn_t *t, auth_pepper_t *p, int rotate, signing_key_t *out, aly_err_t *err)
{
    find_active_t f;
    if (scan_active(t, out, &f, err) != 0)
        return -1;
    if (f.found && !rotate)
        return 0;
    uint64_t now = aly_wall_ms();
    for (size_t i = 0; i < f.n_retire; i++) {
        signing_key_t k;
        if (store_get_record(t, DB_OAUTH_KEYS, f.retire[i], strlen(f.retire[i]), &record_signing_key, &k, err) != 0)
            return -1;
        k.retired_ms = now;
        if (store_put_record(t, DB_OAUTH_KEYS, k.kid, strlen(k.kid), &record_signing_key, &k, 0, err) != 0)
            return -1;
    }
    if (make_key(p, out, err) != 0 ||
        store_put_record(t, DB_OAUTH_KEYS, out->kid, strlen(out->kid), &record_signing_key, out, 1, err) != 0)
        return -1;
    return auth_bump_revocations(t, err);
}

int oauth_key_rotate(store_t *st, auth_pepper_t *p, char *kid, size_t klen, aly_err_t *err)
{
    store_txn_t t;
    signing_key_t k;
    if (store_begin(st, STORE_WRITE, &t, err) != 0)
        return -1;
    if (add_key(&t, p, 1, &k, err) != 0 || store_commit(&t, err) != 0) {
        store_abort(&t);
        return -1;
    }
    snprintf(kid, klen, "%s", k.kid);
    return 0;
}

int oauth_key_public_pem(store_txn_t *t, const char *kid, char **pem, size_t *len, aly_err_t *err)
{
    signing_key_t k;
    int rc = store_get_record(t, DB_OAUTH_KEYS, kid, strlen(kid), &record_signing_key, &k, err);
    if (rc != 0)
        return rc;
    if (!usable(&k, aly_wall_ms()))
        return 1;
    *pem = ec_pem(k.pub, NULL, len);
    return *pem != NULL ? 0 : aly_errf(err, "signing key %s does not make a public key", kid);
}

static int jwks_each(void *ctx, const store_val_t *key, void *rec)
{
    (void)key;
    const signing_key_t *k = rec;
    if (!usable(k, aly_wall_ms()))
        return 0;
    char x[48], y[48];
    x[aly_b64url_encode(k->pub + 1, 32, x)] = '\0';
    y[aly_b64url_encode(k->pub + 33, 32, y)] = '\0';
    json_array_append_new(ctx, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", x, "y", y, "kid",
                                         k->kid, "alg", "ES256", "use", "sig"));
    return 0;
}

int oauth_key_jwks(store_t *st, void **json_doc, aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(st, 0, &t, err) != 0)
        return -1;
    json_t *keys = json_array();
    signing_key_t tmp;
    store_records_t r = {&record_signing_key, &tmp, jwks_each, NULL, keys};
    int rc = store_scan_records(&t, DB_OAUTH_KEYS, "", 0, NULL, 0, &r, err);
    store_abort(&t);
    if (rc != 0) {
        json_decref(keys);
        return -1;
    }
    *json_doc = json_pack("{s:o}", "keys", keys);
    return 0;
}

/* ---- signing ---- */

struct oauth_signer {
    store_t *st;
    auth_pepper_t *pepper;
    uint64_t generation; /* of the loaded key; UINT64_MAX: none loaded */
    char kid[ALY_ID_MAX];
    char *pem;
    size_t pem_len;
};

oauth_signer_t *oauth_signer_new(store_t *st, auth_pepper_t *p)
{
    oauth_signer_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        abort();
    s->st = st;
    s->pepper = p;
    s->generation = UINT64_MAX;
    return s;
}

static void drop_key(oauth_signer_t *s)
{
    if (s->pem != NULL)
        OPENSSL_cleanse(s->pem, s->pem_len);
    free(s->pem);
    s->pem = NULL;
    s->generation = UINT64_MAX;
}

void oauth_signer_free(oauth_signer_t *s)
{
    if (s == NULL)
        return;
    drop_key(s);
    free(s);
}

/* Makes s hold the active key of the current generation, creating the first key if there is none. */
static int load_key(oauth_signer_t *s, aly_err_t *err)
{
    store_txn_t t;
    if (store_begin(s->st, 0, &t, err) != 0)
        return -1;
    uint64_t gen;
    if (auth_revocation_generation(&t, &gen, err) != 0) {
        store_abort(&t);
        return -1;
    }
    if (s->pem != NULL && gen == s->generation) {
        store_abort(&t);
        return 0;
    }
    signing_key_t k;
    find_active_t f;
    int rc = scan_active(&t, &k, &f, err);
    store_abort(&t);
    if (rc != 0)
        return -1;
    if (!f.found) {
        if (store_begin(s->st, STORE_WRITE, &t, err) != 0)
            return -1;
        if (add_key(&t, s->pepper, 0, &k, err) != 0 || auth_revocation_generation(&t, &gen, err) != 0 ||
            store_commit(&t, err) != 0) {
            store_abort(&t);
            return -1;
        }
    }
    unsigned char sk[32], priv[32];
    unsigned long long plen = 0;
    if (seal_key(s->pepper, sk, err) != 0)
        return -1;
    rc = crypto_aead_xchacha20poly1305_ietf_decrypt(priv, &plen, NULL, k.sealed, sizeof(k.sealed), (const unsigned char *)k.kid,
                                                    strlen(k.kid), k.nonce, sk);
    OPENSSL_cleanse(sk, sizeof(sk));
    if (rc != 0 || plen != 32)
        return aly_errf(err, "signing key %s does not open with this pepper (was the store restored without its pepper file?)",
                        k.kid);
    drop_key(s);
    s->pem = ec_pem(k.pub, priv, &s->pem_len);
    OPENSSL_cleanse(priv, sizeof(priv));
    if (s->pem == NULL)
        return aly_errf(err, "signing key %s is not a valid P-256 key", k.kid);
    snprintf(s->kid, sizeof(s->kid), "%s", k.kid);
    s->generation = gen;
    return 0;
}

int oauth_signer_sign(oauth_signer_t *s, void *claims, char **out, aly_err_t *err)
{
    if (load_key(s, err) != 0)
        return -1;
    char *text = json_dumps(claims, JSON_COMPACT);
    jwt_t *jwt = NULL;
    int ok = text != NULL && jwt_new(&jwt) == 0 && jwt_add_grants_json(jwt, text) == 0 && jwt_add_header(jwt, "kid", s->kid) == 0 &&
             jwt_set_alg(jwt, JWT_ALG_ES256, (const unsigned char *)s->pem, (int)s->pem_len) == 0 &&
             (*out = jwt_encode_str(jwt)) != NULL;
    free(text);
    jwt_free(jwt);
    return ok ? 0 : aly_errf(err, "cannot sign an access token");
}

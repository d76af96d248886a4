/*
 * OAuth access tokens: "aly_oauth_" + a JWS compact JWT.
 *
 * libjwt 1.10.2 takes the algorithm from the token header and verifies
 * nothing else, so this file does the rest:
 *   1. read the header ourselves (alg, kid) and pick the key: RS256/ES256
 *      from the JWKS file by kid, HS256 only from oauth_hs256_secret_file;
 *      any other alg ("none" included) is refused before libjwt sees it;
 *   2. hand libjwt that key only (never NULL or empty) and require that the
 *      algorithm it verified with is the key's own (no HS/RS confusion);
 *   3. check every claim: iss, aud (string or array holding our resource),
 *      exp/nbf/iat as integers with the configured leeway, sub, scope, ws;
 *      then revoked jti/sub and the workspace's existence in the store.
 * Tokens of the built-in authorization server (oauth_server on) name a kid
 * with OAUTH_KEY_KID_PREFIX: their key comes from the store (ES256 only, and
 * only while it may still verify), their iss must be public_url, and their
 * jti must name a grant that is not revoked.
 * JWKS keys become PEM once at load (EVP_PKEY_fromdata, public check).
 * RS256/ES256 verification costs about a millisecond (mostly libjwt parsing
 * the PEM), so verified tokens are cached per worker, never past exp, and
 * the cache is emptied whenever the store's revocation generation moves.
 * An entry is found by a SipHash-2-4-128 tag of the whole token under a
 * random key of this process (as the verified-key cache, src/auth.c): a
 * keyed PRF, so nobody can make another token with a cached one's tag, at
 * a small fraction of SHA-256's cost (which went through EVP_Q_digest, a
 * fetch and a context per call: about 24,000 instructions for a 660-byte
 * token, the largest cost of a cached token's request).
 */
#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/auth_internal.h"
#include "aly/oauth.h"

#define CACHE_SLOTS 1024
#define MAX_HEADER 1024
#define MAX_KEYS 64
#define STORE_KEY_SLOTS 8

typedef struct oauth_key {
    char kid[128];
    jwt_alg_t alg;
    char *pem;
    size_t pem_len;
} oauth_key_t;

typedef struct cache_entry {
    uint64_t tag[2];
    uint64_t exp_ms;
    uint64_t generation;
    principal_t principal;
    int used;
} cache_entry_t;

struct auth_oauth {
    const aly_config_t *cfg;
    char resource[1024];
    oauth_key_t keys[MAX_KEYS];
    size_t n_keys;
    /* Built-in keys read from the store, kept until the revocation generation moves (rotate-key moves it). */
    oauth_key_t store_keys[STORE_KEY_SLOTS];
    uint64_t store_keys_generation;
    unsigned next_store_key;
    unsigned char *hs_secret;
    size_t hs_len;
    cache_entry_t *cache;
    uint64_t tag_key[2]; /* the cache's SipHash key: random, this process's own */
};

/* ---- loading ---- */

static BIGNUM *jwk_bn(json_t *jwk, const char *name)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    unsigned char buf[1024];
    if (s == NULL)
        return NULL;
    long n = aly_b64url_decode(s, strlen(s), buf, sizeof(buf));
    return n > 0 ? BN_bin2bn(buf, (int)n, NULL) : NULL;
}

static int fixed_coord(json_t *jwk, const char *name, unsigned char out[32])
{
    const char *s = json_string_value(json_object_get(jwk, name));
    return s != NULL && aly_b64url_decode(s, strlen(s), out, 32) == 32;
}

/* Builds the public key of one JWK and writes it as PEM into k. */
static int jwk_to_pem(json_t *jwk, oauth_key_t *k, aly_err_t *err)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = NULL;
    BIGNUM *n = NULL, *e = NULL;
    unsigned char point[65]; /* the builder keeps a pointer to it until OSSL_PARAM_BLD_to_param() */
    int ret = -1;
    if (bld == NULL)
        return aly_errf(err, "out of memory");
    if (kty != NULL && strcmp(kty, "RSA") == 0) {
        k->alg = JWT_ALG_RS256;
        n = jwk_bn(jwk, "n");
        e = jwk_bn(jwk, "e");
        if (n == NULL || e == NULL || BN_num_bits(n) < 2048) {
            aly_errf(err, "RSA key %s needs base64url n (2048 bits or more) and e", k->kid);
            goto out;
        }
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n);
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
        pctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else if (kty != NULL && strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        point[0] = 0x04;
        if (crv == NULL || strcmp(crv, "P-256") != 0 || !fixed_coord(jwk, "x", point + 1) || !fixed_coord(jwk, "y", point + 33)) {
            aly_errf(err, "EC key %s must be P-256 with 32-byte x and y", k->kid);
            goto out;
        }
        k->alg = JWT_ALG_ES256;
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point));
        pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else {
        aly_errf(err, "key %s has kty \"%s\"; RSA and EC are supported", k->kid, kty != NULL ? kty : "");
        goto out;
    }
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    if (alg != NULL && strcmp(alg, k->alg == JWT_ALG_RS256 ? "RS256" : "ES256") != 0) {
        aly_errf(err, "key %s says alg %s, which its kty cannot do (expected %s)", k->kid, alg,
                 k->alg == JWT_ALG_RS256 ? "RS256" : "ES256");
        goto out;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    if (pctx == NULL || params == NULL || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        aly_errf(err, "key %s is not a valid public key", k->kid);
        goto out;
    }
    EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok = check != NULL && EVP_PKEY_public_check(check) == 1;
    EVP_PKEY_CTX_free(check);
    if (!ok) {
        aly_errf(err, "key %s fails the public key check", k->kid);
        goto out;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    if (bio == NULL || PEM_write_bio_PUBKEY(bio, pkey) != 1) {
        BIO_free(bio);
        aly_errf(err, "cannot encode key %s", k->kid);
        goto out;
    }
    long len = BIO_get_mem_data(bio, &data);
    k->pem = malloc((size_t)len + 1);
    if (k->pem == NULL)
        abort();
    memcpy(k->pem, data, (size_t)len);
    k->pem[len] = '\0';
    k->pem_len = (size_t)len;
    BIO_free(bio);
    ret = 0;
out:
    BN_free(n);
    BN_free(e);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(pctx);
    return ret;
}

static int load_jwks(auth_oauth_t *o, const char *path, aly_err_t *err)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL)
        return aly_errf(err, "oauth_jwks_file %s:%d: %s", path, jerr.line, jerr.text);
    json_t *keys = json_object_get(doc, "keys");
    int ret = 0;
    if (!json_is_array(keys) || json_array_size(keys) == 0 || json_array_size(keys) > MAX_KEYS) {
        ret = aly_errf(err, "oauth_jwks_file %s: needs a \"keys\" array of 1 to %d keys", path, MAX_KEYS);
        goto out;
    }
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk) {
        const char *kid = json_string_value(json_object_get(jwk, "kid"));
        const char *use = json_string_value(json_object_get(jwk, "use"));
        if (kid == NULL || kid[0] == '\0' || strlen(kid) >= sizeof(o->keys[0].kid)) {
            ret = aly_errf(err, "oauth_jwks_file %s: key %zu needs a \"kid\" of 1 to 127 characters", path, i);
            goto out;
        }
        if (use != NULL && strcmp(use, "sig") != 0)
            continue;
        for (size_t k = 0; k < o->n_keys; k++) {
            if (strcmp(o->keys[k].kid, kid) == 0) {
                ret = aly_errf(err, "oauth_jwks_file %s: kid \"%s\" appears twice", path, kid);
                goto out;
            }
        }
        oauth_key_t *k = &o->keys[o->n_keys];
        snprintf(k->kid, sizeof(k->kid), "%s", kid);
        aly_err_t why;
        if (jwk_to_pem(jwk, k, &why) != 0) {
            ret = aly_errf(err, "oauth_jwks_file %s: %s", path, why.msg);
            goto out;
        }
        o->n_keys++;
    }
out:
    json_decref(doc);
    return ret;
}

static int load_secret(auth_oauth_t *o, const char *path, aly_err_t *err)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return aly_errf(err, "cannot open oauth_hs256_secret_file %s", path);
    unsigned char buf[1025];
    size_t n = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n < 32 || n > 1024) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return aly_errf(err, "oauth_hs256_secret_file %s must hold 32 to 1024 bytes", path);
    }
    o->hs_secret = malloc(n);
    if (o->hs_secret == NULL)
        abort();
    memcpy(o->hs_secret, buf, n);
    o->hs_len = n;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

int auth_oauth_new(const aly_config_t *cfg, auth_oauth_t **out, aly_err_t *err)
{
    *out = NULL;
    if (cfg->oauth_issuer == NULL && !cfg->oauth_server)
        return 0;
    auth_oauth_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        abort();
    o->cfg = cfg;
    snprintf(o->resource, sizeof(o->resource), "%s/api/mcp", cfg->public_url);
    if ((cfg->oauth_jwks_file != NULL && load_jwks(o, cfg->oauth_jwks_file, err) != 0) ||
        (cfg->oauth_hs256_secret_file != NULL && load_secret(o, cfg->oauth_hs256_secret_file, err) != 0)) {
        auth_oauth_free(o);
        return -1;
    }
    o->cache = calloc(CACHE_SLOTS, sizeof(*o->cache));
    if (o->cache == NULL)
        abort();
    if (RAND_bytes((unsigned char *)o->tag_key, sizeof(o->tag_key)) != 1) {
        auth_oauth_free(o);
        return aly_errf(err, "cannot draw the token cache's secret from the CSPRNG");
    }
    *out = o;
    return 0;
}

void auth_oauth_free(auth_oauth_t *o)
{
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->n_keys; i++)
        free(o->keys[i].pem);
    for (size_t i = 0; i < STORE_KEY_SLOTS; i++)
        free(o->store_keys[i].pem);
    if (o->hs_secret != NULL)
        OPENSSL_cleanse(o->hs_secret, o->hs_len);
    free(o->hs_secret);
    free(o->cache);
    free(o);
}

/* ---- verification ---- */

static const char *alg_name(jwt_alg_t a)
{
    return a == JWT_ALG_RS256 ? "RS256" : a == JWT_ALG_ES256 ? "ES256" : a == JWT_ALG_HS256 ? "HS256" : "?";
}

/* Picks the verification key from the (unverified) header; nothing else of the header is trusted. */
/* A built-in key by kid, from this worker's copies or the store. */
static const oauth_key_t *store_key(auth_oauth_t *o, const char *kid, store_txn_t *t, uint64_t generation, aly_err_t *why)
{
    if (o->store_keys_generation != generation) {
        for (size_t i = 0; i < STORE_KEY_SLOTS; i++) {
            free(o->store_keys[i].pem);
            memset(&o->store_keys[i], 0, sizeof(o->store_keys[i]));
        }
        o->store_keys_generation = generation;
    }
    for (size_t i = 0; i < STORE_KEY_SLOTS; i++)
        if (o->store_keys[i].pem != NULL && strcmp(o->store_keys[i].kid, kid) == 0)
            return &o->store_keys[i];
    char *pem;
    size_t len;
    aly_err_t err;
    int rc = strlen(kid) < sizeof(o->store_keys[0].kid) ? oauth_key_public_pem(t, kid, &pem, &len, &err) : 1;
    if (rc != 0) {
        aly_errf(why, rc == 1 ? "unknown signing key (kid)" : "cannot read the signing keys");
        return NULL;
    }
    oauth_key_t *k = &o->store_keys[o->next_store_key++ % STORE_KEY_SLOTS];
    free(k->pem);
    snprintf(k->kid, sizeof(k->kid), "%s", kid);
    k->alg = JWT_ALG_ES256;
    k->pem = pem;
    k->pem_len = len;
    return k;
}

static int select_key(auth_oauth_t *o, const char *jws, size_t hlen, store_txn_t *t, uint64_t generation, const unsigned char **key,
                      size_t *keylen, jwt_alg_t *alg, int *builtin, aly_err_t *why)
{
    unsigned char hbuf[MAX_HEADER];
    if (hlen > 4 * MAX_HEADER / 3)
        return aly_errf(why, "the token header is too large");
    long n = aly_b64url_decode(jws, hlen, hbuf, sizeof(hbuf));
    if (n <= 0)
        return aly_errf(why, "the token header is not base64url");
    json_error_t jerr;
    json_t *h = json_loadb((const char *)hbuf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(h)) {
        json_decref(h);
        return aly_errf(why, "the token header is not a JSON object");
    }
    const char *a = json_string_value(json_object_get(h, "alg"));
    json_t *kidv = json_object_get(h, "kid");
    const char *kid = json_string_value(kidv);
    const char *typ = json_string_value(json_object_get(h, "typ"));
    int ret = -1;
    if (json_object_get(h, "typ") != NULL && (typ == NULL || strcmp(typ, "JWT") != 0)) {
        aly_errf(why, "token typ must be \"JWT\"");
    } else if (a == NULL) {
        aly_errf(why, "the token header has no alg");
    } else if (strcmp(a, "HS256") == 0) {
        if (o->hs_secret == NULL)
            aly_errf(why, "HS256 tokens are not accepted here (no shared secret is configured)");
        else {
            *key = o->hs_secret;
            *keylen = o->hs_len;
            *alg = JWT_ALG_HS256;
            ret = 0;
        }
    } else if (o->cfg->oauth_server && kid != NULL && strncmp(kid, OAUTH_KEY_KID_PREFIX, sizeof(OAUTH_KEY_KID_PREFIX) - 1) == 0) {
        const oauth_key_t *k = strcmp(a, "ES256") != 0 ? NULL : store_key(o, kid, t, generation, why);
        if (strcmp(a, "ES256") != 0)
            aly_errf(why, "tokens of this server are ES256");
        else if (k != NULL) {
            *key = (const unsigned char *)k->pem;
            *keylen = k->pem_len;
            *alg = JWT_ALG_ES256;
            *builtin = 1;
            ret = 0;
        }
    } else if (strcmp(a, "RS256") == 0 || strcmp(a, "ES256") == 0) {
        jwt_alg_t want = a[0] == 'R' ? JWT_ALG_RS256 : JWT_ALG_ES256;
        const oauth_key_t *found = NULL;
        size_t candidates = 0;
        if (kidv != NULL && kid == NULL) {
            aly_errf(why, "the token's kid is not a string");
            goto out;
        }
        for (size_t i = 0; i < o->n_keys; i++) {
            if (kid != NULL ? strcmp(o->keys[i].kid, kid) == 0 : o->keys[i].alg == want) {
                found = &o->keys[i];
                candidates++;
            }
        }
        if (found == NULL)
            aly_errf(why, kid != NULL ? "unknown signing key (kid)" : "the token has no kid and no key fits its alg");
        else if (kid == NULL && candidates > 1)
            aly_errf(why, "the token has no kid and several keys could have signed it");
        else if (found->alg != want)
            aly_errf(why, "the token claims %s but key %s is %s", a, found->kid, alg_name(found->alg));
        else {
            *key = (const unsigned char *)found->pem;
            *keylen = found->pem_len;
            *alg = want;
            ret = 0;
        }
    } else {
        aly_errf(why, "token algorithm is not accepted (RS256, ES256%s)", o->hs_secret != NULL ? ", HS256" : "");
    }
out:
    json_decref(h);
    return ret;
}

static int claim_int(json_t *claims, const char *name, int required, int64_t *out, aly_err_t *why)
{
    json_t *v = json_object_get(claims, name);
    if (v == NULL) {
        if (required)
            return aly_errf(why, "the token has no %s claim", name);
        *out = 0;
        return 1;
    }
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return aly_errf(why, "the token's %s claim is not a positive integer (NumericDate)", name);
    *out = json_integer_value(v);
    return 0;
}

static const char *claim_str(json_t *claims, const char *name, size_t max, aly_err_t *why)
{
    json_t *v = json_object_get(claims, name);
    const char *s = json_string_value(v);
    if (s == NULL || s[0] == '\0' || strlen(s) > max) {
        aly_errf(why, v == NULL ? "the token has no %s claim" : "the token's %s claim is not a usable string", name);
        return NULL;
    }
    return s;
}

static int aud_matches(json_t *aud, const char *resource)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), resource) == 0;
    if (json_is_array(aud)) {
        size_t i;
        json_t *v;
        json_array_foreach(aud, i, v)
            if (json_is_string(v) && strcmp(json_string_value(v), resource) == 0)
                return 1;
    }
    return 0;
}

/*
 * The time claims are signed integers up to INT64_MAX, so they are compared
 * by difference with now (both positive: a difference cannot overflow),
 * never by adding the leeway to them; the leeway is bounded for the same
 * reason.  A token may legitimately expire in the far future: its expiry in
 * milliseconds saturates instead of wrapping round to the past.
 */
#define MAX_LEEWAY_S (7 * 86400)

static int check_claims(auth_oauth_t *o, json_t *c, store_txn_t *t, int builtin, principal_t *p, aly_err_t *why)
{
    const aly_config_t *cfg = o->cfg;
    int64_t now = (int64_t)(aly_wall_ms() / 1000), exp, nbf, iat;
    int64_t leeway = cfg->oauth_leeway_s > MAX_LEEWAY_S ? MAX_LEEWAY_S : (int64_t)cfg->oauth_leeway_s;
    const char *iss = claim_str(c, "iss", 1024, why);
    if (iss == NULL)
        return -1;
    const char *want_iss = builtin ? cfg->public_url : cfg->oauth_issuer;
    if (want_iss == NULL || strcmp(iss, want_iss) != 0)
        return aly_errf(why, "the token was issued by another issuer");
    if (!aud_matches(json_object_get(c, "aud"), o->resource))
        return aly_errf(why, "the token's audience (aud) does not include %s", o->resource);
    if (claim_int(c, "exp", 1, &exp, why) < 0)
        return -1;
    if (now - exp >= leeway)
        return aly_errf(why, "the token has expired: get a new one");
    int rc = claim_int(c, "nbf", 0, &nbf, why);
    if (rc < 0)
        return -1;
    if (rc == 0 && nbf - now > leeway)
        return aly_errf(why, "the token is not valid yet (nbf)");
    if ((rc = claim_int(c, "iat", 0, &iat, why)) < 0)
        return -1;
    if (rc == 0 && iat - now > leeway)
        return aly_errf(why, "the token was issued in the future (iat)");
    const char *sub = claim_str(c, "sub", 128, why), *ws = NULL, *scope;
    if (sub == NULL || (ws = claim_str(c, "ws", ALY_ID_MAX - 1, why)) == NULL)
        return -1;
    json_t *sv = json_object_get(c, "scope");
    if (!json_is_string(sv) || (scope = json_string_value(sv), strlen(scope) > 2048))
        return aly_errf(why, "the token has no scope claim (space-separated scopes)");
    json_t *jv = json_object_get(c, "jti");
    if (jv != NULL && (!json_is_string(jv) || json_string_length(jv) == 0 || json_string_length(jv) > 255))
        return aly_errf(why, "the token's jti claim is not a usable string");

    if (builtin && (jv == NULL || oauth_grant_active(t, json_string_value(jv), why) != 0))
        return jv == NULL ? aly_errf(why, "the token has no jti") : -1;
    store_val_t v;
    aly_err_t serr;
    if (jv != NULL && (rc = store_get(t, DB_REVOKED_JTI, json_string_value(jv), json_string_length(jv), &v, &serr)) != 1)
        return rc == 0 ? aly_errf(why, "the token has been revoked") : aly_errf(why, "cannot check revocations");
    if ((rc = store_get(t, DB_REVOKED_SUB, sub, strlen(sub), &v, &serr)) != 1)
        return rc == 0 ? aly_errf(why, "tokens of this subject have been revoked") : aly_errf(why, "cannot check revocations");
    if ((rc = store_get(t, DB_WORKSPACES, ws, strlen(ws), &v, &serr)) != 0)
        return rc == 1 ? aly_errf(why, "the token names an unknown workspace") : aly_errf(why, "cannot read workspaces");

    memset(p, 0, sizeof(*p));
    p->kind = PRINCIPAL_OAUTH;
    /*
     * A sub is only unique at its issuer, and one issuer serves every
     * workspace: the id names the workspace too, so the same sub in two
     * workspaces is two principals (rate budgets, sessions, replies).
     */
    int idlen = snprintf(p->id, sizeof(p->id), "oauth:%s:%s", ws, sub);
    if (idlen < 0 || (size_t)idlen >= sizeof(p->id))
        return aly_errf(why, "the token's sub claim is too long (at most %zu bytes with this workspace)",
                        sizeof(p->id) - sizeof("oauth::") - strlen(ws));
    if (RECORD_SET_STR(p->workspace, ws) != 0)
        return aly_errf(why, "the token names an unknown workspace");
    /* Unknown scopes are ignored: an authorization server may mint scopes for other resources too. */
    for (const char *s = scope; *s;) {
        size_t n = strcspn(s, " ");
        p->scopes |= scope_lookup(s, n);
        s += n;
        while (*s == ' ')
            s++;
    }
    const char *client = json_string_value(json_object_get(c, "client_id"));
    if (client == NULL)
        client = json_string_value(json_object_get(c, "azp"));
    p->rate = cfg->rate_limit;
    if (client != NULL && strlen(client) < sizeof(p->client_id)) {
        snprintf(p->client_id, sizeof(p->client_id), "%s", client);
        for (size_t i = 0; i < cfg->n_client_rates; i++)
            if (strcmp(cfg->client_rates[i].client_id, client) == 0)
                p->rate = cfg->client_rates[i].rate;
    }
    p->expires_ms = (uint64_t)exp > UINT64_MAX / 1000 ? UINT64_MAX : (uint64_t)exp * 1000;
    return 0;
}

auth_result_t auth_oauth_verify(auth_oauth_t *o, const char *jws, size_t len, store_txn_t *t, uint64_t generation, principal_t *out,
                                aly_err_t *why)
{
    /* A slot is filled only after the whole check below: a matching tag is the tag of a token that passed it. */
    uint64_t tag[2];
    aly_siphash128(o->tag_key[0], o->tag_key[1], jws, len, tag);
    cache_entry_t *ce = &o->cache[tag[0] % CACHE_SLOTS];
    uint64_t now = aly_wall_ms();
    if (ce->used && ce->generation == generation && now < ce->exp_ms && CRYPTO_memcmp(ce->tag, tag, sizeof(tag)) == 0) {
        *out = ce->principal;
        return AUTH_OK;
    }

    const char *dot1 = memchr(jws, '.', len);
    const char *dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jws)) : NULL;
    if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - jws)) != NULL)
        return aly_errf(why, "the OAuth token is not a JWS compact token (three dot-separated parts)"), AUTH_INVALID;
    for (size_t i = 0; i < len; i++)
        if (jws[i] != '.' && !aly_b64url_char((unsigned char)jws[i]))
            return aly_errf(why, "the OAuth token contains characters outside base64url"), AUTH_INVALID;
    const unsigned char *key = NULL;
    size_t keylen = 0;
    jwt_alg_t want = JWT_ALG_NONE;
    int builtin = 0;
    if (select_key(o, jws, (size_t)(dot1 - jws), t, generation, &key, &keylen, &want, &builtin, why) != 0)
        return AUTH_INVALID;
    if (dot2 + 1 == jws + len)
        return aly_errf(why, "the OAuth token is not signed"), AUTH_INVALID;
    if (key == NULL || keylen == 0)
        return aly_errf(why, "no key to verify the token"), AUTH_INVALID;

    /* libjwt wants a NUL-terminated token. */
    char buf[AUTH_MAX_TOKEN + 1];
    memcpy(buf, jws, len);
    buf[len] = '\0';
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, buf, key, (int)keylen) != 0 || jwt == NULL) {
        jwt_free(jwt);
        return aly_errf(why, "the OAuth token's signature does not verify"), AUTH_INVALID;
    }
    if (jwt_get_alg(jwt) != want) {
        jwt_free(jwt);
        return aly_errf(why, "the OAuth token was not signed with the key's algorithm"), AUTH_INVALID;
    }
    char *grants = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    json_t *claims = grants != NULL ? json_loads(grants, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free(grants);
    if (!json_is_object(claims)) {
        json_decref(claims);
        return aly_errf(why, "the OAuth token's claims are not a JSON object"), AUTH_INVALID;
    }
    principal_t p;
    int rc = check_claims(o, claims, t, builtin, &p, why);
    json_decref(claims);
    if (rc != 0)
        return AUTH_INVALID;
    memcpy(ce->tag, tag, sizeof(tag));
    ce->exp_ms = p.expires_ms;
    ce->generation = generation;
    ce->principal = p;
    ce->used = 1;
    *out = p;
    return AUTH_OK;
}

int auth_oauth_check_config(const aly_config_t *cfg, aly_err_t *err)
{
    auth_oauth_t *o;
    if (auth_oauth_new(cfg, &o, err) != 0)
        return -1;
    auth_oauth_free(o);
    return 0;
}

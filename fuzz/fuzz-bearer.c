/*
 * libFuzzer target: the credential gate, auth_authenticate(), on what a
 * client puts in its Authorization header.  This is the first code that sees
 * an unauthenticated request, so everything it parses is hostile: the Bearer
 * scheme, the API key shape and checksum, the OAuth token's structure, its
 * header (alg, kid, typ: read by us before any signature is checked) and,
 * once a signature verifies, every claim.
 *
 * A fuzzer cannot forge a signature, so besides raw header values the target
 * signs what the input says, the way an authorization server that issues
 * strange tokens would.  Byte 0 of the input chooses:
 *   0  the rest is the Authorization header value as sent;
 *   1  the rest is "<JWT header JSON>\n<claims JSON>", signed HS256 with the
 *      configured shared secret (whatever alg the header claims);
 *   2  the same, signed ES256 with the EC key of the JWKS (kid "ec1");
 *   3  the rest starts with a 32-character key secret: the target adds the
 *      right checksum, so the store lookup is reached.
 * Init builds a data directory with one workspace (ws_fuzz), a live, a
 * revoked and an expired key, a revoked jti and a revoked sub, and an RSA and
 * an EC key in a JWKS file, all reachable from seeds in fuzz/corpus/bearer.
 *
 * Whatever the input: the result is OK or INVALID (never MISSING for a
 * header that is present, never ERROR: the store is healthy), an INVALID says
 * why, and an accepted credential belongs to the one workspace that exists.
 */
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aly/auth.h"
#include "aly/log.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HS_SECRET "fuzz-hs256-secret-0123456789abcdef012345"
#define WORKSPACE "ws_fuzz"

static auth_t *gate;
static EVP_PKEY *ec_key;

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz-bearer: %s: %s\n", what, why);
    abort();
}

/* ---- init ---- */

static void key_text(const char *secret, char out[AUTH_KEY_LEN + 1])
{
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < AUTH_KEY_SECRET_LEN; i++) {
        c ^= (unsigned char)secret[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    c ^= 0xffffffffu;
    memcpy(out, AUTH_KEY_PREFIX, sizeof(AUTH_KEY_PREFIX) - 1);
    memcpy(out + sizeof(AUTH_KEY_PREFIX) - 1, secret, AUTH_KEY_SECRET_LEN);
    for (int i = AUTH_KEY_CHECK_LEN - 1; i >= 0; i--) {
        out[sizeof(AUTH_KEY_PREFIX) - 1 + AUTH_KEY_SECRET_LEN + (size_t)i] = b62[c % 62];
        c /= 62;
    }
    out[AUTH_KEY_LEN] = '\0';
}

static void put_record(store_txn_t *t, int db, const char *key, const record_type_t *type, const void *rec)
{
    char *val;
    size_t vlen;
    aly_err_t err;
    if (record_encode(type, rec, &val, &vlen, &err) != 0 || store_put(t, db, key, strlen(key), val, vlen, 0, &err) != 0)
        die("store", err.msg);
    free(val);
}

static void add_key(store_txn_t *t, auth_pepper_t *pepper, const char *id, const char *secret, uint64_t revoked_ms,
                    uint64_t expires_ms)
{
    char text[AUTH_KEY_LEN + 1];
    aly_err_t err;
    key_record_t rec = {.created_ms = 1, .revoked_ms = revoked_ms, .expires_ms = expires_ms, .scopes = 0x7f};
    snprintf(rec.id, sizeof(rec.id), "%s", id);
    snprintf(rec.workspace, sizeof(rec.workspace), WORKSPACE);
    snprintf(rec.name, sizeof(rec.name), "fuzz %s", id);
    key_text(secret, text);
    if (auth_key_hash(pepper, text, AUTH_KEY_LEN, rec.hash, &err) != 0 || auth_key_store(t, &rec, &err) != 0)
        die("key", err.msg);
}

static json_t *b64_bn(EVP_PKEY *pkey, const char *param, size_t pad)
{
    BIGNUM *bn = NULL;
    unsigned char bin[512];
    char text[700];
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        die("key parameter", param);
    int n = pad ? BN_bn2binpad(bn, bin, (int)pad) : BN_bn2bin(bn, bin);
    BN_free(bn);
    if (n <= 0)
        die("key parameter", param);
    text[aly_b64url_encode(bin, (size_t)n, text)] = '\0';
    return json_string(text);
}

static void write_jwks(const char *path)
{
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    ec_key = EVP_EC_gen("P-256");
    if (rsa == NULL || ec_key == NULL)
        die("keys", "cannot generate");
    json_t *jwks = json_pack("{s:[{s:s,s:s,s:s,s:o,s:o},{s:s,s:s,s:s,s:s,s:o,s:o}]}", "keys", "kty", "RSA", "kid", "rsa1", "alg",
                             "RS256", "n", b64_bn(rsa, OSSL_PKEY_PARAM_RSA_N, 0), "e", b64_bn(rsa, OSSL_PKEY_PARAM_RSA_E, 0), "kty",
                             "EC", "kid", "ec1", "crv", "P-256", "use", "sig", "x", b64_bn(ec_key, OSSL_PKEY_PARAM_EC_PUB_X, 32),
                             "y", b64_bn(ec_key, OSSL_PKEY_PARAM_EC_PUB_Y, 32));
    if (jwks == NULL || json_dump_file(jwks, path, 0) != 0)
        die("jwks", path);
    json_decref(jwks);
    EVP_PKEY_free(rsa);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[512], pepper[512], secret[512], jwks[512], conf[512], text[4096];
    aly_err_t err;
    fuzz_path("data", dir, sizeof(dir));
    fuzz_write(fuzz_path("pepper", pepper, sizeof(pepper)), FUZZ_PEPPER, sizeof(FUZZ_PEPPER) - 1);
    fuzz_write(fuzz_path("secret", secret, sizeof(secret)), HS_SECRET, sizeof(HS_SECRET) - 1);
    write_jwks(fuzz_path("jwks.json", jwks, sizeof(jwks)));
    int n = snprintf(text, sizeof(text),
                     "listen 127.0.0.1:8080\n"
                     "public_url http://127.0.0.1:8080\n"
                     "data_dir %s\n"
                     "key_pepper_file %s\n"
                     "map_size 16m\n"
                     "volatile_map_size 16m\n"
                     "error_log off\n"
                     "access_log off\n"
                     "oauth_issuer https://issuer.example\n"
                     "oauth_jwks_file %s\n"
                     "oauth_hs256_secret_file %s\n"
                     "oauth_client_rate_limit fuzz-client 10/second burst=5\n",
                     dir, pepper, jwks, secret);
    fuzz_write(fuzz_path("alyd.conf", conf, sizeof(conf)), text, (size_t)n);
    aly_config_t *cfg = config_load(conf, &err);
    if (cfg == NULL || log_open("off", "off", (uid_t)-1, (gid_t)-1, &err) != 0 || store_init(cfg, (uid_t)-1, (gid_t)-1, &err) != 0)
        die("setup", err.msg);
    store_t *st = store_open(cfg, &err);
    auth_pepper_t *pp = st != NULL ? auth_pepper_load(pepper, &err) : NULL;
    store_txn_t t;
    if (pp == NULL || store_begin(st, STORE_WRITE, &t, &err) != 0)
        die("store", err.msg);
    workspace_record_t ws = {.created_ms = 1};
    snprintf(ws.id, sizeof(ws.id), WORKSPACE);
    snprintf(ws.name, sizeof(ws.name), "Fuzz");
    put_record(&t, DB_WORKSPACES, WORKSPACE, &record_workspace, &ws);
    add_key(&t, pp, "key_live", "FuzzLive0123456789abcdefghijklmn", 0, 0);
    add_key(&t, pp, "key_revoked", "FuzzRevoked0123456789abcdefghijk", 1, 0);
    add_key(&t, pp, "key_expired", "FuzzExpired0123456789abcdefghijk", 0, 1);
    revocation_record_t rev = {.revoked_ms = 1};
    snprintf(rev.subject, sizeof(rev.subject), "jti-revoked");
    put_record(&t, DB_REVOKED_JTI, rev.subject, &record_revocation, &rev);
    snprintf(rev.subject, sizeof(rev.subject), "sub-revoked");
    put_record(&t, DB_REVOKED_SUB, rev.subject, &record_revocation, &rev);
    if (store_commit(&t, &err) != 0)
        die("store", err.msg);
    auth_pepper_free(pp);
    if ((gate = auth_new(cfg, st, &err)) == NULL)
        die("auth", err.msg);
    return 0;
}

/* ---- one input ---- */

/* Appends base64url of data to out at *o (out has room: the caller sized it). */
static void put_b64(char *out, size_t *o, const void *data, size_t len)
{
    *o += aly_b64url_encode(data, len, out + *o);
}

static size_t sign_es256(const char *input, size_t len, unsigned char sig[64])
{
    unsigned char der[128];
    size_t dlen = sizeof(der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ec_key) == 1 &&
             EVP_DigestSign(md, der, &dlen, (const unsigned char *)input, len) == 1;
    EVP_MD_CTX_free(md);
    const unsigned char *p = der;
    ECDSA_SIG *es = ok ? d2i_ECDSA_SIG(NULL, &p, (long)dlen) : NULL;
    if (es == NULL)
        die("sign", "ES256");
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    BN_bn2binpad(r, sig, 32);
    BN_bn2binpad(s, sig + 32, 32);
    ECDSA_SIG_free(es);
    return 64;
}

/* "Bearer aly_oauth_" + header.claims.signature, the JSON parts taken from the input as they are. */
static size_t make_token(int es256, const char *in, size_t len, char *out)
{
    static const char def_hs[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", def_es[] = "{\"alg\":\"ES256\",\"kid\":\"ec1\"}";
    const char *nl = memchr(in, '\n', len), *hdr = es256 ? def_es : def_hs, *claims = in;
    size_t hlen = strlen(hdr), clen = len;
    if (nl != NULL) {
        hdr = in;
        hlen = (size_t)(nl - in);
        claims = nl + 1;
        clen = len - hlen - 1;
    }
    size_t o = 0;
    memcpy(out, "Bearer " AUTH_OAUTH_PREFIX, sizeof("Bearer " AUTH_OAUTH_PREFIX) - 1);
    o += sizeof("Bearer " AUTH_OAUTH_PREFIX) - 1;
    size_t start = o;
    put_b64(out, &o, hdr, hlen);
    out[o++] = '.';
    put_b64(out, &o, claims, clen);
    unsigned char sig[64];
    unsigned int slen = 0;
    if (es256)
        slen = (unsigned)sign_es256(out + start, o - start, sig);
    else
        HMAC(EVP_sha256(), HS_SECRET, sizeof(HS_SECRET) - 1, (const unsigned char *)out + start, o - start, sig, &slen);
    out[o++] = '.';
    put_b64(out, &o, sig, slen);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1, hlen;
    int mode = data[0] % 4;
    /* Worst case: base64 of both halves plus prefix and signature. */
    char *header = malloc(len * 4 / 3 + 256);
    if (mode == 0) {
        memcpy(header, in, len);
        hlen = len;
    } else if (mode == 3) {
        if (len < AUTH_KEY_SECRET_LEN) {
            free(header);
            return 0;
        }
        char key[AUTH_KEY_LEN + 1];
        key_text(in, key);
        hlen = (size_t)snprintf(header, len * 4 / 3 + 256, "Bearer %s", key);
        memcpy(header + hlen, in + AUTH_KEY_SECRET_LEN, len - AUTH_KEY_SECRET_LEN);
        hlen += len - AUTH_KEY_SECRET_LEN;
    } else {
        hlen = make_token(mode == 2, in, len, header);
    }
    /* Exact size, so a read past the header's end is caught. */
    char *exact = malloc(hlen > 0 ? hlen : 1);
    memcpy(exact, header, hlen);
    free(header);

    principal_t p;
    aly_err_t why = {.msg = ""};
    auth_result_t r = auth_authenticate(gate, exact, hlen, &p, &why);
    free(exact);
    if (r == AUTH_INVALID && why.msg[0] == '\0')
        die("AUTH_INVALID", "without a reason");
    if (r != AUTH_OK && r != AUTH_INVALID)
        die("unexpected result", r == AUTH_MISSING ? "AUTH_MISSING" : "AUTH_ERROR");
    if (r == AUTH_OK && strcmp(p.workspace, WORKSPACE) != 0)
        die("accepted a credential of workspace", p.workspace);
    return 0;
}

/*
 * The TLS server context of aly/tls.h, and the session-ticket keys: derived
 * per rotation period from a secret the master draws once per context, so
 * every worker (forked with the same secret) encrypts and decrypts the same
 * tickets without talking to the others, and a key stops being accepted two
 * periods after it started encrypting.
 */
#include "aly/tls.h"

#include <h2o.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

/* One context per generation of workers: the latest one's ticket secret is the one this process forks with. */
static struct {
    unsigned char secret[32];
    uint64_t rotation_ms;
} tickets;

typedef struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
} ticket_key_t;

static void derive(const char *label, uint64_t period, unsigned char out[32])
{
    unsigned char msg[24];
    unsigned len = 32;
    size_t ll = strlen(label);
    memcpy(msg, label, ll);
    for (int i = 0; i < 8; i++)
        msg[ll + (size_t)i] = (unsigned char)(period >> (8 * i));
    HMAC(EVP_sha256(), tickets.secret, sizeof(tickets.secret), msg, ll + 8, out, &len);
}

static void key_of(uint64_t period, ticket_key_t *k)
{
    unsigned char name[32];
    derive("name", period, name);
    memcpy(k->name, name, sizeof(k->name));
    derive("aes", period, k->aes);
    derive("hmac", period, k->hmac);
}

static uint64_t current_period(void)
{
    return aly_wall_ms() / tickets.rotation_ms;
}

static int mac_init(EVP_MAC_CTX *hctx, const ticket_key_t *k)
{
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    return EVP_MAC_init(hctx, k->hmac, sizeof(k->hmac), params);
}

/*
 * OpenSSL's ticket callback.  Encrypting: the current period's key.
 * Decrypting: the current key (1), or the previous one (2: accepted, and a
 * new ticket under the current key is issued); anything older is unknown
 * (0: a full handshake).
 */
static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx,
                     int enc)
{
    (void)ssl;
    uint64_t now = current_period();
    ticket_key_t k;
    if (enc) {
        key_of(now, &k);
        if (RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc())) != 1)
            return -1;
        memcpy(name, k.name, sizeof(k.name));
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 || mac_init(hctx, &k) != 1)
            return -1;
        return 1;
    }
    for (uint64_t back = 0; back < 2 && back <= now; back++) {
        key_of(now - back, &k);
        if (memcmp(name, k.name, sizeof(k.name)) != 0)
            continue;
        if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1 || mac_init(hctx, &k) != 1)
            return -1;
        return back == 0 ? 1 : 2;
    }
    return 0;
}

static int ssl_fail(aly_err_t *err, const char *what, const char *file)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return aly_errf(err, "%s %s: %s", what, file, buf);
}

SSL_CTX *tls_context_new(const char *cert_file, const char *key_file, uint64_t ticket_rotation_ms, aly_err_t *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        ssl_fail(err, "cannot create a TLS context", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_fail(err, "cannot load tls_certificate", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_fail(err, "cannot load tls_key", key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_fail(err, "tls_key does not match tls_certificate", key_file);
        goto fail;
    }
    if (RAND_bytes(tickets.secret, sizeof(tickets.secret)) != 1) {
        ssl_fail(err, "cannot draw the session-ticket secret", "");
        goto fail;
    }
    tickets.rotation_ms = ticket_rotation_ms > 0 ? ticket_rotation_ms : 1;
    /* A ticket is good for the period it was issued in and the next: its lifetime hint says no more. */
    long lifetime_s = (long)(2 * tickets.rotation_ms / 1000);
    SSL_CTX_set_timeout(ctx, lifetime_s > 0 ? lifetime_s : 1);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1) {
        ssl_fail(err, "cannot install the session-ticket keys", "");
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_alpn_protocols);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

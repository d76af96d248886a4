/*
 * Pagination cursors of aly/cursor.h: the cursor key, the MAC'd encoding and
 * the one "<kind>|<after>" payload every listing uses.
 */
#include "aly/cursor.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAC_LEN 12

static unsigned char cursor_key[32];
static int have_key;

int cursor_init(const char *pepper_path, aly_err_t *err)
{
    unsigned char pepper[256];
    int fd = open(pepper_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return aly_errf(err, "cannot open %s for the cursor key", pepper_path);
    ssize_t n = read(fd, pepper, sizeof(pepper));
    close(fd);
    if (n < 32)
        return aly_errf(err, "%s is too short for the cursor key", pepper_path);
    static const char label[] = "aly-cursor-v1";
    unsigned int outl = 0;
    int ok = HMAC(EVP_sha256(), pepper, (int)n, (const unsigned char *)label, sizeof(label) - 1, cursor_key, &outl) != NULL;
    OPENSSL_cleanse(pepper, sizeof(pepper));
    if (!ok)
        return aly_errf(err, "cannot derive the cursor key");
    have_key = 1;
    return 0;
}

size_t cursor_encode(const void *payload, size_t len, char *out, size_t cap)
{
    unsigned char buf[CURSOR_MAX_PAYLOAD + 32];
    unsigned int maclen = 0;
    if (!have_key || len > CURSOR_MAX_PAYLOAD || cap < (len + MAC_LEN) * 4 / 3 + 4)
        return 0;
    memcpy(buf, payload, len);
    HMAC(EVP_sha256(), cursor_key, sizeof(cursor_key), buf, len, buf + len, &maclen);
    size_t n = aly_b64url_encode(buf, len + MAC_LEN, out);
    out[n] = '\0';
    return n;
}

long cursor_decode(const char *text, size_t len, char *payload, size_t cap)
{
    unsigned char buf[CURSOR_MAX_PAYLOAD + 32], mac[32];
    unsigned int maclen = 0;
    if (!have_key || len > (CURSOR_MAX_PAYLOAD + MAC_LEN) * 4 / 3 + 4)
        return -1;
    long n = aly_b64url_decode(text, len, buf, sizeof(buf));
    if (n < MAC_LEN + 1 || (size_t)(n - MAC_LEN) >= cap)
        return -1;
    size_t plen = (size_t)n - MAC_LEN;
    HMAC(EVP_sha256(), cursor_key, sizeof(cursor_key), buf, plen, mac, &maclen);
    if (CRYPTO_memcmp(mac, buf + plen, MAC_LEN) != 0)
        return -1;
    memcpy(payload, buf, plen);
    payload[plen] = '\0';
    return (long)plen;
}

size_t cursor_make(const char *kind, const char *after, char *out, size_t cap)
{
    char payload[CURSOR_MAX_PAYLOAD + 1];
    /* A '|' in kind would make "a|b" + "c" read back as "a" + "b|c". */
    if (kind[0] == '\0' || strchr(kind, '|') != NULL)
        return 0;
    int n = snprintf(payload, sizeof(payload), "%s|%s", kind, after);
    if (n <= 0 || (size_t)n > CURSOR_MAX_PAYLOAD)
        return 0;
    return cursor_encode(payload, (size_t)n, out, cap);
}

int cursor_read(const char *text, size_t len, const char *kind, char *after, size_t cap)
{
    char payload[CURSOR_MAX_PAYLOAD + 1];
    long n = cursor_decode(text, len, payload, sizeof(payload));
    size_t kl = strlen(kind);
    if (n < (long)kl + 1 || memcmp(payload, kind, kl) != 0 || payload[kl] != '|' || (size_t)n - kl - 1 >= cap)
        return -1;
    memcpy(after, payload + kl + 1, (size_t)n - kl - 1);
    after[(size_t)n - kl - 1] = '\0';
    return 0;
}
